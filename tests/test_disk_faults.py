"""A storage root that fills up or turns unwritable (issue "Faults across nodes", its disk part): the run fails with
one line naming the file, its root and what to do; no temporary or partial file is left, and no half-written data
set is ever taken as whole; a result is written where one still can be, and where none can, `python -m pipeline`
says so in one line and a sweep goes on. Full and read-only file systems are real (tiny tmpfs mounts, root only:
skipped otherwise); the CLI runs are slow."""

from __future__ import annotations

import errno
import logging
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from pipeline.__main__ import job_result
from pipeline.callbacks import unwritable
from pipeline.data import weights
from pipeline.data.datasets import cache_damage, prepare
from pipeline.job import LogFile
from pipeline.results import read_result
from pipeline.run import run
from pipeline.rundir import (
    RESULT_FILE,
    RESULT_UNWRITABLE,
    RunDir,
    StorageError,
    WriteRoot,
    as_storage_error,
    atomic_write,
    explain_storage,
    staged,
)
from pipeline.runtime.errors import describe_error
from tests.helpers import results
from tests.helpers.cli import cli, result_of
from tests.helpers.config import compose_config
from tests.helpers.disks import fill, read_only, require_root, staging_files, tiny_filesystem

TINY_RUN = ("model=null_model", "dataset.num_images=16", "warmup=0", "repeats=1")


def full(path: Path) -> StorageError:
    return StorageError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


# --- a write that fails --------------------------------------------------------------------------------------
def test_a_write_that_fails_midway_leaves_no_temporary_file_and_the_old_file_whole(tmp_path, monkeypatch):
    target = atomic_write(tmp_path / RESULT_FILE, "old")

    def half_then_full(self: Path, data: bytes) -> None:
        with open(self, "wb") as handle:
            handle.write(data[:3])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as close() raises it: no file named

    monkeypatch.setattr(Path, "write_bytes", half_then_full)
    with pytest.raises(StorageError, match=f"^no space left on device writing {re.escape(str(target))}$"):
        atomic_write(target, "new and longer")
    monkeypatch.undo()
    assert [path.name for path in tmp_path.iterdir()] == [RESULT_FILE] and target.read_text() == "old"


def test_a_directory_that_disappears_before_the_rename_leaves_nothing_and_names_the_file(tmp_path, monkeypatch):
    run_dir, replace = tmp_path / "run", os.replace

    def removed_first(source: Path, target: Path) -> None:
        shutil.rmtree(run_dir)  # say, a clean-up that removed the run dir mid-run
        replace(source, target)

    monkeypatch.setattr(os, "replace", removed_first)
    with pytest.raises(StorageError, match=f"^no such file or directory writing {re.escape(str(run_dir))}/result"):
        atomic_write(run_dir / RESULT_FILE, "{}")
    assert list(tmp_path.iterdir()) == []


def test_a_failure_in_a_staged_write_that_is_no_os_error_removes_the_temporary_file_and_passes_through(tmp_path):
    with pytest.raises(ValueError, match="not a table"), staged(tmp_path / "part-00000.parquet") as staging:
        staging.write_bytes(b"half")
        raise ValueError("not a table")
    assert list(tmp_path.iterdir()) == []


def test_a_storage_error_crosses_processes_whole():
    error = pickle.loads(pickle.dumps(full("/x/run/result.json")))
    assert (type(error), str(error), error.errno) == (
        StorageError,
        "no space left on device writing /x/run/result.json",
        28,
    )


def test_only_a_write_error_that_names_its_file_becomes_a_storage_error():
    converted = as_storage_error(OSError(errno.EROFS, os.strerror(errno.EROFS), "/x/cache/locks/a.lock"))
    assert str(converted) == "read-only file system writing /x/cache/locks/a.lock"
    kept = [
        PermissionError(errno.EACCES, "Permission denied", "/x/image.jpg"),
        OSError(errno.ENOSPC, "full"),
        KeyError(),
    ]
    assert [as_storage_error(error) for error in kept] == kept  # a read may be refused too; a write names its file


def test_the_torch_engines_predictions_are_written_whole_under_their_name_and_nothing_else(tmp_path, cache_dir):
    overrides = ("engine=torch", "model=null_model", "sink=parquet", "dataset.num_images=8", "warmup=0", "repeats=1")
    assert run(compose_config(*overrides, f"cache_dir={cache_dir}"), tmp_path).status == "ok"
    written = RunDir(tmp_path).predictions
    assert [path.name for path in written.iterdir()] == ["part-00000.parquet"]
    assert pq.read_metadata(written / "part-00000.parquet").num_rows == 8


# --- the advice: which root, what to do ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("number", "todo"),
    [(errno.ENOSPC, "free space there"), (errno.EDQUOT, "free space there"), (errno.EROFS, "make it writable")],
)
def test_a_storage_error_names_the_file_its_root_and_what_to_do(tmp_path, number, todo):
    run_dir, cache = tmp_path / "run", tmp_path / "run" / "cache"  # the innermost root is the one to fix
    roots = [WriteRoot("run dir", run_dir, "hydra.run.dir"), WriteRoot("cache dir", cache, "cache_dir")]
    error = StorageError(number, os.strerror(number), str(cache / "weights" / "w.pt"))
    assert explain_storage(str(error), roots) == f"{error} (cache dir {cache}): {todo} or choose another cache_dir"
    assert explain_storage(str(error), roots[:1]).endswith(
        f"(run dir {run_dir}): {todo} or choose another hydra.run.dir"
    )
    assert explain_storage(str(error), [WriteRoot("run dir", tmp_path / "else", "hydra.run.dir")]) == str(error)


def test_a_root_is_found_whether_the_file_is_named_through_a_symlink_or_not(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")  # the run dir as given; the tasks name it resolved
    error = full(tmp_path / "real" / "tasks" / "all" / "a.task")
    assert explain_storage(str(error), [WriteRoot("run dir", tmp_path / "link", "hydra.run.dir")]).endswith(
        f"(run dir {tmp_path / 'link'}): free space there or choose another hydra.run.dir"
    )


def test_a_storage_error_in_a_spark_task_reaches_the_driver_as_one_line_and_is_explained_there(tmp_path):
    """The driver gets a task's error as the text of the worker's traceback (see tests/test_lost.py)."""
    ledger_file = tmp_path / "tasks" / "all" / "fused-stage1-part0-attempt0-tid1-0.task"
    text = (
        "An error occurred while calling o81.save.\n: org.apache.spark.SparkException: Job aborted due to stage "
        "failure: Task 0 in stage 1.0 failed 1 times, most recent failure: Lost task 0.0 in stage 1.0 (TID 1) "
        "(localhost executor driver): org.apache.spark.api.python.PythonException: Traceback (most recent call "
        f'last):\n  File "ledger.py", line 249, in task\npipeline.rundir.StorageError: {full(ledger_file)}\n'
    )
    error = describe_error(Exception(text))
    assert error["type"] == "StorageError"
    assert explain_storage(error["message"], [WriteRoot("run dir", tmp_path, "hydra.run.dir")]) == (
        f"no space left on device writing {ledger_file} (task 0.0 in stage 1.0 (TID 1, localhost executor driver)) "
        f"(run dir {tmp_path}): free space there or choose another hydra.run.dir"
    )


# --- no result.json ------------------------------------------------------------------------------------------
def test_a_run_whose_result_cannot_be_written_says_so_in_one_line_and_raises(tmp_path, monkeypatch, caplog):
    def no_room(run_dir: Path, result: object) -> None:
        raise full(tmp_path / RESULT_FILE)

    monkeypatch.setattr("pipeline.run.write_result", no_room)
    with caplog.at_level("ERROR", logger="pipeline.run"), pytest.raises(StorageError):
        run(compose_config("engine=torch", "model.batch_size=0"), tmp_path)  # fails at validation
    [line] = caplog.messages
    assert line.startswith("run failed: ConfigError: ") and "model.batch_size=0" in line
    assert line.endswith(f"; and its result not written: no space left on device writing {tmp_path / RESULT_FILE}")


def test_a_result_json_left_by_an_earlier_run_is_not_taken_for_that_of_a_job_that_could_not_write_its_own(tmp_path):
    results.write(tmp_path, 10.0)  # an earlier run's ok result, which a read-only run dir kept in place
    lost = job_result(tmp_path, RESULT_UNWRITABLE)
    assert (lost.status, lost.error["type"]) == ("failed", "JobProcessDied")
    assert lost.error["message"] == "the job could not write its result.json (its stderr says why)"
    assert read_result(tmp_path / RESULT_FILE)["error"] == lost.error  # where the parent can write it


def _log_three_records(handler: logging.Handler) -> None:
    logger = logging.getLogger(f"tests.storage.{id(handler)}")
    logger.addHandler(handler)
    try:
        for number in range(3):
            logger.error("record %d", number)
    finally:
        logger.removeHandler(handler)
        handler.close()


def test_a_log_file_that_cannot_be_opened_costs_one_warning_not_a_trace_per_record(tmp_path, capsys):
    handler = LogFile(tmp_path / "gone" / "pipeline.log")
    _log_three_records(handler)
    err = capsys.readouterr().err
    assert err == f"warning: logging to stderr only: no such file or directory writing {handler.baseFilename}\n"


# --- real full and read-only file systems (root) -------------------------------------------------------------
def test_a_full_run_dir_is_refused_before_hydra_writes_its_snapshot_there(tmp_path):
    with tiny_filesystem(tmp_path / "disk") as disk:
        fill(disk)
        assert unwritable(disk / "run") == f"{disk} is not writable (No space left on device)"
        assert [path.name for path in disk.iterdir()] == ["filler"]


def test_a_log_file_on_a_full_disk_costs_one_warning_not_a_trace_per_record(tmp_path, capsys):
    with tiny_filesystem(tmp_path / "run") as run_dir:
        fill(run_dir)
        _log_three_records(LogFile(RunDir(run_dir).log))
    err = capsys.readouterr().err
    assert err == f"warning: logging to stderr only: no space left on device writing {run_dir / 'pipeline.log'}\n"


def test_a_data_set_that_does_not_fit_leaves_nothing_and_is_generated_whole_once_there_is_room(tmp_path):
    config = compose_config("dataset.num_images=4", "dataset.images_per_file=1").dataset
    with tiny_filesystem(tmp_path / "cache", "1m") as cache:
        filler = fill(cache)
        with pytest.raises(
            StorageError, match=f"^no space left on device writing {re.escape(str(cache))}/datasets/synthetic-jpeg-4-"
        ):
            prepare(config, cache)
        assert staging_files(cache) == [] and list((cache / "datasets").iterdir()) == []
        filler.unlink()
        dataset = prepare(config, cache)
        assert (dataset.generated, dataset.num_images, dataset.num_files) == (True, 4, 4)
        assert cache_damage(dataset.path, dataset.spec) is None


def test_a_weights_file_that_does_not_fit_leaves_no_partial_file(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "calibrated_random", lambda *_: {"fc.weight": torch.zeros(1 << 20)})  # 4 MiB
    with tiny_filesystem(tmp_path / "cache", "1m") as cache:
        with pytest.raises(
            StorageError, match=f"^no space left on device writing {re.escape(str(cache))}/weights/resnet50-random"
        ):
            weights.resolve("random", 0, cache)
        assert staging_files(cache) == [] and list((cache / "weights").iterdir()) == []


@pytest.mark.parametrize(("key", "root"), [("cache_dir", "cache dir"), ("storage", "storage root")])
def test_a_run_whose_data_set_root_is_full_fails_with_one_line_naming_the_data_set_and_the_root(tmp_path, key, root):
    with tiny_filesystem(tmp_path / "full") as full_root:
        overrides = ("engine=torch", "model=null_model", "dataset.num_images=4", "warmup=0", "repeats=1")
        config = compose_config(*overrides, f"cache_dir={tmp_path / 'cache'}", f"{key}={full_root}")
        result = run(config, tmp_path / "run")
        left = staging_files(full_root)
    assert (result.status, result.error["type"], left) == ("failed", "StorageError", [])
    assert re.fullmatch(
        rf"no space left on device writing {re.escape(str(full_root))}/datasets/synthetic-jpeg-4-\w+ "
        rf"\({root} {re.escape(str(full_root))}\): free space there or choose another {key}",
        result.error["message"],
    )
    assert result_of(tmp_path / "run")["error"]["message"] == result.error["message"]


# --- the whole CLI (slow) ------------------------------------------------------------------------------------
def error_lines(stderr: str) -> list[str]:
    """The lines `python -m pipeline` itself ends with on a failure (not the job's log nor Spark's)."""
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


@pytest.mark.slow
def test_a_run_dir_that_fills_up_mid_run_fails_in_one_line_and_leaves_no_temporary_file(tmp_path, cache_dir):
    with tiny_filesystem(tmp_path / "disk") as disk:  # Spark's event log fills it as the application starts
        run_dir = disk / "run"
        done = cli(tmp_path, *TINY_RUN, f"hydra.run.dir={run_dir}", f"cache_dir={cache_dir}")
        left, written = staging_files(disk), RunDir(run_dir).result.exists()
    assert done.returncode == 1 and not written, done.stderr[-3000:]
    assert error_lines(done.stderr) == [
        f"error: no space left on device writing {run_dir / RESULT_FILE} (run dir {run_dir}): "
        "free space there or choose another hydra.run.dir"
    ]
    assert "Error executing job" not in done.stderr and "HYDRA_FULL_ERROR" not in done.stderr
    assert "--- Logging error ---" not in done.stderr
    assert left == []


@pytest.mark.slow
def test_a_run_dir_made_read_only_mid_run_fails_in_one_line(tmp_path, cache_dir):
    require_root()  # before the run starts
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "pipeline", *TINY_RUN, f"hydra.run.dir={run_dir}", f"cache_dir={cache_dir}"]
    with open(tmp_path / "stderr", "w") as stderr:
        parent = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 300
        while "data:" not in (RunDir(run_dir).log.read_text() if RunDir(run_dir).log.exists() else ""):
            assert parent.poll() is None and time.monotonic() < deadline, (tmp_path / "stderr").read_text()[-3000:]
            time.sleep(0.2)  # until the job has its data and starts Spark
        with read_only(run_dir):
            code = parent.wait(timeout=600)
            left = staging_files(run_dir)
    finally:
        if parent.poll() is None:
            parent.kill()  # its job gets a SIGINT of its own and stops (pipeline.runtime.lifetime)
            parent.wait()
    stderr = (tmp_path / "stderr").read_text()
    assert code == 1, stderr[-3000:]
    assert error_lines(stderr) == [
        f"error: read-only file system writing {run_dir / RESULT_FILE} (run dir {run_dir}): "
        "make it writable or choose another hydra.run.dir"
    ]
    assert "Error executing job" not in stderr and left == []


@pytest.mark.slow
def test_a_sweep_goes_on_past_a_job_whose_run_dir_fills_up(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    with tiny_filesystem(sweep / "0") as first:
        done = cli(
            tmp_path,
            "-m",
            *TINY_RUN,
            "udf=map_in_pandas,map_in_arrow",
            f"hydra.sweep.dir={sweep}",
            f"cache_dir={cache_dir}",
        )
        left = staging_files(first)
    assert done.returncode == 0, done.stderr[-3000:]
    assert error_lines(done.stderr) == [
        f"error: no space left on device writing {first / RESULT_FILE} (run dir {first}): "
        "free space there or choose another hydra.sweep.dir"
    ]
    assert result_of(sweep / "1")["status"] == "ok" and (sweep / "results.csv").is_file()
    assert left == []
