"""A model server's process: started in the server environment, waited for until it is ready, each failed
start told apart from a start worth another try. Both sides use it: the harness (`pipeline.serving.launcher`, one
server on this machine) and a node's barrier task (`pipeline.serving.on_node`, one per worker node), which must
not import torch to start a server that imports it itself: nothing here does.

PyTriton's handshake with its stubs has a fixed 1 s deadline that a loaded machine can miss: a start that fails
that way is retried (twice), and so is a start that found a probed free port taken by another program before
Triton bound it (`PORT_TAKEN`: each attempt probes new ports and logs to its own file, and each retried one is
recorded); any other failed start raises ServerError with the log's last lines.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from pipeline.runtime.processes import stop_processes

log = logging.getLogger(__name__)

HANDSHAKE_FAILURE = "get_config_from_handshake_server"
# What Triton 2.x of PyTriton 0.7.0 logs (then exits 1) when one of its ports is bound by another process, staged
# for each port (tests/test_model_server.py), e.g.
#   E1207 01:23:29.253662 19706 main.cc:245] "failed to start GRPC service: Unavailable - Socket '127.0.0.1:41659'
#   already in use "
# (one line; HTTP at main.cc:257 and Metrics at main.cc:293 the same). gRPC core's own "Address already in use"
# (errno 98) line comes before it for the gRPC port only, so the service line is the one matched.
PORT_TAKEN = re.compile(r"failed to start (GRPC|HTTP|Metrics) service: Unavailable - Socket '([^']+)' already in use")
START_ATTEMPTS = 3
USAGE_FILE = "device_usage.json"  # model=accelerator: the server's simulated-device totals (server.publish_usage)


class ServerError(RuntimeError):
    """The model server could not be started."""


def port_taken(log_text: str) -> str | None:
    """Which of Triton's ports another process held when Triton bound it ("the GRPC port 127.0.0.1:N"), from a
    server's log, or None: only Triton's own line for a port conflict counts (`PORT_TAKEN`), so no other failure
    that mentions a port is mistaken for a race that a new probe fixes."""
    found = PORT_TAKEN.search(log_text)
    return f"the {found.group(1)} port {found.group(2)}" if found else None


def retryable(log_text: str) -> str | None:
    """Why a failed start (its log) is worth another attempt on new ports, or None."""
    if HANDSHAKE_FAILURE in log_text:
        return "PyTriton's 1 s handshake"
    taken = port_taken(log_text)
    if taken is not None:
        return f"{taken} was taken by another process after it was probed free"
    return None


def _port_conflict(log_file: Path) -> bool:
    """Whether a starting server's log already says Triton found a port taken. Triton then exits at once, but
    PyTriton's process waits for it to get ready for its full startup timeout (120 s, more when its readiness probe
    reached the other process's port), so the harness stops it then instead of waiting for it to exit."""
    try:
        return port_taken(log_file.read_text(errors="replace")) is not None
    except OSError:
        return False


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    interesting = [line for line in text if "Error" in line or "error" in line] or text
    return " | ".join(line.strip()[:300] for line in interesting[-lines:])


def _start_once(
    python: Path,
    spec: dict,
    server_dir: Path,
    timeout_s: float,
    attempt: int,
    env: dict[str, str],
    log_dir: Path,
    started: Callable[[psutil.Process], None],
) -> tuple[Any, ...]:
    spec_file, ready_file = server_dir / "spec.json", Path(spec["ready"])
    ready_file.unlink(missing_ok=True)
    spec_file.write_text(json.dumps(spec))
    spec_file.chmod(0o600)  # it holds the statistics token
    log_file = log_dir / ("server.log" if attempt == 1 else f"server.{attempt}.log")
    with open(log_file, "w") as out:
        popen = subprocess.Popen(
            [str(python), "-m", "pipeline.serving.server", str(spec_file)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # a Ctrl-C of the job's group reaches the harness, which stops it by PID
        )
    process = psutil.Process(popen.pid)
    started(process)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready_file.exists():
            return popen, process, json.loads(ready_file.read_text()), log_file
        if popen.poll() is not None:
            stop_processes([process])
            return popen, None, None, log_file
        if _port_conflict(log_file):
            stop_processes([process])
            popen.wait(timeout=10)  # stop_processes counts a zombie as gone: reaped here, none left per attempt
            return popen, None, None, log_file
        time.sleep(0.2)
    stop_processes([process])
    raise ServerError(
        f"the model server did not get ready within {timeout_s:.0f} s (topology.start_timeout_s); log: {log_file}"
    )


def _ended(popen: subprocess.Popen, log_text: str) -> str:
    """How a failed attempt ended, for its error: its own exit, or the harness's stop once its log said a port
    was taken (whose exit status says nothing: the harness's SIGTERM)."""
    taken = port_taken(log_text)
    if taken is not None:
        return f"was stopped ({taken} was taken, on the last of {START_ATTEMPTS} attempts)"
    return f"exited (exit {popen.returncode})"


def start(
    python: Path,
    spec_for: Callable[[], dict[str, Any]],
    server_dir: Path,
    timeout_s: float,
    env: dict[str, str],
    log_dir: Path | None = None,
    started: Callable[[psutil.Process], None] = lambda process: None,
) -> tuple[subprocess.Popen, psutil.Process, dict[str, Any], Path, dict[str, Any], list[dict[str, Any]]]:
    """Start the server of `spec_for()` (a fresh spec each attempt: new free ports) and wait until it is ready:
    (popen, process, its ready file, its log, the spec, the attempts retried). `started` is told each process as
    soon as it runs. A start that failed in PyTriton's 1 s handshake or on a port taken after the probe is tried
    again (at most START_ATTEMPTS in all, each with its own log, each retried one recorded: attempt, PID, log,
    why, seconds until it failed), any other failure raises ServerError."""
    retried: list[dict[str, Any]] = []
    for attempt in range(1, START_ATTEMPTS + 1):
        spec = spec_for()
        began = time.monotonic()
        popen, process, ready, log_file = _start_once(
            python, spec, server_dir, timeout_s, attempt, env, log_dir or server_dir, started
        )
        if process is not None:
            return popen, process, ready, log_file, spec, retried
        tail, text = _tail(log_file), log_file.read_text(errors="replace")
        why = retryable(text)
        if why is None or attempt == START_ATTEMPTS:
            raise ServerError(f"the model server {_ended(popen, text)} before it was ready: {tail}; log: {log_file}")
        failed_s = round(time.monotonic() - began, 1)
        retried.append({"attempt": attempt, "pid": popen.pid, "log": str(log_file), "why": why, "failed_s": failed_s})
        log.warning("model server start %d failed (%s): starting it again; log: %s", attempt, why, log_file)
    raise AssertionError("unreachable")
