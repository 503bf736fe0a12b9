"""A directory one run at a time: a run claims its run dir (a sweep its sweep dir and each job dir) before it writes
anything there, so a second run into the same directory fails at once naming the holder, instead of both doing all
their work and then failing on each other's files (two Spark event logs, one result.json).

The claim is an exclusive `flock` on `DIR/.claim`, which holds the holder's PID, host and process start time. The
kernel drops a flock however its holder ends (success, failure, Ctrl-C, SIGTERM, SIGKILL), so a claim can never
outlive its run on this machine; a run that ends normally, by an exception or by SIGTERM (`lifetime.on_termination`)
also removes the file. A file left behind (the run was killed) whose process is gone is taken over with a warning.
A file naming another host is refused even when the flock was granted: a network filesystem without coherent locks
grants every flock, and whether that host's run is still going cannot be seen from here (the message says which
file to remove once it is over).

A claim is held by this process and, through `fd` handed to a child (`subprocess.Popen(pass_fds=...)`), by that
child too: the flock then lasts until both have ended, so a job that outlives a killed parent for a moment still
holds its directory. Claiming a directory this process already holds nests (`depth`); the outermost release frees it.

A directory above or below one another live process claims is refused too (`relative_in_use`): Hydra writes `.hydra/`
and its log into a run dir, so a run into a held sweep's job dir, or a sweep around a held run dir, would write into
the other run's files. This process's own claims nest (a sweep holds its sweep dir and then each job dir).
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psutil

from pipeline.rundir import storage_error
from pipeline.runtime.lifetime import on_termination

log = logging.getLogger(__name__)

CLAIM_FILE = ".claim"  # hidden: the reports and `files_named` never see it
ATTEMPTS = 5  # a claim file removed between our open and our flock is opened again, a bounded number of times
PROBE_GRACE_S = 0.05  # a flock refused for this long is held: another run's probe holds it for microseconds
SCAN_DIRS = 10_000  # the directories under a claimed one searched for claims of other runs


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a claim, as its claim file says."""

    pid: int
    host: str
    started: float  # the process's start time (psutil), so a reused PID is not taken for the holder

    def alive_here(self) -> bool:
        """This host's process `pid` is still the one that wrote the claim."""
        try:
            return abs(psutil.Process(self.pid).create_time() - self.started) < 1.0
        except psutil.Error:
            return False

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started)) if self.started else "?"
        return f"PID {self.pid} on host {self.host} (started {since})"


class DirectoryInUse(RuntimeError):
    """Another run holds the directory; the message is one line naming it, the holder and what to do."""

    def __init__(self, directory: Path, holder: Holder | None, advice: str) -> None:
        who = holder.describe() if holder is not None else "another process (its claim file is being written)"
        super().__init__(f"{directory} is in use by {who}: {advice}")
        self.directory = directory
        self.holder = holder


def this_host() -> str:
    return socket.gethostname()


def me() -> Holder:
    return Holder(os.getpid(), this_host(), psutil.Process().create_time())


@dataclass
class Claim:
    directory: Path
    path: Path
    fd: int
    depth: int = 1

    def release(self) -> None:
        """Drop one level; at the outermost, remove the claim file and drop the flock."""
        self.depth -= 1
        if self.depth > 0:
            return
        _held.pop(self.directory, None)
        with suppress(OSError):  # the directory may be gone
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        with suppress(OSError):
            os.close(self.fd)


_held: dict[Path, Claim] = {}


def _key(directory: Path | str) -> Path:
    """One name per directory as this process spells it (`a/../b` is `b`): the callback and the job name the run
    dir differently, and a second flock from this process would be refused as another run's."""
    return Path(os.path.abspath(directory))


def read_holder(fd: int) -> Holder | None:
    """The holder a lock file `fd` names (`write_holder`), or None while it is empty or being written."""
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"null")
        return Holder(int(record["pid"]), str(record["host"]), float(record.get("started", 0.0)))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def write_holder(fd: int) -> None:
    """Name this process in lock file `fd` (after taking its flock): whoever finds the lock taken can say who holds
    it, and a file left by a killed holder can be told from a live one (`Holder.alive_here`)."""
    mine = me()
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": mine.pid, "host": mine.host, "started": mine.started}).encode(), 0)


def _refuse(fd: int, directory: Path, holder: Holder | None, advice: str) -> DirectoryInUse:
    os.close(fd)
    return DirectoryInUse(directory, holder, advice)


def claim(directory: Path, setting: str = "the directory") -> Claim:
    """Hold `directory` (created if missing) for this process; raises DirectoryInUse at once when another run holds
    it, or a directory above or below it (`relative_in_use`). `setting` names what chooses the directory, for the
    advice (`hydra.run.dir`)."""
    directory = _key(directory)
    held = _held.get(directory)
    if held is not None:
        held.depth += 1
        return held
    _refuse_relatives(directory, setting)  # before anything is made: the holder's directory stays as it was
    created = _missing(directory)
    held = _take(directory, setting)
    try:  # again, now that this claim is visible: of two runs claiming nested dirs at once, one sees the other
        _refuse_relatives(directory, setting)
    except DirectoryInUse:
        held.release()
        for made in reversed(created):
            with suppress(OSError):
                made.rmdir()
        raise
    on_termination(_release_all)  # a SIGTERM before the job starts: the claim file goes too
    _held[directory] = held
    return held


def _missing(directory: Path) -> list[Path]:
    """`directory` and those above it that do not exist yet, outermost first: what a refused claim removes."""
    missing = [parent for parent in (directory, *directory.parents) if not parent.exists()]
    return missing[::-1]


def _take(directory: Path, setting: str) -> Claim:
    """The flock on DIR/.claim, with this process named in it, or DirectoryInUse."""
    path = directory / CLAIM_FILE
    for _ in range(ATTEMPTS):
        try:  # a read-only or full run dir: the one-line StorageError every other write there gives
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise storage_error(error, path) from error
        if not _flock(fd):
            raise _refuse(fd, directory, read_holder(fd), f"choose another {setting}, or wait for that run to end")
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # its holder released it (removing the file) between our open and our flock: open it anew
            os.close(fd)
            continue
        earlier = read_holder(fd)
        if earlier is not None:
            if earlier.host != this_host():
                advice = f"if that run is over, remove {path}; else choose another {setting}"
                raise _refuse(fd, directory, earlier, advice)
            if earlier.alive_here():  # granted, yet its writer runs: this filesystem's flock is not to be trusted
                raise _refuse(fd, directory, earlier, f"choose another {setting}, or wait for that run to end")
            log.warning("%s: taking over the claim of %s, which is gone", directory, earlier.describe())
        write_holder(fd)
        return Claim(directory, path, fd)
    raise DirectoryInUse(directory, None, f"its claim file {path} kept changing; choose another {setting}")


def _flock(fd: int) -> bool:
    """The exclusive flock of `fd`, tried a few times over PROBE_GRACE_S: another run's `relative_in_use` probe
    holds a shared flock for an instant, which must not read as a holder."""
    for attempt in range(3):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt < 2:
                time.sleep(PROBE_GRACE_S / 2)
    return False


def _refuse_relatives(directory: Path, setting: str) -> None:
    """DirectoryInUse when another run holds a directory above or below `directory`."""
    found = relative_in_use(directory)
    if found is None:
        return
    relative, holder = found
    where = f"{directory} lies inside it" if relative in directory.parents else f"it lies inside {directory}"
    advice = f"{where}; choose another {setting}, or wait for that run to end"
    raise DirectoryInUse(relative, holder, advice)


def relative_in_use(directory: Path) -> tuple[Path, Holder | None] | None:
    """A directory above `directory` (a sweep dir around a job dir) or below it (a run dir inside a sweep dir to
    be) that another live process has claimed, with its holder. Hydra writes `.hydra/` and the log into a run
    dir, a sweep into its job dirs: a run inside another's dir, or around it, would write into the other's files.
    This process's own claims do not count (a sweep holds its sweep dir and each job dir)."""
    for relative in (*directory.parents, *_below(directory)):
        if relative in _held or not (relative / CLAIM_FILE).is_file():
            continue
        held, holder = _held_elsewhere(relative / CLAIM_FILE)
        if held:
            return relative, holder
    return None


def _below(directory: Path) -> Iterator[Path]:
    """The directories under `directory` (not itself), at most SCAN_DIRS of them: a claim lies in a run dir, and
    a run dir holds few directories; a huge tree is not a run's."""
    seen = 0
    for parent, names, _ in os.walk(directory):
        for name in names:
            seen += 1
            if seen > SCAN_DIRS:
                return
            yield Path(parent, name)


def _held_elsewhere(path: Path) -> tuple[bool, Holder | None]:
    """Whether a live process holds the flock of claim file `path`, and the holder it names (None: not named yet).
    A shared flock tried and dropped at once: it fails only while an exclusive one is held."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False, None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True, read_holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False, None
    finally:
        os.close(fd)


@contextmanager
def claimed(directory: Path, setting: str = "the directory") -> Iterator[Claim]:
    """`claim` for the block."""
    held = claim(directory, setting)
    try:
        yield held
    finally:
        held.release()


def holder_of(directory: Path) -> Claim | None:
    """This process's claim of `directory`, if it holds one."""
    return _held.get(_key(directory))


def unique_dir(base: Path, limit: int = 1000) -> Path:
    """`base`, or `base_2`, `base_3`, ...: the first that did not exist and this call created (mkdir is atomic, also
    over NFS), so two runs naming their directory by the same second never get the same one."""
    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, limit + 1):
        candidate = base if n == 1 else base.with_name(f"{base.name}_{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"{base} and {limit - 1} numbered siblings exist")


def _release_all() -> None:
    for held in list(_held.values()):
        held.depth = 1
        held.release()


atexit.register(_release_all)
