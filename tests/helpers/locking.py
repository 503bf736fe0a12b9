"""A lock held by another process, for the tests of bounded waits (`pipeline.runtime.locks`): a small Python
process that takes the flock as the tool does, names itself in the lock file, says so, and sleeps until the test
stops it by its PID."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
