"""What another run holds, for the side-by-side tests: a lock held by another process (`lock_held_elsewhere`: a small
Python process that takes the flock as the tool does, names itself in the lock file, says so, and sleeps until the
test stops it by its PID), and ports another program took between the tool's probe and its bind (`ports_taken`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.helpers.cli import checkout_env

HOLD_LOCK = """
import sys, time
from pathlib import Path
from pipeline.runtime.locks import bounded_lock
with bounded_lock(Path(sys.argv[1]), 5, "holding it for a test"):
    print("held", flush=True)
    time.sleep(120)
"""


@contextmanager
def lock_held_elsewhere(lock_file: Path) -> Iterator[subprocess.Popen]:
    """A process holding an exclusive flock on `lock_file` for the block; killed by its PID after."""
    args = [sys.executable, "-c", HOLD_LOCK, str(lock_file)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env={**os.environ, **checkout_env()})
    try:
        assert process.stdout.readline().strip() == "held"
        yield process
    finally:
        process.kill()
        process.wait(timeout=30)
        process.stdout.close()


@contextmanager
def ports_taken(count: int) -> Iterator[list[int]]:
    """`count` loopback ports this process listens on for the block: what another program that bound a probed port
    first looks like to the process that probed it."""
    sockets = []
    try:
        for _ in range(count):
            taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(taken)
            taken.bind(("127.0.0.1", 0))
            taken.listen()
        yield [taken.getsockname()[1] for taken in sockets]
    finally:
        for taken in sockets:
            taken.close()


class _AsAnotherMachine:
    """The `os` and `socket` modules as `pipeline.rundir` sees them in `write_entry_as`: PID 4242 and another host
    name, the rest as they are (the real `os.getpid` stays: multiprocessing needs it)."""

    def __init__(self, module: Any, **replaced: Any) -> None:
        self._module, self._replaced = module, replaced

    def __getattr__(self, name: str) -> Any:
        return self._replaced[name] if name in self._replaced else getattr(self._module, name)


def write_entry_as(host: str, path: str, payload: bytes, barrier, errors) -> None:
    """Write `payload` to cache entry `path` 40 times through `atomic_write`, as a process of PID 4242 on `host`: one
    of two machines' writers that have the same PID. The target of a spawned process (this module imports little,
    so it starts fast); an error goes to the `errors` queue for the test."""
    from pipeline import rundir

    rundir.os = _AsAnotherMachine(os, getpid=lambda: 4242)  # this spawned process's own; the other's is the same
    rundir.socket = _AsAnotherMachine(socket, gethostname=lambda: host)
    try:
        barrier.wait(timeout=60)
        for _ in range(40):
            rundir.atomic_write(Path(path), payload)
    except BaseException as error:  # noqa: BLE001 - reported to the test, which fails on it
        errors.put(f"{host}: {error!r}")
