"""A user's cluster, started by a test outside the tool: a standalone master and worker, and a Spark Connect
server in front of it, each from the installed pyspark's launchers, stopped by PID by the test (the tool must
never stop them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from pipeline.runtime.processes import running, stop_processes
from pipeline.spark.connect import SERVER_CLASS
from pipeline.spark.standalone import LOOPBACK, _free_ports, spark_home

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _env(directory: Path) -> dict[str, str]:
    conf = directory / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "SPARK_HOME": str(spark_home()),
        "SPARK_LOCAL_IP": LOOPBACK,
        "SPARK_CONF_DIR": str(conf),
        "PYSPARK_PYTHON": sys.executable,
    }
    env.pop("SPARK_ENV_LOADED", None)
    return env


def _spawn(args: list[str], directory: Path, name: str) -> psutil.Process:
    with open(directory / f"{name}.log", "wb") as out:
        process = subprocess.Popen(
            args, env=_env(directory), cwd=directory, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return psutil.Process(process.pid)


def _wait(what: str, check, processes: list[psutil.Process], directory: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        dead = [process.pid for process in processes if not running(process)]
        if dead or time.monotonic() > deadline:
            logs = "\n".join(f"{p.name}:\n{p.read_text(errors='replace')[-2000:]}" for p in directory.glob("*.log"))
            raise RuntimeError(f"{what}: {'exited ' + str(dead) if dead else 'timed out'}\n{logs}")
        time.sleep(0.5)


def _workers_alive(webui: int) -> bool:
    try:
        with _NO_PROXY.open(f"http://{LOOPBACK}:{webui}/json/", timeout=2) as response:
            state = json.load(response)
    except (OSError, ValueError):
        return False
    return any(worker.get("state") == "ALIVE" for worker in state.get("workers", []))


@contextmanager
def user_cluster(directory: Path, cores: int = 2) -> Iterator[tuple[str, list[psutil.Process]]]:
    """A standalone master and one worker of `cores` cores on 127.0.0.1; yields (spark:// URL, processes)."""
    directory.mkdir(parents=True, exist_ok=True)
    spark_class = str(spark_home() / "bin" / "spark-class")
    port, webui = _free_ports(2)
    url = f"spark://{LOOPBACK}:{port}"
    processes: list[psutil.Process] = []
    try:
        master = [spark_class, "org.apache.spark.deploy.master.Master", "--host", LOOPBACK, "--port", str(port)]
        processes.append(_spawn([*master, "--webui-port", str(webui)], directory, "master"))
        worker = [spark_class, "org.apache.spark.deploy.worker.Worker", url, "--host", LOOPBACK, "--webui-port", "0"]
        processes.append(_spawn([*worker, "--cores", str(cores), "--memory", "2g"], directory, "worker"))
        _wait("the user's worker to register", lambda: _workers_alive(webui), processes, directory)
        yield url, processes
    finally:
        stop_processes(processes[1:])
        stop_processes(processes[:1])


@contextmanager
def user_connect_server(
    directory: Path, master: str, event_log_dir: Path, cores: int = 2
) -> Iterator[tuple[str, psutil.Process]]:
    """A Spark Connect server in front of `master`, logging its events to `event_log_dir` (plain JSON);
    yields (sc:// URL, its process)."""
    directory.mkdir(parents=True, exist_ok=True)
    event_log_dir.mkdir(parents=True, exist_ok=True)
    (port,) = _free_ports(1)
    conf = {
        "spark.master": master,
        "spark.connect.grpc.binding.address": LOOPBACK,
        "spark.connect.grpc.binding.port": str(port),
        "spark.driver.host": LOOPBACK,
        "spark.ui.enabled": "false",
        "spark.executor.cores": str(cores),
        "spark.executor.memory": "1g",
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": event_log_dir.as_uri(),
        "spark.eventLog.compress": "false",
        "spark.eventLog.rolling.enabled": "false",
    }
    args = [str(spark_home() / "bin" / "spark-submit"), "--class", SERVER_CLASS]
    for key, value in conf.items():
        args += ["--conf", f"{key}={value}"]
    server = _spawn([*args, "spark-internal"], directory, "connect-server")
    log = directory / "connect-server.log"
    try:
        _wait(
            "the user's Connect server", lambda: "Spark Connect server started" in log.read_text(), [server], directory
        )
        yield f"sc://{LOOPBACK}:{port}", server
    finally:
        stop_processes([server])
