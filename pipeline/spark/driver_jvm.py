"""The driver JVM of a classic run: launched beside the job's own start, stopped the way pyspark means it to stop.

pyspark launches the driver JVM (spark-submit, 2-4 s on 2 cores) only when the first SparkSession is built, after
the job has imported torch and prepared its data and weights on one core. `launch_ahead` starts that launch in a
thread as the job starts, with the confs a JVM takes only at its launch (heap, JVM options, class path, packages)
and the driver's address; the run's session then attaches to it (`attach`). Where the session's confs differ from
those in any of these, the JVM launched ahead is stopped and pyspark launches its own: a run never runs on settings
it did not ask for. The launch's seconds go into the result (`ahead_s`), apart from the session's start.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config.schema import Config, ConfigError, Engine
from pipeline.spark.cluster import driver_host
from pipeline.spark.plan import LOOPBACK, ClusterError, plan

log = logging.getLogger(__name__)

# what spark-submit reads only as it launches the JVM (its command line, its class path, Ivy's resolution)
LAUNCH_ONLY = (
    "spark.driver.memory",
    "spark.driver.defaultJavaOptions",
    "spark.driver.extraJavaOptions",
    "spark.driver.extraClassPath",
    "spark.driver.extraLibraryPath",
    "spark.jars.packages",
    "spark.jars.repositories",
    "spark.jars.excludes",
    "spark.jars.ivy",
    "spark.jars.ivySettings",
)
LAUNCH_TIMEOUT_S = 120.0  # a JVM launched ahead that has not given pyspark its port by then is given up on


@dataclass
class _Launch:
    conf: dict[str, str]
    host: str
    thread: threading.Thread | None = None
    seconds: float | None = None
    error: str | None = None
    started: float = field(default_factory=time.perf_counter)


_launch: _Launch | None = None  # the launch ahead not yet attached to
_attached_s: float | None = None  # the launch time of the JVM the sessions of this process run in, when ahead


def launch_conf(conf: Mapping[str, str]) -> dict[str, str]:
    """The confs of `conf` that only a JVM's launch reads."""
    return {key: value for key, value in conf.items() if key in LAUNCH_ONLY}


def java_path() -> str | None:
    """The `java` Spark will start: JAVA_HOME's, else the one on PATH; None where there is none."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    return java if java and Path(java).exists() else None


def ahead_host(config: Config) -> str | None:
    """The driver address to launch `config`'s JVM ahead for; None where none is: the run has no driver JVM here
    (engine=torch or ray, a Spark Connect client), or its cluster cannot be planned or Java is missing: the run's
    own checks then say what is wrong, before any JVM is launched."""
    if config.engine.name is not Engine.spark:
        return None
    try:
        planned = plan(config)
        host = driver_host(config.cluster)
    except (ConfigError, ClusterError):
        return None
    return None if planned.connect or java_path() is None else host


def launch_ahead(config: Config) -> None:
    """Start launching the driver JVM of `config`'s run in a thread, where it has one (`ahead_host`) and this
    process has none yet."""
    global _launch
    running = _gateway() is not None  # a JVM launched with settings of its own
    host = None if _launch is not None or running else ahead_host(config)
    if host is None:
        return
    conf = launch_conf({"spark.driver.memory": config.cluster.driver_memory, **config.spark.conf})
    launch = _launch = _Launch(conf, host)
    os.environ["SPARK_LOCAL_IP"] = host  # read by the JVM as it starts: the address it binds and advertises
    launch.thread = threading.Thread(target=_launched, args=(launch,), name="driver-jvm-ahead", daemon=True)
    launch.thread.start()


def _launched(launch: _Launch) -> None:
    from pyspark import SparkConf, SparkContext

    try:  # what SparkSession.builder.getOrCreate does first, under the same lock
        SparkContext._ensure_initialized(conf=SparkConf(loadDefaults=False).setAll(list(launch.conf.items())))
    except Exception as error:  # the session's own launch meets it again and says it there
        launch.error = f"{type(error).__name__}: {error}"
    launch.seconds = time.perf_counter() - launch.started


def attach(conf: Mapping[str, str]) -> None:
    """Before a session is built from `conf`: wait (bounded) for a launch ahead, and keep its JVM only when it was
    launched as `conf` asks; else stop it, so that pyspark launches one from `conf`."""
    global _launch, _attached_s
    launch, _launch = _launch, None
    if launch is None or launch.thread is None:
        return
    launch.thread.join(LAUNCH_TIMEOUT_S)
    if launch.thread.is_alive():
        raise RuntimeError(
            f"the driver JVM launched at the job's start gave pyspark no port in {LAUNCH_TIMEOUT_S:.0f} s "
            "(spark-submit or java hung; what they printed is on the job's stderr)"
        )
    host = conf.get("spark.driver.host", LOOPBACK)
    if launch.error is not None:
        log.info("the driver JVM launched ahead failed (%s); the session launches its own", launch.error)
        return
    if launch.conf != launch_conf(conf) or launch.host != host:
        log.info(
            "the driver JVM launched ahead (%s, host %s) is not the one asked for: launching another",
            launch.conf,
            launch.host,
        )
        stop_driver_jvm()
        return
    _attached_s = launch.seconds


def _gateway() -> Any:
    """pyspark's gateway to this process's driver JVM; None where none was launched (pyspark not even imported)."""
    pyspark = sys.modules.get("pyspark")
    return pyspark.SparkContext._gateway if pyspark is not None else None


def ahead_s() -> float | None:
    """The seconds the JVM this process's sessions run in took to launch, where it was launched ahead (not in any
    session's start time); None where the session launched it."""
    return _attached_s


def stop_driver_jvm(timeout: float = 30.0) -> None:
    """Stop the driver JVM pyspark started in this process (its applications stopped), the way pyspark means
    it to stop: py4j's client is shut down first, then the JVM's stdin is closed, on which pyspark's gateway
    server exits by itself (its shutdown hooks run). Killed from outside instead, the JVM left py4j sending
    the releases of garbage-collected Java objects to a dead socket, each logged with a traceback on the root
    logger ("Exception while sending command"). Nothing to do when no gateway was started here (engine=torch,
    Spark Connect clients); a JVM still running after `timeout` is left to the caller's stop by PID. A launch
    ahead still under way is waited for first (bounded), so that its JVM is stopped too."""
    global _launch, _attached_s
    launch, _launch, _attached_s = _launch, None, None
    if launch is not None and launch.thread is not None:
        launch.thread.join(LAUNCH_TIMEOUT_S)
    gateway = _gateway()
    if gateway is None:
        return
    gateway.shutdown()
    context = sys.modules["pyspark"].SparkContext
    context._gateway = context._jvm = None  # a later SparkContext starts a new JVM
    process = getattr(gateway, "proc", None)
    if process is None:
        return
    process.stdin.close()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
