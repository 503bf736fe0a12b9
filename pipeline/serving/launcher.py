"""The harness side of `topology=model_server`: start the model server next to the Spark application, watch
it, read what it did from Triton's statistics API, and stop it by PID however the run ends.

One server per worker node; every mode the harness starts workers for (local, local_cluster, standalone) runs
them on this machine, so that is one server per run, started before the Spark application (a port that cannot
be had fails before Spark starts) and stopped after it. Its process runs in the server environment
(`pipeline.serving.environment`) with this interpreter's libpython first on LD_LIBRARY_PATH, binds 127.0.0.1
on free ports (or `topology.grpc_port`), logs to `<run dir>/server/server.log`, and gets SIGTERM from the
kernel if the job dies (`pipeline.runtime.lifetime`). A watcher thread notices when the server process is gone
mid-run, stops what it left (the Triton server and its Python stubs) so the tasks' requests fail at once
instead of waiting, and the run then fails with `ServerDied` naming the server and its exit. How a start is
tried again, and when it fails the run, is `pipeline.serving.process`'s (the attempts retried are in
`RunningServer.retried`).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from pipeline.config.schema import Config, ModelName
from pipeline.inference.model import SIMULATED
from pipeline.inference.steps import Inference
from pipeline.rundir import RunDir
from pipeline.runtime.lifetime import PARENT_ENV
from pipeline.runtime.processes import SignalGuard, running, stop_processes, tree_cpu_s
from pipeline.serving import environment
from pipeline.serving.client import MODEL_NAME, ServerAddress
from pipeline.serving.process import USAGE_FILE, ServerError, start
from pipeline.spark.plan import Plan

log = logging.getLogger(__name__)

TOKEN_HEADER = "triton-grpc-protocol-triton-access-token"


class ServerDied(RuntimeError):
    """The model server stopped while the run needed it."""


@dataclass(frozen=True)
class Instance:
    """One model instance of the server: its index, the device its model runs on, and the GPU it stands for."""

    index: int
    device: str
    gpu: str | None  # "0", "1", ... for a real GPU, "emulated 0", ... for an emulated one, None on a CPU


def instances(config: Config, plan: Plan) -> list[Instance]:
    """One instance per GPU of a worker (real: on cuda:i; emulated: on the CPU, standing for GPU i; with
    model=accelerator on the simulated device of GPU i), one on a machine without GPUs; `topology.instances`
    overrides the count."""
    gpus = plan.gpus
    count = config.topology.instances or (gpus.per_worker if gpus.kind != "none" else 1)
    if config.model.name is ModelName.accelerator:
        if gpus.kind == "none":
            return [Instance(i, SIMULATED, None) for i in range(count)]
        addresses = [i % gpus.per_worker for i in range(count)]
        return [Instance(i, f"{SIMULATED}:{gpu}", f"simulated {gpu}") for i, gpu in enumerate(addresses)]
    if gpus.kind == "real":
        return [Instance(i, f"cuda:{i % gpus.per_worker}", str(i % gpus.per_worker)) for i in range(count)]
    if gpus.kind == "emulated":
        return [Instance(i, "cpu", f"emulated {i % gpus.per_worker}") for i in range(count)]
    return [Instance(i, "cpu", None) for i in range(count)]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _flat(stats: dict[str, Any]) -> dict[str, Any]:
    """Triton's cumulative statistics of the model (strings of ns and counts) as integers."""
    inference = stats.get("inference_stats", {})

    def ns(key: str) -> int:
        return int(inference.get(key, {}).get("ns", 0))

    return {
        "requests": int(inference.get("success", {}).get("count", 0)),
        "failed_requests": int(inference.get("fail", {}).get("count", 0)),
        "images": int(stats.get("inference_count", 0)),
        "batches": int(stats.get("execution_count", 0)),
        "queue_ns": ns("queue"),
        "compute_input_ns": ns("compute_input"),
        "compute_infer_ns": ns("compute_infer"),
        "compute_output_ns": ns("compute_output"),
        "batch_sizes": {
            int(row["batch_size"]): int(row.get("compute_infer", {}).get("count", 0))
            for row in stats.get("batch_stats", [])
        },
    }


def delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What the server did between two snapshots: requests, images, the batches the dynamic batcher formed
    (by size), where a request's time went (queue vs compute), in ms, and the server's CPU seconds."""
    counts = {key: after[key] - before[key] for key in after if key != "batch_sizes"}
    sizes = {
        size: after["batch_sizes"].get(size, 0) - before["batch_sizes"].get(size, 0)
        for size in sorted(after["batch_sizes"])
        if after["batch_sizes"].get(size, 0) - before["batch_sizes"].get(size, 0)
    }
    compute_ns = counts["compute_input_ns"] + counts["compute_infer_ns"] + counts["compute_output_ns"]
    requests, batches = counts["requests"], counts["batches"]
    return {
        "requests": requests,
        "failed_requests": counts["failed_requests"],
        "images": counts["images"],
        "batches": batches,
        "batch_sizes": {str(size): count for size, count in sizes.items()},
        "mean_batch_size": counts["images"] / batches if batches else None,
        "queue_ms": counts["queue_ns"] / 1e6,
        "compute_ms": compute_ns / 1e6,
        "queue_ms_per_request": counts["queue_ns"] / 1e6 / requests if requests else None,
        "compute_ms_per_batch": compute_ns / 1e6 / batches if batches else None,
        "cpu_s": counts["cpu_s"],
        "cpu_ms_per_image": counts["cpu_s"] * 1e3 / counts["images"] if counts["images"] else None,
        **{key: counts[key] for key in ("device_busy_s", "device_wait_s", "device_calls") if key in counts},
    }


@dataclass
class RunningServer:
    """A model server that answered: where, which process, its instances, its statistics per pass."""

    address: ServerAddress
    process: psutil.Process
    popen: subprocess.Popen
    token: str
    instances: list[Instance]
    ready: dict[str, Any]
    start_s: float
    log_file: Path
    topology: Any
    marks: list[dict[str, Any]] = field(default_factory=list)
    tree: list[psutil.Process] = field(default_factory=list)  # the server and what it started, once ready
    usage_file: Path | None = None  # model=accelerator: where its instances publish their simulated devices' totals
    died: dict[str, Any] | None = None
    model_config: dict[str, Any] = field(default_factory=dict)
    retried: list[dict[str, Any]] = field(default_factory=list)  # the failed starts tried again (`start`)

    def _ask(self, what: str, call: Any) -> Any:
        """`call(client)` against the server; a server that cannot answer fails the run naming it: ServerDied
        if its process is gone (the watcher may not have noticed yet), else ServerError."""
        import tritonclient.grpc as grpc

        client = grpc.InferenceServerClient(self.address.url)
        try:
            return call(client)
        except Exception as error:
            if not running(self.process):
                self.died = self.died or _exit_of(self.popen)
                self.check_alive(error)
            raise ServerError(
                f"the model server (pid {self.process.pid}, {self.address.url}) did not answer {what}: {error}"
            ) from error
        finally:
            client.close()

    def statistics(self) -> dict[str, Any]:
        """The model's cumulative statistics, from Triton's statistics API (restricted to our token)."""
        headers = {TOKEN_HEADER: self.token}
        found = self._ask(
            "its statistics",
            lambda client: client.get_inference_statistics(MODEL_NAME, headers=headers, as_json=True),
        )
        return _flat(found["model_stats"][0])

    def read_model_config(self) -> None:
        found = self._ask("its model config", lambda client: client.get_model_config(MODEL_NAME, as_json=True))
        self.model_config = found["config"]

    def mark(self) -> None:
        """A statistics snapshot between passes (before each, and after the last), with the server's CPU
        seconds so far; fails if the server died."""
        self.check_alive(None)
        mark = {**self.statistics(), "cpu_s": tree_cpu_s(self.tree or [self.process])}
        if self.usage_file is not None:
            usage = self.usage_file
            held = json.loads(usage.read_text()) if usage.exists() else {"busy_s": 0.0, "wait_s": 0.0, "calls": 0}
            mark |= {"device_busy_s": held["busy_s"], "device_wait_s": held["wait_s"], "device_calls": held["calls"]}
        self.marks.append(mark)

    def check_alive(self, error: BaseException | None) -> None:
        """Raise ServerDied (from `error`) if the server stopped while the run used it."""
        if self.died is not None:
            raise ServerDied(
                f"the model server (pid {self.process.pid}, {self.address.url}) died during the run "
                f"({self.died['reason']}); the tasks' requests failed; log: {self.log_file}"
            ) from error

    def evidence(self, warmup: int) -> dict[str, Any]:
        """What the server says it did: instances and devices, the dynamic batches of the last timed pass and
        of all timed passes, queue vs compute time."""
        groups = self.model_config.get("instance_group", [])
        found: dict[str, Any] = {
            "url": self.address.url,
            "pid": self.process.pid,
            "log": str(self.log_file),
            "start_s": self.start_s,
            "model_load_s": self.ready.get("model_load_s"),
            "torch_threads": self.ready.get("torch_threads"),
            "instances": [asdict(instance) for instance in self.instances],
            "triton_instance_groups": [{"count": g.get("count"), "kind": g.get("kind")} for g in groups],
            "max_batch_size": self.topology.max_batch_size,
            "max_queue_delay_us": self.topology.max_queue_delay_us,
            "died": self.died,
            "start_retries": self.retried,
        }
        if len(self.marks) >= 2:
            found["last_pass"] = delta(self.marks[-2], self.marks[-1])
            found["timed_passes"] = delta(self.marks[min(warmup, len(self.marks) - 2)], self.marks[-1])
        return found


def _spec(
    config: Config,
    inference: Inference,
    planned: list[Instance],
    server_dir: Path,
    workspace: Path,
    token: str,
    ports: dict[str, int],
) -> dict[str, Any]:
    """What the server process needs, as JSON: model and preprocessing specs, instances, ports, batching."""
    topology = config.topology
    threads = topology.threads or os.cpu_count() or 1
    return {
        "model": asdict(inference.model),
        "preprocessing": asdict(inference.preprocessing),
        "crop_size": inference.preprocessing.crop_size,
        "instances": [asdict(instance) for instance in planned],
        "threads": threads,
        "max_batch_size": topology.max_batch_size,
        "max_queue_delay_us": topology.max_queue_delay_us,
        "ports": ports,
        "token": token,
        "workspace": str(workspace / "triton"),  # PyTriton makes it itself
        "ready": str(server_dir / "ready.json"),
        "usage": str(server_dir / USAGE_FILE),
    }


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        part for part in (environment.libpython_dir(), env.get("LD_LIBRARY_PATH", "")) if part
    )
    env[PARENT_ENV] = str(os.getpid())
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _exit_of(popen: subprocess.Popen) -> dict[str, Any]:
    """How a server process found gone ended. Its status is waited for (briefly): a killed process stops
    running a moment before the kernel hands its parent the exit status, and polling in between says nothing."""
    try:
        code: int | None = popen.wait(timeout=5)
    except subprocess.TimeoutExpired:
        code = None
    if code is None:
        reason = "exit status unknown"
    else:
        reason = f"exit code {code}" if code >= 0 else f"killed by signal {-code}"
    return {"at": time.time(), "exit_code": code, "reason": reason}


def _watch(server: RunningServer, tree: list[psutil.Process], stop: threading.Event) -> None:
    """Notice the server process gone mid-run; stop what it left, so requests fail at once."""
    while not stop.wait(0.25):
        if not running(server.process):
            server.died = _exit_of(server.popen)
            log.error("the model server (pid %d) is gone: %s", server.process.pid, server.died["reason"])
            stop_processes(tree, timeout=10)
            return


@contextmanager
def model_server(config: Config, plan: Plan, run_dir: Path, inference: Inference) -> Iterator[RunningServer]:
    """The model server for the block: started, ready, watched; then stopped by PID with all it started."""
    topology = config.topology
    server_dir = RunDir(Path(run_dir)).server
    server_dir.mkdir(parents=True, exist_ok=True)
    (server_dir / USAGE_FILE).unlink(missing_ok=True)  # a simulated device's totals start at this server's
    started = time.perf_counter()
    python = environment.ensure(environment.root(config))
    env_s = time.perf_counter() - started
    planned = instances(config, plan)
    workspace = Path(tempfile.mkdtemp(prefix="sib-triton-"))  # unix socket paths must stay under 108 bytes
    token = secrets.token_urlsafe(24)
    guard = SignalGuard()
    process: psutil.Process | None = None
    tree: list[psutil.Process] = []
    stop = threading.Event()
    watcher: threading.Thread | None = None
    try:
        started = time.perf_counter()

        def spec_for() -> dict[str, Any]:
            ports = {"grpc": topology.grpc_port or free_port(), "http": free_port(), "metrics": free_port()}
            return _spec(config, inference, planned, server_dir, workspace, token, ports)

        popen, process, ready, log_file, spec, retried = start(
            python, spec_for, server_dir, topology.start_timeout_s, _environment()
        )
        ports = spec["ports"]
        server = RunningServer(
            address=ServerAddress(f"127.0.0.1:{ports['grpc']}", topology.request_timeout_s),
            process=process,
            popen=popen,
            token=token,
            instances=planned,
            ready=ready,
            start_s=time.perf_counter() - started,
            log_file=log_file,
            topology=topology,
            usage_file=server_dir / USAGE_FILE if config.model.name is ModelName.accelerator else None,
            retried=retried,
        )
        server.read_model_config()
        tree = [process, *process.children(recursive=True)]
        server.tree = tree
        log.info(
            "model server pid %d at %s: %d instance(s), started in %.1f s (environment %.1f s)",
            process.pid,
            server.address.url,
            len(server.instances),
            server.start_s,
            env_s,
        )
        watcher = threading.Thread(target=_watch, args=(server, tree, stop), name="model-server-watch", daemon=True)
        watcher.start()
        yield server
    finally:
        guard.defer()
        stop.set()
        if watcher is not None:
            watcher.join()
        try:
            if process is not None:
                stop_processes([process, *tree], timeout=30)
        finally:
            shutil.rmtree(workspace, ignore_errors=True)
            guard.restore()
