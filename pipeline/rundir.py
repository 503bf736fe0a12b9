"""The files of one run directory, named in one place, and the one way a file is written there: atomically.

A run directory is where a job writes everything it leaves: the resolved config the parent hands it, its log,
its result, the Spark event log, the predictions, a standalone cluster's logs, and for two_stage on a cluster
of its own the preprocess application's directory (a run directory of the same shape). The reports find
jobs by these names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

RESULT_FILE = "result.json"
PREVIOUS_RESULT_FILE = "result.previous.json"
JOB_FILE = "job.yaml"
LOG_FILE = "pipeline.log"


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def result(self) -> Path:
        return self.path / RESULT_FILE

    @property
    def previous_result(self) -> Path:
        """An earlier run's ok result, kept when a re-run into this directory starts (`pipeline.job`)."""
        return self.path / PREVIOUS_RESULT_FILE

    @property
    def job(self) -> Path:
        """The resolved config `python -m pipeline` writes for `python -m pipeline.job`."""
        return self.path / JOB_FILE

    @property
    def log(self) -> Path:
        return self.path / LOG_FILE

    @property
    def eventlog(self) -> Path:
        """Where the Spark application writes its event log."""
        return self.path / "eventlog"

    @property
    def previous_eventlog(self) -> Path:
        """The event log of the application an earlier run into this directory started."""
        return self.path / "eventlog.previous"

    @property
    def predictions(self) -> Path:
        """The Parquet sink (`sink=parquet`)."""
        return self.path / "predictions"

    @property
    def cluster(self) -> Path:
        """A standalone cluster's logs and record, and discovery scripts of emulated GPUs."""
        return self.path / "cluster"

    @property
    def tasks(self) -> Path:
        """The tasks' side files of the pass running now (`pipeline.spark.ledger`), a folder per application job."""
        return self.path / "tasks"

    @property
    def intermediate(self) -> Path:
        """two_stage's crops between its jobs (unless `topology.intermediate_path` names a place)."""
        return self.path / "intermediate"

    @property
    def ray_logs(self) -> Path:
        return self.path / "ray-logs"

    @property
    def preprocess(self) -> RunDir:
        """two_stage's preprocess application, on a cluster of its own."""
        return RunDir(self.path / "preprocess")


def files_named(root: Path, name: str) -> list[Path]:
    """The files called `name` at or under `root`, never under a hidden directory (`.hydra/`): what a job left,
    as the reports and the rates find it. A file being written is hidden too (`atomic_write`)."""
    root = Path(root)
    return [path for path in root.rglob(name) if not any(part.startswith(".") for part in path.relative_to(root).parts)]


def atomic_write(path: Path, data: str | bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same directory and a rename, so a reader sees
    the old file or the whole new one, never a part (the temporary name is hidden: `.NAME.PID.tmp`). Text is
    written as UTF-8, whatever the locale."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    os.replace(staging, path)
    return path
