"""One run in a process of its own: `python -m pipeline.job RUN_DIR` runs the config in RUN_DIR/job.yaml.

`python -m pipeline` composes and checks the config with Hydra, then starts this for every job, also
inside a multirun: Hydra's basic launcher runs all jobs in one Python process, and a driver JVM started
there keeps its first settings (driver memory, classpath) for every later job. A fresh process per run
gives each variant its own Spark application and driver JVM.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from contextlib import suppress
from pathlib import Path

from omegaconf import OmegaConf

from pipeline.config.schema import Config, typed
from pipeline.rundir import RESULT_UNWRITABLE, RunDir, StorageError, storage_error
from pipeline.runtime.lifetime import die_with_parent, parent_from_env
from pipeline.runtime.processes import descendants, python_helpers, stop_processes
from pipeline.spark.driver_jvm import launch_ahead, stop_driver_jvm

log = logging.getLogger(__name__)


def load(run_dir: Path) -> Config:
    """The resolved config the parent wrote."""
    return typed(OmegaConf.load(RunDir(run_dir).job))


def keep_earlier_result(run_dir: Path) -> Path | None:
    """Before a run replaces RUN_DIR/result.json: an ok result there moves to RUN_DIR/result.previous.json.

    A re-run into a used run dir that then fails (or is interrupted, or dies) never destroys the earlier ok
    result; a failed or interrupted earlier result is simply replaced. Reports read `result.json` only.
    """
    files = RunDir(run_dir)
    path = files.result
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(earlier, dict) or earlier.get("status") != "ok":
        return None
    kept = files.previous_result
    try:
        os.replace(path, kept)
    except OSError as error:  # a read-only run dir: this run could not write its own result either
        raise storage_error(error, kept) from error
    log.info("%s held an ok result of an earlier run: kept as %s", run_dir, kept.name)
    return kept


class LogFile(logging.FileHandler):
    """RUN_DIR/pipeline.log, opened at the first record: a run dir that cannot be written (full, read-only) costs
    the log file, said once on stderr, instead of failing the job at its start (opening) or printing a trace per
    record (logging's way with a failed write); stderr still gets every record."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, delay=True)
        self.failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.failed:
            return
        try:
            super().emit(record)  # a failure to open the file comes out here, one to write it in handleError
        except OSError as error:
            self._give_up(error)

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            self._give_up(error)
        else:
            super().handleError(record)

    def _give_up(self, error: OSError) -> None:
        self.failed = True
        stream, self.stream = self.stream, None
        with suppress(OSError):  # what it holds cannot be written either
            if stream is not None:
                stream.close()
        print(f"warning: logging to stderr only: {storage_error(error, self.baseFilename)}", file=sys.stderr)


def configure_logging(run_dir: Path) -> None:
    """INFO and up to stderr and RUN_DIR/pipeline.log; py4j's from WARNING only: at INFO it logs, with a
    traceback, each connection the JVM closes as the session stops (15 of 70 jobs of one sweep)."""
    logging.basicConfig(
        level=logging.INFO,
        format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s",
        handlers=[logging.StreamHandler(), LogFile(RunDir(run_dir).log)],
    )
    logging.getLogger("py4j").setLevel(logging.WARNING)


def main(run_dir: Path) -> int:
    parent = parent_from_env()
    if parent is not None:  # started by `python -m pipeline`: a SIGKILL of it reaches us as a Ctrl-C
        die_with_parent(parent, signal.SIGINT)
    configure_logging(run_dir)
    try:
        keep_earlier_result(run_dir)
    except StorageError as error:
        log.error("the run did not start: %s", error)
        return RESULT_UNWRITABLE
    try:
        config = load(run_dir)
        launch_ahead(config)  # the driver JVM starts on the other core while torch is imported, data and weights made
        from pipeline.run import run  # imports torch: after the launch has begun

        return 0 if run(config, run_dir).status == "ok" else 1
    except StorageError:  # run() said why in one line; the parent must not take an older result.json for this run's
        return RESULT_UNWRITABLE
    finally:
        # the driver JVM pyspark started (and a local-cluster's executors under it) outlives a stopped
        # SparkSession until this process is gone: stop it, then whatever is left by PID, so the job leaves
        # nothing; multiprocessing's resource tracker (started by data generation's process pool) ignores
        # SIGTERM by design and exits by itself with this process
        stop_driver_jvm()
        stop_processes(descendants() - python_helpers())


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
