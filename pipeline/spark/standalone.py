"""A standalone master and workers started here from the installed pyspark, for the length of a block.

`standalone(plan, run_dir, worker_conf)` starts a master and `plan.workers` workers on the loopback with
`bin/spark-class`, each in its own process group with its log in `run_dir/cluster/`, waits until every
worker has registered (failing fast, with the logs' last lines, if a process exits), checks that each offers
the planned GPUs, and records commands, PIDs and timings in `run_dir/cluster/cluster.json`. However the
block ends (return, exception, Ctrl-C, SIGTERM), the workers are stopped first, with the executors they
spawned, then the master (`pipeline.runtime.processes`).

The master's two ports are probed free, but another program (another run's cluster) may take one before the master
binds it; Spark then binds the next port up (`spark.port.maxRetries`) and says so in its log only. The master URL
and the web UI polled are the ports its log says it bound (`bound_ports`), never the probed ones: polling the probed
web UI could find another run's master ALIVE and send this run's workers to it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from pipeline.runtime.processes import SignalGuard, stop_processes
from pipeline.spark.plan import LOOPBACK, ClusterError, GpuPlan, Plan

log = logging.getLogger(__name__)

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
REGISTER_TIMEOUT = 90.0


def java_options(conf: dict[str, str]) -> str:
    """`-Dkey=value` options in the quoting Spark's launcher parses (double quotes, backslash escapes)."""

    def quote(text: str) -> str:
        if re.search(r'[\s"\'\\]', text):
            return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return text

    return " ".join(quote(f"-D{key}={value}") for key, value in conf.items())


def spark_home() -> Path:
    """The Spark distribution inside the installed pyspark package (bin/spark-class, jars/)."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def _free_ports(count: int) -> list[int]:
    """Ports free on the loopback now (all bound at once, so they differ); a race with other programs is
    possible but the start would then fail loudly in the log."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


_BOUND = re.compile(r"Successfully started service '(sparkMaster|MasterUI)' on port (\d+)")


def bound_ports(log_path: Path) -> tuple[int, int] | None:
    """(master port, web UI port) as the master's log says it bound them, or None before it has said both."""
    try:
        found = dict(_BOUND.findall(log_path.read_text(errors="replace")))
    except OSError:
        return None
    if "sparkMaster" not in found or "MasterUI" not in found:
        return None
    return int(found["sparkMaster"]), int(found["MasterUI"])


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _master_state(webui_port: int) -> dict[str, Any] | None:
    """The master's JSON status page, or None while it is not answering. Never through an HTTP proxy."""
    try:
        with _NO_PROXY.open(f"http://{LOOPBACK}:{webui_port}/json/", timeout=2) as response:
            return json.load(response)
    except (OSError, ValueError, urllib.error.URLError):
        return None


_STACK_FRAME = re.compile(r"^\s+(at |\.\.\. \d+ more)")


def _tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log without Java stack frames, which would crowd out the error lines."""
    try:
        text = [line for line in path.read_text(errors="replace").splitlines() if not _STACK_FRAME.match(line)]
    except OSError as error:
        return f"({error})"
    return "\n".join(text[-lines:])


@dataclass
class _Started:
    name: str
    process: subprocess.Popen
    handle: psutil.Process  # taken at the start: stopping it can never hit a process that reused its PID
    log: Path


def _logs(started: list[_Started]) -> str:
    return "\n".join(f"--- {s.name} ({s.log}), last lines:\n{_tail(s.log)}" for s in started)


def _wait_until(what: str, check: Callable[[], Any], started: list[_Started], timeout: float) -> Any:
    """Poll `check` until it returns something truthy; fail fast if a started process exits."""
    deadline = time.monotonic() + timeout
    while True:
        for s in started:
            code = s.process.poll()
            if code is not None:
                raise ClusterError(
                    f"the standalone {s.name} exited with status {code} while waiting for {what}\n{_logs(started)}"
                )
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}\n{_logs(started)}")
        time.sleep(0.2)


@contextmanager
def standalone(plan: Plan, run_dir: Path, worker_conf: dict[str, str]) -> Iterator[tuple[str, tuple[int, ...], Path]]:
    """Start a master and `plan.workers` workers on the loopback; yield (master URL, PIDs, log dir).

    `worker_conf` are the workers' own confs (the GPU resources they offer and their discovery script),
    given on their command line; see the module docstring."""
    log_dir = run_dir / "cluster"
    work_dir, conf_dir = log_dir / "work", log_dir / "conf"
    for directory in (log_dir, work_dir, conf_dir):
        directory.mkdir(parents=True, exist_ok=True)
    home = spark_home()
    spark_class = str(home / "bin" / "spark-class")
    overrides = {
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": LOOPBACK,
        "SPARK_WORKER_DIR": str(work_dir),
        "SPARK_LOG_DIR": str(log_dir),
        # An empty conf dir: no spark-defaults.conf or spark-env.sh of the machine leaks into the measurement.
        "SPARK_CONF_DIR": str(conf_dir),
        "PYSPARK_PYTHON": sys.executable,
    }
    # Spark 4's master also opens a REST submission server on the fixed port 6066 by default: not needed,
    # and a second cluster on the machine would collide on it.
    overrides["SPARK_MASTER_OPTS"] = " ".join(
        filter(None, [os.environ.get("SPARK_MASTER_OPTS", ""), java_options({"spark.master.rest.enabled": "false"})])
    )
    env = {**os.environ, **overrides}
    env.pop("SPARK_ENV_LOADED", None)
    worker_env = dict(env)
    worker_overrides = {}
    if worker_conf:
        opts = " ".join(filter(None, [os.environ.get("SPARK_WORKER_OPTS", ""), java_options(worker_conf)]))
        worker_overrides["SPARK_WORKER_OPTS"] = opts
        worker_env.update(worker_overrides)
    port, webui = _free_ports(2)  # probed; the master may bind others (see the module docstring)
    master_url = f"spark://{LOOPBACK}:{port}"
    record: dict[str, Any] = {
        "master": master_url,
        "master_webui": f"http://{LOOPBACK}:{webui}/",
        "env": overrides,
        "worker_env": worker_overrides,
        "commands": {},
        "pids": {},
        "timings_s": {},
    }
    started: list[_Started] = []

    def spawn(name: str, args: list[str], process_env: dict[str, str]) -> None:
        log_path = log_dir / f"{name}.log"
        with open(log_path, "wb") as out:
            process = subprocess.Popen(
                args,
                env=process_env,
                cwd=log_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(_Started(name, process, psutil.Process(process.pid), log_path))
        record["commands"][name] = args
        record["pids"][name] = process.pid
        _write_record(log_dir, record)

    guard = SignalGuard()
    try:
        t0 = time.monotonic()
        spawn(
            "master",
            [spark_class, MASTER_CLASS, "--host", LOOPBACK, "--port", str(port), "--webui-port", str(webui)],
            env,
        )

        def master_up() -> tuple[int, int] | None:
            bound = bound_ports(log_dir / "master.log")
            return bound if bound and (_master_state(bound[1]) or {}).get("status") == "ALIVE" else None

        bound = _wait_until("the master to answer", master_up, started, REGISTER_TIMEOUT)
        if bound != (port, webui):
            log.info("the standalone master found port(s) of %s taken and bound %s", (port, webui), bound)
        port, webui = bound
        master_url = record["master"] = f"spark://{LOOPBACK}:{port}"
        record["master_webui"] = f"http://{LOOPBACK}:{webui}/"
        record["timings_s"]["master_up"] = round(time.monotonic() - t0, 3)
        t1 = time.monotonic()
        for i in range(plan.workers):
            spawn(
                f"worker-{i + 1}",
                [
                    spark_class,
                    WORKER_CLASS,
                    master_url,
                    "--host",
                    LOOPBACK,
                    "--cores",
                    str(plan.worker_cores),
                    "--memory",
                    f"{plan.worker_memory_mb}m",
                    "--webui-port",
                    "0",
                    "--work-dir",
                    str(work_dir),
                ],
                worker_env,
            )
        state = _wait_until(
            f"{plan.workers} worker(s) to register with the master",
            lambda: _registered(_master_state(webui), plan.workers),
            started,
            max(1.0, REGISTER_TIMEOUT - (time.monotonic() - t0)),
        )
        record["timings_s"]["workers_registered"] = round(time.monotonic() - t1, 3)
        _check_worker_gpus(state, plan.gpus, started)
        _write_record(log_dir, record)
        log.info(
            "standalone %s up: master %.1f s, %d worker(s) registered %.1f s later",
            master_url,
            record["timings_s"]["master_up"],
            plan.workers,
            record["timings_s"]["workers_registered"],
        )
        yield master_url, tuple(s.process.pid for s in started), log_dir
    finally:
        guard.defer()
        try:
            t2 = time.monotonic()
            # Workers first (each kills its executors on SIGTERM) while the master is there to see them go;
            # a worker that outlived its master would keep trying to reconnect. Then the master.
            try:
                stop_processes([s.handle for s in started if s.name != "master"])
            finally:
                stop_processes([s.handle for s in started if s.name == "master"])
                for s in started:
                    try:
                        s.process.wait(timeout=1)
                    except subprocess.TimeoutExpired:
                        pass
            record["timings_s"]["stop"] = round(time.monotonic() - t2, 3)
            _write_record(log_dir, record)
            log.info("standalone %s stopped in %.1f s", master_url, record["timings_s"]["stop"])
        finally:
            guard.restore()


def _registered(state: dict[str, Any] | None, workers: int) -> dict[str, Any] | None:
    if not state:
        return None
    alive = [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]
    return state if len(alive) >= workers else None


def _check_worker_gpus(state: dict[str, Any], gpus: GpuPlan, started: list[_Started]) -> None:
    """Every registered worker offers the planned GPUs (Spark would otherwise wait for executors forever)."""
    if gpus.kind == "none":
        return
    for worker in state.get("workers", []):
        resources = worker.get("resources")
        if resources is None:  # not reported by this Spark version: nothing to check
            continue
        addresses = (resources.get("gpu") or {}).get("addresses", [])
        if len(addresses) < gpus.per_worker:
            raise ClusterError(
                f"worker {worker.get('id')} offers GPUs {addresses}, expected {gpus.per_worker}\n{_logs(started)}"
            )


def _write_record(log_dir: Path, record: dict[str, Any]) -> None:
    (log_dir / "cluster.json").write_text(json.dumps(record, indent=2) + "\n")
