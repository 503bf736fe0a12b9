"""Before any pass, on a cluster of other machines: can every executor run the tool?

A node without the tool, or without a package it imports, or whose shipped environment does not run there, would
otherwise fail inside the first pass with a Python worker's traceback wrapped in py4j's (or gRPC's), after the
data was read and the weights shipped. `preflight` runs one small job first: a task per task slot (each executor
gets as many as it has cores when all are free), each reporting its node (hostname, the executor's id and
address from its log URL), its Python, and which of `MODULES` a fresh interpreter with the worker's path
(`sys.executable`, the shipped zip first on `PYTHONPATH`) fails to import, and why. The imports run in that child
process so that the Python worker itself stays as a pass would find it (nothing imported, nothing warmed up) and
a crashing import cannot take the worker down; the modules are those the tasks import, the tool's own and
the libraries below them. The function the tasks run is pickled by value (its module is not the tool's), so it
runs on a node that cannot import `pipeline` and says so.

It is a plain Python UDF (no Arrow: a node without pyarrow is reported, not failed on) over
`spark.range(n, numPartitions=n)`, so it runs in classic sessions and under Spark Connect alike, and for every
`cluster.ship` mode: a shipped environment is fetched and unpacked by each executor before its first task, the
preflight's. It is bounded by `cluster.preflight_timeout_s`: the job is cancelled (its job group, or its tag
under Connect) and the run fails saying how long it waited. A task that fails before the function runs (no
Python at `spark.pyspark.python`, a Python of another version, no pyspark) fails the run naming the executor
and host from Spark's message. The result keeps what each executor reported and the seconds (`cluster.shipped.
preflight`); it never runs inside a timed pass.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from pipeline.config.schema import Ship
from pipeline.runtime.errors import LOST_TASK
from pipeline.spark.connect import is_connect

log = logging.getLogger(__name__)

# What the tasks import: third-party libraries first (their failure is the likelier one), then the tool.
MODULES = (
    "pyspark",
    "numpy",
    "pandas",
    "pyarrow",
    "psutil",
    "PIL",
    "torch",
    "torchvision",
    "hydra",
    "pipeline",
    "variants",
    "variants.topology",
)
DESCRIPTION = "preflight: every executor can run the tool"

FIX = {
    Ship.installed: "install the tool and its dependencies on every node, or ship them from here: cluster.ship=code "
    "(the tool's code; the nodes have its dependencies) or cluster.ship=env (this virtualenv and the code)",
    Ship.code: "the nodes lack what the code needs: install it there, or ship this virtualenv with cluster.ship=env",
    Ship.env: "the shipped virtualenv does not run there: the nodes need this machine's OS and CPU architecture and "
    "the interpreter the virtualenv was made from at the same path",
}


class NodeCannotRun(RuntimeError):
    """An executor cannot run the tool; the message names the executor, its node, and what is missing."""


class PreflightTimedOut(RuntimeError):
    """The preflight job did not finish within `cluster.preflight_timeout_s`."""


# The task's function, compiled into a namespace of its own so that cloudpickle ships it by value: the nodes may
# not have the tool whose absence it is there to report.
_PROBE_SOURCE = """
def make_probe(modules, timeout):
    def probe(_):
        import json, os, platform, re, socket, subprocess, sys, time
        log_url = os.environ.get("SPARK_LOG_URL_STDERR") or os.environ.get("SPARK_LOG_URL_STDOUT") or ""
        executor = re.search(r"executorId=([^&]+)", log_url)
        address = re.search(r"//([^:/]+)", log_url)
        script = (
            "import importlib, json, sys\\n"
            "found = {}\\n"
            "for name in sys.argv[1:]:\\n"
            "    try:\\n"
            "        module = importlib.import_module(name)\\n"
            "        found[name] = [True, str(getattr(module, '__version__', ''))]\\n"
            "    except BaseException as error:\\n"
            "        found[name] = [False, type(error).__name__ + ': ' + str(error)]\\n"
            "print('PREFLIGHT ' + json.dumps(found))\\n"
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        started = time.perf_counter()
        try:
            child = subprocess.run([sys.executable, "-c", script, *modules], env=env, capture_output=True,
                                   text=True, timeout=timeout)
            lines = [line for line in child.stdout.splitlines() if line.startswith("PREFLIGHT ")]
            if lines:
                imports = json.loads(lines[-1][len("PREFLIGHT "):])
            else:
                tail = " ".join(child.stderr.strip().splitlines()[-3:])
                imports = {"python": [False, f"{sys.executable} exited with status {child.returncode}: {tail}"]}
        except subprocess.TimeoutExpired:
            imports = {"python": [False, f"importing {', '.join(modules)} took over {timeout:.0f} s"]}
        return json.dumps({
            "executor": executor.group(1) if executor else None,
            "address": address.group(1) if address else None,
            "host": socket.gethostname(),
            "python": platform.python_version(),
            "executable": sys.executable,
            "prefix": sys.prefix,
            "import_s": round(time.perf_counter() - started, 3),
            "imports": imports,
        })
    return probe
"""


def _probe(modules: tuple[str, ...], timeout: float) -> Any:
    namespace: dict[str, Any] = {"__name__": "spark_inference_bench_preflight"}  # not importable: by value
    exec(compile(_PROBE_SOURCE, "<preflight>", "exec"), namespace)
    return namespace["make_probe"](list(modules), timeout)


def missing(report: dict[str, Any]) -> list[str]:
    """What an executor's report says it cannot import: `No module named 'pipeline' (import pipeline)`; a module
    of a package that failed is not named again."""
    failed = [name for name, (ok, _) in report["imports"].items() if not ok]
    return [
        f"{report['imports'][name][1]} (import {name})"
        for name in failed
        if not any(name.startswith(f"{other}.") for other in failed)
    ]


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """An executor's report as the result keeps it: what it imported, at which version, and what it could not."""
    imports = report.pop("imports")
    report["versions"] = {name: version for name, (ok, version) in imports.items() if ok and version}
    report["missing"] = missing({**report, "imports": imports})
    return report


def where(report: dict[str, Any]) -> str:
    """`executor 1 on HOST (ADDRESS)`."""
    address = f" ({report['address']})" if report.get("address") else ""
    return f"executor {report.get('executor')} on {report['host']}{address}"


def check(reports: list[dict[str, Any]], ship: Ship) -> None:
    """Raise NodeCannotRun naming every executor that cannot import what the tasks import, and the fix."""
    failed = [f"{where(report)}: {'; '.join(report['missing'])}" for report in reports if report["missing"]]
    if failed:
        raise NodeCannotRun(
            f"cannot run the tool with cluster.ship={ship.value} on {len(failed)} executor(s): "
            + " | ".join(failed)
            + f". {FIX[ship]}"
        )


def failed_task(error: BaseException, ship: Ship) -> NodeCannotRun | None:
    """A preflight task that failed before its function ran, as NodeCannotRun naming its executor and host
    (Spark's "Lost task ... (HOST executor N): ..."); None for another failure."""
    lost = LOST_TASK.search(str(error))
    if lost is None:
        return None
    reason = lost["reason"].strip().splitlines()[0]
    return NodeCannotRun(
        f"cannot run Python with cluster.ship={ship.value} on {lost['where']}: {lost['kind']}: {reason}. {FIX[ship]}"
    )


def preflight(spark: Any, tasks: int, ship: Ship, timeout: float, modules: tuple[str, ...] = MODULES) -> dict:
    """Run the check (see the module docstring) with `tasks` tasks; what each executor reported and the
    seconds it took, or raise NodeCannotRun / PreflightTimedOut."""
    from pyspark.sql.functions import udf

    started = time.perf_counter()
    probe = udf(_probe(modules, timeout), "string", useArrow=False)
    frame = spark.range(0, tasks, 1, tasks).select(probe("id").alias("report"))
    rows = _bounded(spark, frame.collect, timeout, ship)
    reports: dict[tuple[Any, str], dict[str, Any]] = {}
    for row in rows:
        report = summary(json.loads(row["report"]))
        reports.setdefault((report["executor"], report["host"]), report)
    found = sorted(reports.values(), key=lambda r: (r["host"], str(r["executor"])))
    check(found, ship)
    record = {
        "seconds": round(time.perf_counter() - started, 3),
        "tasks": tasks,
        "executors": found,
        "driver_python": ".".join(map(str, sys.version_info[:3])),
    }
    if not is_connect(spark):  # executors registered but given no task (another app held their cores)
        registered = set(filter(None, spark.sparkContext._jsc.sc().getExecutorIds().mkString(",").split(",")))
        record["unchecked_executors"] = sorted(registered - {str(r["executor"]) for r in found})
    return record


def _bounded(spark: Any, action: Any, timeout: float, ship: Ship) -> list[Any]:
    """`action()` (a collect) in a thread of its own, cancelled after `timeout` seconds: its job group in a
    classic session, its tag under Connect."""
    tag = f"preflight-{uuid.uuid4().hex[:12]}"
    connect = is_connect(spark)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            if connect:
                spark.addTag(tag)
                spark.conf.set("spark.job.description", DESCRIPTION)
            else:
                spark.sparkContext.setJobGroup(tag, DESCRIPTION, interruptOnCancel=True)
            outcome["rows"] = action()
        except BaseException as error:  # handed to the caller's thread
            outcome["error"] = error
        finally:
            if connect:  # the passes' jobs get their own descriptions; a job before them must not get this one
                spark.removeTag(tag)
                spark.conf.unset("spark.job.description")

    thread = threading.Thread(target=run, name="preflight", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        if connect:
            spark.interruptTag(tag)
        else:
            spark.sparkContext.cancelJobGroup(tag)
        thread.join(30)
        raise PreflightTimedOut(
            f"the preflight (a task per slot, checking every executor can run the tool with cluster.ship="
            f"{ship.value}) did not finish in cluster.preflight_timeout_s={timeout:g} s; its tasks may be waiting "
            "for executors, or unpacking a shipped environment slowly (set cluster.preflight_timeout_s higher)"
        )
    if "error" in outcome:
        error = outcome["error"]
        cannot = failed_task(error, ship)
        if cannot is not None:
            raise cannot from error
        raise error
    return outcome["rows"]


def first_tasks(event_log: Path) -> dict[str, float]:
    """Per executor, what getting to run the (last) preflight's first task cost it, from the event log: the seconds
    from the stage's submission to that task's end, less the task's own run. In them: a classic executor fetches
    and unpacks `spark.archives` (an environment) when it starts, before it takes any task (measured: 159 s of a
    208 s preflight for 7.1 GB, the task itself 49 s), and every executor fetches what was added later (the code
    zip, files, Connect artifacts) in its first task. The last preflight: an sc:// server's log holds every
    session's."""
    from pipeline.spark.eventlog import stages, task_metrics, tasks

    mine = [s for s in stages(event_log) if s["job_description"] == DESCRIPTION and s["submitted"] is not None]
    if not mine:
        return {}
    stage = max(mine, key=lambda s: (s["stage_id"], s["attempt"]))
    runs = {t["task_id"]: t["metrics"].get("internal.metrics.executorRunTime") or 0 for t in task_metrics(event_log)}
    found: dict[str, float] = {}
    for task in tasks(event_log):  # by task id: launch order
        if (task["stage_id"], task["stage_attempt"]) == (stage["stage_id"], stage["attempt"]) and task["finish"]:
            spent = task["finish"] - stage["submitted"] - runs.get(task["task_id"], 0) / 1000
            found.setdefault(str(task["executor_id"]), round(max(0.0, spent), 3))
    return found
