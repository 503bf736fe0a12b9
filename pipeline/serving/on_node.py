"""The node's side of `pipeline.serving.nodes`: what a task of the barrier stages runs on its node to start
the node's model server (`start_here`) and to stop it (`stop_here`).

What outlives what: the server's parent is the Python worker that ran the task, which Spark ends when it has
idled a minute (or at once with `spark.python.worker.reuse=false`), long before the run is over; the server
must outlive it but not the executor. So it runs in a session of its own (the pyspark daemon's SIGHUP to its
group on shutdown does not reach it) and watches the executor JVM above its parent by PID and start time
(`pipeline.runtime.lifetime.die_with_process`, from the spec's `watch`): an executor that dies, or an
application that ends, takes its node's server with it within a second.

Every server's PID, start time, workspace and URL are recorded on the storage root as soon as its process runs
(`<run area>/server/<node>/pid-PID.json`): the stop task stops what is recorded there (a server whose start
failed, or an earlier attempt's, too), and a start task first stops what an earlier attempt of its stage left.
A task returns what went wrong instead of raising it: a failed barrier task would restart every node's start.

Several executors on one node (a standalone worker with more cores than an executor's, YARN, Kubernetes) share
the node's one server: its GPUs are the server's, not an executor's. Each stage's tasks gather every task's host
name (`BarrierTaskContext.allGather`) and the first task on each node (`starters`) alone starts, or stops, that
node's server; the others only report their executor. A task attempt that overlaps an earlier one's (a barrier
stage retried while the old attempt still runs; barrier stages are never speculated) waits for the node's lock
(`node_lock`) and then stops what the earlier one recorded, so a node never runs two servers.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from pipeline.rundir import atomic_write
from pipeline.runtime.lifetime import PARENT_ENV
from pipeline.runtime.locks import bounded_lock
from pipeline.runtime.processes import ProcessesSurvived, jvm_above, running, stop_processes
from pipeline.serving import environment
from pipeline.serving.process import USAGE_FILE, ServerError, start
from pipeline.spark.nodes import executor

STATUS_FILE = "status.json"
PID_FILES = "pid-*.json"
LOCK_FILE = "node.lock"
STOP_GRACE_S = 20.0  # SIGTERM to SIGKILL, per server


@dataclass(frozen=True)
class NodeLaunch:
    """What each server-starting task needs, pickled into the barrier stage: plain data and the weights' path,
    so that a task imports neither torch nor the model's modules (seconds a task, in each start and stop stage;
    the server process imports them itself)."""

    model: dict[str, Any]  # the ModelSpec's fields, but its weights file
    weights: str | os.PathLike[str] | None  # a SparkFile (shipped with the application), resolved on the node
    preprocessing: dict[str, Any]  # the Preprocessing's fields
    settings: dict[str, Any]  # the spec every node's server shares: instances, batching, token
    python: str  # the server environment's interpreter, at a path every node sees
    directory: str  # <run area>/server on the storage root: each node's files under <directory>/<node>/
    reach: str  # the harness's address as the nodes reach it: a node binds its own address on that route
    grpc_port: int | None
    threads: int | None
    timeout_s: float


def starters(tasks: Sequence[tuple[int, str]]) -> dict[str, int]:
    """Each node's acting task among a barrier stage's (partition, host name) pairs: its lowest partition.
    Every task computes it from the same gathered list, so each node gets exactly one, with no round trip to
    the driver."""
    found: dict[str, int] = {}
    for partition, host in tasks:
        found[host] = min(partition, found.get(host, partition))
    return found


def node_lock(node_dir: Path, timeout_s: float) -> AbstractContextManager[None]:
    """Held while a task starts or stops its node's server: an overlapping attempt of the same stage waits for
    it, at most `timeout_s` (then LockTimeout naming the lock file and its holder). The lock file is in the
    node's folder on the storage root, removed with it once its servers stopped."""
    node_dir.mkdir(parents=True, exist_ok=True)
    return bounded_lock(node_dir / LOCK_FILE, timeout_s, f"starting or stopping node {node_dir.name}'s model server")


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
    return jvm_above(os.getpid()) or psutil.Process().parent()


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


def start_here(launch: NodeLaunch, starter: bool = True) -> dict[str, Any]:
    """A start-stage task's work on its node: the node's starter (`starters`) starts the server and returns its
    record, another task only its node, address and executor (it shares the server); {"node", "error"} saying
    why not."""
    node = socket.gethostname()
    try:
        if not starter:
            return {"node": node, "address": node_address(launch.reach), "executor": executor()}
        with node_lock(Path(launch.directory) / node, launch.timeout_s + 2 * STOP_GRACE_S):
            return {**_start_here(launch, node), "executor": executor()}
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
    weights = os.fspath(launch.weights) if launch.weights is not None else None
    common = {
        **launch.settings,
        "model": {**launch.model, "weights_file": weights},
        "preprocessing": launch.preprocessing,
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
        _, process, ready, log_file, spec, retried = start(
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
        "start_retries": retried,
    }


def stop_here(directory: str, starter: bool = True) -> dict[str, Any]:
    """A stop-stage task's work on its node: the node's acting task (`starters`) stops what is recorded for it
    (`stop_recorded`); another task on the node says it shares ("shares": True) and touches nothing."""
    node = socket.gethostname()
    try:
        if not starter:
            return {"node": node, "executor": executor(), "shares": True}
        with node_lock(Path(directory) / node, 2 * STOP_GRACE_S):
            return {"node": node, "executor": executor(), **stop_recorded(Path(directory) / node)}
    except Exception as error:
        return {"node": node, "error": f"node {node}: {type(error).__name__}: {error}"}
