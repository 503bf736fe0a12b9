"""The executors of a cluster the harness did not start: waited for with a bound, and explained when they fail.

Spark's own wait has none. An application whose executors cannot reach the driver (told 127.0.0.1 on another
machine, a port a firewall drops), cannot start Python, or that no worker can host (cores, memory, GPUs) logs
"Initial job has not accepted any resources" every 15 s and its first job waits for ever, while the workers
launch executor after executor that exits at launch. So before any pass, a run on `cluster=remote` waits for
its `cluster.workers` executors to register, at most `cluster.register_timeout_s`, and otherwise fails with
what the master's JSON API says: the cores it granted, the executors the workers launched and saw exit, and the
driver address they were told.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlparse

from pipeline.spark.plan import ClusterError

POLL_S = 0.5
DEFAULT_WEBUI_PORT = 8080
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_DRIVER_URL = re.compile(r"--driver-url, (spark://[^,)\s]+)")


class ExecutorsMissing(ClusterError):
    """The cluster did not give the application the executors it asked for within the bound."""


def master_webui(master: str, configured: str | None) -> str | None:
    """The standalone master's web UI: `cluster.master_webui`, else port 8080 of the spark:// master's host; None
    for a YARN or Kubernetes master, which has no such page."""
    if configured:
        return configured.rstrip("/")
    if not master.startswith("spark://"):
        return None
    return f"http://{urlparse(master).hostname}:{DEFAULT_WEBUI_PORT}"


def read_json(url: str) -> dict[str, Any] | None:
    """A standalone master's or worker's JSON status (`URL/json/`), never through a proxy; None if it does not
    answer."""
    try:
        with _NO_PROXY.open(f"{url.rstrip('/')}/json/", timeout=5) as response:
            return json.load(response)
    except (OSError, ValueError, urllib.error.URLError):
        return None


def _registered(spark: Any) -> int:
    """Executors registered with the driver now (the driver itself not counted)."""
    return spark.sparkContext._jsc.sc().getExecutorIds().size()


def wait_for_executors(spark: Any, expected: int, timeout_s: float, webui: str | None) -> float:
    """Seconds until `expected` executors registered; raises ExecutorsMissing saying why after `timeout_s`, or
    as soon as Spark stopped the application (a standalone master removes one whose executors keep failing)."""
    started = time.monotonic()
    while (count := _registered(spark)) < expected:
        stopped = spark.sparkContext._jsc.sc().isStopped()
        if stopped or time.monotonic() - started > timeout_s:
            app_id = spark.sparkContext.applicationId
            when = "the application was stopped" if stopped else f"after {timeout_s:.0f} s (cluster.register_timeout_s)"
            raise ExecutorsMissing(
                f"{count} of {expected} executors (cluster.workers) registered with the driver at "
                f"{spark.conf.get('spark.driver.host')}: {when}. {diagnosis(app_id, webui)}"
            )
        time.sleep(POLL_S)
    return time.monotonic() - started


def diagnosis(app_id: str, webui: str | None) -> str:
    """What the standalone master and its workers say about application `app_id`, as advice (for another cluster
    manager: where its logs are)."""
    if webui is None:
        return (
            f"Read the cluster manager's logs of application {app_id} (YARN: `yarn logs -applicationId {app_id}`; "
            "Kubernetes: the executor pods' events and logs); check that the executors reach this machine at "
            "cluster.driver_host and that every node can run them."
        )
    state = read_json(webui)
    if state is None:
        return (
            f"The master's web UI at {webui} did not answer (set cluster.master_webui to read why); check that the "
            "workers reach this machine at cluster.driver_host and that every node can run the executors."
        )
    apps = {app["id"]: app for key in ("activeapps", "completedapps") for app in state.get(key, [])}
    app = apps.get(app_id)
    if app is None:
        return f"The master at {webui} does not list application {app_id}."
    if app.get("state") not in ("RUNNING", "WAITING"):
        return f"The master lists application {app_id} as {app.get('state')}."
    workers = [worker for worker in state.get("workers", []) if worker.get("state") == "ALIVE"]
    if not app.get("cores"):
        offers = "; ".join(
            f"{worker.get('host')}: {worker.get('coresfree')} cores, {worker.get('memoryfree')} MiB free, "
            f"resources {worker.get('resourcesfree') or {}}"
            for worker in workers
        )
        return (
            f"The master granted it no cores: no ALIVE worker can host one executor ({app.get('memoryperexecutor')} "
            f"MiB, resources {app.get('resourcesperexecutor') or []}, cluster.worker_cores cores). Workers: "
            f"{offers or 'none ALIVE'}."
        )
    exited, told = [], set()
    for worker in workers:
        detail = read_json(worker.get("webuiaddress", "")) or {}
        mine = [run for run in detail.get("finishedexecutors", []) if run.get("appid") == app_id]
        if mine:
            exited.append(f"{worker.get('host')}: {len(mine)}")
        for run in detail.get("executors", []) + mine:
            told.update(_DRIVER_URL.findall(str(run.get("appdesc", {}).get("command", ""))))
    where = ", ".join(sorted(told)) or "the driver's address"
    launched = f"executors exited before registering ({'; '.join(exited)})" if exited else "no executor registered"
    return (
        f"The master granted it {app['cores']} cores and {launched}, each told to reach {where}: check that every "
        "node reaches that address and port (cluster.driver_host), runs Java, and finds the Python of "
        "spark.pyspark.python with the tool's packages; an executor's own error is in WORK_DIR/"
        f"{app_id}/EXECUTOR_ID/stderr on its worker."
    )
