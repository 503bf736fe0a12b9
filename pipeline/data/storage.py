"""The storage root: where everything a task reads or writes lives, so no executor depends on the driver's disk.

On one machine every executor sees the driver's files, and `storage=null` keeps today's places: data sets in
`cache_dir`, task records, the Parquet sink and two_stage's crops in the run dir. On a cluster of other machines
the executors see neither (the run dir is on the driver's disk), so `storage=DIR` names one root that every node
and the driver reach at the same path: a shared mount (NFS, EFS, a bucket mounted by a FUSE driver, /dbfs). Data
sets go under `ROOT/datasets/`, each run's task-side files under `ROOT/runs/RUN_ID/`.

Object stores by URI (s3://, gs://, abfs:// through pyarrow.fs) are not served yet: the data set code reads and
writes local paths (flock, rename, footers). A URI other than file:// is refused before any work, saying so.
"""

from __future__ import annotations

import hashlib
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from pipeline.config.schema import ConfigError
from pipeline.rundir import RunDir


def local_path(uri: str) -> Path:
    """The path of `uri` (a plain path, ~ expanded, or file://)."""
    parsed = urlparse(uri)
    return Path(parsed.path if parsed.scheme == "file" else uri).expanduser().resolve()


def check(uri: str) -> None:
    """Refuse a storage root this version cannot serve, before any work; ConfigError names the key."""
    scheme = urlparse(uri).scheme
    if scheme not in ("", "file"):
        raise ConfigError(
            f"storage={uri!r}: {scheme}:// is not served yet; use a directory every node and this machine share at "
            "the same path (an NFS or FUSE mount of the bucket), as a path or file://"
        )


def parquet_sizes(path: str | Path) -> list[int]:
    """The sizes of the Parquet files at or under `path` (none if it does not exist): what Spark's splits are cut
    for, and what two_stage's crops weigh."""
    return [file.stat().st_size for file in Path(path).rglob("*.parquet")]


def run_id(run_dir: Path) -> str:
    """A run's name under ROOT/runs/: the run dir's last parts (DATE/TIME, or DATE/TIME/N of a sweep) and a hash of
    this host's name and the run dir's whole path, so two checkouts' runs of the same second never share files, nor
    two drivers on two machines whose run dirs have the same path (`/tmp/run` on both); one run dir on one host
    holds one run at a time (`pipeline.runtime.claim`)."""
    resolved = Path(run_dir).resolve()
    tail = "_".join(resolved.parts[-3:])
    return f"{tail}-{hashlib.sha256(f'{socket.gethostname()}:{resolved}'.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class Storage:
    """Where one run's data sets and task-side files go (see the module docstring)."""

    root: Path | None
    run_dir: Path
    cache_dir: Path

    @classmethod
    def of(cls, root: str | None, run_dir: str | Path, cache_dir: str | Path) -> Storage:
        """The places of a run from its `storage`, run dir and `cache_dir` keys."""
        return cls(local_path(root) if root else None, Path(run_dir).resolve(), Path(cache_dir).expanduser())

    @property
    def shared(self) -> bool:
        """Whether a storage root was given (else this machine's run dir and cache dir serve)."""
        return self.root is not None

    @property
    def dataset_cache(self) -> Path:
        """The directory whose datasets/ holds the generated and imported data sets (`pipeline.data.datasets`)."""
        return self.root if self.root is not None else self.cache_dir

    @property
    def run_area(self) -> RunDir:
        """This run's directory for what its tasks write, named as a run dir's files are: the run dir itself
        without a storage root."""
        return RunDir(self.root / "runs" / run_id(self.run_dir) if self.root is not None else self.run_dir)

    @property
    def tasks(self) -> Path:
        """The tasks' records of the pass running now (`pipeline.spark.ledger`)."""
        return self.run_area.tasks

    @property
    def predictions(self) -> Path:
        """The Parquet sink (`sink=parquet`)."""
        return self.run_area.predictions

    @property
    def intermediate(self) -> Path:
        """two_stage's crops between its jobs, unless `topology.intermediate_path` names a place."""
        return self.run_area.intermediate
