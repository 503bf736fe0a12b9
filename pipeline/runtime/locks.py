"""A lock that is waited for, but not forever: an exclusive `flock` on a lock file, for work that one process at a
time does and the others wait out (generating a cached data set, making the model server's environment).

A wait without a bound hangs a run whose lock's holder hangs (a stuck generation, a process stopped with SIGSTOP, a
network filesystem's lock never released), and says nothing about why. So the wait is bounded by what the work can
take, and when it runs out the error names the lock file and its holder: the holder writes its PID, host and start
time into the lock file once it has the flock (`pipeline.runtime.claim.write_holder`, the record a run dir's claim
holds). The lock file itself is never removed: removing it would let a waiter lock a file no longer in the
directory while a newcomer locks the new one.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from pipeline.runtime.claim import read_holder, write_holder

log = logging.getLogger(__name__)

POLL_S = 0.2  # how often a waiter tries the flock again: a blocking flock cannot be given a deadline


class LockTimeout(RuntimeError):
    """The lock was held by another process for longer than the wait's bound; the message names the file, the
    holder and how long was waited."""


@contextmanager
def bounded_lock(lock_file: Path, wait_s: float, doing: str) -> Iterator[None]:
    """Hold an exclusive flock on `lock_file` for the block, waiting at most `wait_s` for another holder; `doing`
    says what the holder does, for the log and the error ("generating data set X")."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        _acquire(fd, lock_file, wait_s, doing)
        with suppress(OSError):  # a full disk: the lock holds all the same, a waiter just cannot name its holder
            write_holder(fd)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, lock_file: Path, wait_s: float, doing: str) -> None:
    """Take the flock of `fd`, trying again every POLL_S until `wait_s` has passed; LockTimeout then."""
    deadline = time.monotonic() + wait_s
    logged = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        if not logged:
            log.info("waiting (at most %.0f s) for %s, %s: %s", wait_s, _who(fd), doing, lock_file)
            logged = True
        if time.monotonic() >= deadline:
            raise LockTimeout(
                f"waited {wait_s:.0f} s for {_who(fd)}, {doing} (lock file {lock_file}): if that process is stuck, "
                f"stop it; if it is gone, the lock is held over a network filesystem that did not release it"
            )
        time.sleep(POLL_S)


def _who(fd: int) -> str:
    holder = read_holder(fd)
    return holder.describe() if holder is not None else "another process"
