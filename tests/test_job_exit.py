"""A job ends cleanly: its driver JVM exits by itself when the job is done, nothing it started is left to a
SIGKILL, and py4j logs no traceback on the way out."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import pytest

from pipeline.rundir import RunDir
from pipeline.runtime.processes import descendants, python_helpers
from tests.helpers.cli import cli, result_of


def test_the_resource_tracker_a_process_pool_starts_is_a_python_helper_not_a_run_process():
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        assert pool.submit(abs, -1).result() == 1
    [tracker] = python_helpers()
    assert "resource_tracker" in " ".join(tracker.cmdline())
    assert tracker in descendants()  # what a job's cleanup would otherwise SIGTERM, in vain, for 20 s


@pytest.mark.slow
def test_a_job_that_generated_its_data_stops_its_jvm_without_a_kill_or_a_py4j_traceback(tmp_path):
    # 128 new images: data generation runs a process pool (and with it multiprocessing's resource tracker)
    run_dir = tmp_path / "run"
    overrides = ["model=null_model", "dataset.num_images=128", "warmup=0", "repeats=1", f"hydra.run.dir={run_dir}"]
    done = cli(tmp_path, *overrides, f"cache_dir={tmp_path / 'cache'}")
    assert done.returncode == 0 and result_of(run_dir)["status"] == "ok", done.stderr[-3000:]
    log = RunDir(run_dir).log.read_text()
    for output in (done.stderr, log):
        assert "SIGKILL" not in output
        assert "Exception while sending command" not in output
