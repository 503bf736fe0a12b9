"""`python -m pipeline` as a user runs it, in a subprocess, from a directory that is not the repository."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers.cli import cli
from tests.helpers.processes import cmdline, processes_of, survivors, tree


@pytest.mark.slow
def test_default_size_run_verifies_against_the_reference(tmp_path, cache_dir, weights_file):
    run_dir = tmp_path / "run"
    # one timed pass, no warm-up: the default size (64 images), the verdict and the printed throughput are what this
    # proves; the default warm-up and two more timed passes were the same ResNet50 pass three times more
    overrides = ("dataset.num_images=64", "warmup=0", "repeats=1", "verify=true")
    done = cli(tmp_path, *overrides, f"hydra.run.dir={run_dir}", f"cache_dir={cache_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "ok"
    assert result["metrics"]["num_images"] == 64
    assert result["metrics"]["top1_agreement"] == 1.0
    assert result["metrics"]["max_abs_prob_diff"] <= 1e-4
    assert result["spark_conf"]["spark.master"].startswith("local[")
    assert "throughput:" in done.stdout


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("nope=1", "Key 'nope' not in 'Config'"),
        ("udf=nope", "Available options in 'udf'"),
        ("model.batch_size=x", "model.batch_size"),
    ],
)
def test_compose_errors_exit_non_zero_naming_the_key(tmp_path, override, named):
    done = cli(tmp_path, override, f"hydra.run.dir={tmp_path}", timeout=120)
    assert done.returncode != 0
    assert named in done.stderr + done.stdout


@pytest.mark.parametrize("sweep", [[], ["-m", "model.batch_size=4,8"]])
def test_a_preprocess_cluster_key_without_its_cluster_names_the_missing_override(tmp_path, sweep):
    done = cli(tmp_path, *sweep, "topology=two_stage", "topology.preprocess_cluster.mode=local", timeout=120)
    assert done.returncode == 2
    assert "AssertionError" not in done.stderr
    assert "+cluster@topology.preprocess_cluster=OPTION" in done.stderr
    assert "local_cluster" in done.stderr and "topology.preprocess_cluster.mode=local" in done.stderr
    assert not any(tmp_path.iterdir())  # nothing composed, nothing run


def test_a_preprocess_cluster_key_after_its_cluster_composes(tmp_path):
    done = cli(
        tmp_path,
        "+original=two_stage",
        "topology.preprocess_cluster.workers=3",
        "--cfg",
        "job",
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "workers: 3" in done.stdout


@pytest.mark.parametrize(
    ("overrides", "named"),
    [(["model.batch_size=0"], "model.batch_size=0"), (["gpu.task_amount=1"], "cluster=local")],
)
def test_invalid_values_fail_before_spark_starts(tmp_path, overrides, named):
    done = cli(tmp_path, *overrides, f"hydra.run.dir={tmp_path}", timeout=120)
    assert done.returncode == 1
    assert named in done.stdout
    assert json.loads((tmp_path / "result.json").read_text())["error"]["type"] == "ConfigError"
    assert not (tmp_path / "eventlog").exists()  # no Spark application was started


def test_missing_java_fails_at_start_with_the_fix(tmp_path):
    done = cli(tmp_path, f"hydra.run.dir={tmp_path}", env={"JAVA_HOME": str(tmp_path)}, timeout=120)
    assert done.returncode == 1
    assert "JavaMissing" in done.stdout and "Java 17" in done.stdout
    assert not (tmp_path / "eventlog").exists()


@pytest.mark.slow
def test_standalone_stage_level_from_the_cli_leaves_no_process(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    done = cli(
        tmp_path,
        "cluster=standalone",
        "topology=stage_level",
        "gpu.emulate=2",
        "dataset.num_images=64",
        "model=null_model",  # the cluster's scheduling and its processes are what this proves, not the network
        "warmup=0",
        "repeats=1",
        f"hydra.run.dir={run_dir}",
        f"cache_dir={cache_dir}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    checks = result["evidence"]["checks"]
    assert checks["model_stage_max_concurrent"] <= 2 < checks["preprocess_stage_max_concurrent"]
    assert len(result["cluster"]["pids"]) == 2  # the master and one worker
    assert (run_dir / "cluster").is_dir()  # their logs are kept
    assert processes_of(result) == []


@pytest.mark.slow
def test_a_failing_standalone_run_leaves_no_process(tmp_path, cache_dir, bad_dataset):
    run_dir = tmp_path / "run"
    done = cli(
        tmp_path,
        "cluster=standalone",
        "dataset=parquet",
        f"dataset.path={bad_dataset.path}",
        "on_bad_image=fail",  # the bad image fails its decoding, before any model: the null model suffices
        "model=null_model",
        "spark.task_max_failures=1",  # the failure, not Spark's three retries of it (4 s each: a new Python worker)
        "warmup=0",
        "repeats=1",
        f"hydra.run.dir={run_dir}",
        f"cache_dir={cache_dir}",
    )
    assert done.returncode == 1
    result = json.loads((run_dir / "result.json").read_text())
    assert result["error"]["type"] == "BadImageError"
    cluster_record = json.loads((run_dir / "cluster" / "cluster.json").read_text())
    pids = list(cluster_record["pids"].values())
    assert pids and processes_of({"cluster": {"pids": pids}}) == []


@pytest.mark.slow
def test_each_multirun_job_is_its_own_application_with_its_own_driver_settings(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    done = cli(
        tmp_path,
        "-m",
        "cluster.driver_memory=1g,3g",
        "model=null_model",  # the applications and their drivers' settings are what this proves, not the network
        "dataset.num_images=4",
        "warmup=0",
        "repeats=1",
        f"hydra.sweep.dir={sweep}",
        f"cache_dir={cache_dir}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    first, second = (json.loads((sweep / job / "result.json").read_text())["cluster"] for job in ("0", "1"))
    assert first["app_id"] != second["app_id"] and first["driver_pid"] != second["driver_pid"]
    assert first["driver_jvm_max_memory_mb"] <= 1024 < 2048 < second["driver_jvm_max_memory_mb"]
    assert first["driver_jvm_ahead_s"] > 0 and second["driver_jvm_ahead_s"] > 0  # each in the JVM launched ahead


@pytest.mark.slow
def test_ctrl_c_stops_the_job_and_the_standalone_cluster_it_started(tmp_path, cache_dir):

    run_dir, log = tmp_path / "run", tmp_path / "output.log"
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "cluster=standalone",
        "cluster.worker_cores=1",
        "cluster.worker_memory=1g",
        "cluster.executor_memory=512m",
        # a simulated device sleeping 8 s a pass of 16 images: the Ctrl-C lands mid-pass, as it did while ResNet50
        # ran on the CPU, and the 2 cores stay free for the cluster's processes
        "model=accelerator",
        "device.images_per_s=2",
        "dataset.num_images=16",
        f"hydra.run.dir={run_dir}",
        f"cache_dir={cache_dir}",
    ]
    with open(log, "w") as output:  # its own session: the test's Ctrl-C goes to its process group, as a terminal's
        parent = subprocess.Popen(
            command, cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    seen: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 300
        while parent.poll() is None and time.monotonic() < deadline:  # until Python workers run tasks
            seen.update(tree([parent.pid]))
            if any("pyspark.daemon" in cmdline(pid) for pid in seen):
                break
            time.sleep(0.5)
        assert parent.poll() is None and any("CoarseGrainedExecutorBackend" in cmdline(pid) for pid in seen), (
            log.read_text()[-3000:]
        )
        seen.update(tree([parent.pid]))
        os.killpg(parent.pid, signal.SIGINT)
        assert parent.wait(timeout=120) != 0
        result = json.loads((run_dir / "result.json").read_text())
        assert result["status"] == "interrupted" and result["error"]["type"] == "KeyboardInterrupt"
        cluster_pids = json.loads((run_dir / "cluster" / "cluster.json").read_text())["pids"]
        assert set(cluster_pids.values()) <= set(seen) and len(seen) >= 6, seen  # job, driver, master, worker, ...
        assert survivors(seen) == [], [cmdline(pid) for pid in survivors(seen)]
    finally:
        for pid in survivors(seen):  # same PID and start time: never a stranger's process
            os.kill(pid, signal.SIGKILL)
