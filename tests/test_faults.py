"""A lost executor costs a retry, not a result: an executor JVM is SIGKILLed in the middle of a model task, the
run completes through Spark's retries, the Parquet sink holds every input image exactly once, and the result
records the failed attempt, the retry and the lost executor (slow: whole applications)."""

from __future__ import annotations

import json
import os
from collections import Counter

import pyarrow.parquet as pq
import pytest

from pipeline.spark import faults
from tests.helpers.cli import cli
from tests.helpers.processes import processes_of


def test_the_kill_hook_is_off_unless_asked_for(monkeypatch):
    monkeypatch.delenv(faults.KILL_ENV, raising=False)
    assert not faults.armed("fused", 0)  # needs no TaskContext: nothing is checked when off


def test_the_kill_hook_refuses_a_process_that_is_not_under_an_executor_jvm():
    with pytest.raises(RuntimeError, match="no executor JVM"):
        faults.executor_jvm(os.getpid())


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["local_cluster", "standalone"])
def test_a_killed_executor_costs_a_retry_and_no_image(tmp_path, cache_dir, mode):
    run_dir = tmp_path / "run"
    scratch = tmp_path / "executor-tmp"  # a SIGKILLed executor runs no shutdown hook: its native libraries stay
    scratch.mkdir()
    done = cli(
        tmp_path,
        f"cluster={mode}",
        "cluster.workers=2",
        "cluster.worker_cores=1",
        "cluster.worker_memory=1g",
        "cluster.executor_memory=512m",
        "model=null_model",  # the kill aims itself at the second batch (pipeline.spark.faults): no network needed
        "dataset.num_images=64",  # two row groups: two partitions of 32 images
        "model.batch_size=16",
        "spark.max_records_per_batch=16",
        "spark.task_max_failures=2",
        f"+spark.conf={{spark.executorEnv.{faults.KILL_ENV}: 'fused:0', "
        f"spark.executor.extraJavaOptions: '-Djava.io.tmpdir={scratch}'}}",
        "sink=parquet",
        "warmup=0",
        "repeats=1",
        f"hydra.run.dir={run_dir}",
        f"cache_dir={cache_dir}",
    )
    result = json.loads((run_dir / "result.json").read_text())
    assert done.returncode == 0, (result.get("error") or {}).get("message") or done.stderr[-3000:]
    found = result["evidence"]["faults"]
    assert [(t["partition_id"], t["attempt"]) for t in found["failed_tasks"]] == [(0, 0)], found
    assert "ExecutorLostFailure" in found["failed_tasks"][0]["failure"]
    assert found["task_retries"] == 1 and len(found["executors_lost"]) == 1, found
    assert found["executors_lost"][0]["executor_id"] == found["failed_tasks"][0]["executor_id"]
    assert (result["metrics"]["failed_tasks"], result["metrics"]["task_retries"]) == (1, 1)
    assert result["spark_conf"]["spark.task.maxFailures"] == "2"
    written = pq.read_table(run_dir / "predictions", columns=["id"]).column("id").to_pylist()
    expected = pq.read_table(result["dataset"]["path"], columns=["id"]).column("id").to_pylist()
    assert len(expected) == 64 and Counter(written) == Counter(expected)  # every image once: none lost, none twice
    assert "faults: 1 failed task attempts, 1 retries, 1 executors lost" in done.stdout
    assert processes_of(result) == []
