"""Storage that fails for real: a tiny tmpfs that fills up, a directory made read-only under a running job.

Mounting needs root (and, in a container, CAP_SYS_ADMIN); a test that cannot mount is skipped with the reason.
Whatever the test does, what was mounted is unmounted when its block ends (lazily if a process still holds a
file there), so nothing is left mounted over the test's temporary directory.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def require_root() -> None:
    """Skip the test, saying why, where this process may not mount."""
    if os.geteuid() != 0:
        pytest.skip("mounting a file system needs root")


def _mount(*args: str) -> None:
    """`mount ARGS`; the test is skipped, with mount's reason, where it fails (a container without CAP_SYS_ADMIN)."""
    try:
        done = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        pytest.skip("no mount(8) on this machine")
    if done.returncode != 0:
        pytest.skip(f"cannot mount ({' '.join(args)}): {' '.join(done.stderr.split()) or done.returncode}")


def _unmount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True, timeout=30).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)  # still busy: detach it now


@contextmanager
def tiny_filesystem(path: Path, size: str = "64k") -> Iterator[Path]:
    """A tmpfs of `size` (mount's syntax: 64k, 1m) mounted at `path`, made if missing, for the block."""
    require_root()
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        _unmount(path)


@contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """The directory `path` read-only for the block, for root too (who ignores mode bits): a read-only bind
    mount of it over itself. Files opened before keep writing where they were; every new write fails with
    `Read-only file system`, as on a file system remounted read-only."""
    require_root()
    _mount("--bind", str(path), str(path))
    try:
        _mount("-o", "remount,bind,ro", str(path))
        yield path
    finally:
        _unmount(path)


def fill(directory: Path) -> Path:
    """Fill the file system of `directory` with one file until it has no byte left; that file."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as handle:  # unbuffered: closing has nothing left to write
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
    return filler


def staging_files(root: Path) -> list[Path]:
    """The temporary files of unfinished writes under `root`: `.NAME.PID.tmp` (`pipeline.rundir.staged`) and data set
    staging dirs (`NAME.tmp-PID`)."""
    return sorted(path for path in root.rglob("*") if path.name.endswith(".tmp") or ".tmp-" in path.name)
