"""`topology=model_server` on a cluster of other machines (cluster=remote): one model server per worker node,
started and stopped by the cluster itself, as NVIDIA's Spark-DL examples do.

The harness cannot start a process on another machine; a Spark task can. So the servers are started by a
barrier stage of one task per executor (`on_every_node`: `mapInPandas(..., barrier=True, profile=...)` over a
DataFrame of one row per executor, whose task ResourceProfile asks for every core of an executor, so no two
of its tasks share one; the same call serves a classic session and Spark Connect, which has no RDD API).
The tasks first gather each other's host names; the first task on each node (`on_node.starters`) starts the
server process on its node (`start_here`), bound to the node's own address (its source address on the route to
the harness) on free ports, waits until it is ready (`topology.start_timeout_s`) and returns its node name,
address, PID and ports; the node's other tasks (several executors on one node) return only their executor, which
shares the node's server (`servers_of` keeps one record per node, with the executors that share it). Tasks then
find their own node's server by the node's name (`pipeline.serving.client.ServerPerNode`).

A task's part is `pipeline.serving.on_node`: the server runs in a session of its own and lives as long as its
starter's executor JVM (not the Python worker that started it), and its PID is recorded on the storage root as
soon as it runs. A second barrier pass (`stop_here`, again one acting task per node) stops every recorded server
with all it started (Triton, its Python stubs), also when the run failed; a record left after it (its node or
executor gone) is checked from the driver: a server that still answers on its port fails the run (`_stop_all`).

The server's environment is made by the driver (it needs the package index) on a path every node sees
(`pipeline.serving.environment.root`: `<storage>/server-env` by default). The servers' statistics, per node and
summed, are `pipeline.serving.node_stats`'s.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

from pipeline.config.schema import Config, ModelName
from pipeline.inference.steps import Inference
from pipeline.serving import environment
from pipeline.serving.launcher import instances
from pipeline.serving.node_stats import NodeServers, answers, servers_of
from pipeline.serving.on_node import PID_FILES, NodeLaunch, start_here, stop_here
from pipeline.serving.process import ServerError
from pipeline.spark.cluster import driver_host
from pipeline.spark.plan import Plan

log = logging.getLogger(__name__)

START_MARGIN_S = 120.0  # the start stage's bound beyond start_timeout_s: executors' Python workers, scheduling
STOP_TIMEOUT_S = 90.0  # the stop stage's bound (a node lost since the start leaves it waiting for a slot)


def on_every_node(
    spark: Any, count: int, cpus: int, work: Callable[[bool], dict[str, Any]], timeout_s: float, what: str
) -> list[dict[str, Any]]:
    """`work(starter)` once on each of `count` executors at the same time, in a barrier stage whose tasks ask
    for `cpus` cores (an executor's all), `starter` true for one task per node (`on_node.starters`, from the
    host names the tasks gather); what each returned. Bounded: a stage still waiting (for executors a barrier
    stage needs all of at once) after `timeout_s` is cancelled, and ServerError says so."""
    import pandas as pd
    from pyspark.resource import ResourceProfileBuilder, TaskResourceRequests

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import socket

        from pyspark import BarrierTaskContext

        from pipeline.serving.on_node import starters

        for _ in frames:
            pass
        context, host = BarrierTaskContext.get(), socket.gethostname()
        tasks = [json.loads(task) for task in context.allGather(json.dumps([context.partitionId(), host]))]
        found = work(starters([(partition, name) for partition, name in tasks])[host] == context.partitionId())
        context.barrier()  # every node's work done before any task returns
        yield pd.DataFrame({"record": [json.dumps(found)]})

    profile = ResourceProfileBuilder().require(TaskResourceRequests().cpus(cpus)).build
    frame = spark.range(count, numPartitions=count).mapInPandas(run, "record string", barrier=True, profile=profile)
    tag = f"sib-node-servers-{secrets.token_hex(4)}"
    expired = threading.Event()

    def cancel() -> None:
        expired.set()
        spark.interruptTag(tag)

    spark.addTag(tag)
    timer = threading.Timer(timeout_s, cancel)
    timer.start()
    try:
        rows = frame.collect()
    except Exception as error:
        if expired.is_set():
            raise ServerError(
                f"{what} did not finish within {timeout_s:.0f} s: a barrier stage of {count} tasks of {cpus} cores "
                f"each (one per executor: cluster.workers={count}, cluster.worker_cores={cpus}) waits until that "
                "many executors are free at once"
            ) from error
        raise
    finally:
        timer.cancel()
        spark.removeTag(tag)
    return [json.loads(row["record"]) for row in rows]


def _launch(config: Config, plan: Plan, inference: Inference, python: Path, directory: Path, token: str) -> NodeLaunch:
    topology = config.topology
    planned = instances(config, plan)
    settings = {
        "crop_size": inference.preprocessing.crop_size,
        "instances": [asdict(instance) for instance in planned],
        "max_batch_size": topology.max_batch_size,
        "max_queue_delay_us": topology.max_queue_delay_us,
        "token": token,
    }
    return NodeLaunch(
        model=asdict(replace(inference.model, weights_file=None)),
        weights=inference.model.weights_file,
        preprocessing=asdict(inference.preprocessing),
        settings=settings,
        python=str(python),
        directory=str(directory),
        reach=driver_host(config.cluster),  # the plan of an sc:// client keeps 127.0.0.1: it is no driver
        grpc_port=topology.grpc_port,
        threads=topology.threads,
        timeout_s=topology.start_timeout_s,
    )


def keep_logs(directory: Path, logs: Path) -> None:
    """The servers' logs moved from the storage root into the run dir (`logs/<node>/`), and what the servers left
    on the storage root removed with them, unless a record says a server may still run."""
    for log_file in sorted(directory.glob("*/server*.log")):
        target = logs / log_file.parent.name / log_file.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(log_file, target)
    if directory.exists() and not any(directory.glob(f"*/{PID_FILES}")):
        shutil.rmtree(directory, ignore_errors=True)


def left_running(directory: Path) -> list[dict[str, Any]]:
    """The servers whose records the stop pass left (their node or executor gone since the start): each is
    dropped if nothing answers on its port any more (it died with its executor), else returned."""
    left = []
    for path in sorted(directory.glob(f"*/{PID_FILES}")):
        record = {**json.loads(path.read_text()), "node": path.parent.name}
        if answers(record["url"]):
            left.append(record)
        else:
            path.unlink(missing_ok=True)
    return left


@contextmanager
def node_servers(
    spark: Any,
    config: Config,
    plan: Plan,
    inference: Inference,
    directory: Path,
    logs: Path,
    describe: Callable[[str], None],
) -> Iterator[NodeServers]:
    """A model server on each of the cluster's `cluster.workers` nodes for the block (module docstring), their
    records in `directory` on the storage root; then stopped by the cluster however the block ends, and their logs
    moved to `logs` (the run dir's), a folder per node. `describe` names the next Spark job."""
    topology = config.topology
    began = time.perf_counter()
    python = environment.ensure(environment.root(config))
    environment_s = time.perf_counter() - began
    directory.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    launch = _launch(config, plan, inference, python, directory, token)
    count, cpus = plan.workers, plan.worker_cores
    servers: NodeServers | None = None
    failing = False
    try:
        describe(f"model servers: start one per node of the {count} executors")
        began = time.perf_counter()
        records = on_every_node(
            spark,
            count,
            cpus,
            partial(start_here, launch),
            topology.start_timeout_s + START_MARGIN_S,
            "starting the model servers",
        )
        servers = NodeServers(
            servers_of(records, count),
            token,
            instances(config, plan),
            topology,
            time.perf_counter() - began,
            environment_s,
            directory,
            usage=config.model.name is ModelName.accelerator,
            logs=logs,
        )
        servers.read_model_config()
        log.info(
            "model servers on %d nodes (%s), started in %.1f s (environment %.1f s)",
            len(servers.servers),
            ", ".join(f"{s.node} {s.url} pid {s.pid} executors {','.join(s.executors)}" for s in servers.servers),
            servers.start_s,
            environment_s,
        )
        yield servers
    except BaseException:
        failing = True
        raise
    finally:
        began = time.perf_counter()
        stopped = _stop_all(spark, count, cpus, directory, describe, failing)
        if servers is not None:
            servers.stopped, servers.stop_s = stopped, time.perf_counter() - began
        keep_logs(directory, logs)


def _stop_all(
    spark: Any, count: int, cpus: int, directory: Path, describe: Callable[[str], None], failing: bool
) -> list[dict[str, Any]]:
    """The stop pass (when anything was started), then what it left; ServerError if a server still answers,
    unless the block is failing already (its error is the run's; the leftover is logged)."""
    stopped: list[dict[str, Any]] = []
    problem = None
    if any(directory.glob(f"*/{PID_FILES}")):
        describe("model servers: stop")
        try:
            stopped = on_every_node(spark, count, cpus, partial(stop_here, str(directory)), STOP_TIMEOUT_S, "stopping")
        except Exception as error:  # a lost node, a stopped application: what is left is checked below
            problem = f"the stop pass failed: {type(error).__name__}: {str(error).splitlines()[0][:300]}"
            log.warning("model servers: %s", problem)
    stopped = [report for report in stopped if not report.get("shares")]  # the node's acting task reports it
    errors = [report["error"] for report in stopped if "error" in report]
    survived = [f"{report['node']} pid {pid}" for report in stopped for pid in report.get("survived", [])]
    left = [f"{record['node']} pid {record['pid']} ({record['url']})" for record in left_running(directory)]
    if errors or survived or left:
        message = (
            f"model servers left running after the run: {', '.join(left + survived) or 'none answering'}"
            f"{'; ' + '; '.join(errors) if errors else ''}{'; ' + problem if problem else ''}"
        )
        if failing:
            log.error(message)
        else:
            raise ServerError(message)
    return stopped
