"""`cluster.ship` on a cluster of other machines that lack the tool (`tests.helpers.nscluster`: nodes of their own
network, hostname and filesystem view, which hides this checkout): `installed` fails before any pass naming each
node and the missing module; `code` ships the tool's packages as a zip and runs, classic (spark://) and through a
Spark Connect server on the master's node; `env` ships a virtualenv and the executors run their Python from it.

One cluster serves every test: each worker offers 2 cores, 1 held by the Connect server's executor, 1 for the
classic application of the test at hand. Each run is `python -m pipeline` in a process of its own, from the
checkout (whose `pipeline` the nodes cannot see), the driver on the host end of the cluster's bridge.

The virtualenv the env tests ship is a thin one made by the test, layered over the suite's (a .pth to its
site-packages, which the nodes see): what travels and how is what a full environment takes (pack, cache,
`spark.archives` or `addArtifacts(archive=True)`, the workers' Python), at kilobytes rather than the gigabytes of
a CUDA build of torch, which `python -m tests.bench.ship` measures.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.cli import result_of
from tests.helpers.nscluster import NamespaceCluster, namespace_cluster, unavailable
from tests.helpers.runs import ROOT

pytestmark = pytest.mark.slow

SHORT = ("model=null_model", "dataset.num_images=16", "warmup=0", "repeats=1")
# the Connect server's application takes one core and 512 MiB of each worker; a classic one the other core
CONNECT_CONF = {"spark.cores.max": "2", "spark.executor.cores": "1", "spark.executor.memory": "512m"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    reason = unavailable()
    if reason:
        pytest.skip(f"namespace clusters cannot be made here: {reason}")
    directory = tmp_path_factory.mktemp("ship-cluster")
    with namespace_cluster(directory, workers=2, cores=2, memory="3g", connect=True, connect_conf=CONNECT_CONF) as up:
        print(f"namespace cluster up: {up.timings}")
        yield up


@pytest.fixture(scope="module")
def thin_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv of this interpreter whose packages are the suite's, by a .pth: kilobytes to ship."""
    venv = tmp_path_factory.mktemp("thin") / "venv"
    subprocess.run([sys.base_prefix + "/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "suite.pth").write_text(next(p for p in sys.path if p.endswith("site-packages")) + "\n")
    return venv


def _run(
    cluster: NamespaceCluster,
    tmp_path: Path,
    master: str,
    *overrides: str,
    python: str = sys.executable,
    cache: Path | None = None,
) -> tuple[dict[str, Any], float, str]:
    """`python -m pipeline cluster=remote ...` against `master`, its cache `cache` (the test's own by default): the
    result, the seconds it took, its stderr."""
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and k != "SPARK_ENV_LOADED"}
    (tmp_path / "spark-conf").mkdir()
    env["SPARK_CONF_DIR"] = str(tmp_path / "spark-conf")  # nothing of this machine's Spark settings
    args = [
        "cluster=remote",
        f"cluster.master={master}",
        "cluster.workers=2",
        "cluster.worker_cores=1",
        "cluster.executor_memory=1g",
        "cluster.register_timeout_s=120",
        f"storage={cluster.storage}",
        f"cache_dir={cache or tmp_path / 'cache'}",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    started = time.monotonic()
    done = subprocess.run(
        [python, "-m", "pipeline", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    seconds = time.monotonic() - started
    print(f"{' '.join(overrides)} against {master}: {seconds:.0f} s")
    return result_of(run_dir), seconds, done.stderr[-3000:]


def _hostnames(cluster: NamespaceCluster) -> list[str]:
    return sorted(node.hostname for node in cluster.workers)


def _preflight(result: dict[str, Any]) -> dict[str, Any]:
    preflight = result["cluster"]["shipped"]["preflight"]
    print(f"preflight: {preflight['seconds']} s, executors ready after {preflight.get('executor_ready_s')}")
    return preflight


def test_installed_on_nodes_without_the_tool_fails_before_any_pass_naming_each_node_and_the_module(cluster, tmp_path):
    result, seconds, stderr = _run(cluster, tmp_path, cluster.master_url, *SHORT)
    assert result["status"] == "failed", stderr
    error = result["error"]
    assert error["type"] == "NodeCannotRun", error
    for hostname in _hostnames(cluster):
        assert f"on {hostname} (" in error["message"]
    assert "ModuleNotFoundError: No module named 'pipeline' (import pipeline)" in error["message"]
    assert "cluster.ship=code" in error["message"]  # the fix
    assert result["metrics"]["wall_s"] == []  # no pass ran
    assert seconds < 420


def test_code_runs_resnet50_on_nodes_without_the_tool_and_agrees_with_the_reference(cluster, tmp_path, cache_dir):
    # sink=parquet: verify reads back what the timed pass wrote instead of running ResNet50 on the nodes again
    overrides = ("cluster.ship=code", "model=resnet50", "verify=true", "sink=parquet", *SHORT[1:])
    # the session's cache: ResNet50's random weights calibrated once a session (a minute of a loaded machine)
    result, _, stderr = _run(cluster, tmp_path, cluster.master_url, *overrides, cache=cache_dir)
    assert result["status"] == "ok", (result["error"], stderr)
    assert result["metrics"]["top1_agreement"] == 1.0 and result["metrics"]["verified_images"] == 16
    shipped = result["cluster"]["shipped"]
    assert shipped["mode"] == "code" and shipped["code"]["how"] == "SparkContext.addPyFile"
    assert shipped["code"]["bytes"] > 0 and shipped["code"]["packages"] == ["pipeline", "variants"]
    assert shipped["weights"]["bytes"] > 0  # the model's weights too
    preflight = _preflight(result)
    assert sorted(e["host"] for e in preflight["executors"]) == _hostnames(cluster)
    assert all(e["missing"] == [] and e["versions"]["torch"] for e in preflight["executors"])
    assert sorted(preflight["executor_ready_s"]) == sorted(str(e["executor"]) for e in preflight["executors"])


def test_code_runs_through_a_connect_server_on_the_masters_node(cluster, tmp_path):
    result, _, stderr = _run(cluster, tmp_path, cluster.connect_url, "cluster.ship=code", *SHORT)
    assert result["status"] == "ok", (result["error"], stderr)
    shipped = result["cluster"]["shipped"]
    assert shipped["code"]["how"] == "Spark Connect artifact (addArtifacts pyfile=True)"
    assert sorted(e["host"] for e in _preflight(result)["executors"]) == _hostnames(cluster)


def test_env_runs_the_executors_python_from_the_shipped_virtualenv(cluster, tmp_path, thin_venv):
    python = str(thin_venv / "bin" / "python")
    result, _, stderr = _run(cluster, tmp_path, cluster.master_url, "cluster.ship=env", *SHORT, python=python)
    assert result["status"] == "ok", (result["error"], stderr)
    shipped = result["cluster"]["shipped"]
    assert shipped["environment"]["prefix"] == str(thin_venv) and shipped["environment"]["bytes"] > 0
    assert shipped["code"]["how"] == "SparkContext.addPyFile"  # the tool's code goes with it
    assert (
        result["spark_conf"]["spark.archives"]
        == f"{tmp_path}/cache/shipped/{shipped['environment']['file']}#environment"
    )
    assert result["spark_conf"]["spark.pyspark.python"] == "./environment/bin/python"
    for executor in _preflight(result)["executors"]:  # unpacked in each executor's directory on its node
        assert executor["prefix"].endswith(f"/work/{result['cluster']['app_id']}/{executor['executor']}/environment")
        assert executor["executable"] == executor["prefix"] + "/bin/python"


def test_env_runs_through_a_connect_server_from_the_sessions_directory(cluster, tmp_path, thin_venv):
    python = str(thin_venv / "bin" / "python")
    result, _, stderr = _run(cluster, tmp_path, cluster.connect_url, "cluster.ship=env", *SHORT, python=python)
    assert result["status"] == "ok", (result["error"], stderr)
    environment = result["cluster"]["shipped"]["environment"]
    assert environment["how"].startswith("addArtifacts(archive=True)")
    for executor in _preflight(result)["executors"]:  # APP/EXECUTOR/SESSION/environment: the session's own
        assert Path(executor["prefix"]).name == "environment"
        assert Path(executor["prefix"]).parents[1].name == str(executor["executor"])
