"""The namespace cluster of `tests.helpers.nscluster` is what the tests of other machines need: executors on
worker nodes of their own hostname and address, nodes that see the OS, Java, the Python environment and the
shared storage but not the driver's files nor the tool, a Spark Connect server on the master's node, a node
that can be killed whole, and nothing left once the block ends.

The driver of each application is a subprocess on the host (this test process may already hold a local
SparkSession, and a process holds one SparkContext): `python -c SCRIPT`, whose functions are pickled by value
because the nodes cannot import tests/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

import pipeline
from pipeline.runtime.processes import running
from tests.helpers import nscluster
from tests.helpers.nscluster import NamespaceCluster, checkouts, namespace_cluster, unavailable
from tests.helpers.processes import survivors, tree

pytestmark = pytest.mark.slow

# What a node sees, as a function of the host paths to look for; run by tasks on the executors (pickled by value
# from the driver script's __main__) and by `python -c` through `Node.run`.
PROBE = textwrap.dedent(
    """
    def probe(paths):
        import importlib.util, os, socket, subprocess, sys
        address = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        address.connect((paths["driver_address"], 9))  # UDP: no packet sent, the route's source address
        try:
            import pipeline
            tool = pipeline.__file__
        except ImportError:
            tool = None
        java = subprocess.run(["java", "-version"], capture_output=True, text=True)
        storage = paths["storage"]
        with open(os.path.join(storage, "from-driver.txt")) as f:
            from_driver = f.read()
        with open(os.path.join(storage, "from-" + socket.gethostname() + ".txt"), "w") as f:
            f.write(socket.gethostname())
        outside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            outside.connect(("203.0.113.1", 9))  # TEST-NET-3: a route lookup, no packet
            route_out = True
        except OSError:  # ENETUNREACH: no default route
            route_out = False
        import numpy, pandas, pyarrow
        return {
            "hostname": socket.gethostname(),
            "address": address.getsockname()[0],
            "route_out": route_out,
            "tool": tool,
            "visible": {name: os.path.exists(path) for name, path in paths["hidden"].items()},
            "home": sorted(os.listdir(os.path.expanduser("~"))),
            "from_driver": from_driver,
            "java": java.returncode,
            "python": sys.executable,
            "dependencies": {name: importlib.util.find_spec(name) is not None for name in paths["dependencies"]},
        }
    """
)

DRIVER = PROBE + textwrap.dedent(
    """
    import json, sys, time
    from pyspark.sql import SparkSession

    args = json.loads(sys.argv[1])
    with open(args["paths"]["storage"] + "/from-driver.txt", "w") as f:
        f.write(args["token"])
    builder = SparkSession.builder.appName("nscluster-driver")
    for key, value in args["conf"].items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    paths = args["paths"]

    def task(index):
        time.sleep(0.5)  # long enough for both executors to take tasks
        return probe(paths)

    reports = spark.sparkContext.parallelize(range(8), 8).map(task).collect()
    spark.stop()
    print("REPORT " + json.dumps(reports))
    """
)

CLIENT = textwrap.dedent(
    """
    import json, sys
    from pyspark.sql import SparkSession
    from pyspark.sql.functions import udf

    spark = SparkSession.builder.remote(sys.argv[1]).getOrCreate()

    @udf("string")
    def hostname(_):
        import socket
        return socket.gethostname()

    report = {
        "count": spark.range(100).count(),
        "hostnames": sorted({row[0] for row in spark.range(4).select(hostname("id")).collect()}),
        "driver_host": spark.conf.get("spark.driver.host"),
    }
    spark.stop()
    print("REPORT " + json.dumps(report))
    """
)

DEPENDENCIES = ["pyspark", "pandas", "pyarrow", "numpy", "torch", "torchvision", "PIL", "hydra", "psutil"]


@pytest.fixture(scope="module")
def namespaces() -> None:
    """Skip, saying why, where namespaces cannot be made (not root, no iproute2, `ip netns add` refused)."""
    reason = unavailable()
    if reason:
        pytest.skip(f"namespace clusters cannot be made here: {reason}")


def _paths(cluster: NamespaceCluster, run_dir: Path) -> dict[str, Any]:
    """What the probe looks for: files of the host that must be hidden (each exists on the host)."""
    secret = run_dir / "driver-run-dir.txt"
    secret.write_text("the driver's run dir")
    (Path.home() / ".cache").mkdir(exist_ok=True)
    hidden = {"driver run dir": str(secret), "$HOME/.cache": str(Path.home() / ".cache")}
    hidden |= {f"checkout {path}": str(path / "pipeline") for path in checkouts()}  # imported, editable
    for path in hidden.values():
        assert Path(path).exists(), f"{path} must exist on the host for the check to mean anything"
    return {
        "driver_address": cluster.driver_address,
        "storage": str(cluster.storage),
        "hidden": hidden,
        "dependencies": DEPENDENCIES,
    }


def _report(stdout: str) -> Any:
    line = next(line for line in reversed(stdout.splitlines()) if line.startswith("REPORT "))
    return json.loads(line.removeprefix("REPORT "))


def _host_env(run_dir: Path) -> dict[str, str]:
    """A driver's or client's environment on the host: the test's, no HTTP proxy, an empty SPARK_CONF_DIR."""
    conf = run_dir / "spark-conf"
    conf.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and k != "SPARK_ENV_LOADED"}
    return {**env, "PYSPARK_PYTHON": sys.executable, "SPARK_CONF_DIR": str(conf)}


@pytest.fixture(scope="module")
def cluster(namespaces: None, tmp_path_factory: pytest.TempPathFactory):
    with namespace_cluster(tmp_path_factory.mktemp("nscluster"), workers=2, gpus_per_worker=1) as up:
        print(f"namespace cluster up: {up.timings}")
        yield up
    print(f"namespace cluster timings: {up.timings}")


@pytest.fixture(scope="module")
def driver_run(cluster: NamespaceCluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One application driven from the host: 8 tasks, each reporting what its node sees."""
    run_dir = tmp_path_factory.mktemp("driver-run")
    paths = _paths(cluster, run_dir)
    workers = len(cluster.workers)
    conf = {
        **cluster.driver_conf(),
        "spark.ui.enabled": "false",
        "spark.executor.cores": "1",
        "spark.executor.memory": "512m",
        "spark.cores.max": str(workers),
        # the tasks wait for every executor: both workers' hostnames must show
        "spark.scheduler.minRegisteredResourcesRatio": "1.0",
        "spark.scheduler.maxRegisteredResourcesWaitingTime": "60s",
    }
    args = json.dumps({"conf": conf, "paths": paths, "token": f"from the driver {os.getpid()}"})
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, args],
        cwd=run_dir,
        env=_host_env(run_dir),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    print(f"driver run: {time.monotonic() - started:.1f} s")
    return {"tasks": _report(result.stdout), "paths": paths}


def test_every_executor_runs_on_a_worker_node_of_its_own_hostname_and_address_with_no_route_out(cluster, driver_run):
    tasks = driver_run["tasks"]
    seen = {(task["hostname"], task["address"]) for task in tasks}
    assert seen == {(node.hostname, node.address) for node in cluster.workers}
    assert len({task["hostname"] for task in tasks}) == 2
    assert not any(task["route_out"] for task in tasks)
    assert cluster.alive_workers() == sorted(node.address for node in cluster.workers)


def test_each_worker_offers_its_emulated_gpus(cluster):
    for worker in cluster.state()["workers"]:
        assert worker["resources"]["gpu"]["addresses"] == ["0"], worker


def test_a_node_sees_os_java_venv_and_storage_but_not_the_driver_files_nor_the_tool(cluster, driver_run):
    tasks, paths = driver_run["tasks"], driver_run["paths"]
    allowed_in_home = {p.relative_to(Path.home()).parts[0] for p in cluster.kept if p.is_relative_to(Path.home())}
    for task in tasks:
        assert task["tool"] is None, f"the tool is importable on {task['hostname']}: {task['tool']}"
        assert not any(task["visible"].values()), task["visible"]
        assert set(task["home"]) <= allowed_in_home, task["home"]
        assert task["from_driver"] == f"from the driver {os.getpid()}"
        assert task["java"] == 0
        assert task["python"] == sys.executable
        assert all(task["dependencies"].values()), task["dependencies"]
    for node in cluster.workers:  # what each task wrote to the shared storage, the host reads
        assert (cluster.storage / f"from-{node.hostname}.txt").read_text() == node.hostname
    # the master's node too, through `Node.run` rather than Spark
    script = PROBE + f"\nimport json\nprint('REPORT ' + json.dumps(probe({paths!r})))"
    result = cluster.master.run([sys.executable, "-c", script])
    assert result.returncode == 0, result.stderr
    master = _report(result.stdout)
    assert (master["hostname"], master["address"]) == (cluster.master.hostname, cluster.master.address)
    assert master["tool"] is None and not any(master["visible"].values()) and master["java"] == 0
    routes = cluster.master.run(["ip", "-4", "route"]).stdout.splitlines()
    assert [route.split()[0] for route in routes] == [str(cluster.network)]  # its /24 only: no default route


@pytest.mark.usefixtures("namespaces")
def test_the_tool_is_importable_on_the_nodes_only_with_tool_on_nodes(tmp_path):
    with namespace_cluster(tmp_path / "cluster", workers=1, tool_on_nodes=True, spark=False) as up:
        tool = up.workers[0].run([sys.executable, "-c", "import pipeline; print(pipeline.__file__)"])
    assert tool.returncode == 0, tool.stderr
    assert tool.stdout.strip() == pipeline.__file__  # the very copy the driver imports
    with namespace_cluster(tmp_path / "cluster-2", workers=1, spark=False) as up:
        tool = up.workers[0].run([sys.executable, "-c", "import pipeline"])
    assert "No module named 'pipeline'" in tool.stderr


@pytest.mark.usefixtures("namespaces")
def test_a_connect_server_on_the_master_node_answers_a_client_on_the_host(tmp_path):
    with namespace_cluster(tmp_path / "cluster", workers=1, connect=True) as up:
        print(f"namespace cluster with Connect up: {up.timings}")
        assert up.connect_url == f"sc://{up.master.address}:15002"
        server = next(s for s in up.master.started if s.name == "connect-server")
        assert server.handle.pid in up.master.pids()
        result = subprocess.run(
            [sys.executable, "-c", CLIENT, up.connect_url],
            cwd=tmp_path,
            env=_host_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
        )
        inside = _inside(up)  # the server's executor and its Python workers among them
    assert result.returncode == 0, result.stderr[-5000:]
    report = _report(result.stdout)
    assert report == {"count": 100, "hostnames": [up.workers[0].hostname], "driver_host": up.master.address}
    _assert_nothing_left(up, inside)


@pytest.mark.usefixtures("namespaces")
def test_kill_node_kills_every_process_of_one_node_and_leaves_the_others_running(tmp_path):
    with namespace_cluster(tmp_path / "cluster", workers=2) as up:
        victim, other = up.workers
        # a process that left every tree: only the namespace still tells it belongs to the node
        victim.spawn("stray", ["bash", "-c", "(setsid sleep 600 &); exec sleep 600"])
        time.sleep(0.5)
        before = tree(victim.pids())
        assert len(before) >= 4  # anchor, worker JVM, the stray sleeps
        others = tree([pid for node in (up.master, other) for pid in node.pids()])
        killed = up.kill_node(victim.name)
        assert set(before) <= set(killed)
        assert victim.pids() == [] and survivors(before) == []
        assert sorted(survivors(others)) == sorted(others)
        deadline = time.monotonic() + 30
        while up.alive_workers() != [other.address] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert up.alive_workers() == [other.address]


@pytest.mark.usefixtures("namespaces")
@pytest.mark.parametrize("how", ["returned", "raised"])
def test_nothing_is_left_once_the_block_ends(tmp_path, how):
    class Boom(Exception):
        pass

    try:
        with namespace_cluster(tmp_path / "cluster", workers=1) as up:
            up.workers[0].spawn("stray", ["bash", "-c", "(setsid sleep 600 &); exec sleep 600"])
            time.sleep(0.5)
            inside = _inside(up)
            assert len(inside["processes"]) >= 5  # anchors, master, worker, the stray sleeps
            if how == "raised":
                raise Boom()
    except Boom:
        pass
    _assert_nothing_left(up, inside)


def _inside(cluster: NamespaceCluster) -> dict[str, Any]:
    """What runs in the nodes now: processes (PID -> start time) and the nodes' network and mount namespaces."""
    return {
        "processes": tree([pid for node in cluster.nodes for pid in node.pids()]),
        "namespaces": {_namespace(node.pid, kind) for node in cluster.nodes for kind in ("net", "mnt")},
    }


def _assert_nothing_left(cluster: NamespaceCluster, inside: dict[str, Any]) -> None:
    """No process of the nodes, no process in their namespaces, no namespace, link or mount of the cluster."""
    assert survivors(inside["processes"]) == []
    held = [
        p.pid
        for p in psutil.process_iter()
        for kind in ("net", "mnt")
        if _namespace(p.pid, kind) in inside["namespaces"]
    ]
    assert held == []
    names = [node.namespace for node in cluster.nodes]
    assert not set(names) & set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    links = {link["ifname"] for link in json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True).stdout)}
    assert not set(cluster.links) & links
    mounts = Path("/proc/self/mountinfo").read_text()
    assert not [name for name in names if name in mounts]


def _namespace(pid: int, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


@pytest.mark.usefixtures("namespaces")
def test_leftovers_of_a_killed_session_are_removed_when_the_next_cluster_starts(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()  # a PID whose process is gone: the session that "made" the leftovers
    namespace, link = f"nsc-{dead.pid}-0-worker-1", f"nsc{dead.pid:x}x0"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    subprocess.run(["ip", "link", "add", "name", link, "type", "bridge"], check=True)
    inside = psutil.Process(subprocess.Popen(["ip", "netns", "exec", namespace, "sleep", "600"]).pid)
    try:
        with namespace_cluster(tmp_path / "cluster", workers=1, spark=False):
            assert not running(inside)
            assert namespace not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
            assert subprocess.run(["ip", "link", "show", link], capture_output=True).returncode != 0
    finally:
        _kill_if_running(inside)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", link], capture_output=True)


def _kill_if_running(process: psutil.Process) -> None:
    if running(process):
        process.kill()


def test_without_root_the_tests_are_told_why(monkeypatch):
    monkeypatch.setattr(nscluster.os, "geteuid", lambda: 1000)
    assert nscluster._probe() == (
        "not root (uid 1000): network and mount namespaces need CAP_NET_ADMIN and CAP_SYS_ADMIN"
    )
