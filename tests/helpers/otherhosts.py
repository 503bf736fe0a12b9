"""Runs of `python -m pipeline` against the namespace cluster (`tests.helpers.nscluster`), as a user runs them from
the driver's machine: the overrides that point a run at the cluster, a whole run in a subprocess, and
what a run left on the nodes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pipeline.data.datasets import Dataset, prepare
from pipeline.data.storage import Storage
from tests.helpers.cli import cli, result_of
from tests.helpers.config import compose_config
from tests.helpers.nscluster import NamespaceCluster
from tests.helpers.processes import cmdline

STYLES = [
    "map_in_pandas",
    "scalar_pandas_udf",
    "iterator_pandas_udf",
    "map_in_arrow",
    "rdd_map_partitions",
    "predict_batch_udf",
    "arrow_udf",
]
DATA = ("dataset.num_images=8", "dataset.images_per_file=4", "dataset.row_group_size=4")  # two files, two tasks
APPLICATION_PROCESSES = ("CoarseGrainedExecutorBackend", "pyspark.daemon", "pyspark.worker")


def on(cluster: NamespaceCluster, cache_dir: Path, *overrides: str, master: str | None = None) -> list[str]:
    """The overrides of a run on `cluster` (by its spark:// master unless `master` names its Connect server): two
    1-core executors, the shared storage, 8 JPEGs in two files (two tasks), one timed pass."""
    return [
        "cluster=remote",
        f"cluster.master={master or cluster.master_url}",
        "cluster.workers=2",
        "cluster.worker_cores=1",
        "cluster.executor_memory=1g",
        "cluster.register_timeout_s=90",
        f"storage={cluster.storage}",
        f"cache_dir={cache_dir}",
        *DATA,
        "warmup=0",
        "repeats=1",
        *overrides,
    ]


def made_here(storage: Path, *overrides: str) -> Dataset:
    """The data set a run of `overrides` with `storage` reads, made now by this process onto the storage root: the
    files and cache key a cluster's generation job writes (tests/test_generation.py and tests/test_scaling.py prove
    them the same), so the run finds it there. For tests whose subject is not the generation: its Spark
    application of its own costs 20-45 s of two busy cores."""
    config = compose_config(f"storage={storage}", *overrides)
    where = Storage.of(config.storage, storage, config.cache_dir).dataset_cache
    return prepare(config.dataset, where, config.preprocess.max_pixels)


def run(tmp_path: Path, *overrides: str, timeout: int = 600) -> dict[str, Any]:
    """One whole run in `tmp_path/run`; its result."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    completed = cli(tmp_path, f"hydra.run.dir={tmp_path / 'run'}", *overrides, timeout=timeout)
    assert (tmp_path / "run" / "result.json").exists(), completed.stderr[-3000:]
    return result_of(tmp_path / "run")


def left_on(cluster: NamespaceCluster, seconds: float = 60.0) -> list[str]:
    """The application processes (executors, Python workers) still running on any worker node after `seconds`:
    a worker stops an application's executors once its driver has gone."""
    deadline = time.monotonic() + seconds
    while True:
        found = [
            f"{node.name}: {cmdline(pid)[:160]}"
            for node in cluster.workers
            for pid in node.pids()
            if any(mark in cmdline(pid) for mark in APPLICATION_PROCESSES)
        ]
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(1)
