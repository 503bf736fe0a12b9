"""A child process that does not outlive its parent: when the parent dies, even by SIGKILL, the child gets a
signal and runs its own way out (the job: SIGINT, its Ctrl-C path, which stops its Spark application and any
cluster it started; a data generation worker: SIGTERM).

Linux: `prctl(PR_SET_PDEATHSIG)`, delivered by the kernel the moment the parent exits. Elsewhere (or if prctl
fails): a daemon thread that notices the parent is gone within a second.

A process that must outlive its parent but not another process (`die_with_process`: a model server started
on a worker node by a reused Python worker, which Spark ends after a minute idle, must live as long as the
executor JVM above it): a daemon thread that watches that process by PID and start time.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

PARENT_ENV = "SPARK_INFERENCE_BENCH_PARENT_PID"
PR_SET_PDEATHSIG = 1


def _watch(parent: int, signum: int, every_s: float) -> None:
    while os.getppid() == parent:
        time.sleep(every_s)
    os.kill(os.getpid(), signum)


def die_with_parent(parent: int | None = None, signum: int = signal.SIGTERM, every_s: float = 1.0) -> None:
    """Send `signum` to this process when its parent (PID `parent`, by default the present one) dies.

    Call it first thing in the child: a parent that died before the call is caught too (this process was
    then re-parented, and gets the signal at once)."""
    parent = os.getppid() if parent is None else parent
    armed = False
    if sys.platform.startswith("linux"):
        try:
            armed = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if not armed:
        threading.Thread(target=_watch, args=(parent, signum, every_s), name="die-with-parent", daemon=True).start()
    if os.getppid() != parent:
        os.kill(os.getpid(), signum)


def _watch_process(pid: int, started: float, signum: int, every_s: float) -> None:
    import psutil

    while True:
        try:
            process = psutil.Process(pid)
            alive = process.create_time() == started and process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            alive = False
        if not alive:
            os.kill(os.getpid(), signum)
            return
        time.sleep(every_s)


def die_with_process(pid: int, started: float, signum: int = signal.SIGTERM, every_s: float = 0.5) -> None:
    """Send `signum` to this process within `every_s` of process `pid` (created at `started`, psutil's
    create_time, so a reused PID does not count) being gone, at once if it is gone already; any process, not
    only the parent (prctl knows the parent only)."""
    threading.Thread(
        target=_watch_process, args=(pid, started, signum, every_s), name="die-with-process", daemon=True
    ).start()


def parent_from_env() -> int | None:
    """The PID the parent put in PARENT_ENV for its child, if any."""
    value = os.environ.get(PARENT_ENV, "")
    return int(value) if value.isdigit() else None


def on_termination(cleanup: Callable[[], None], signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGHUP)) -> None:
    """Run `cleanup` when this process is ended by one of `signals`, then end by that signal as it would have.

    Python runs no `atexit` or `finally` for a signal left at its default action, so what a process removes
    when it ends (a run dir's claim file) would stay. Installed only where the signal still has its default
    action, from the main thread (the only one that may), so a handler of the process's own (`python -m
    pipeline` forwarding SIGTERM to its job) is kept. Installing it again is a no-op."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in signals:
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, functools.partial(_clean_then_die, cleanup))


def _clean_then_die(cleanup: Callable[[], None], signum: int, frame: object) -> None:
    try:
        cleanup()
    finally:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
