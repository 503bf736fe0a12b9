"""Spark 4.1-4.3's Python fast paths: the confs each `spark.*` knob sets, and what a run can show they did.

Every knob is set explicitly, also at its default, so a result's recorded confs say what ran (4.3.0 turned
`spark.sql.execution.pythonUDF.arrow.enabled` on by default after 4.2.0 had reverted it). Checked against the
pyspark 4.3.0 jars: the keys below are the ones `SQLConf` and `org.apache.spark.internal.config.Python` define
(the Unix-socket key is `spark.python.unix.domain.socket.enabled`, not `spark.python.worker.unix...`).
"""

from __future__ import annotations

import os
import socket
from functools import cache
from typing import Any

from pipeline.schema import SparkConfig

# Spark conf -> the `spark.*` config key that sets it
FAST_PATH_KEYS: dict[str, str] = {
    "spark.python.udf.pipelined.enabled": "spark.python_udf_pipelined",
    "spark.python.udf.pipelined.queueDepth": "spark.python_udf_pipelined_queue_depth",
    "spark.sql.execution.arrow.compression.codec": "spark.arrow_compression_codec",
    "spark.python.unix.domain.socket.enabled": "spark.python_unix_domain_socket",
    "spark.sql.execution.pythonUDF.arrow.enabled": "spark.python_udf_arrow",
}


def fast_path_conf(spark: SparkConfig) -> dict[str, str]:
    """The Spark confs of the fast-path knobs, every one written out."""
    return {
        "spark.python.udf.pipelined.enabled": str(spark.python_udf_pipelined).lower(),
        "spark.python.udf.pipelined.queueDepth": str(spark.python_udf_pipelined_queue_depth),
        "spark.sql.execution.arrow.compression.codec": spark.arrow_compression_codec.value,
        "spark.python.unix.domain.socket.enabled": str(spark.python_unix_domain_socket).lower(),
        "spark.sql.execution.pythonUDF.arrow.enabled": str(spark.python_udf_arrow).lower(),
    }


def worker_view() -> dict[str, Any]:
    """`_worker_view` of this process (a copy: records are changed by their tasks)."""
    return dict(_worker_view())


@cache
def _worker_view() -> dict[str, Any]:
    """What the Python worker running this task was started with, as Spark's runner tells it (environment
    variables `BasePythonRunner` sets) and what its own sockets are: evidence that a conf reached the worker,
    read where it acts. `pipelined`: the worker runs `worker.pipelined_process` (its reader thread);
    `unix_sockets` / `tcp_sockets`: the worker process's open sockets by family. Once per worker process:
    what it was started with does not change, and a task pays for the look-up once."""
    import psutil

    families = [connection.family for connection in psutil.Process().net_connections(kind="all")]
    return {
        "pipelined": os.environ.get("SPARK_PIPELINED_UDF") == "1",
        "queue_depth": int(os.environ.get("SPARK_PIPELINED_UDF_QUEUE_DEPTH", "0")) or None,
        "unix_domain": os.environ.get("PYTHON_UNIX_DOMAIN_ENABLED", "false").lower() == "true",
        "unix_sockets": families.count(socket.AF_UNIX),
        "tcp_sockets": sum(family in (socket.AF_INET, socket.AF_INET6) for family in families),
    }
