"""The files of one run directory, named in one place, and the one way a file is written there: atomically, and
when that fails (a full disk, a read-only file system), with a StorageError in one line naming the file, leaving
no temporary file behind.

A run directory is where a job writes everything it leaves: the resolved config the parent hands it, its log,
its result, the Spark event log, the predictions, a standalone cluster's logs, and for two_stage on a cluster
of its own the preprocess application's directory (a run directory of the same shape). The reports find
jobs by these names.
"""

from __future__ import annotations

import errno
import os
import socket
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

RESULT_FILE = "result.json"
PREVIOUS_RESULT_FILE = "result.previous.json"
JOB_FILE = "job.yaml"
LOG_FILE = "pipeline.log"
RESULT_UNWRITABLE = 3  # a job's exit status when its result.json could not be written (a result.json there is older)
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})  # no read fails so
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


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
    def server(self) -> Path:
        """topology=model_server's server: its spec and log here; on a cluster of other machines, in the run's area of
        the storage root, each node's server's record, log and status file while it runs (`pipeline.serving.nodes`),
        and its log here afterwards, a folder per node."""
        return self.path / "server"

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


class StorageError(OSError):
    """A file the harness writes could not be written: a full disk, a read-only file system, a directory gone.

    Its message is one line naming the file and the cause (`no space left on device writing /x/result.json`):
    an OSError raised by close() or by pyarrow names no file, and the file says which storage root to fix
    (`explain_storage`). Built like any OSError, `StorageError(errno, strerror, filename)`, so it pickles."""

    def __str__(self) -> str:
        cause = os.strerror(self.errno) if self.errno else self.strerror or "cannot write"
        return f"{cause[:1].lower()}{cause[1:]} writing {self.filename}"


def storage_error(error: OSError, path: Path | str) -> StorageError:
    """`error`, raised writing `path`, as a StorageError naming `path` (absolute: the roots are matched by it)."""
    if isinstance(error, StorageError):
        return error
    return StorageError(error.errno, error.strerror or str(error), str(Path(path).absolute()))


def as_storage_error(error: BaseException) -> BaseException:
    """A StorageError for an OSError that only a write raises (disk full, quota, read-only) and names its file;
    any other error as it is. The original stays the cause, for the trace."""
    if (
        isinstance(error, OSError)
        and not isinstance(error, StorageError)
        and error.errno in WRITE_ERRNOS
        and error.filename
    ):
        converted = storage_error(error, error.filename)
        converted.__cause__ = error
        return converted
    return error


@dataclass(frozen=True)
class WriteRoot:
    """A directory the harness writes under and the setting that chooses it, for the advice in a storage error."""

    name: str  # "run dir", "cache dir", "storage root"
    path: Path
    setting: str  # "hydra.run.dir", "cache_dir", "storage"


def explain_storage(message: str, roots: Iterable[WriteRoot]) -> str:
    """A StorageError's message (also as a Spark task's error text) with the root its file is under and what to
    do: `no space left on device writing /x/y/result.json (run dir /x/y): free space there or choose another
    hydra.run.dir`. The innermost root wins (a cache dir may lie in a run dir); a file under none is left as is."""
    paths = {root: Path(root.path).expanduser().absolute() for root in roots}
    spelt = {root: {str(path), str(path.resolve())} for root, path in paths.items()}  # a file may be named either way
    under = [root for root in paths if any(f" writing {form}{os.sep}" in message for form in spelt[root])]
    if not under:
        return message
    root = max(under, key=lambda root: len(str(paths[root].resolve())))
    full = any(os.strerror(number).lower() in message.lower() for number in FULL_ERRNOS)
    todo = "free space there" if full else "make it writable"
    return f"{message} ({root.name} {paths[root]}): {todo} or choose another {root.setting}"


def temporary_name(path: Path) -> Path:
    """A hidden name beside `path` that no other writer uses, `.NAME.PID-HOST-RANDOM.tmp`: two processes writing one
    entry of a cache shared by two machines (a `cache_dir` over NFS) may have the same PID, and two writes into
    one temporary file would rename a mix of both. The PID and host say whose it is; the random part makes it
    unique."""
    return path.with_name(f".{path.name}.{os.getpid()}-{socket.gethostname()}-{uuid.uuid4().hex[:12]}.tmp")


@contextmanager
def staged(path: Path) -> Iterator[Path]:
    """A hidden temporary name beside `path` (`temporary_name`) for the block to write; renamed to `path` when the
    block ends, so a reader sees the old file or the whole new one, never a part. When the block or the rename
    fails, the temporary file is removed (a full disk keeps no half file, a killed job's is hidden), and an
    OSError is raised as a StorageError naming `path`."""
    path = Path(path)
    staging = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield staging
        os.replace(staging, path)
    except BaseException as error:
        with suppress(OSError):  # its directory may be gone, or read-only with nothing in it
            staging.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise storage_error(error, path) from error
        raise


def atomic_write(path: Path, data: str | bytes) -> Path:
    """Write `data` to `path` through a hidden temporary file in the same directory and a rename (`staged`):
    whole or absent, and a StorageError naming `path` when it cannot be written. Text is written as UTF-8,
    whatever the locale."""
    with staged(path) as staging:
        staging.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return Path(path)
