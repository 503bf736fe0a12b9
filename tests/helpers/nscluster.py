"""A Spark standalone cluster of separate "nodes" on this one machine, made of Linux namespaces, for the tests.

A user's cluster, like `tests.helpers.remote.user_cluster`: the test starts and stops it by PID, the tool never
does. It shows what a cluster of other machines shows and one machine hides: a driver on 127.0.0.1 that the
executors cannot reach, files in the driver's run dir or cache dir that a task cannot open, a tool that is
importable on the driver only, a node that dies whole.

Each node is one long-lived *anchor* process (`ip netns exec NS unshare --mount --uts ... bash anchor.sh`, which
ends in `exec sleep infinity`) holding three namespaces:

- network: a named namespace (`ip netns`) with `lo` and one veth whose host end is on a bridge the helper
  creates, in a private /24 of its own (10.200.0.0-10.255.255.0, one not overlapping any address or route of
  the host). The bridge's host end (.1) is the driver's address; the master is .2, workers .3, .4, ...
  No NAT, no forwarding, no default route: a node reaches these addresses and its loopback, nothing else.
- UTS: a hostname of its own (`socket.gethostname()` in a task names its node), resolvable on every node
  through an /etc/hosts of the cluster bound over the node's.
- mount: tmpfs over /tmp, /var/tmp, $HOME, the cache dirs and the project checkout (where `pipeline` is
  imported from, and where an editable install points), then the paths a node keeps are bound back: the
  Python installation and the virtualenv (which may live under $HOME or inside the checkout), Java, the
  shared storage directory and the node's own directory (logs, Spark work dir), which the host sees too.
  A node thus sees the OS, Java and a Python environment with the tool's dependencies but not the tool
  (unless `tool_on_nodes`), and one shared storage directory.

Spark processes of a node run inside its namespaces through `nsenter --target ANCHOR`, each in its own
process group, with a clean environment (`Node.env`) and its log in the node's directory. However the block
ends (return, exception, Ctrl-C, SIGTERM), the Spark processes are stopped by PID with their children
(`pipeline.runtime.processes.stop_processes`), whatever else runs in a node is killed (`ip netns pids`), and the
veths, the bridge and the namespaces are deleted; `LeftBehind` is raised if anything survives. Namespaces and
links are named after the creating PID, so a later cluster removes what a killed test session left.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from pipeline.runtime.processes import SignalGuard, running, stop_processes
from pipeline.spark.connect import SERVER_CLASS
from pipeline.spark.standalone import spark_home

MASTER_PORT, MASTER_WEBUI, CONNECT_PORT = 7077, 8080, 15002  # fixed: every node has a network of its own
START_TIMEOUT = 120.0
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The master and worker JVMs only schedule: without the C2 compiler they start in about half the time on two
# shared cores. Executors, drivers and the Connect server, which do the work measured, keep the defaults.
DAEMON_JAVA_OPTS = "-XX:TieredStopAtLevel=1"
TOOLS = ("ip", "unshare", "nsenter", "mount", "umount", "mountpoint", "bash", "sleep")
DISTRIBUTION = "spark-inference-bench"

# Names carry the creating PID so that leftovers of a killed session can be told from a live one's:
# namespaces `nsc-PID-SEQ-NODE`, links `nscPIDHEXxSEQHEX` (bridge) + `vI` (veth i); links have at most 15 chars.
_NETNS = re.compile(r"^nsc-(\d+)-")
_LINK = re.compile(r"^nsc([0-9a-f]+)x")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_sequence = 0


class NamespacesUnavailable(RuntimeError):
    """Namespaces cannot be made here (not root, a tool missing, `ip netns add` refused); the message says why."""


class LeftBehind(RuntimeError):
    """Processes, namespaces or links of the cluster survived its teardown."""


@dataclass
class _Started:
    name: str
    popen: subprocess.Popen
    handle: psutil.Process  # taken at the start: a reused PID is never signalled
    log: Path


@dataclass
class Node:
    """One node: its namespaces are those of `anchor`; `directory` is the same path on the host and in it."""

    name: str  # "master", "worker-1", ...
    hostname: str
    address: str
    namespace: str  # `ip netns` name
    directory: Path
    env: dict[str, str]  # the environment of every process the helper starts in the node
    anchor: _Started | None = None
    started: list[_Started] = field(default_factory=list)
    killed: bool = False

    @property
    def pid(self) -> int:
        """The anchor's PID: `nsenter --target PID --mount --uts --net` enters this node."""
        if self.anchor is None or self.killed or not running(self.anchor.handle):
            raise RuntimeError(f"node {self.name} is not running")
        return self.anchor.popen.pid

    @property
    def processes(self) -> list[psutil.Process]:
        """The processes the helper started in the node (Spark's, `spawn`'s), not their children."""
        return [s.handle for s in self.started]

    def enter(self) -> list[str]:
        """The command prefix that runs a program inside the node, in the node's directory."""
        return ["nsenter", f"--target={self.pid}", "--mount", "--uts", "--net", f"--wd={self.directory}", "--"]

    def run(self, args: list[str], timeout: float = 60.0, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run `args` inside the node with the node's environment; text output captured, not checked."""
        options: dict[str, Any] = {"env": self.env, "capture_output": True, "text": True, "timeout": timeout}
        return subprocess.run([*self.enter(), *args], **{**options, **kwargs})

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> psutil.Process:
        """Start `args` inside the node in a process group of its own, its output in `logs/NAME.log`; it is
        stopped by PID with its children when the cluster ends."""
        log = self.directory / "logs" / f"{name}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                [*self.enter(), *args],
                env={**self.env, **(env or {})},
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started = _Started(name, popen, psutil.Process(popen.pid), log)
        self.started.append(started)
        return started.handle

    def pids(self) -> list[int]:
        """Every process in the node's network namespace now (the anchor included), from `ip netns pids`."""
        result = subprocess.run(["ip", "netns", "pids", self.namespace], capture_output=True, text=True)
        return sorted(int(pid) for pid in result.stdout.split())


@dataclass
class NamespaceCluster:
    """What `namespace_cluster` yields. A driver on the host must bind to and advertise `driver_address`
    (`driver_conf()`): the nodes reach the host there and nowhere else."""

    directory: Path
    network: ipaddress.IPv4Network
    driver_address: str
    bridge: str
    master: Node
    workers: list[Node]
    storage: Path
    hidden: tuple[Path, ...]  # tmpfs over these on every node
    kept: tuple[Path, ...]  # bound back on every node (and each node's own directory)
    connect_url: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def master_url(self) -> str:
        return f"spark://{self.master.address}:{MASTER_PORT}"

    @property
    def webui_url(self) -> str:
        return f"http://{self.master.address}:{MASTER_WEBUI}/"

    @property
    def nodes(self) -> list[Node]:
        return [self.master, *self.workers]

    @property
    def links(self) -> list[str]:
        """The host's links of the cluster: the bridge and the host end of each node's veth."""
        return [self.bridge, *(_veth(self.bridge, i) for i in range(len(self.nodes)))]

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node {name!r}; the nodes are {[node.name for node in self.nodes]}")

    def driver_conf(self) -> dict[str, str]:
        """The confs a driver on the host needs to use this cluster."""
        return {
            "spark.master": self.master_url,
            "spark.driver.host": self.driver_address,
            "spark.driver.bindAddress": self.driver_address,
        }

    def state(self) -> dict[str, Any] | None:
        """The master's JSON status page, or None while it does not answer (never through an HTTP proxy)."""
        try:
            with _NO_PROXY.open(f"{self.webui_url}json/", timeout=2) as response:
                return json.load(response)
        except (OSError, ValueError):
            return None

    def alive_workers(self) -> list[str]:
        """The addresses of the workers the master holds ALIVE."""
        workers = (self.state() or {}).get("workers", [])
        return sorted(w.get("host", "") for w in workers if w.get("state") == "ALIVE")

    def kill_node(self, name: str) -> list[int]:
        """SIGKILL every process in node `name` at once, as if the machine died: the Spark processes, what they
        spawned and anything else in its network namespace (`ip netns pids`: a process that left every process
        tree too), the anchor included. Returns the PIDs killed. The node's namespace and link stay until the
        cluster ends; the node cannot run anything any more."""
        node = self.node(name)
        node.killed = True
        return _kill_namespace(node)


@contextmanager
def namespace_cluster(
    directory: Path,
    workers: int = 2,
    cores: int = 1,
    memory: str = "2g",
    storage: Path | None = None,
    tool_on_nodes: bool = False,
    connect: bool = False,
    connect_conf: dict[str, str] | None = None,
    gpus_per_worker: int = 0,
    hide: Iterable[Path] = (),
    spark: bool = True,
) -> Iterator[NamespaceCluster]:
    """A master node and `workers` worker nodes (`cores` cores and `memory` each) for the block; see the
    module docstring.

    `storage` (default `directory/storage`) is the one directory every node shares with the host.
    `tool_on_nodes` leaves the checkout visible on the nodes and puts the one the driver imports on the
    node processes' PYTHONPATH (code already installed on the nodes). `connect` starts a Spark Connect server
    on the master's node (`connect_url`), with `connect_conf` on its command line. `gpus_per_worker`
    emulated GPUs are offered by each worker. `hide` are more host paths the nodes must not see. With
    `spark=False` the nodes are made and nothing is started in them (tests of the nodes themselves: a second
    rather than the ~15 s the JVMs take). Raises NamespacesUnavailable, before anything is made, where
    namespaces cannot be made.
    """
    reason = unavailable()
    if reason:
        raise NamespacesUnavailable(reason)
    if not 1 <= workers <= 14:
        raise ValueError(f"workers={workers}: 1 to 14 (one hex digit per veth name)")
    if connect and not spark:
        raise ValueError("connect=True needs spark=True: the Connect server is an application on the cluster")
    directory = Path(directory).resolve()
    storage = Path(storage or directory / "storage").resolve()
    if any(re.search(r"\s", str(path)) for path in (directory, storage)):
        raise ValueError(f"paths with whitespace are not supported: {directory}, {storage}")
    storage.mkdir(parents=True, exist_ok=True)
    remove_stale()
    cluster = _plan(directory, workers, storage, tool_on_nodes, hide)
    guard = SignalGuard()
    made_bridge, made_namespaces = False, []
    try:
        t0 = time.monotonic()
        bridge, prefix = cluster.bridge, cluster.network.prefixlen
        _ip("link", "add", "name", bridge, "type", "bridge", "forward_delay", "0")
        made_bridge = True
        _ip("addr", "add", f"{cluster.driver_address}/{prefix}", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for i, node in enumerate(cluster.nodes):
            _ip("netns", "add", node.namespace)
            made_namespaces.append(node.namespace)
            veth = _veth(bridge, i)
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", node.namespace)
            _ip("link", "set", veth, "master", bridge, "up")
            _ip("-n", node.namespace, "addr", "add", f"{node.address}/{prefix}", "dev", "eth0")
            _ip("-n", node.namespace, "link", "set", "eth0", "up")
            _ip("-n", node.namespace, "link", "set", "lo", "up")
            _start_anchor(cluster, node)
        _wait(cluster, "the nodes' namespaces", lambda: all((n.directory / "ready").exists() for n in cluster.nodes))
        cluster.timings["nodes_up"] = round(time.monotonic() - t0, 3)
        if spark:
            _start_spark(cluster, cores, memory, gpus_per_worker)
        if connect:
            t1 = time.monotonic()
            cluster.connect_url = _start_connect(cluster, connect_conf or {})
            cluster.timings["connect_up"] = round(time.monotonic() - t1, 3)
        yield cluster
    finally:
        guard.defer()
        try:
            t2 = time.monotonic()
            _teardown(cluster, made_bridge, made_namespaces)
            cluster.timings["stop"] = round(time.monotonic() - t2, 3)
        finally:
            guard.restore()


def _plan(directory: Path, workers: int, storage: Path, tool_on_nodes: bool, hide: Iterable[Path]) -> NamespaceCluster:
    """Names, addresses, and what the nodes hide and keep; nothing made yet but the nodes' directories."""
    global _sequence
    sequence, _sequence = _sequence % 256, _sequence + 1
    pid = os.getpid()
    cid = f"nsc{pid:x}x{sequence:x}"  # the bridge's name; hostnames and veths derive from it
    network = _free_network(pid * 97 + sequence)
    addresses = [str(address) for address in network.hosts()]
    java = _java_home()
    assert java is not None  # unavailable() says so otherwise
    code = checkouts()
    hidden = _hidden(code, tool_on_nodes, hide)
    # the checkout the nodes import with tool_on_nodes is kept too: a CI clone under /tmp would be hidden with it
    kept = (Path(sys.base_prefix), Path(sys.prefix), java, spark_home(), storage, *(code if tool_on_nodes else ()))
    nodes = [
        _node(
            directory / "nodes" / name,
            name,
            f"{cid}-{name}",
            addresses[i + 1],
            f"nsc-{pid}-{sequence}-{name}",
            java,
            code[0] if tool_on_nodes else None,
        )
        for i, name in enumerate(["master", *(f"worker-{i}" for i in range(1, workers + 1))])
    ]
    hosts = "127.0.0.1 localhost\n" + "".join(f"{n.address} {n.hostname}\n" for n in nodes)
    for node in nodes:
        (node.directory / "hosts").write_text(hosts)
    return NamespaceCluster(
        directory,
        network,
        addresses[0],
        cid,
        nodes[0],
        nodes[1:],
        storage,
        tuple(sorted(hidden)),
        tuple(dict.fromkeys(path.resolve() for path in kept)),
    )


def _start_anchor(cluster: NamespaceCluster, node: Node) -> None:
    """The node's anchor: its mount and UTS namespaces made inside its network namespace, held by `sleep`."""
    script = node.directory / "anchor.sh"
    script.write_text(_anchor_script(node, list(cluster.hidden), (*cluster.kept, node.directory)))
    log = node.directory / "logs" / "anchor.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            ["ip", "netns", "exec", node.namespace, "unshare", "--mount", "--uts", "--propagation", "private"]
            + ["bash", str(script)],
            env=node.env,
            cwd=node.directory,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    node.anchor = _Started("anchor", popen, psutil.Process(popen.pid), log)


def _start_spark(cluster: NamespaceCluster, cores: int, memory: str, gpus_per_worker: int) -> None:
    """The master in the master's node, then a worker in each worker node; wait until all are ALIVE."""
    t0 = time.monotonic()
    spark_class = str(spark_home() / "bin" / "spark-class")
    master = cluster.master
    master.spawn(
        "master",
        [spark_class, "org.apache.spark.deploy.master.Master", "--host", master.address]
        + ["--port", str(MASTER_PORT), "--webui-port", str(MASTER_WEBUI)],
        # Spark 4's master opens a REST submission server too by default: not needed here.
        {"SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false", "SPARK_DAEMON_JAVA_OPTS": DAEMON_JAVA_OPTS},
    )
    _wait(cluster, "the master to answer", lambda: (cluster.state() or {}).get("status") == "ALIVE")
    cluster.timings["master_up"] = round(time.monotonic() - t0, 3)
    t1 = time.monotonic()
    for node in cluster.workers:
        node.spawn(
            "worker",
            [spark_class, "org.apache.spark.deploy.worker.Worker", cluster.master_url, "--host", node.address]
            + ["--cores", str(cores), "--memory", memory, "--work-dir", str(node.directory / "work")],
            {**_gpu_options(node, gpus_per_worker), "SPARK_DAEMON_JAVA_OPTS": DAEMON_JAVA_OPTS},
        )
    expected = sorted(node.address for node in cluster.workers)
    _wait(cluster, f"{len(expected)} worker(s) to register", lambda: cluster.alive_workers() == expected)
    _check_gpus(cluster, gpus_per_worker)
    cluster.timings["workers_registered"] = round(time.monotonic() - t1, 3)


# ----------------------------------------------------------------------------------------------- availability


def unavailable() -> str | None:
    """Why namespace clusters cannot be made on this machine, or None when they can (probed once per process:
    root, the tools, `ip netns add`, a bridge, `unshare --mount --uts`)."""
    global _unavailable
    if _unavailable is None:
        _unavailable = _probe()
    return _unavailable or None


_unavailable: str | None = None


def _probe() -> str:
    if os.geteuid() != 0:
        return f"not root (uid {os.geteuid()}): network and mount namespaces need CAP_NET_ADMIN and CAP_SYS_ADMIN"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing on PATH: {', '.join(missing)} (iproute2, util-linux, coreutils)"
    if _java_home() is None:
        return "no java on PATH and no JAVA_HOME"
    namespace, bridge = f"nsc-{os.getpid()}-probe", f"nsc{os.getpid():x}xp"
    probes = [
        (["ip", "netns", "add", namespace], ["ip", "netns", "del", namespace]),
        (["ip", "link", "add", "name", bridge, "type", "bridge"], ["ip", "link", "del", bridge]),
        (["unshare", "--mount", "--uts", "--propagation", "private", "true"], None),
    ]
    for command, undo in probes:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            return f"`{' '.join(command)}` failed: {(result.stderr or result.stdout).strip()}"
        if undo:
            subprocess.run(undo, capture_output=True)
    return ""


def remove_stale() -> list[str]:
    """Delete the namespaces (with the processes in them) and links of clusters whose creating process is
    dead: what a test session killed before its teardown left. Returns what was removed."""
    removed = []
    for namespace in _namespaces():
        match = _NETNS.match(namespace)
        if match and not psutil.pid_exists(int(match.group(1))):
            _kill_pids(_netns_pids(namespace))
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
            removed.append(namespace)
    for link in _links():
        match = _LINK.match(link)
        if match and not psutil.pid_exists(int(match.group(1), 16)):
            subprocess.run(["ip", "link", "del", link], capture_output=True)
            removed.append(link)
    return removed


# ------------------------------------------------------------------------------------------------ the pieces


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")


def _veth(bridge: str, index: int) -> str:
    return f"{bridge}v{index:x}"


def _namespaces() -> list[str]:
    result = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def _links() -> list[str]:
    result = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True)
    return [link["ifname"] for link in json.loads(result.stdout or "[]")]


def _netns_pids(namespace: str) -> list[int]:
    result = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
    return [int(pid) for pid in result.stdout.split()]


def _free_network(seed: int) -> ipaddress.IPv4Network:
    """A /24 in 10.200.0.0-10.255.255.0 that overlaps no address or route of the host (other clusters'
    bridges included); `seed` spreads concurrent sessions over the range."""
    used = []
    for command in (["ip", "-j", "-4", "addr", "show"], ["ip", "-j", "-4", "route", "show", "table", "all"]):
        for entry in json.loads(subprocess.run(command, capture_output=True, text=True).stdout or "[]"):
            nets = [f"{a['local']}/{a['prefixlen']}" for a in entry.get("addr_info", [])] + [entry.get("dst", "")]
            for net in nets:
                try:
                    used.append(ipaddress.ip_network(net, strict=False))
                except ValueError:  # "default", "", multicast names
                    pass
    count = 56 * 256
    for step in range(count):
        index = (seed + step) % count
        candidate = ipaddress.IPv4Network(f"10.{200 + index // 256}.{index % 256}.0/24")
        if not any(candidate.overlaps(net) for net in used if net.version == 4):
            return candidate
    raise RuntimeError("no free /24 in 10.200.0.0/13 for a namespace cluster")


def _java_home() -> Path | None:
    if os.environ.get("JAVA_HOME") and Path(os.environ["JAVA_HOME"], "bin", "java").exists():
        return Path(os.environ["JAVA_HOME"]).resolve()
    java = shutil.which("java")
    return Path(java).resolve().parents[1] if java else None


def checkouts() -> list[Path]:
    """The project checkout the driver imports `pipeline` from, then where an editable install points (a
    worktree's tests import the worktree, the venv's editable finder the main checkout)."""
    import pipeline

    found = [Path(pipeline.__file__).resolve().parents[1]]
    try:
        url = json.loads(metadata.distribution(DISTRIBUTION).read_text("direct_url.json") or "{}").get("url", "")
    except metadata.PackageNotFoundError:
        url = ""
    if url.startswith("file://"):
        found.append(Path(url.removeprefix("file://")).resolve())
    return list(dict.fromkeys(found))


def _hidden(checkouts: list[Path], tool_on_nodes: bool, extra: Iterable[Path]) -> list[Path]:
    """The host paths a node must not see (existing directories only)."""
    candidates = [Path("/tmp"), Path("/var/tmp"), Path.home(), *map(Path, extra)]
    for variable in ("XDG_CACHE_HOME", "SPARK_INFERENCE_BENCH_CACHE"):
        if os.environ.get(variable):
            candidates.append(Path(os.environ[variable]).expanduser())
    if not tool_on_nodes:
        candidates += checkouts
    return list(dict.fromkeys(path.resolve() for path in candidates if path.resolve().is_dir()))


def _node(
    directory: Path, name: str, hostname: str, address: str, namespace: str, java: Path, pythonpath: Path | None
) -> Node:
    for sub in ("logs", "work", "conf"):  # conf: an empty SPARK_CONF_DIR, nothing of the machine's leaks in
        (directory / sub).mkdir(parents=True, exist_ok=True)
    (directory / "ready").unlink(missing_ok=True)
    env = {
        "PATH": f"{Path(sys.prefix) / 'bin'}:{java / 'bin'}:{SYSTEM_PATH}",
        "HOME": str(Path.home()),  # an empty tmpfs on the node
        "LANG": "C.UTF-8",
        "JAVA_HOME": str(java),
        "SPARK_HOME": str(spark_home()),
        "SPARK_CONF_DIR": str(directory / "conf"),
        "SPARK_LOG_DIR": str(directory / "logs"),
        "SPARK_LOCAL_IP": address,
        "PYSPARK_PYTHON": sys.executable,
    }
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)  # executors' Python workers inherit it (PythonWorkerFactory)
    return Node(name, hostname, address, namespace, directory, env)


def _anchor_script(node: Node, hidden: list[Path], kept: Iterable[Path]) -> str:
    """The anchor's bash script: hostname, the mount namespace (see the module docstring), then sleep.

    The kept paths are opened first (`exec {fd}<DIR`) and bound back from `/proc/self/fd/N` once their parents
    are hidden: a directory opened before a tmpfs covers it stays reachable through the descriptor, and
    `--no-canonicalize` keeps mount(8) from resolving that link to the now-hidden path name.
    """
    q = shlex.quote
    kept = sorted(
        {k for k in kept if k.is_dir() and any(k.is_relative_to(h) for h in hidden)}, key=lambda k: len(k.parts)
    )
    kept = [k for k in kept if not any(k != other and k.is_relative_to(other) for other in kept)]  # rbind has them
    covered = [h for h in hidden if not any(h != other and h.is_relative_to(other) for other in hidden)]
    lines = ["set -eu", f"hostname {q(node.hostname)}"]
    lines += [f"exec {{keep{i}}}<{q(str(path))}" for i, path in enumerate(kept)]
    # The other nodes' namespaces are not this node's business, and their bind mounts would keep them alive.
    lines.append("if mountpoint -q /run/netns; then umount --recursive --lazy /run/netns; fi")
    lines.append("if [ -d /run/netns ]; then mount -t tmpfs -o mode=755 nscluster-hidden /run/netns; fi")
    for path in covered:
        mode = f"{path.stat().st_mode & 0o7777:o}"
        lines.append(f"mount -t tmpfs -o mode={mode} nscluster-hidden {q(str(path))}")
    for i, path in enumerate(kept):
        lines.append(f"mkdir -p {q(str(path))}")
        lines.append(f'mount --no-canonicalize --rbind "/proc/self/fd/$keep{i}" {q(str(path))}')
        lines.append(f"exec {{keep{i}}}<&-")
    for path in hidden:  # hidden inside a kept path (a cache in the storage dir): hide it again
        if any(path != k and path.is_relative_to(k) for k in kept):
            lines.append(f"mount -t tmpfs -o mode=700 nscluster-hidden {q(str(path))}")
    lines.append(f"mount --bind {q(str(node.directory / 'hosts'))} /etc/hosts")
    lines.append(f"echo ready > {q(str(node.directory / 'ready'))}")
    lines.append("exec sleep infinity")
    return "\n".join(lines) + "\n"


def _gpu_options(node: Node, gpus: int) -> dict[str, str]:
    """Emulated GPUs for a worker: a discovery script in the node's own directory (the tool's is not on the
    node) that prints `gpus` addresses, given as the worker's resource confs."""
    if not gpus:
        return {}
    script = node.directory / "discover_gpus.sh"
    addresses = ",".join(f'\\"{i}\\"' for i in range(gpus))
    script.write_text(f'#!/bin/sh\necho "{{\\"name\\":\\"gpu\\",\\"addresses\\":[{addresses}]}}"\n')
    script.chmod(0o755)
    opts = f"-Dspark.worker.resource.gpu.amount={gpus} -Dspark.worker.resource.gpu.discoveryScript={script}"
    return {"SPARK_WORKER_OPTS": opts}


def _check_gpus(cluster: NamespaceCluster, gpus: int) -> None:
    if not gpus:
        return
    for worker in (cluster.state() or {}).get("workers", []):
        addresses = ((worker.get("resources") or {}).get("gpu") or {}).get("addresses", [])
        if len(addresses) < gpus:
            raise RuntimeError(f"worker {worker.get('host')} offers GPUs {addresses}, expected {gpus}")


def _start_connect(cluster: NamespaceCluster, conf: dict[str, str]) -> str:
    """A Spark Connect server on the master's node, the driver of its own application on the cluster."""
    master = cluster.master
    full = {
        "spark.master": cluster.master_url,
        "spark.connect.grpc.binding.address": master.address,
        "spark.connect.grpc.binding.port": str(CONNECT_PORT),
        "spark.driver.host": master.address,
        "spark.driver.bindAddress": master.address,
        "spark.ui.enabled": "false",
        "spark.executor.memory": "512m",
        **conf,
    }
    args = [str(spark_home() / "bin" / "spark-submit"), "--class", SERVER_CLASS]
    for key, value in full.items():
        args += ["--conf", f"{key}={value}"]
    master.spawn("connect-server", [*args, "spark-internal"])
    log = master.directory / "logs" / "connect-server.log"
    _wait(cluster, "the Spark Connect server", lambda: f":{CONNECT_PORT}" in _started_line(log))
    return f"sc://{master.address}:{CONNECT_PORT}"


def _started_line(log: Path) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return next((line for line in text.splitlines() if "Spark Connect server started at" in line), "")


def _tail(path: Path, lines: int = 20) -> str:
    """A log's last lines without Java stack frames, which would crowd out the error lines."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as error:
        return f"({error})"
    return "\n".join([line for line in text if not re.match(r"^\s+(at |\.\.\. \d+ more)", line)][-lines:])


def _wait(cluster: NamespaceCluster, what: str, check: Callable[[], Any], timeout: float = START_TIMEOUT) -> None:
    """Poll `check` until it is truthy; fail at once, with the logs' last lines, if a started process exits."""
    deadline = time.monotonic() + timeout
    while not check():
        everything = [(n, s) for n in cluster.nodes for s in ([n.anchor] if n.anchor else []) + n.started]
        dead = [(n, s) for n, s in everything if s.popen.poll() is not None]
        if dead or time.monotonic() > deadline:
            logs = "\n".join(f"--- {n.name}/{s.name} ({s.log}):\n{_tail(s.log)}" for n, s in everything)
            exited = ", ".join(f"{n.name}/{s.name} exited with status {s.popen.returncode}" for n, s in dead)
            raise RuntimeError(f"waiting for {what}: {exited or f'timed out after {timeout:.0f} s'}\n{logs}")
        time.sleep(0.2)


def _kill_pids(pids: Iterable[int]) -> list[int]:
    """SIGKILL these processes (known by PID and start time from now on); wait until they are gone."""
    handles = []
    for pid in pids:
        try:
            handles.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    for handle in handles:
        try:
            handle.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(handles, timeout=5)
    return [handle.pid for handle in handles]


def _kill_namespace(node: Node) -> list[int]:
    """SIGKILL everything in the node's network namespace until nothing is (a process may fork meanwhile);
    reap the ones that are this process's children."""
    killed: list[int] = []
    for _ in range(10):
        pids = _netns_pids(node.namespace)
        if not pids:
            break
        killed += _kill_pids(pids)
    for started in ([node.anchor] if node.anchor else []) + node.started:
        try:
            started.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    return killed


def _teardown(cluster: NamespaceCluster, made_bridge: bool, made_namespaces: list[str]) -> None:
    """Spark processes by PID (Connect server, workers, master, each with its children), then whatever else
    runs in a node, then the links and namespaces; raise LeftBehind listing what survived."""
    errors: list[str] = []
    # The Connect server and anything `spawn`ed first, then the workers (each kills its executors on SIGTERM)
    # while the master is there to see them go, then the master.
    started = [s for node in cluster.nodes for s in node.started]
    for names in ({s.name for s in started} - {"worker", "master"}, {"worker"}, {"master"}):
        handles = [s.handle for s in started if s.name in names]
        try:
            stop_processes(handles)
        except Exception as error:  # keep tearing down; reported below
            errors.append(f"stopping {[h.pid for h in handles]}: {error}")
    for node in cluster.nodes:
        if node.namespace in made_namespaces:
            _kill_namespace(node)
            if _netns_pids(node.namespace):
                errors.append(f"node {node.name}: processes {_netns_pids(node.namespace)} survived SIGKILL")
    for index in range(len(made_namespaces)):
        subprocess.run(["ip", "link", "del", _veth(cluster.bridge, index)], capture_output=True)
    for namespace in made_namespaces:
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
    if made_bridge:
        subprocess.run(["ip", "link", "del", cluster.bridge], capture_output=True)
    left_links = sorted(set(cluster.links) & set(_links()))
    left_namespaces = sorted(set(made_namespaces) & set(_namespaces()))
    if left_links or left_namespaces:
        errors.append(f"links {left_links}, namespaces {left_namespaces} still there")
    if errors:
        raise LeftBehind(f"namespace cluster {cluster.bridge}: " + "; ".join(errors))
