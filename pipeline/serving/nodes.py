"""`topology=model_server` on a cluster of other machines (cluster=remote): one model server per worker node,
started and stopped by the cluster itself, as NVIDIA's Spark-DL examples do.

The harness cannot start a process on another machine; a Spark task can. So the servers are started by a
barrier stage of one task per executor (`on_every_node`: `mapInPandas(..., barrier=True, profile=...)` over a
DataFrame of one row per executor, whose task ResourceProfile asks for every core of an executor, so no two
of its tasks share one; the same call serves a classic session and Spark Connect, which has no RDD API).
Each task (`start_here`) starts the server process on its node, bound to the node's own address (its source
address on the route to the harness) on free ports, waits until it is ready (`topology.start_timeout_s`) and
returns its node name, address, PID and ports. Tasks then find their own node's server by the node's name
(`pipeline.serving.client.ServerPerNode`).

What outlives what: the server's parent is the Python worker that ran the task, which Spark ends when it has
idled a minute (or at once with `spark.python.worker.reuse=false`), long before the run is over; the server
must outlive it but not the executor. So it runs in a session of its own (the pyspark daemon's SIGHUP to its
group on shutdown does not reach it) and watches the executor JVM above its parent by PID and start time
(`pipeline.runtime.lifetime.die_with_process`): an executor that dies, or an application that ends, takes
its node's server with it within a second. Normally it is stopped before that, by a second barrier pass
(`stop_here`) that stops the recorded process and everything under it (Triton, its Python stubs), also when
the run failed. Every server's PID, start time and ports are recorded on the storage root as soon as its
process runs (`<run area>/server/<node>/pid-PID.json`): the stop pass reads them there, so a server whose
start failed or whose stage was retried is stopped too; a record left after the stop pass (its node or
executor gone) is checked from the driver: a server that still answers on its port fails the run.

The server's environment is made by the driver (it needs the package index) on a path every node sees
(`pipeline.serving.environment.root`: `<storage>/server-env` by default). Its statistics are read by the
driver over the nodes' addresses (Triton's statistics API, with a token only the harness knows), and what
psutil on the driver cannot see, each server's CPU seconds and its simulated devices' totals, from the status
file each server keeps on the storage root (`pipeline.serving.server.publish_status`). `evidence.server`
keeps each node's figures and their sums.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from pipeline.config.schema import Config, ModelName
from pipeline.inference.model import ModelSpec
from pipeline.inference.preprocess import Preprocessing
from pipeline.inference.steps import Inference
from pipeline.rundir import atomic_write
from pipeline.runtime.lifetime import PARENT_ENV
from pipeline.runtime.processes import ProcessesSurvived, running, stop_processes
from pipeline.serving import environment
from pipeline.serving.client import MODEL_NAME, ServerPerNode
from pipeline.serving.launcher import (
    TOKEN_HEADER,
    USAGE_FILE,
    Instance,
    ServerDied,
    ServerError,
    _flat,
    delta,
    instances,
    start,
)
from pipeline.spark.plan import Plan, driver_host

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
PID_FILES = "pid-*.json"
START_MARGIN_S = 120.0  # the start stage's bound beyond start_timeout_s: executors' Python workers, scheduling
STOP_TIMEOUT_S = 90.0  # the stop stage's bound (a node lost since the start leaves it waiting for a slot)
STOP_GRACE_S = 20.0  # SIGTERM to SIGKILL, per server
STATUS_TIMEOUT_S = 10.0  # a status file that does not move in this long: its server is stuck or gone
ANSWER_TIMEOUT_S = 5.0


# ------------------------------------------------------------------------------------------- on the node


@dataclass(frozen=True)
class NodeLaunch:
    """What each server-starting task needs, pickled into the barrier stage."""

    model: ModelSpec  # its weights a SparkFile (shipped with the application), resolved on the node
    preprocessing: Preprocessing
    settings: dict[str, Any]  # the spec every node's server shares: instances, batching, token
    python: str  # the server environment's interpreter, at a path every node sees
    directory: str  # <run area>/server on the storage root: each node's files under <directory>/<node>/
    reach: str  # the harness's address as the nodes reach it: a node binds its own address on that route
    grpc_port: int | None
    threads: int | None
    timeout_s: float


def node_address(reach: str) -> str:
    """This node's address on the route to `reach` (the kernel's choice of source address; no packet sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((reach, 9))
        return probe.getsockname()[0]


def free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def executor_jvm() -> psutil.Process:
    """The executor JVM above this Python worker (worker -> pyspark daemon -> JVM): the first java ancestor,
    else the parent."""
    me = psutil.Process()
    for ancestor in me.parents():
        try:
            if ancestor.name() == "java":
                return ancestor
        except psutil.Error:
            continue
    return me.parent()


def node_environment() -> dict[str, str]:
    """The server's environment on a node: the Python worker's (its PYTHONPATH finds the tool), this
    interpreter's libpython first (`environment.libpython_dir`), no parent for it to die with."""
    env = {key: value for key, value in os.environ.items() if key != PARENT_ENV}
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        part for part in (environment.libpython_dir(), env.get("LD_LIBRARY_PATH", "")) if part
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _pid_file(node_dir: Path, pid: int) -> Path:
    return node_dir / f"pid-{pid}.json"


def _recorded_process(record: dict[str, Any]) -> psutil.Process | None:
    """The recorded server process if it still runs (same PID and start time), else None."""
    try:
        process = psutil.Process(record["pid"])
        if process.create_time() != record["started"]:
            return None
    except psutil.Error:
        return None
    return process if running(process) else None


def stop_recorded(node_dir: Path, grace_s: float = STOP_GRACE_S) -> dict[str, list[int]]:
    """Stop every server recorded in `node_dir` (run on its node) with all it started, remove its record and
    workspace: {"stopped": PIDs, "gone": PIDs that had ended already, "survived": PIDs SIGKILL did not end}."""
    found: dict[str, list[int]] = {"stopped": [], "gone": [], "survived": []}
    for path in sorted(node_dir.glob(PID_FILES)):
        record = json.loads(path.read_text())
        process = _recorded_process(record)
        if process is None:
            found["gone"].append(record["pid"])
        else:
            try:
                stop_processes([process], timeout=grace_s)
                found["stopped"].append(record["pid"])
            except ProcessesSurvived:
                found["survived"].append(record["pid"])
                continue
        shutil.rmtree(record["workspace"], ignore_errors=True)
        path.unlink(missing_ok=True)
    return found


def start_here(launch: NodeLaunch) -> dict[str, Any]:
    """The server-starting task's work on its node: the node's record, or {"node", "error"} saying why not."""
    node = socket.gethostname()
    try:
        return _start_here(launch, node)
    except Exception as error:  # returned, not raised: a failed barrier task would restart every node's start
        return {"node": node, "error": f"node {node}: {type(error).__name__}: {error}"}


def _start_here(launch: NodeLaunch, node: str) -> dict[str, Any]:
    node_dir = Path(launch.directory) / node
    node_dir.mkdir(parents=True, exist_ok=True)
    python = Path(launch.python)
    if not python.exists():
        raise ServerError(
            f"no model server environment at {python} on this node: topology.server_env must be a directory every "
            "node sees at the same path (default: <storage>/server-env)"
        )
    earlier = stop_recorded(node_dir)  # an earlier attempt of this stage on this node
    address = node_address(launch.reach)
    executor = executor_jvm()
    workspace = Path(tempfile.mkdtemp(prefix="sib-triton-"))  # on the node: unix socket paths under 108 bytes
    weights = launch.model.weights_file
    model = dataclasses.replace(launch.model, weights_file=os.fspath(weights) if weights is not None else None)
    common = {
        **launch.settings,
        "model": asdict(model),
        "preprocessing": asdict(launch.preprocessing),
        "address": address,
        "threads": launch.threads or os.cpu_count() or 1,
        "workspace": str(workspace / "triton"),
        "ready": str(workspace / "ready.json"),
        "usage": str(node_dir / USAGE_FILE),
        "status": str(node_dir / STATUS_FILE),
        "watch": {"pid": executor.pid, "started": executor.create_time()},
    }
    specs: list[dict[str, Any]] = []

    def spec_for() -> dict[str, Any]:
        ports = {"grpc": launch.grpc_port or free_port(address), "http": free_port(address)}
        specs.append({**common, "ports": {**ports, "metrics": free_port(address)}})
        return specs[-1]

    def record(process: psutil.Process) -> None:
        found = {"pid": process.pid, "started": process.create_time(), "workspace": str(workspace)}
        found["url"] = f"{address}:{specs[-1]['ports']['grpc']}"
        atomic_write(_pid_file(node_dir, process.pid), json.dumps(found).encode())

    began = time.perf_counter()
    try:
        _, process, ready, log_file, spec = start(
            python, spec_for, workspace, launch.timeout_s, node_environment(), node_dir, record
        )
    except BaseException:
        shutil.rmtree(workspace, ignore_errors=True)
        raise
    return {
        "node": node,
        "address": address,
        "url": f"{address}:{spec['ports']['grpc']}",
        "pid": process.pid,
        "started": process.create_time(),
        "ports": spec["ports"],
        "start_s": time.perf_counter() - began,
        "model_load_s": ready.get("model_load_s"),
        "torch_threads": ready.get("torch_threads"),
        "log": str(log_file),
        "status": common["status"],
        "usage": common["usage"],
        "executor_pid": executor.pid,
        "stopped_earlier": earlier["stopped"],
    }


def stop_here(directory: str) -> dict[str, Any]:
    """The stopping task's work on its node: stop what is recorded for it (`stop_recorded`)."""
    node = socket.gethostname()
    try:
        return {"node": node, **stop_recorded(Path(directory) / node)}
    except Exception as error:
        return {"node": node, "error": f"node {node}: {type(error).__name__}: {error}"}


# ------------------------------------------------------------------------------------------- the driver


def on_every_node(
    spark: Any, count: int, cpus: int, work: Callable[[], dict[str, Any]], timeout_s: float, what: str
) -> list[dict[str, Any]]:
    """`work()` once on each of `count` executors at the same time, in a barrier stage whose tasks ask for
    `cpus` cores (an executor's all); what each returned. Bounded: a stage still waiting (for executors a
    barrier stage needs all of at once) after `timeout_s` is cancelled, and ServerError says so."""
    import pandas as pd
    from pyspark.resource import ResourceProfileBuilder, TaskResourceRequests

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from pyspark import BarrierTaskContext

        for _ in frames:
            pass
        found = work()
        BarrierTaskContext.get().barrier()  # every node's work done before any task returns
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


@dataclass(frozen=True)
class NodeServer:
    """One node's running server, as its starting task recorded it."""

    node: str
    address: str
    url: str
    pid: int
    started: float
    ports: dict[str, int]
    start_s: float
    model_load_s: float | None
    torch_threads: int | None
    log: str
    status: str
    usage: str
    executor_pid: int
    stopped_earlier: list[int] = field(default_factory=list)


def servers_of(records: list[dict[str, Any]], count: int) -> list[NodeServer]:
    """The servers the start stage recorded; ServerError naming each node whose server did not start, or a
    node that got two (two executors on one node: a server per node assumes one executor per node)."""
    errors = [record["error"] for record in records if "error" in record]
    if errors:
        raise ServerError(f"the model server did not start on {len(errors)} of {count} nodes: " + "; ".join(errors))
    nodes = [record["node"] for record in records]
    doubled = sorted({node for node in nodes if nodes.count(node) > 1})
    if doubled:
        raise ServerError(
            f"two or more executors on node(s) {', '.join(doubled)}: one model server per node assumes one executor "
            f"per node (cluster.workers={count} executors on {len(set(nodes))} nodes)"
        )
    return [NodeServer(**record) for record in sorted(records, key=lambda record: record["node"])]


def _ask(server: NodeServer, what: str, call: Callable[[Any], Any]) -> Any:
    import tritonclient.grpc as grpc

    client = grpc.InferenceServerClient(server.url)
    try:
        return call(client)
    except Exception as error:
        raise ServerError(
            f"the model server on node {server.node} ({server.url}, pid {server.pid}) did not answer {what}: {error}"
        ) from error
    finally:
        client.close()


def answers(url: str, timeout_s: float = 2.0) -> bool:
    """Whether something accepts connections at `url` (HOST:PORT)."""
    host, port = url.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except OSError:
        return False


def _summed(marks: list[dict[str, Any]]) -> dict[str, Any]:
    """One snapshot of several servers: every count and time added, batch sizes merged."""
    total: dict[str, Any] = {"batch_sizes": {}}
    for mark in marks:
        for key, value in mark.items():
            if key == "batch_sizes":
                for size, count in value.items():
                    total["batch_sizes"][size] = total["batch_sizes"].get(size, 0) + count
            else:
                total[key] = total.get(key, 0) + value
    return total


@dataclass
class NodeServers:
    """The model servers of a cluster's nodes, as the run uses them: where the tasks find them, statistics
    per pass (each node's and their sums), whether they still answer, and what the stop pass did."""

    servers: list[NodeServer]
    token: str
    instances: list[Instance]
    topology: Any
    start_s: float  # the start stage, on the driver's clock: every node's server ready
    environment_s: float
    directory: Path
    usage: bool = False  # model=accelerator: the status files carry the simulated devices' totals
    marks: list[dict[str, Any]] = field(default_factory=list)  # summed over the nodes
    node_marks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    model_config: dict[str, Any] = field(default_factory=dict)
    died: dict[str, Any] | None = None
    stopped: list[dict[str, Any]] = field(default_factory=list)

    @property
    def address(self) -> ServerPerNode:
        """What the tasks get: their node's server by the node's name."""
        return ServerPerNode(tuple((s.node, s.url) for s in self.servers), self.topology.request_timeout_s)

    def read_model_config(self) -> None:
        found = _ask(self.servers[0], "its model config", lambda c: c.get_model_config(MODEL_NAME, as_json=True))
        self.model_config = found["config"]

    def _statistics(self, server: NodeServer) -> dict[str, Any]:
        headers = {TOKEN_HEADER: self.token}
        found = _ask(
            server,
            "its statistics",
            lambda client: client.get_inference_statistics(MODEL_NAME, headers=headers, as_json=True),
        )
        return _flat(found["model_stats"][0])

    def _statuses(self) -> dict[str, dict[str, Any]]:
        """Each server's status file, once it has been rewritten twice since this call began (so its figures
        were taken after it began)."""
        first = {s.node: _read_status(s) for s in self.servers}
        deadline = time.monotonic() + STATUS_TIMEOUT_S
        found: dict[str, dict[str, Any]] = {}
        while len(found) < len(self.servers):
            for server in self.servers:
                status = _read_status(server)
                if server.node not in found and status["sequence"] >= first[server.node]["sequence"] + 2:
                    found[server.node] = status
            if len(found) < len(self.servers):
                if time.monotonic() > deadline:
                    stuck = [s for s in self.servers if s.node not in found]
                    self.check_alive(None)
                    raise ServerError(
                        f"the model server on node {stuck[0].node} (pid {stuck[0].pid}) did not update its status "
                        f"file {stuck[0].status} in {STATUS_TIMEOUT_S:.0f} s"
                    )
                time.sleep(0.05)
        return found

    def mark(self) -> None:
        """A statistics snapshot of every node between passes (before each, and after the last), with each
        server's CPU seconds so far; fails naming the node if a server stopped answering."""
        self.check_alive(None)
        statuses = self._statuses()
        node_marks = []
        for server in self.servers:
            status = statuses[server.node]
            mark = {**self._statistics(server), "cpu_s": status["cpu_s"]}
            if self.usage:
                mark |= {"device_busy_s": status["busy_s"], "device_wait_s": status["wait_s"]}
                mark["device_calls"] = status["calls"]
            self.node_marks.setdefault(server.node, []).append(mark)
            node_marks.append(mark)
        self.marks.append(_summed(node_marks))

    def check_alive(self, error: BaseException | None) -> None:
        """Raise ServerDied (from `error`) naming the first node whose server no longer answers."""
        if self.died is None:
            for server in self.servers:
                if not answers(server.url):
                    self.died = {"at": time.time(), "node": server.node, "reason": "no longer answers on its port"}
                    break
        if self.died is not None:
            server = next(s for s in self.servers if s.node == self.died["node"])
            raise ServerDied(
                f"the model server on node {server.node} (pid {server.pid}, {server.url}) died during the run "
                f"({self.died['reason']}); the tasks' requests failed; log: {server.log}"
            ) from error

    def evidence(self, warmup: int) -> dict[str, Any]:
        """What the servers say they did, summed over the nodes (the keys of a single server's evidence), and
        each node's own figures under `nodes`."""
        groups = self.model_config.get("instance_group", [])
        found: dict[str, Any] = {
            "placement": "one per worker node, started by a barrier stage",
            "url": None,
            "pid": None,
            "start_s": self.start_s,
            "environment_s": self.environment_s,
            "model_load_s": max((s.model_load_s or 0.0 for s in self.servers), default=None),
            "torch_threads": self.servers[0].torch_threads if self.servers else None,
            "instances": [asdict(instance) for instance in self.instances],  # on each node
            "triton_instance_groups": [{"count": g.get("count"), "kind": g.get("kind")} for g in groups],
            "max_batch_size": self.topology.max_batch_size,
            "max_queue_delay_us": self.topology.max_queue_delay_us,
            "died": self.died,
            "stopped": self.stopped,
            "nodes": [self._node_evidence(server, warmup) for server in self.servers],
        }
        found |= _passes(self.marks, warmup)
        return found

    def _node_evidence(self, server: NodeServer, warmup: int) -> dict[str, Any]:
        return {**asdict(server), **_passes(self.node_marks.get(server.node, []), warmup)}


def _passes(marks: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    if len(marks) < 2:
        return {}
    return {
        "last_pass": delta(marks[-2], marks[-1]),
        "timed_passes": delta(marks[min(warmup, len(marks) - 2)], marks[-1]),
    }


def _read_status(server: NodeServer) -> dict[str, Any]:
    try:
        return json.loads(Path(server.status).read_text())
    except (OSError, ValueError):
        return {"sequence": -1, "cpu_s": 0.0, "busy_s": 0.0, "wait_s": 0.0, "calls": 0}


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
        model=inference.model,
        preprocessing=inference.preprocessing,
        settings=settings,
        python=str(python),
        directory=str(directory),
        reach=driver_host(config.cluster),  # the plan of an sc:// client keeps 127.0.0.1: it is no driver
        grpc_port=topology.grpc_port,
        threads=topology.threads,
        timeout_s=topology.start_timeout_s,
    )


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
    spark: Any, config: Config, plan: Plan, inference: Inference, directory: Path, describe: Callable[[str], None]
) -> Iterator[NodeServers]:
    """A model server on each of the cluster's `cluster.workers` nodes for the block (module docstring); then
    stopped by the cluster however the block ends. `describe` names the next Spark job."""
    topology = config.topology
    began = time.perf_counter()
    python = environment.ensure(environment.root(config))
    environment_s = time.perf_counter() - began
    directory.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    launch = _launch(config, plan, inference, python, directory, token)
    count, cpus = plan.workers, plan.worker_cores
    servers: NodeServers | None = None
    try:
        describe(f"model servers: start one on each of {count} nodes")
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
        )
        servers.read_model_config()
        log.info(
            "model servers on %d nodes (%s), started in %.1f s (environment %.1f s)",
            len(servers.servers),
            ", ".join(f"{s.node} {s.url} pid {s.pid}" for s in servers.servers),
            servers.start_s,
            environment_s,
        )
        yield servers
    finally:
        failing = sys.exc_info()[1] is not None
        stopped = _stop_all(spark, count, cpus, directory, describe, failing)
        if servers is not None:
            servers.stopped = stopped


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
