"""Finding the processes a run or a test started, and which of them outlived it (psutil: PIDs get reused, so a
process is known by its PID and its start time)."""

from __future__ import annotations

import time
from collections.abc import Iterable

import psutil

from pipeline.runtime.processes import running


def cmdline(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


def tree(pids: Iterable[int]) -> dict[int, float]:
    """PID -> start time of `pids` and all their live descendants."""
    found: dict[int, float] = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
            family = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for process in family:
            if running(process):
                try:
                    found[process.pid] = process.create_time()
                except psutil.Error:
                    pass
    return found


def survivors(processes: dict[int, float]) -> list[int]:
    """The processes of `processes` (PID -> start time) still running: same PID and start time, not a zombie."""
    alive = []
    for pid, start in processes.items():
        try:
            process = psutil.Process(pid)
            if process.create_time() == start and running(process):
                alive.append(pid)
        except psutil.Error:
            pass
    return alive


def wait_until_gone(processes: dict[int, float], seconds: float) -> list[int]:
    """Wait up to `seconds` for `processes` (PID -> start time) to exit; those still running then."""
    deadline = time.monotonic() + seconds
    while (left := survivors(processes)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def processes_of(result: dict) -> list[str]:
    """Live processes a run started: its standalone master and workers, and any executor of its application."""
    app_id = result["cluster"].get("app_id") or "no-app"
    pids = set(result["cluster"].get("pids", []))
    alive = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        line = " ".join(process.info["cmdline"] or [])
        if (process.info["pid"] in pids or app_id in line) and running(process):
            alive.append(f"{process.info['pid']}: {line[:200]}")
    return alive


def gone(pid: int) -> bool:
    """No live process has this PID (a zombie counts as gone)."""
    try:
        return not running(psutil.Process(pid))
    except psutil.Error:
        return True
