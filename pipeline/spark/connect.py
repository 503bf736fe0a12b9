"""Spark Connect: a server the harness starts on 127.0.0.1, and the `sc://` session a run's job talks through.

Under Connect the job's process has no SparkContext and no JVM: the server is the Spark driver, and the
job sends it DataFrame plans over gRPC. `connect_server(conf, run_dir)` starts
`org.apache.spark.sql.connect.service.SparkConnectServer` (shipped in pyspark's jars) with `spark-submit` in
the foreground, as a child in its own process group, so the harness holds its PID; every application conf
of the run (`spark.master` = the backend: `local[N]`, `local-cluster[...]` or the standalone master the
harness started; the event log in the run dir) goes on its command line, because a Connect client may set
only runtime SQL confs. It binds gRPC to 127.0.0.1 on a free port (one another program takes between the probe
and the bind is not a failure: the server tries the next ones, PORT_RETRIES of them, and the URL is the port its
log says it started on), writes `RUN_DIR/connect/server.log` and
`server.json` (command, PID, URL, timings), keeps its scratch in `RUN_DIR/connect/tmp`, and is stopped by PID
(`pipeline.runtime.processes.stop_processes`) however the block ends; SIGTERM lets its shutdown hook stop the
SparkContext, which closes the event log.

`connect_session(url, conf)` builds `SparkSession.builder.remote(url)` with a bounded retry policy and
checks the server answers before any work: an unreachable or refusing URL fails in seconds, naming it, where
pyspark's default policy retries for at least ten minutes. `cluster=remote cluster.master=sc://HOST:PORT`
uses the session alone: a server the tool did not start, and never stops.
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psutil

from pipeline.runtime.processes import SignalGuard, running, stop_processes
from pipeline.spark.plan import LOOPBACK, ClusterError
from pipeline.spark.standalone import _free_ports, _tail, spark_home

log = logging.getLogger(__name__)

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
START_TIMEOUT = 120.0
PORT_RETRIES = 16  # the ports after the probed one the server tries (Spark's spark.port.maxRetries default)
PROBE_TIMEOUT = 10.0
_STARTED = re.compile(r"Spark Connect server started at: \S+?:(\d+)")


class ConnectServerDied(ClusterError):
    """The Spark Connect server the harness started exited while the run needed it."""


def is_connect(spark: Any) -> bool:
    """Whether `spark` is a Spark Connect session (no SparkContext, no RDDs, no accumulators, no broadcast)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


@dataclass
class ConnectServer:
    """A running server: its URL, its process (PID and creation time: never a reused PID), its log."""

    url: str
    process: subprocess.Popen
    handle: psutil.Process
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self, doing: str) -> None:
        """Raise ConnectServerDied naming the exit status and the log's last lines if the server is gone."""
        code = self.process.poll()
        if code is not None or not running(self.handle):
            raise ConnectServerDied(
                f"the Spark Connect server {self.url} (pid {self.pid}) exited with status {code} {doing}; "
                f"its log {self.log}, last lines:\n{_tail(self.log)}"
            )


def server_command(conf: dict[str, str], port: int) -> list[str]:
    """`spark-submit --class SparkConnectServer` with every conf of the application and gRPC on 127.0.0.1:port."""
    args = [str(spark_home() / "bin" / "spark-submit"), "--class", SERVER_CLASS]
    full = {
        **conf,
        "spark.connect.grpc.binding.address": LOOPBACK,
        "spark.connect.grpc.binding.port": str(port),
        "spark.connect.grpc.port.maxRetries": str(PORT_RETRIES),  # Spark's default, 0, fails on a port just taken
    }
    for key, value in full.items():
        args += ["--conf", f"{key}={value}"]
    return args + ["spark-internal"]


def _write_record(directory: Path, record: dict[str, Any]) -> None:
    (directory / "server.json").write_text(json.dumps(record, indent=2) + "\n")


@contextmanager
def connect_server(conf: dict[str, str], run_dir: Path) -> Iterator[ConnectServer]:
    """A Spark Connect server for the block, then stopped by PID with everything it spawned (executors of
    local-cluster, Python workers); see the module docstring. Raises ClusterError with the log's last lines
    if it exits or does not answer within START_TIMEOUT."""
    directory = Path(run_dir).resolve() / "connect"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "conf").mkdir(exist_ok=True)
    scratch = directory / "tmp"
    scratch.mkdir(exist_ok=True)
    home = spark_home()
    env = {
        **os.environ,
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": LOOPBACK,
        "SPARK_CONF_DIR": str(directory / "conf"),  # empty: no spark-defaults.conf of the machine leaks in
        "PYSPARK_PYTHON": sys.executable,
        # the server's scratch (SparkFiles, artifacts, block manager) in the run dir, not /tmp: a server that is
        # killed runs no shutdown hook, and its scratch would outlive it where nobody looks
        "SPARK_SUBMIT_OPTS": f"{os.environ.get('SPARK_SUBMIT_OPTS', '')} -Djava.io.tmpdir={scratch}".strip(),
    }
    env.pop("SPARK_ENV_LOADED", None)
    (port,) = _free_ports(1)
    url = f"sc://{LOOPBACK}:{port}"
    command = server_command(conf, port)
    log_path = directory / "server.log"
    record: dict[str, Any] = {"url": url, "command": command, "timings_s": {}}
    guard = SignalGuard()
    server: ConnectServer | None = None
    try:
        started = time.monotonic()
        with open(log_path, "wb") as out:
            process = subprocess.Popen(
                command,
                env=env,
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = ConnectServer(url, process, psutil.Process(process.pid), log_path)
        record["pid"] = process.pid
        _write_record(directory, record)
        deadline = started + START_TIMEOUT
        while (bound := _listening(log_path)) is None:
            server.check_alive("while starting")
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"the Spark Connect server {url} did not start within {START_TIMEOUT:.0f} s; "
                    f"its log {log_path}, last lines:\n{_tail(log_path)}"
                )
            time.sleep(0.2)
        if bound != port:  # the probed port was taken before the server bound it
            log.info("the Spark Connect server found port %d taken and bound %d", port, bound)
            server.url = record["url"] = f"sc://{LOOPBACK}:{bound}"
        record["timings_s"]["up"] = round(time.monotonic() - started, 3)
        _write_record(directory, record)
        log.info("Spark Connect server %s up in %.1f s (pid %d)", server.url, record["timings_s"]["up"], process.pid)
        yield server
    finally:
        guard.defer()
        try:
            if server is not None:
                stopping = time.monotonic()
                stop_processes([server.handle], timeout=30.0)
                try:
                    server.process.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    pass
                record["timings_s"]["stop"] = round(time.monotonic() - stopping, 3)
                record["exit_status"] = server.process.poll()
                _write_record(directory, record)
        finally:
            guard.restore()


def _listening(log_path: Path) -> int | None:
    """The port the server logged gRPC is up on (its line comes after the SparkContext started), or None yet."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return None
    match = _STARTED.search(text)
    return int(match.group(1)) if match else None


def probe(url: str, timeout: float = PROBE_TIMEOUT) -> None:
    """A TCP connection to the URL's host and port, and a gRPC channel ready there, each within `timeout` s; or
    ClusterError naming the URL."""
    parsed = urlparse(url.replace("sc://", "http://", 1))
    host, port = parsed.hostname, parsed.port or 15002
    if not host:
        raise ClusterError(f"cannot read a host from the Spark Connect URL {url!r} (expected sc://HOST:PORT)")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as error:
        raise ClusterError(f"cannot reach the Spark Connect server at {url}: {error}") from error
    import grpc

    # a port that accepts TCP but never speaks HTTP/2 would hang the first call, which has no deadline
    channel = grpc.insecure_channel(f"{host}:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError as error:
        raise ClusterError(
            f"the Spark Connect server at {url} accepted a connection but did not answer gRPC within {timeout:.0f} s"
        ) from error
    finally:
        channel.close()


@contextmanager
def connect_session(url: str, conf: dict[str, str]) -> Iterator[Any]:
    """A Spark Connect session to `url` with the runtime confs `conf`, closed (not the server) when the block
    ends. Fails within seconds, naming the URL, when nothing answers there."""
    probe(url)
    from pyspark.sql import SparkSession
    from pyspark.sql.connect.client.retries import DefaultPolicy

    builder = SparkSession.builder.remote(url)
    for key, value in conf.items():
        builder = builder.config(key, value)
    try:
        session = builder.create()
    except Exception as error:
        raise ClusterError(f"cannot open a Spark Connect session at {url}: {error}") from error
    # at most ~10 s of retries (pyspark's default tolerates ten minutes): a dead server fails the run, no hang
    session.client.set_retry_policies([DefaultPolicy(max_retries=5, backoff_multiplier=2.0, initial_backoff=200)])
    try:
        try:
            session.conf.get("spark.app.id")
        except Exception as error:
            raise ClusterError(f"the Spark Connect server at {url} did not answer: {error}") from error
        yield session
    finally:
        try:
            session.stop()
        except Exception as error:  # a dead server cannot release the session; the run's own error stands
            log.warning("closing the Spark Connect session to %s: %s", url, error)
