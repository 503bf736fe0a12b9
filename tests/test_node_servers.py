"""topology=model_server on a cluster of other machines (`pipeline.serving.nodes`): a task finds its own node's
server by the node's name, the start stage's records become one server per node (or an error naming the node),
each node's statistics are kept and summed, a node's recorded servers are stopped by PID, a server lives as
long as the process it watches, and validation asks for the storage root (fast, no server, no cluster). The
slow tests run whole jobs on the namespace cluster (tests/helpers/nscluster.py), classic and through Spark
Connect: a server per worker node, each task served by its own node's, every image once, nothing left."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
import psutil
import pytest
from pyspark import cloudpickle

from pipeline.config.validate import ConfigError, validate
from pipeline.inference.model import ModelSpec
from pipeline.inference.preprocess import Preprocessing
from pipeline.runtime.locks import LockTimeout
from pipeline.serving import client, environment, on_node
from pipeline.serving.client import ServerAddress, ServerPerNode, ServerUnavailable
from pipeline.serving.launcher import Instance, ServerDied
from pipeline.serving.node_stats import NodeServers, servers_of
from pipeline.serving.nodes import keep_logs, left_running
from pipeline.serving.on_node import stop_recorded
from pipeline.serving.process import ServerError
from pipeline.spark.evidence import check, node_usage
from pipeline.spark.ledger import TaskRecord, summarize
from pipeline.spark.nodes import executor_of
from pipeline.spark.plan import plan
from pipeline.spark.shipping import SparkFile
from tests.helpers.cli import checkout_env
from tests.helpers.config import compose_config, with_server_client
from tests.helpers.otherhosts import made_here

REMOTE = ["topology=model_server", "cluster=remote", "cluster.master=spark://127.0.0.1:7077"]


# ------------------------------------------------------------------------------------------ lookup by node


def test_a_task_uses_the_server_of_its_own_node(monkeypatch):
    servers = ServerPerNode((("node-a", "10.0.0.3:8001"), ("node-b", "10.0.0.4:8001")), timeout_s=7.0)
    assert servers.on("node-b") == ServerAddress("10.0.0.4:8001", 7.0)
    asked = []
    monkeypatch.setattr(ServerAddress, "predict", lambda self, crops: asked.append(self.url))
    monkeypatch.setattr(client, "this_node", lambda: "node-a")
    servers.predict(np.zeros((1, 3, 4, 4), dtype=np.uint8))
    assert asked == ["10.0.0.3:8001"]


def test_a_task_on_a_node_without_a_server_fails_naming_the_node(monkeypatch):
    servers = ServerPerNode((("node-a", "10.0.0.3:8001"),))
    monkeypatch.setattr(client, "this_node", lambda: "node-c")
    with pytest.raises(ServerUnavailable, match=r"no model server on node node-c: .* node-a \(10\.0\.0\.3:8001\)"):
        servers.predict(np.zeros((1, 3, 4, 4), dtype=np.uint8))


# ------------------------------------------------------------------------------------------ the start stage's records


def record(node: str, address: str, pid: int = 100, executor: str = "0") -> dict:
    """What `start_here` returns for a server that started."""
    return {
        "executor": executor,
        "node": node,
        "address": address,
        "url": f"{address}:8001",
        "pid": pid,
        "started": 1.0,
        "ports": {"grpc": 8001, "http": 8000, "metrics": 8002},
        "start_s": 3.0,
        "model_load_s": 0.5,
        "torch_threads": 1,
        "log": f"/storage/{node}/server.log",
        "status": f"/storage/{node}/status.json",
        "usage": f"/storage/{node}/device_usage.json",
        "executor_pid": 50,
        "stopped_earlier": [],
    }


def test_the_start_stage_gives_one_server_per_node_ordered_by_node():
    found = servers_of([record("node-b", "10.0.0.4"), record("node-a", "10.0.0.3")], count=2)
    assert [(s.node, s.url) for s in found] == [("node-a", "10.0.0.3:8001"), ("node-b", "10.0.0.4:8001")]


def test_a_node_whose_server_did_not_start_is_named():
    failed = {"node": "node-b", "error": "node node-b: ServerError: no model server environment at /x/bin/python"}
    with pytest.raises(ServerError, match=r"did not start on 1 of 2 nodes: node node-b: .*environment at /x"):
        servers_of([record("node-a", "10.0.0.3"), failed], count=2)


def sharer(node: str, address: str, executor: str) -> dict:
    """What `start_here` returns on a node's other executors: they share its server."""
    return {"node": node, "address": address, "executor": executor}


def test_each_node_is_acted_on_by_its_first_task_alone():
    tasks = [(3, "node-b"), (0, "node-a"), (2, "node-a"), (1, "node-b"), (4, "node-c")]
    assert on_node.starters(tasks) == {"node-a": 0, "node-b": 1, "node-c": 4}


def test_executors_on_one_node_share_its_one_server():
    found = servers_of(
        [sharer("node-a", "10.0.0.3", "10"), record("node-a", "10.0.0.3", 100, "2"), record("node-b", "10.0.0.4", 101)],
        count=3,
    )
    assert [(s.node, s.pid, s.executors) for s in found] == [("node-a", 100, ["2", "10"]), ("node-b", 101, ["0"])]


def test_a_host_name_shared_by_two_machines_is_refused_naming_it():
    with pytest.raises(ServerError, match=r"node node-a: executors at 10\.0\.0\.3, 10\.0\.0\.9 share this host name"):
        servers_of([record("node-a", "10.0.0.3"), sharer("node-a", "10.0.0.9", "1")], count=2)


def test_a_node_that_got_two_servers_is_refused_naming_it():
    with pytest.raises(ServerError, match=r"node node-a: 2 servers started for its 2 executors, not one"):
        servers_of([record("node-a", "10.0.0.3", 100), record("node-a", "10.0.0.3", 101, "1")], count=2)


def _launch_of(weights: object, directory: str) -> on_node.NodeLaunch:
    model, preprocessing = asdict(ModelSpec(arch="resnet18")), asdict(Preprocessing())
    return on_node.NodeLaunch(model, weights, preprocessing, {}, "/nowhere", directory, "127.0.0.1", None, None, 1.0)


def test_a_nodes_other_tasks_neither_start_nor_stop_its_server(tmp_path):
    launch = _launch_of(None, str(tmp_path))
    assert on_node.start_here(launch, starter=False) == {
        "node": socket.gethostname(),
        "address": "127.0.0.1",
        "executor": "driver",
    }
    server = _sleeper()
    try:
        kept = _record_file(tmp_path / socket.gethostname(), server)
        assert on_node.stop_here(str(tmp_path), starter=False)["shares"]
        assert kept.exists() and server.is_running()
    finally:
        server.kill()
        server.wait(5)


def test_a_nodes_start_and_stop_tasks_import_no_torch(tmp_path):
    # what each barrier task unpickles (the weights a file Spark shipped); the server process imports torch itself
    work = cloudpickle.dumps(
        [partial(on_node.start_here, _launch_of(SparkFile("w.pt"), str(tmp_path))), partial(on_node.stop_here, "d")]
    )
    unpickled = "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"
    code = f"{unpickled}; print(sorted({{'torch', 'torchvision'}} & {{*sys.modules}}))"
    env = {**os.environ, **checkout_env()}
    done = subprocess.run([sys.executable, "-c", code], input=work, capture_output=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout.decode().strip() == "[]"


def test_an_overlapping_attempt_waits_for_the_nodes_lock_and_no_longer_than_its_bound(tmp_path):
    with on_node.node_lock(tmp_path / "node-a", timeout_s=5):
        with pytest.raises(LockTimeout, match=r"waited 0 s for PID \d+ on host .*, starting or stopping node node-a's"):
            with on_node.node_lock(tmp_path / "node-a", timeout_s=0.3):
                pass
    with on_node.node_lock(tmp_path / "node-a", timeout_s=0.3):  # released: the next one gets it at once
        pass


def test_a_task_knows_its_executor_by_the_executor_jvms_command_line():
    jvm = ["java", "CoarseGrainedExecutorBackend", "--driver-url", "spark://x", "--executor-id", "7", "--cores", "1"]
    assert executor_of([["python", "-m", "pyspark.daemon"], jvm]) == "7"
    assert executor_of([["java", "SparkSubmit", "pyspark-shell"]]) == "driver"


# ------------------------------------------------------------------------------------------ statistics per node


def triton(images: int, batches: int, sizes: dict[int, int], queue_ns: int) -> dict:
    """A node's statistics as `_flat` returns them."""
    return {
        "requests": batches,
        "failed_requests": 0,
        "images": images,
        "batches": batches,
        "queue_ns": queue_ns,
        "compute_input_ns": 0,
        "compute_infer_ns": 10_000_000 * batches,
        "compute_output_ns": 0,
        "batch_sizes": sizes,
    }


def test_each_nodes_statistics_are_kept_and_summed(monkeypatch, tmp_path):
    topology = compose_config("topology=model_server").topology
    servers = NodeServers(
        servers_of([record("node-a", "10.0.0.3"), record("node-b", "10.0.0.4")], count=2),
        "token",
        [Instance(0, "cpu", None)],
        topology,
        start_s=20.0,
        environment_s=0.0,
        directory=tmp_path,
    )
    snapshots = iter(
        [
            {"node-a": triton(0, 0, {}, 0), "node-b": triton(0, 0, {}, 0)},
            {"node-a": triton(24, 2, {8: 1, 16: 1}, 4_000_000), "node-b": triton(8, 1, {8: 1}, 2_000_000)},
        ]
    )
    cpu = iter([{"node-a": 1.0, "node-b": 2.0}, {"node-a": 1.5, "node-b": 2.25}])
    current: dict = {}
    monkeypatch.setattr(NodeServers, "check_alive", lambda self, error: None)

    def statuses(self):
        current["stats"], seconds = next(snapshots), next(cpu)
        return {node: {"cpu_s": seconds[node]} for node in seconds}

    monkeypatch.setattr(NodeServers, "_statuses", statuses)
    monkeypatch.setattr(NodeServers, "_statistics", lambda self, server: current["stats"][server.node])
    servers.mark()
    servers.mark()
    found = servers.evidence(warmup=0)
    last = found["last_pass"]
    assert (last["images"], last["batches"], last["requests"]) == (32, 3, 3)
    assert last["batch_sizes"] == {"8": 2, "16": 1} and last["queue_ms"] == pytest.approx(6.0)
    assert last["cpu_s"] == pytest.approx(0.75)
    by_node = {node["node"]: node for node in found["nodes"]}
    assert by_node["node-a"]["last_pass"]["images"] == 24 and by_node["node-b"]["last_pass"]["images"] == 8
    assert by_node["node-b"]["url"] == "10.0.0.4:8001" and by_node["node-b"]["pid"] == 100
    assert found["instances"] == [{"index": 0, "device": "cpu", "gpu": None}]  # on each node


def test_a_server_that_refuses_its_statistics_and_then_stops_answering_died_naming_its_node(monkeypatch, tmp_path):
    topology = compose_config("topology=model_server").topology
    servers = NodeServers(
        servers_of([record("node-a", "10.0.0.3")], count=1), "token", [], topology, 1.0, 0.0, tmp_path
    )

    def refused(self, server):
        raise ServerError(f"the model server on node {server.node} did not answer its statistics: Server not ready")

    monkeypatch.setattr(NodeServers, "_statistics", refused)
    monkeypatch.setattr("pipeline.serving.node_stats.answers", lambda url: False)
    with pytest.raises(ServerDied, match=r"the model server on node node-a \(pid 100, 10\.0\.0\.3:8001\) died"):
        servers._statistics_of(servers.servers[0], dying_s=1.0)


# ------------------------------------------------------------------------------------------ on a node: stop, lifetime


def _sleeper() -> psutil.Process:
    return psutil.Process(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]).pid)


def _record_file(node_dir: Path, process: psutil.Process, url: str = "127.0.0.1:1") -> Path:
    workspace = node_dir / f"workspace-{process.pid}"
    workspace.mkdir(parents=True)
    path = node_dir / f"pid-{process.pid}.json"
    path.write_text(
        json.dumps({"pid": process.pid, "started": process.create_time(), "workspace": str(workspace)} | {"url": url})
    )
    return path


def test_a_nodes_recorded_servers_are_stopped_by_pid_and_their_records_removed(tmp_path):
    running, ended = _sleeper(), _sleeper()
    ended.kill()
    ended.wait(10)
    files = [_record_file(tmp_path, running), _record_file(tmp_path, ended)]
    try:
        found = stop_recorded(tmp_path, grace_s=5)
    finally:
        if running.is_running():
            running.kill()
        running.wait(5)
    assert found == {"stopped": [running.pid], "gone": [ended.pid], "survived": []}
    assert not running.is_running() or running.status() == psutil.STATUS_ZOMBIE
    assert not any(path.exists() for path in files) and not list(tmp_path.glob("workspace-*"))


def test_a_record_left_by_the_stop_pass_counts_only_while_its_server_answers(tmp_path):
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        alive, gone = tmp_path / "node-a", tmp_path / "node-b"
        alive.mkdir(), gone.mkdir()
        kept = _record_file(alive, psutil.Process(), f"127.0.0.1:{port}")
        dropped = _record_file(gone, psutil.Process(os.getppid()), f"127.0.0.1:{on_node.free_port('127.0.0.1')}")
        left = left_running(tmp_path)
    assert [(r["node"], r["url"]) for r in left] == [("node-a", f"127.0.0.1:{port}")]
    assert kept.exists() and not dropped.exists()


def test_the_servers_logs_go_to_the_run_dir_and_nothing_of_theirs_stays_on_the_storage_root(tmp_path):
    area, run_dir = tmp_path / "storage" / "server", tmp_path / "run" / "server"
    for node in ("node-a", "node-b"):
        (area / node).mkdir(parents=True)
        (area / node / "server.log").write_text(f"log of {node}")
        (area / node / "status.json").write_text("{}")
    keep_logs(area, run_dir)
    assert (run_dir / "node-b" / "server.log").read_text() == "log of node-b"
    assert not area.exists()


def test_the_records_of_servers_that_may_still_run_stay_on_the_storage_root(tmp_path):
    area = tmp_path / "storage" / "server"
    (area / "node-a").mkdir(parents=True)
    (area / "node-a" / "pid-123.json").write_text("{}")
    keep_logs(area, tmp_path / "run" / "server")
    assert (area / "node-a" / "pid-123.json").exists()


WATCHER = """
import sys, time
from pipeline.runtime.lifetime import die_with_process
die_with_process(int(sys.argv[1]), float(sys.argv[2]), every_s=0.1)
print("watching", flush=True)
time.sleep(60)
"""


def test_a_node_server_lives_as_long_as_the_process_it_watches_not_its_parent():
    watched = _sleeper()
    watcher = subprocess.Popen(
        [sys.executable, "-c", WATCHER, str(watched.pid), repr(watched.create_time())],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout.readline().strip() == "watching"
        time.sleep(0.5)
        assert watcher.poll() is None  # its parent (this test) and the watched process run: it lives
        watched.kill()
        assert watcher.wait(10) == -signal.SIGTERM
    finally:
        if watched.is_running():
            watched.kill()
        watched.wait(5)
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait(5)


def test_a_node_binds_its_address_on_the_route_to_the_driver():
    assert on_node.node_address("127.0.0.1") == "127.0.0.1"


# ------------------------------------------------------------------------------------------ config


def test_cluster_remote_needs_the_storage_root_its_nodes_servers_use():
    with pytest.raises(ConfigError, match=r"topology=model_server with cluster=remote needs storage=DIR"):
        validate(compose_config(*REMOTE))


def test_cluster_remote_with_a_storage_root_is_accepted_and_a_fixed_port_is_left_to_the_nodes(tmp_path, monkeypatch):
    with_server_client(monkeypatch)  # this is about the port, not the extra
    with socket.socket() as taken:  # in use here: a node's port is not this machine's
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        assert validate(compose_config(*REMOTE, f"storage={tmp_path}", f"topology.grpc_port={port}")) is not None


def test_the_server_environment_is_made_where_the_nodes_see_it(tmp_path):
    local = compose_config("topology=model_server", "topology.server_env=null")
    assert environment.root(local) == Path(environment.LOCAL_ROOT).expanduser()
    remote = compose_config(*REMOTE, f"storage={tmp_path}", "topology.server_env=null")
    assert environment.root(remote) == tmp_path.resolve() / "server-env"
    named = compose_config(*REMOTE, f"storage={tmp_path}", f"topology.server_env={tmp_path / 'env'}")
    assert environment.root(named) == tmp_path.resolve() / "env"


# ------------------------------------------------------------------------------------------ hosts in the result


def test_every_task_record_names_the_node_it_ran_on():
    records = [TaskRecord("served", 1, p, 0, 10 + p, 1, "cpu", [], 0.0, host=f"node-{p % 2}") for p in range(3)]
    assert summarize(records)["hosts"] == ["node-0", "node-1"]
    assert TaskRecord("served", 1, 0, 0, 1, 1, "cpu", [], 0.0).host == ""


def test_slot_use_is_shown_per_node():
    executors = [
        {"executor_id": "0", "host": "10.0.0.3", "cores": 2},
        {"executor_id": "1", "host": "10.0.0.4", "cores": 2},
    ]
    busy = {"launch": 0.0, "run_end": 10.0}
    attempts = [
        {"host": "10.0.0.3", "executor_id": "0", **busy},
        {"host": "10.0.0.3", "executor_id": "0", **busy},
        {"host": "10.0.0.4", "executor_id": "1", "launch": 0.0, "run_end": 5.0},
    ]
    found = {row["host"]: row for row in node_usage(attempts, executors, 0.0, 10.0, slots=4)}
    assert (found["10.0.0.3"]["slots"], found["10.0.0.3"]["tasks"], found["10.0.0.3"]["slot_utilization"]) == (
        2,
        2,
        1.0,
    )
    assert found["10.0.0.4"]["slot_utilization"] == 0.25 and found["10.0.0.4"]["executors"] == ["1"]


def test_a_served_run_without_an_event_log_is_not_failed_for_what_could_not_be_measured(tmp_path):
    planned = plan(compose_config(*REMOTE, f"storage={tmp_path}"))
    found = check({"stages": [], "model_task_gpus": []}, planned, compose_config(*REMOTE).topology.kind)
    assert found["preprocessing_on_every_slot"] is None and found["violation"] is None


# ------------------------------------------------------------------------------------------ namespace cluster (slow)

SERVING = ("pipeline.serving.server", "tritonserver", "sib-triton-")  # a node server's processes, by command line
NODE_CONF = {"spark.executor.cores": "1", "spark.cores.max": "2", "spark.executor.memory": "1g"}
SMALL = ["dataset.num_images=16", "dataset.images_per_file=8", "warmup=0", "repeats=1", "verify=true"]
KILLED = ["dataset.num_images=32", "dataset.images_per_file=16"]  # the executor-kill test's data set


@pytest.fixture(scope="module")
def node_storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The storage root of the module's cluster, with the server environment made in it once (about 40 s here,
    the package index reached through pip's cache; part of the first run otherwise), and the module's data sets
    made there by this process (a cluster's generation of them is test_scaling.py's: here it was an application
    of its own, 40 s of each test)."""
    storage = tmp_path_factory.mktemp("node-storage")
    began = time.monotonic()
    environment.ensure(storage / "server-env")
    print(f"server environment made in {time.monotonic() - began:.0f} s")
    made_here(storage, *SMALL)
    made_here(storage, *KILLED)
    return storage


@pytest.fixture(scope="module")
def ns_cluster(node_storage: Path, tmp_path_factory: pytest.TempPathFactory):
    """Two worker nodes of 3 cores, the tool importable on them, and a Spark Connect server on the master's node
    whose application takes 1 core of each (its event log on the storage root); a classic application gets the
    other 2 of each: room for two 1-core executors on each node."""
    from tests.helpers.nscluster import namespace_cluster, unavailable

    reason = unavailable()
    if reason:
        pytest.skip(f"namespace clusters cannot be made here: {reason}")
    events = node_storage / "eventlog"
    events.mkdir()
    log_conf = {"spark.eventLog.enabled": "true", "spark.eventLog.dir": str(events)}
    log_conf |= {"spark.eventLog.compress": "false", "spark.eventLog.rolling.enabled": "false"}
    directory = tmp_path_factory.mktemp("node-cluster")
    conf = {**NODE_CONF, **log_conf}
    with namespace_cluster(
        directory,
        workers=2,
        cores=3,
        memory="3g",
        storage=node_storage,
        tool_on_nodes=True,
        connect=True,
        connect_conf=conf,
    ) as up:
        print(f"namespace cluster up: {up.timings}")
        yield up


def _job(up, storage: Path, run_dir: Path, master: str, *overrides: str, executors: int = 2) -> dict:
    """`python -m pipeline` against the cluster from the host, the checkout the nodes import on its path."""
    from tests.helpers.cli import cli, result_of
    from tests.helpers.nscluster import checkouts

    env = {key: value for key, value in os.environ.items() if not key.lower().endswith("_proxy")}
    conf_dir = run_dir.parent / "spark-conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    env |= {"PYTHONPATH": str(checkouts()[0]), "PYSPARK_PYTHON": sys.executable, "SPARK_CONF_DIR": str(conf_dir)}
    shape = ["cluster=remote", f"cluster.master={master}", f"cluster.workers={executors}", "cluster.worker_cores=1"]
    shape += ["cluster.executor_memory=1g", f"storage={storage}", f"topology.server_env={storage / 'server-env'}"]
    began = time.monotonic()
    done = cli(
        run_dir.parent,
        "topology=model_server",
        *shape,
        *SMALL,
        *overrides,
        f"hydra.run.dir={run_dir}",
        env=env,
        timeout=900,
    )
    result = result_of(run_dir)
    print(
        f"run {run_dir.name}: {time.monotonic() - began:.0f} s, server start {result['cluster'].get('server_start_s')}"
    )
    assert result["status"] == "ok", (result.get("error"), done.stderr[-3000:])
    return result


def _serving(up) -> list[str]:
    """The node server processes running on the worker nodes now, by command line."""
    from tests.helpers.processes import cmdline

    found = [(node.name, pid, cmdline(pid)) for node in up.workers for pid in node.pids()]
    return [f"{name} {pid} {line[:120]}" for name, pid, line in found if any(mark in line for mark in SERVING)]


def _assert_served_per_node(up, result: dict) -> None:
    """One server per worker node on its address; each node's tasks served by their own node's server; every
    image predicted once and agreeing with the reference."""
    metrics, server = result["metrics"], result["evidence"]["server"]
    assert metrics["top1_agreement"] == 1.0 and metrics["num_predicted"] == metrics["verified_images"] == 16
    workers = {node.hostname: node.address for node in up.workers}
    assert {(n["node"], n["address"]) for n in server["nodes"]} == set(workers.items())
    assert all(n["url"].startswith(f"{workers[n['node']]}:") for n in server["nodes"])
    served = [r for r in result["tasks"]["records"] if r["step"] == "served"]
    assert sum(r["rows_out"] for r in served) == 16 and set(result["tasks"]["hosts"]) <= set(workers)
    for node in server["nodes"]:  # what each server answered is what the tasks on its node sent, from its executors
        assert node["last_pass"]["images"] == sum(r["rows_out"] for r in served if r["host"] == node["node"])
        assert {r["executor"] for r in served if r["host"] == node["node"]} <= set(node["executors"])
    assert server["last_pass"]["images"] == 16 and result["evidence"]["checks"]["server_answered_every_image"]
    stopped = {(report["node"], pid) for report in server["stopped"] for pid in report["stopped"]}
    assert stopped == {(n["node"], n["pid"]) for n in server["nodes"]}
    for node in server["nodes"]:  # each server's log kept in the run dir, nothing of it left on the storage root
        assert Path(node["log"]).is_file() and Path(node["log"]).is_relative_to(result["run_dir"])
        assert not Path(node["status"]).parent.exists()


def _new_processes(up, before: dict[str, set[int]]) -> dict[str, list[str]]:
    """The processes on each node that were not there `before`, by command line."""
    from tests.helpers.processes import cmdline

    new = {node.name: sorted(set(node.pids()) - before[node.name]) for node in up.nodes}
    return {name: [f"{pid} {cmdline(pid)[:120]}" for pid in pids] for name, pids in new.items() if pids}


def _wait_for(check, seconds: float):
    deadline = time.monotonic() + seconds
    while (found := check()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return found


@pytest.mark.slow
def test_a_classic_driver_runs_one_server_per_worker_node_its_executors_share_and_leaves_nothing(
    ns_cluster, node_storage, tmp_path
):
    before = {node.name: set(node.pids()) for node in ns_cluster.nodes}
    # each Python worker ends with its task: a server outlives the worker that started it (not its executor);
    # two executors on each node, 8 partitions: the first wave gives every executor a task
    reuse, partitions = "spark.python_worker_reuse=false", "spark.partitions=8"
    # ResNet18: the servers per node are what is proven, not the network (ResNet50's agreement on other machines
    # is test_remote_cluster's first test); sink=parquet: verify reads back what the pass wrote, not a second pass
    shorter = ("model.arch=resnet18", "sink=parquet")
    master = ns_cluster.master_url
    result = _job(ns_cluster, node_storage, tmp_path / "run", master, reuse, partitions, *shorter, executors=4)
    _assert_served_per_node(ns_cluster, result)
    served = [r for r in result["tasks"]["records"] if r["step"] == "served"]
    for node in result["evidence"]["server"]["nodes"]:  # one server per node, used by both of its executors
        assert len(node["executors"]) == 2, node
        assert {r["executor"] for r in served if r["host"] == node["node"]} == set(node["executors"])
    # the application's executors and Python workers, and the servers with all they started, are gone
    assert not _wait_for(lambda: _new_processes(ns_cluster, before), 60)


@pytest.mark.slow
def test_a_spark_connect_client_runs_a_server_on_each_worker_node_and_leaves_none(ns_cluster, node_storage, tmp_path):
    events = f"cluster.event_log_dir={node_storage / 'eventlog'}"
    result = _job(ns_cluster, node_storage, tmp_path / "run", ns_cluster.connect_url, "model=null_model", events)
    _assert_served_per_node(ns_cluster, result)
    assert result["evidence"]["checks"]["preprocessing_on_every_slot"]  # the server's event log was read
    assert not _wait_for(lambda: _serving(ns_cluster), 30)  # the Connect server's own executors live on


@pytest.mark.slow
def test_an_executor_killed_mid_run_takes_its_nodes_server_with_it_and_the_run_names_the_node(
    ns_cluster, node_storage, tmp_path
):
    from tests.helpers.cli import result_of
    from tests.helpers.nscluster import checkouts

    run_dir, victim = tmp_path / "run", ns_cluster.workers[0]
    env = {key: value for key, value in os.environ.items() if not key.lower().endswith("_proxy")}
    env |= {"PYTHONPATH": str(checkouts()[0]), "PYSPARK_PYTHON": sys.executable, "SPARK_CONF_DIR": str(tmp_path)}
    slow = ["model=accelerator", "device=t4_fp16", "device.images_per_s=2", "spark.task_max_failures=2"]
    shape = ["cluster=remote", f"cluster.master={ns_cluster.master_url}", "cluster.workers=2", "cluster.worker_cores=1"]
    shape += [
        "cluster.executor_memory=1g",
        f"storage={node_storage}",
        f"topology.server_env={node_storage / 'server-env'}",
    ]
    args = ["topology=model_server", *shape, *slow, *KILLED]
    args += ["warmup=0", "repeats=1", f"hydra.run.dir={run_dir}"]
    output = tmp_path / "job.log"
    with open(output, "wb") as out:
        job = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=tmp_path, env=env, stdout=out, stderr=out)
    try:
        log = run_dir / "pipeline.log"
        started = _wait_for(lambda: "model servers on 2 nodes" not in (log.read_text() if log.exists() else ""), 300)
        assert not started, "the servers never became ready"
        [record_file] = node_storage.glob(f"runs/*{run_dir.parent.name}*/server/{victim.hostname}/pid-*.json")
        record = json.loads(record_file.read_text())
        spec = json.loads(victim.run(["cat", f"{record['workspace']}/spec.json"]).stdout)
        executor = psutil.Process(spec["watch"]["pid"])
        assert executor.pid in victim.pids() and "java" in executor.name()
        server = psutil.Process(record["pid"])
        time.sleep(4)  # the pass is running: each node's task waits 8 s on its server's simulated device
        executor.kill()
        assert not _wait_for(lambda: server.is_running() and server.status() != psutil.STATUS_ZOMBIE, 30)
        job.wait(600)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait(30)
    result = result_of(run_dir)
    assert result["status"] == "failed", output.read_text()[-3000:]
    assert result["error"]["type"] == "ServerDied", result["error"]
    assert f"the model server on node {victim.hostname}" in result["error"]["message"]
    assert not _wait_for(lambda: _serving(ns_cluster), 30)
