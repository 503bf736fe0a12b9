"""Processes the harness started (a standalone cluster, Ray, a job's driver JVM), stopped with everything they
spawned, and the signals while they run.

`stop_processes` stops process trees by PID through psutil, which identifies a process by its PID and
creation time, so a PID that was reused by another process is never signalled. `SignalGuard` makes SIGTERM
stop this process like Ctrl-C does while a cluster is up, and keeps a second signal from cutting the
cleanup short.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterable
from typing import Any

import psutil

log = logging.getLogger(__name__)


class ProcessesSurvived(RuntimeError):
    """Processes the harness started were still running after SIGKILL."""


class Terminated(SystemExit):
    """Raised in the main thread by SIGTERM while a standalone cluster is up, so its cleanup runs.

    A SystemExit (exit status 143, as if killed by the signal) rather than an Exception: `except Exception`
    blocks in the body must not swallow it.
    """

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


class SignalGuard:
    """SIGTERM raises `Terminated` in the main thread while the cluster is up (`kill PID` then stops it like
    Ctrl-C does); during the cleanup (`defer`), SIGTERM and SIGINT are noted and ignored, so a second kill
    or Ctrl-C cannot cut it short and leave processes behind; `restore` brings the previous handlers back.
    Off the main thread Python cannot install handlers: then only the normal exits are covered."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.active = threading.current_thread() is threading.main_thread()
        if not self.active:
            log.warning("cluster() entered off the main thread: SIGTERM will not stop the standalone cluster")
            return
        self.previous = {sig: signal.getsignal(sig) for sig in self.SIGNALS}
        signal.signal(signal.SIGTERM, self._terminate)

    @staticmethod
    def _terminate(signum: int, frame: Any) -> None:
        raise Terminated()

    @staticmethod
    def _ignore(signum: int, frame: Any) -> None:
        log.warning("signal %d ignored while the standalone cluster is being stopped", signum)

    def defer(self) -> None:
        if self.active:
            for sig in self.SIGNALS:
                signal.signal(sig, self._ignore)

    def restore(self) -> None:
        if self.active:
            for sig, handler in self.previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def running(process: psutil.Process) -> bool:
    """The very process (PID and creation time) still runs: exited, zombie and reused-PID count as gone."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # ZombieProcess included
        return False
    except psutil.AccessDenied:
        return True


def jvm_above(pid: int) -> psutil.Process | None:
    """The nearest Java ancestor of `pid` (a Python worker's JVM: its executor's, or a local-mode driver's), None
    if there is none."""
    for ancestor in psutil.Process(pid).parents():
        try:
            if ancestor.name().startswith("java"):
                return ancestor
        except psutil.Error:  # gone, a zombie, or not ours to read
            continue
    return None


def descendants() -> set[psutil.Process]:
    """Every process under this one now (what an engine started is those not there before it started)."""
    try:
        return set(psutil.Process().children(recursive=True))
    except psutil.Error:
        return set()


def python_helpers() -> set[psutil.Process]:
    """This process's own Python helpers: multiprocessing's resource tracker, which the first process pool
    with the spawn context starts, which ignores SIGTERM and SIGINT by design and which exits when this
    process does (it reads a pipe until EOF). Not one of the processes a run started: leave it be."""
    from multiprocessing import resource_tracker

    pid = getattr(resource_tracker._resource_tracker, "_pid", None)  # CPython keeps no public handle on it
    handle = _handle(pid) if pid else None
    return {handle} if handle is not None else set()


def _handle(target: int | psutil.Process) -> psutil.Process | None:
    if isinstance(target, psutil.Process):
        return target
    try:
        return psutil.Process(target)
    except psutil.NoSuchProcess:
        return None


def _wait(processes: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Those of `processes` still running after at most `timeout` s; reaps the ones that are our children.

    psutil.wait_procs alone would wait for a zombie whose parent does not reap it, and for a process that
    took over a PID; those are gone here."""
    deadline = time.monotonic() + timeout
    alive = list(processes)
    while True:
        _, alive = psutil.wait_procs(alive, timeout=max(0.0, min(0.1, deadline - time.monotonic())))
        alive = [process for process in alive if running(process)]
        if not alive or time.monotonic() >= deadline:
            return sorted(alive, key=lambda process: process.pid)


def _add_descendants(known: dict[psutil.Process, None]) -> None:
    """Add to `known` (an ordered set) every descendant of its members that still run."""
    for process in list(known):
        if not running(process):
            continue
        try:
            children = process.children(recursive=True)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for child in children:
            known.setdefault(child, None)


def _send(process: psutil.Process, sig: int) -> None:
    try:
        process.send_signal(sig)  # checks the creation time first: a reused PID raises NoSuchProcess
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass


def _describe(process: psutil.Process) -> str:
    try:
        return f"{process.pid} ({' '.join(process.cmdline())[:200]})"
    except psutil.Error:
        return str(process.pid)


def stop_processes(targets: Iterable[int | psutil.Process], timeout: float = 20.0) -> None:
    """Stop processes and everything they spawned: SIGTERM, wait, SIGKILL; raise ProcessesSurvived if any do.

    `targets` are PIDs, or psutil.Process handles taken when the processes started (their identity then
    dates from the start, not from this call). Descendants (a standalone Worker's executor JVMs, their
    pyspark daemons and Python workers) are collected with `children(recursive=True)` before the first
    signal, because once their parent dies they are re-parented and nothing links them to it any more;
    processes spawned while waiting are added as they appear. The targets get SIGTERM first, in order, and
    time to stop their own children cleanly (a Worker kills its executors on shutdown); descendants still
    running once their roots are gone get SIGTERM, and whatever is left at `timeout` gets SIGKILL. Every
    process is known by PID and creation time, so a reused PID is never hit. Zombies count as gone (ours
    are reaped).
    """
    handles = [handle for handle in map(_handle, targets) if handle is not None]
    still = set(_wait(handles, 0.0))
    roots = [handle for handle in handles if handle in still]
    if not roots:
        return
    known = dict.fromkeys(roots)
    _add_descendants(known)
    for process in roots:
        _send(process, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    orphans_signalled = False
    while True:
        _add_descendants(known)
        alive = _wait(known, 0.1)
        if not alive:
            return
        if not orphans_signalled and not any(process in roots for process in alive):
            for process in alive:
                _send(process, signal.SIGTERM)
            orphans_signalled = True
        if time.monotonic() > deadline:
            break
    log.warning("SIGKILL to %s: still running %.0f s after SIGTERM", ", ".join(map(_describe, alive)), timeout)
    for process in alive:
        _send(process, signal.SIGKILL)
    alive = _wait(alive, 5.0)
    if alive:
        raise ProcessesSurvived(f"processes still running after SIGKILL: {', '.join(map(_describe, alive))}")


def tree_cpu_s(tree: list[psutil.Process]) -> float:
    """CPU seconds (user + system) the processes of `tree` have used so far (a process gone counts nothing): what
    a model server's PyTriton, Triton and Python stubs take from the decoding tasks beside it."""
    total = 0.0
    for process in tree:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total
