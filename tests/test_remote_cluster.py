"""A run on a cluster of other machines: the namespace cluster of `tests.helpers.nscluster`, whose nodes have
addresses, hostnames and filesystems of their own, and see only the shared storage directory of this machine.

What a new user met there before (issue 26): a driver on 127.0.0.1 the executors could not reach (the run hung),
the weights file in the driver's cache dir (every task failed), the tasks' records in each node's view of the
run dir (0 images counted). Each test is one whole `python -m pipeline` in a subprocess, as a user runs it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.cli import cli, result_of
from tests.helpers.nscluster import NamespaceCluster, namespace_cluster, unavailable
from tests.helpers.processes import cmdline

pytestmark = pytest.mark.slow

STYLES = [
    "map_in_pandas",
    "scalar_pandas_udf",
    "iterator_pandas_udf",
    "map_in_arrow",
    "rdd_map_partitions",
    "predict_batch_udf",
    "arrow_udf",
]
TOPOLOGIES = ["split", "two_stage", "stage_level"]  # fused: every style above; model_server: tests/test_node_servers.py


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NamespaceCluster]:
    """A master and two workers of 1 core and 1 emulated GPU each, the tool installed on them (cluster.ship's
    default), and a storage directory every node and this machine share."""
    reason = unavailable()
    if reason:
        pytest.skip(f"namespace clusters cannot be made here: {reason}")
    directory = tmp_path_factory.mktemp("remote")
    storage = directory / "storage"
    storage.mkdir()
    with namespace_cluster(
        directory / "cluster", workers=2, storage=storage, tool_on_nodes=True, gpus_per_worker=1
    ) as cluster:
        yield cluster


def on(cluster: NamespaceCluster, cache_dir: Path, *overrides: str) -> list[str]:
    """The overrides of a run on `cluster`: its master, two 1-core executors, the shared storage, 8 JPEGs in two
    files (two tasks), one timed pass."""
    return [
        "cluster=remote",
        f"cluster.master={cluster.master_url}",
        "cluster.workers=2",
        "cluster.worker_cores=1",
        "cluster.executor_memory=1g",
        "cluster.register_timeout_s=90",
        f"storage={cluster.storage}",
        f"cache_dir={cache_dir}",
        "dataset.num_images=8",
        "dataset.images_per_file=4",
        "dataset.row_group_size=4",
        "warmup=0",
        "repeats=1",
        *overrides,
    ]


def run(tmp_path: Path, *overrides: str, timeout: int = 600) -> dict[str, Any]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    completed = cli(tmp_path, f"hydra.run.dir={tmp_path / 'run'}", *overrides, timeout=timeout)
    assert (tmp_path / "run" / "result.json").exists(), completed.stderr[-3000:]
    return result_of(tmp_path / "run")


def test_a_run_on_other_machines_counts_every_image_and_agrees_with_the_reference(nodes, cache_dir, tmp_path):
    result = run(tmp_path, *on(nodes, cache_dir, "verify=true"))
    assert result["status"] == "ok", result["error"]
    assert result["metrics"]["num_predicted"] == 8 and result["metrics"]["top1_agreement"] == 1.0
    assert result["spark_conf"]["spark.driver.host"] == nodes.driver_address
    assert result["cluster"]["shipped"]["weights"]["how"] == "SparkContext.addFile"
    assert result["dataset"]["path"].startswith(str(nodes.storage))
    assert len({task["executor_id"] for task in result["evidence"]["timeline"]}) == 2  # one task on each node
    assert not left_on(nodes), "the run's executors outlived it"


def left_on(cluster: NamespaceCluster, seconds: float = 60.0) -> list[str]:
    """The application processes (executors, Python workers) still running on any worker node after `seconds`:
    a worker stops an application's executors once its driver has gone."""
    deadline = time.monotonic() + seconds
    while True:
        found = [
            f"{node.name}: {cmdline(pid)[:160]}"
            for node in cluster.workers
            for pid in node.pids()
            if any(
                mark in cmdline(pid) for mark in ("CoarseGrainedExecutorBackend", "pyspark.daemon", "pyspark.worker")
            )
        ]
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(1)


def test_executors_that_cannot_reach_the_driver_fail_the_run_in_bounded_time_naming_why(nodes, cache_dir, tmp_path):
    overrides = on(
        nodes, cache_dir, "model=null_model", "cluster.driver_host=127.0.0.1", "cluster.register_timeout_s=20"
    )
    result = run(tmp_path, *overrides, timeout=240)
    assert result["status"] == "failed" and result["error"]["type"] == "ExecutorsMissing"
    message = result["error"]["message"]
    assert "0 of 2 executors" in message and "after 20 s (cluster.register_timeout_s)" in message
    assert "exited before registering" in message and "spark://CoarseGrainedScheduler@127.0.0.1:" in message


def test_records_the_driver_cannot_read_fail_the_run_naming_the_storage_key(nodes, cache_dir, tmp_path):
    """The data set on the shared storage, but no storage root: the tasks write their records into their own
    node's view of the run dir."""
    shared = run(tmp_path / "first", *on(nodes, cache_dir, "model=null_model"))
    overrides = [o for o in on(nodes, cache_dir, "model=null_model") if not o.startswith(("storage=", "dataset."))]
    result = run(tmp_path, *overrides, "dataset=parquet", f"dataset.path={shared['dataset']['path']}")
    assert result["status"] == "failed" and result["error"]["type"] == "TasksUnheard"
    assert "set storage=DIR" in result["error"]["message"]


@pytest.mark.timeout(2400)  # one whole run per option, each with its own Spark application
@pytest.mark.parametrize(
    "axis", [("udf", STYLES), ("topology", TOPOLOGIES)], ids=["every udf style (fused)", "every topology"]
)
def test_every_variant_on_other_machines_agrees_with_the_reference(nodes, cache_dir, tmp_path, axis):
    key, options = axis
    completed = cli(
        tmp_path,
        "-m",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"{key}={','.join(options)}",
        *on(nodes, cache_dir, "verify=true", "sink=parquet", "gpu.emulate=1"),  # verify reads the sink back
        timeout=1800,
    )
    results = [json.loads(path.read_text()) for path in sorted((tmp_path / "sweep").glob("*/result.json"))]
    assert len(results) == len(options), completed.stderr[-3000:]
    for result in results:
        name = result["config"][key]["style" if key == "udf" else "kind"]
        assert result["status"] == "ok", (name, result["error"])
        assert result["metrics"]["num_predicted"] == 8, name
        assert result["metrics"]["top1_agreement"] == 1.0, name
