"""Spark 4.1-4.3's Python fast paths: the confs each `spark.*` knob sets, and what a run can show they did.

Every knob is set explicitly, also at its default, so a result's recorded confs say what ran (4.3.0 turned
`spark.sql.execution.pythonUDF.arrow.enabled` on by default after 4.2.0 had reverted it). Checked against the
pyspark 4.3.0 jars: the keys below are the ones `SQLConf` and `org.apache.spark.internal.config.Python` define
(the Unix-socket key is `spark.python.unix.domain.socket.enabled`, not `spark.python.worker.unix...`).
"""

from __future__ import annotations

import os
import socket
import statistics
from functools import cache
from pathlib import Path
from typing import Any

from pipeline.config.schema import SparkConfig
from pipeline.spark.eventlog import task_metrics

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


# Spark's own Python UDF SQL metrics (`PythonSQLMetrics`, 4.3.0), per task in the event log's task ends
PYTHON_METRICS = {
    "data sent to Python workers": "bytes_to_python",
    "data returned from Python workers": "bytes_from_python",
    "time to run Python workers": "python_run_ms",
    "time to execute Python code": "python_code_ms",
}


def python_metrics(event_log: Path, stage_ids: set[int]) -> dict[str, int]:
    """Sums of `PYTHON_METRICS` over the successful task attempts of `stage_ids` (one pass's stages): what
    Spark itself counted crossing JVM <-> Python, e.g. fewer bytes to Python under an Arrow codec."""
    totals = dict.fromkeys(PYTHON_METRICS.values(), 0)
    for task in task_metrics(event_log):
        if task["stage_id"] in stage_ids and task["successful"]:
            for name, key in PYTHON_METRICS.items():
                totals[key] += int(task["metrics"].get(name, 0))
    return totals


def evidence(records: list[dict[str, Any]], event_log: Path, stage_ids: set[int]) -> dict[str, Any]:
    """What the fast paths did in one pass, from the tasks' own records and Spark's metrics.

    Per step: how many tasks ran in a pipelined worker and over Unix sockets (as the worker saw it), and the
    tasks' input waits: the first batch of a task (its stage's start-up) apart from the later ones, where a
    pipelined reader that fetched batch k+1 while batch k computed shows as waits near zero.
    """
    steps: dict[str, dict[str, Any]] = {}
    for record in records:
        step = steps.setdefault(
            record["step"], {"tasks": 0, "pipelined_tasks": 0, "unix_domain_tasks": 0, "first": [], "later": []}
        )
        worker = record.get("python_worker") or {}
        step["tasks"] += 1
        step["pipelined_tasks"] += bool(worker.get("pipelined"))
        step["unix_domain_tasks"] += bool(worker.get("unix_domain"))
        waits = record.get("input_waits") or []
        step["first"] += waits[:1]
        step["later"] += waits[1:] + (record.get("between_calls") or [])  # a per-call style's: batches 2..n
    for step in steps.values():
        first, later = step.pop("first"), step.pop("later")
        step["input_batches"] = len(first) + len(later)
        step["first_input_wait_s_median"] = statistics.median(first) if first else None
        step["later_input_wait_s_median"] = statistics.median(later) if later else None
        step["later_input_wait_s_total"] = sum(later) if later else None
    return {"steps": steps, "spark_python_metrics": python_metrics(event_log, stage_ids)}


def join(first: dict[str, Any] | None, second: dict[str, Any] | None) -> dict[str, Any] | None:
    """`evidence` of one pass whose steps ran in two applications (two_stage on two clusters): steps side by
    side, Spark's metrics added."""
    if first is None or second is None:
        return first or second
    metrics = {
        key: first["spark_python_metrics"][key] + second["spark_python_metrics"][key] for key in PYTHON_METRICS.values()
    }
    return {"steps": {**first["steps"], **second["steps"]}, "spark_python_metrics": metrics}
