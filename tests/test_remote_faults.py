"""A node of the namespace cluster (`tests.helpers.nscluster`) killed whole in the middle of a timed pass: every
process in its namespaces, the worker with its executor, as a machine that loses power. Spark reruns the lost
tasks on the node left and the pass counts every image once; nothing of the run is left running on that node,
and the storage root keeps no task records or partial files of the run."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.cli import result_of
from tests.helpers.nscluster import namespace_cluster, unavailable
from tests.helpers.otherhosts import left_on, made_here

pytestmark = pytest.mark.slow


def _first_record(storage: Path) -> bool:
    """Whether a task of the run has reported (a record under the storage root's run area): the pass is under way."""
    return any(storage.glob("runs/*/tasks/all/*.task"))


@pytest.mark.timeout(1200)
def test_a_node_lost_mid_pass_costs_a_retry_not_an_image(tmp_path, cache_dir):
    reason = unavailable()
    if reason:
        pytest.skip(f"namespace clusters cannot be made here: {reason}")
    storage = tmp_path / "storage"
    storage.mkdir()
    data = ["dataset.num_images=16", "dataset.images_per_file=4", "dataset.row_group_size=4"]
    made_here(storage, *data)  # found there by the run: a cluster's generation of it is test_scaling.py's
    with namespace_cluster(tmp_path / "cluster", workers=2, storage=storage, tool_on_nodes=True) as cluster:
        run_dir = tmp_path / "run"
        command = [
            sys.executable,
            "-m",
            "pipeline",
            "cluster=remote",
            f"cluster.master={cluster.master_url}",
            "cluster.workers=2",
            "cluster.worker_cores=1",
            "cluster.executor_memory=1g",
            f"storage={storage}",
            f"cache_dir={cache_dir}",
            "model=accelerator",
            "device.images_per_s=1",  # 4 s a task of 4 images: the kill lands while the other node's task runs
            *data,
            "warmup=0",
            "repeats=1",
            f"hydra.run.dir={run_dir}",
        ]
        job = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 600
            while not _first_record(storage):
                assert job.poll() is None, job.stdout.read()
                assert time.monotonic() < deadline, "no task reported within 600 s"
                time.sleep(0.2)
            killed = cluster.kill_node("worker-2")
            job.wait(timeout=600)
        finally:
            if job.poll() is None:
                job.kill()
                job.wait()
        result = result_of(run_dir)
        assert killed, "worker-2 had no process to kill"
        assert result["status"] == "ok", result["error"]
        assert (result["metrics"]["num_images"], result["metrics"]["num_predicted"]) == (16, 16)
        assert result["metrics"]["executors_lost"] >= 1
        assert not left_on(cluster), "the run's executors outlived it on the node left"
        assert not list(storage.glob("runs/*/tasks/**/*")), "task records or temporary files left on the storage root"
        assert not [path for path in storage.rglob(".*") if path.suffix == ".tmp"]
