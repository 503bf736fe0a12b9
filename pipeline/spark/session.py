"""The Spark application of one run: Java check, every conf written down, the driver on the address its executors
reach (loopback for the clusters the harness starts here), stopped on exit."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config.schema import Config
from pipeline.rundir import RunDir
from pipeline.spark import driver_jvm
from pipeline.spark.cluster import Cluster
from pipeline.spark.fastpaths import fast_path_conf
from pipeline.spark.plan import LOOPBACK

if TYPE_CHECKING:  # the bottleneck model imports split_bytes without pyspark
    from pyspark.sql import SparkSession

MIN_JAVA = 17
JAVA_HELP = (
    "pyspark 4.3 needs Java {min}+. Install a JDK or JRE 17 or newer (Debian/Ubuntu: "
    "`sudo apt-get install openjdk-17-jre-headless`; macOS: `brew install openjdk@17`) and put its `java` on "
    "PATH or set JAVA_HOME to it."
)


class JavaMissing(RuntimeError):
    pass


def java_version() -> int:
    """The major version of the Java that Spark will start; raises JavaMissing with how to fix it."""
    home = os.environ.get("JAVA_HOME")
    java = driver_jvm.java_path()
    help_text = JAVA_HELP.format(min=MIN_JAVA)
    if java is None:
        where = f"JAVA_HOME={home} has no bin/java" if home else "no `java` on PATH and JAVA_HOME is not set"
        raise JavaMissing(f"Java not found ({where}). {help_text}")
    try:
        output = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60).stderr
    except (OSError, subprocess.TimeoutExpired) as error:
        raise JavaMissing(f"`{java} -version` failed: {error}. {help_text}") from error
    match = re.search(r'version "(\d+)(?:\.(\d+))?', output)
    if not match:
        raise JavaMissing(f"cannot read the version of {java} from {output.strip()!r}. {help_text}")
    major = int(match.group(2)) if match.group(1) == "1" else int(match.group(1))
    if major < MIN_JAVA:
        raise JavaMissing(f"{java} is Java {major}. {help_text}")
    return major


def split_bytes(input_bytes: int, slots: int, largest_file_bytes: int | None = None) -> int:
    """Input split size that gives every task slot a share of the read, and cuts no file into a sliver.

    Spark's own choice adds a 4 MiB open cost per file and lumps a small data set into one split (measured:
    64 images, 5 MB, two cores: one task read everything). Row groups of `dataset.row_group_size` images
    (32 by default) let the splits cut files; large data keeps Spark's default maximum of 128 MiB. The split
    cuts the largest file (`largest_file_bytes`, None: the input is one file) into a whole number of equal
    pieces as near a slot's share as that allows: a split of exactly the share cut a file a little larger than
    the share into the share and a sliver holding no row group's midpoint, a task that read nothing (measured:
    32 JPEGs in 2 files of 16, row groups of 8, on 2 slots ran 3 tasks reading [16, 16, 0] rows)."""
    share = -(-input_bytes // slots)
    largest = input_bytes if largest_file_bytes is None else largest_file_bytes
    pieces = max(1, round(largest / share))
    return min(128 * 2**20, max(2**20, -(-largest // pieces)))


def whole_file_splits(sizes: list[int]) -> dict[str, str]:
    """Read confs under which every Parquet file of these `sizes` is one split of its own.

    two_stage's job 2 reads the crops job 1 wrote, one file (one row group) a task and larger than the JPEGs
    the application's split size was set for: under that size Spark cut each file in two and the half without
    the row group's midpoint was a task that read nothing. A split and an open cost of the largest file's bytes
    keep each file whole and alone in its task, so job 2 runs one task per file job 1 wrote.
    """
    largest = max(sizes, default=0)
    if not largest:
        return {}
    return {"spark.sql.files.maxPartitionBytes": str(largest), "spark.sql.files.openCostInBytes": str(largest)}


@contextmanager
def sql_confs(spark: SparkSession, confs: Mapping[str, str]) -> Iterator[None]:
    """Runtime SQL confs for the block (a Spark Connect session's too), each restored after it."""
    before = {key: spark.conf.get(key, None) for key in confs}
    for key, value in confs.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def fresh_event_log_dir(run_dir: Path) -> Path:
    """RUN_DIR/eventlog, empty: the one application about to start is the only one its evidence is read from.

    A run dir used before (a re-run, `resume=true` after an interrupted job) holds the earlier application's
    log; those files move to RUN_DIR/eventlog.previous (replacing what an older run left there), so the
    earlier run's evidence stays readable and the new one is never mixed with it.
    """
    files = RunDir(run_dir.resolve())
    event_log = files.eventlog
    if event_log.is_dir() and any(event_log.iterdir()):
        previous = files.previous_eventlog
        shutil.rmtree(previous, ignore_errors=True)
        event_log.rename(previous)
    event_log.mkdir(parents=True, exist_ok=True)
    return event_log


def spark_conf(
    config: Config,
    run_dir: Path,
    input_bytes: int,
    cluster: Cluster,
    largest_file_bytes: int | None = None,
    shipped: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Every conf the application is started with; results record exactly this. Creates the event log dir,
    empty (`fresh_event_log_dir`). The input's bytes (and its largest file's) set the split size; `shipped` are
    the confs of what `cluster.ship` sends at the start (`pipeline.spark.shipping.Shipment.startup_conf`)."""
    event_log = fresh_event_log_dir(run_dir)
    conf = {
        "spark.master": cluster.master,
        "spark.app.name": f"spark-inference-bench:{run_dir.name}",
        "spark.driver.host": cluster.driver_host,
        "spark.driver.bindAddress": cluster.driver_host,
        "spark.driver.memory": config.cluster.driver_memory,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(config.spark.max_records_per_batch),
        # measured on Spark 4.3: a scalar pandas UDF over a vectorized Parquet scan gets the reader's columnar
        # batches (default 4,096 rows) whatever maxRecordsPerBatch says; mapInPandas honours it. Equal sizes
        # make spark.max_records_per_batch mean the same for every style.
        "spark.sql.parquet.columnarReaderBatchSize": str(config.spark.max_records_per_batch),
        "spark.python.worker.reuse": str(config.spark.python_worker_reuse).lower(),
        "spark.sql.shuffle.partitions": str(config.spark.partitions or cluster.slots),
        "spark.task.maxFailures": str(config.spark.task_max_failures),
        "spark.sql.adaptive.enabled": "false",
        "spark.sql.files.maxPartitionBytes": str(split_bytes(input_bytes, cluster.slots, largest_file_bytes)),
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": event_log.as_uri(),
        "spark.eventLog.compress": "false",
        "spark.eventLog.rolling.enabled": "false",
    }
    if config.spark.max_bytes_per_batch is not None:  # Arrow batches to Python end at this many bytes too
        conf["spark.sql.execution.arrow.maxBytesPerBatch"] = str(config.spark.max_bytes_per_batch)
    conf.update(fast_path_conf(config.spark))
    conf.update(cluster.conf)
    conf.update(shipped or {})
    conf.update({key: str(value) for key, value in config.spark.conf.items()})
    return conf


def runtime_conf(conf: dict[str, str]) -> dict[str, str]:
    """The confs a Spark Connect client may set on a server it did not start: the SQL session confs. The
    others (master, executors, event log, task retries, Python worker reuse) are the server's own."""
    return {key: value for key, value in conf.items() if key.startswith("spark.sql.")}


def driver_env(host: str, python: str | None = None) -> None:
    """Keep the driver on `host` (its `spark.driver.host`) and its Python workers on `python` (None: this
    interpreter). pyspark reads the workers' Python from PYSPARK_PYTHON when the SparkContext starts, not from
    the `spark.pyspark.python` conf, which only spark-submit reads."""
    os.environ["SPARK_LOCAL_IP"] = host
    os.environ["PYSPARK_PYTHON"] = python or sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable


@contextmanager
def spark_session(conf: dict[str, str]) -> Iterator["SparkSession"]:  # noqa: F821
    """A SparkSession built from `conf` (nothing else), stopped however the block ends."""
    driver_env(conf.get("spark.driver.host", LOOPBACK), conf.get("spark.pyspark.python"))
    driver_jvm.attach(conf)  # the JVM launched as the job started, where it was launched as `conf` asks
    from pyspark.sql import SparkSession

    if SparkSession.getActiveSession() is not None:
        raise RuntimeError("a SparkSession is already active in this process; each run needs its own application")
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    try:
        yield session
    finally:
        session.stop()
