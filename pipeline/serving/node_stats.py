"""The driver's view of the model servers of a cluster's nodes (`pipeline.serving.nodes`): the servers the
start stage recorded, where the tasks find them, each node's statistics per pass and their sums, whether they
still answer.

Statistics: Triton's statistics API of each node, read by the driver over the node's address (restricted to a
token only the harness knows); what psutil on the driver cannot see, each server's CPU seconds and its simulated
devices' totals, from the status file the server rewrites on the storage root
(`pipeline.serving.server.publish_status`). `evidence.server` keeps each node's figures under `nodes` and their
sums under a single server's keys.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.serving.client import MODEL_NAME, ServerPerNode
from pipeline.serving.launcher import TOKEN_HEADER, Instance, ServerDied, _flat, delta
from pipeline.serving.process import ServerError

STATUS_TIMEOUT_S = 10.0  # a status file that does not move in this long: its server is stuck or gone
DYING_S = 10.0  # a server that refused its statistics (Triton shutting down: "Server not ready") gone by then


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
    executor_pid: int  # the JVM of the executor whose task started it: the server lives as long as it
    stopped_earlier: list[int] = field(default_factory=list)
    start_retries: list[dict[str, Any]] = field(default_factory=list)  # process.start: the failed starts tried again
    executors: list[str] = field(default_factory=list)  # the executors on the node, which share its server


def servers_of(records: list[dict[str, Any]], count: int) -> list[NodeServer]:
    """The servers the start stage recorded, one per node with the executors that share it, ordered by node;
    ServerError naming each node whose server did not start, and each host name that stands for two machines
    (executors at different addresses: a task finds its node's server by host name)."""
    errors = [record["error"] for record in records if "error" in record]
    if errors:
        raise ServerError(f"the model server did not start on {len(errors)} of {count} nodes: " + "; ".join(errors))
    by_node: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_node.setdefault(record["node"], []).append(record)
    found, problems = [], []
    for node, tasks in sorted(by_node.items()):
        server, problem = _node_server(node, tasks)
        found += [server] if server else []
        problems += [problem] if problem else []
    if problems:
        raise ServerError(f"model servers per node ({count} executors): " + "; ".join(problems))
    return found


def _node_server(node: str, tasks: list[dict[str, Any]]) -> tuple[NodeServer | None, str | None]:
    """One node's server from its executors' records, or what is wrong with them."""
    started = [task for task in tasks if "pid" in task]
    addresses = sorted({task["address"] for task in tasks})
    if len(addresses) > 1:
        return None, (
            f"node {node}: executors at {', '.join(addresses)} share this host name; a task finds its node's server "
            "by host name, so each machine needs a host name of its own"
        )
    if len(started) != 1:
        return None, f"node {node}: {len(started)} servers started for its {len(tasks)} executors, not one"
    record = {key: value for key, value in started[0].items() if key != "executor"}
    executors = sorted((task["executor"] for task in tasks), key=lambda name: (len(name), name))
    return NodeServer(**record, executors=executors), None


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
    stopped: list[dict[str, Any]] = field(default_factory=list)  # what the stop pass did on each node
    stop_s: float | None = None  # the stop pass, on the driver's clock
    logs: Path | None = None  # where each node's server's log is kept once it stopped: logs/<node>/server.log

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

    def _statistics_of(self, server: NodeServer, dying_s: float = DYING_S) -> dict[str, Any]:
        """`_statistics`; a server that refuses them and stops answering within `dying_s` died (its executor
        died and took it along: ServerDied names its node), not a mere failed read."""
        try:
            return self._statistics(server)
        except ServerError as error:
            deadline = time.monotonic() + dying_s
            while answers(server.url) and time.monotonic() < deadline:
                time.sleep(0.2)
            self.check_alive(error)
            raise

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
            mark = {**self._statistics_of(server), "cpu_s": status["cpu_s"]}
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
                f"({self.died['reason']}); the tasks' requests failed; log: {self.log_of(server)}"
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
            "stop_s": self.stop_s,
            "nodes": [self._node_evidence(server, warmup) for server in self.servers],
        }
        found |= _passes(self.marks, warmup)
        return found

    def log_of(self, server: NodeServer) -> str:
        """Where the server's log is kept once the servers stopped (the run dir), else where it is written."""
        return str(self.logs / server.node / Path(server.log).name) if self.logs else server.log

    def _node_evidence(self, server: NodeServer, warmup: int) -> dict[str, Any]:
        found = {**asdict(server), **_passes(self.node_marks.get(server.node, []), warmup)}
        return found | {"log": self.log_of(server)}


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
