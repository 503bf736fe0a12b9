"""The cluster one run uses: what Spark is told about it, and, in standalone mode, the processes behind it.

`cluster(config, run_dir)` is a context manager that yields a `Cluster`: the value of `spark.master`, the
confs the mode needs (executor cores and memory, task CPUs, GPU resources), how many tasks can run at once
by CPU and by GPU, and the processes the harness started. The SparkSession is built inside the context, so
the application ends before its cluster does:

    with cluster(config, run_dir) as c:
        conf = spark_conf(config, run_dir, input_bytes, c)  # spark.master = c.master, plus c.conf
        with spark_session(conf) as spark:
            ...

Modes (`cluster.mode`):
- local          `local[N]` in the driver JVM; nothing started; no GPU scheduling (Spark hangs with it).
- local_cluster  `local-cluster[W,C,M]`: the driver JVM runs W workers that start real executor JVMs.
- standalone     a real master and W workers started here from the installed pyspark (`bin/spark-class`),
                 each in its own process group, logs in `run_dir/cluster/`, stopped by PID with the
                 executors they spawned however the context ends (return, exception, Ctrl-C, SIGTERM).
- remote         an existing cluster (`cluster.master`); nothing started.

GPUs are real (counted with nvidia-smi) or emulated (`gpu.emulate=N`: N fake addresses per worker, so GPU
scheduling itself can be measured on a machine without GPUs). Spark learns them from `discover_gpus.sh`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.schema import ClusterConfig, ClusterMode, Config, ConfigError, Topology

log = logging.getLogger(__name__)

DISCOVERY_SCRIPT = Path(__file__).with_name("discover_gpus.sh")
EMULATE_ENV = "SPARK_INFERENCE_BENCH_EMULATE_GPUS"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
REGISTER_TIMEOUT = 90.0
LOOPBACK = "127.0.0.1"


class ClusterError(RuntimeError):
    """The cluster could not be started, found or stopped; the message carries what the logs said."""


class Terminated(SystemExit):
    """Raised in the main thread by SIGTERM while a standalone cluster is up, so its cleanup runs.

    A SystemExit (exit status 143, as if killed by the signal) rather than an Exception: `except Exception`
    blocks in the body must not swallow it.
    """

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


@dataclass(frozen=True)
class GpuPlan:
    """How many GPUs each worker offers, each executor takes, and each task needs.

    Spark schedules GPUs as named addresses: a worker offers `per_worker` of them, an executor is launched
    only where `executor_amount` are free, and a task starts only with `task_amount` of its executor's
    addresses free (a fraction f lets floor(1/f) tasks share one address). The plan is decided before
    anything starts so a combination Spark would silently hang on is refused with the key to change.
    """

    kind: str  # "real" | "emulated" | "none"
    per_worker: int  # spark.worker.resource.gpu.amount (0 when none)
    executor_amount: int  # spark.executor.resource.gpu.amount
    task_amount: float  # spark.task.resource.gpu.amount (0.0 when none)
    predict_task_amount: float  # GPUs per predict task under a stage-level ResourceProfile (0.0 when none)


@dataclass(frozen=True)
class Cluster:
    """What a SparkSession needs to run on this cluster, and what was started for it.

    `conf` holds only the confs the mode needs; `spark.master` is `master`, kept apart so a caller can
    record the URL without mistaking it for a tuning knob. `slots` and `gpu_slots` are the concurrency
    Spark will allow, computed with Spark's own rules, so results can state the parallelism they ran at.
    """

    master: str  # value of spark.master
    conf: dict[str, str]  # the confs this mode needs (executor cores/memory, task cpus, GPU resources, discovery)
    slots: int  # task slots by CPU: cores / task_cpus over all executors
    gpu_slots: int | None  # concurrent tasks the GPUs allow at task_amount (None without GPUs)
    gpus: GpuPlan
    pids: tuple[int, ...]  # processes the harness started (standalone master + workers), empty otherwise
    log_dir: Path | None  # where their logs are (standalone)

    def model_slots(self, stage_level: bool) -> int:
        """How many model tasks may run at once: the GPU slots at the amount the model stage asks for
        (under stage_level, the predict profile's), else the CPU slots."""
        if self.gpu_slots is None:
            return self.slots
        if not stage_level:
            return self.gpu_slots
        executors = self.gpu_slots // tasks_per_executor(self.gpus.executor_amount, self.gpus.task_amount)
        return executors * tasks_per_executor(self.gpus.executor_amount, self.gpus.predict_task_amount)


# ---------------------------------------------------------------------------------------------- sizes


_MEMORY = re.compile(r"^\s*(\d+)\s*([kmgtp])i?b?\s*$", re.IGNORECASE)
_KIB_PER_UNIT = {"k": 1, "m": 2**10, "g": 2**20, "t": 2**30, "p": 2**40}


def memory_mb(text: str, key: str = "cluster.worker_memory") -> int:
    """MiB in a Spark memory string ("2g" -> 2048, "1536m" -> 1536).

    A unit is required: Spark reads a bare number as bytes in some places (`--memory`) and as MiB in others
    (`local-cluster[W,C,M]`), so a bare number would mean different things depending on the mode.
    """
    match = _MEMORY.match(str(text))
    if not match:
        raise ConfigError(f"{key}={text!r}: expected a size with a unit, e.g. 2g or 1536m")
    mb = int(match.group(1)) * _KIB_PER_UNIT[match.group(2).lower()] // 2**10
    if mb < 1:
        raise ConfigError(f"{key}={text!r}: less than 1 MiB")
    return mb


# ---------------------------------------------------------------------------------------------- GPUs

_ONE_RESOURCE = 10**16  # Spark 4 keeps resource amounts as longs in units of 1e-16 (ResourceAmountUtils)


def _check_amount(key: str, amount: float) -> None:
    """Spark's rule for task resource amounts: a whole number, or a fraction <= 0.5."""
    if amount <= 0:
        raise ConfigError(f"{key}={amount}: must be > 0")
    if amount > 0.5 and not float(amount).is_integer():
        raise ConfigError(f"{key}={amount}: Spark accepts a whole number of GPUs per task or a fraction <= 0.5")


def tasks_per_executor(executor_amount: int, task_amount: float) -> int:
    """Tasks one executor with `executor_amount` GPUs runs at once at `task_amount` each, as Spark counts.

    A fraction is per address: 0.4 lets floor(1/0.4) = 2 tasks share each address (not 2.5), so 2 GPUs give
    4 tasks, not floor(2/0.4) = 5.
    """
    if task_amount >= 1:
        return int(executor_amount // task_amount)
    return executor_amount * (_ONE_RESOURCE // int(task_amount * _ONE_RESOURCE))


def nvidia_gpu_count() -> int:
    """GPUs nvidia-smi lists on this machine; 0 without nvidia-smi or when it fails (no driver, no device)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return 0
    try:
        result = subprocess.run(
            [exe, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return 0
    if result.returncode != 0:
        return 0
    return sum(1 for line in result.stdout.splitlines() if line.strip())


def gpu_plan(config: Config) -> GpuPlan:
    """The GPU amounts a run asks Spark for, checked against what its workers offer.

    Why the defaults: an executor takes every GPU of its worker unless told otherwise (one executor per
    worker, as `spark.executor.cores` = worker cores makes it). A task takes one whole GPU, except in the
    stage-level topology, where the task amount of the application is what the CPU-bound preprocess stage
    runs at: there it is the largest valid share that still lets every CPU slot run (2 GPUs and 4 slots
    give 0.5), and the predict stage asks `predict_task_amount` through its ResourceProfile.

    Raises ConfigError for combinations Spark would hang on or refuse (more GPUs per executor than a worker
    has, a task amount above the executor's, 0.7 GPU per task), and ClusterError when real GPUs are asked
    for and nvidia-smi finds none. For `remote`, whose workers were started elsewhere: `gpu.emulate=N`
    plans for workers started with N emulated GPUs, and real GPUs are counted with `gpu.executor_amount`
    if set (nvidia-smi here says nothing about the remote nodes), else with nvidia-smi on this machine.
    """
    gpu, mode = config.gpu, config.cluster.mode
    for key, value in (
        ("emulate", gpu.emulate),
        ("executor_amount", gpu.executor_amount),
        ("task_amount", gpu.task_amount),
    ):
        if value < 0:
            raise ConfigError(f"gpu.{key}={value}: must be >= 0")
    if not (gpu.emulate or gpu.executor_amount or gpu.task_amount):
        return GpuPlan("none", 0, 0, 0.0, 0.0)
    if mode is ClusterMode.local:
        raise ConfigError(
            f"gpu.executor_amount={gpu.executor_amount}, gpu.task_amount={gpu.task_amount}, gpu.emulate={gpu.emulate} "
            "with cluster=local: Spark's local[N] mode does not schedule GPUs (every job hangs). Use "
            "cluster=local_cluster or cluster=standalone."
        )
    if gpu.emulate > 0:
        kind, per_worker = "emulated", gpu.emulate
    elif mode is ClusterMode.remote and gpu.executor_amount > 0:
        kind, per_worker = "real", gpu.executor_amount
    else:
        kind, per_worker = "real", nvidia_gpu_count()
        if per_worker == 0:
            raise ClusterError(
                f"gpu.executor_amount={gpu.executor_amount}, gpu.task_amount={gpu.task_amount} ask for GPUs, but "
                "nvidia-smi lists none on this machine. Use gpu.emulate=N to schedule N emulated GPUs per worker."
            )
    executor_amount = gpu.executor_amount or per_worker
    if executor_amount > per_worker:
        raise ConfigError(
            f"gpu.executor_amount={executor_amount}: a worker offers {per_worker} GPUs, so Spark would never "
            "launch an executor and the application would wait forever"
        )
    if gpu.task_amount > 0:
        task_amount = float(gpu.task_amount)
        _check_amount("gpu.task_amount", task_amount)
    elif config.topology.kind is Topology.stage_level:
        cpu_slots = max(1, config.cluster.worker_cores // max(1, config.cluster.task_cpus))
        shares = math.ceil(cpu_slots / executor_amount)
        task_amount = 1.0 if shares <= 1 else 1.0 / shares
    else:
        task_amount = 1.0
    predict_task_amount = float(gpu.predict_task_amount)
    _check_amount("gpu.predict_task_amount", predict_task_amount)
    for key, amount in (("gpu.task_amount", task_amount), ("gpu.predict_task_amount", predict_task_amount)):
        if amount > executor_amount:
            raise ConfigError(
                f"{key}={amount}: more than the {executor_amount} GPUs of an executor; no task could ever start"
            )
    return GpuPlan(kind, per_worker, executor_amount, task_amount, predict_task_amount)


def discovery_script(run_dir: Path, gpus: GpuPlan) -> Path:
    """The discovery script Spark runs to learn a worker's GPU addresses.

    Emulated GPUs get a two-line wrapper in `run_dir/cluster/` that sets SPARK_INFERENCE_BENCH_EMULATE_GPUS
    and runs the packaged script with bash. The variable has to reach whoever runs the script, which is the
    driver JVM for local-cluster (its workers live in it) and the Worker JVMs for standalone. Setting it in
    os.environ would be process-wide and would not reach a driver JVM this process already started (PySpark
    keeps one gateway JVM per process across sessions, e.g. pytest's session-wide `spark` fixture); the
    wrapper carries it with the script path instead, and the run dir records how GPUs were emulated.
    Running the packaged script through bash also sidesteps a lost executable bit (wheels may drop it).
    For real GPUs the packaged script is used as is, or an executable copy of it in `run_dir/cluster/`
    when the installed file is not executable.
    """
    target_dir = Path(run_dir).resolve() / "cluster"
    if gpus.kind == "emulated":
        target_dir.mkdir(parents=True, exist_ok=True)
        wrapper = target_dir / "discover_gpus_emulated.sh"
        wrapper.write_text(
            "#!/usr/bin/env bash\n"
            f"# {gpus.per_worker} emulated GPUs per worker (gpu.emulate={gpus.per_worker}).\n"
            f'{EMULATE_ENV}={gpus.per_worker} exec bash {shlex.quote(str(DISCOVERY_SCRIPT))} "$@"\n'
        )
        wrapper.chmod(0o755)
        return wrapper
    if os.access(DISCOVERY_SCRIPT, os.X_OK):
        return DISCOVERY_SCRIPT
    target_dir.mkdir(parents=True, exist_ok=True)
    copy = target_dir / DISCOVERY_SCRIPT.name
    shutil.copyfile(DISCOVERY_SCRIPT, copy)
    copy.chmod(0o755)
    return copy


def worker_gpu_conf(gpus: GpuPlan, script: Path) -> dict[str, str]:
    """The worker-side GPU confs: what each worker offers and how it discovers it."""
    return {
        "spark.worker.resource.gpu.amount": str(gpus.per_worker),
        "spark.worker.resource.gpu.discoveryScript": str(script),
    }


def java_options(conf: dict[str, str]) -> str:
    """`-Dkey=value` options in the quoting Spark's launcher parses (double quotes, backslash escapes)."""

    def quote(text: str) -> str:
        if re.search(r'[\s"\'\\]', text):
            return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return text

    return " ".join(quote(f"-D{key}={value}") for key, value in conf.items())


# ---------------------------------------------------------------------------------------------- plan


def check_executors(cl: ClusterConfig, key: str = "cluster") -> None:
    """Refuse executor sizes a worker could never launch; `key` is where `cl` sits in the config."""
    if cl.mode is ClusterMode.local:  # local[N] runs tasks in the driver: no executors to size
        return
    for name in ("workers", "worker_cores", "task_cpus"):
        if getattr(cl, name) < 1:
            raise ConfigError(f"{key}.{name}={getattr(cl, name)}: must be an integer >= 1")
    if cl.task_cpus > cl.worker_cores:
        raise ConfigError(
            f"{key}.task_cpus={cl.task_cpus} > {key}.worker_cores={cl.worker_cores}: no task could ever start"
        )
    executor_mb = memory_mb(cl.executor_memory, f"{key}.executor_memory")
    starts_workers = cl.mode in (ClusterMode.local_cluster, ClusterMode.standalone)
    if starts_workers and executor_mb > memory_mb(cl.worker_memory, f"{key}.worker_memory"):
        raise ConfigError(
            f"{key}.executor_memory={cl.executor_memory} > {key}.worker_memory={cl.worker_memory}: a worker "
            "could never launch an executor and the application would wait forever"
        )


def app_conf(config: Config, gpus: GpuPlan, script: Path | None) -> dict[str, str]:
    """The application confs of a non-local mode (everything but spark.master).

    One executor per worker with all its cores. GPU confs: local-cluster takes the worker ones as
    application confs too (its workers run in the driver JVM and read the application's conf); standalone
    workers get them on their command line instead (SPARK_WORKER_OPTS), and a remote cluster's workers were
    configured by whoever started them.
    """
    cl = config.cluster
    conf = {
        "spark.executor.cores": str(cl.worker_cores),
        "spark.executor.memory": cl.executor_memory,
        "spark.task.cpus": str(cl.task_cpus),
    }
    if cl.mode is ClusterMode.remote:
        conf["spark.executor.instances"] = str(cl.workers)
    if gpus.kind != "none":
        if cl.mode is ClusterMode.local_cluster:
            assert script is not None
            conf.update(worker_gpu_conf(gpus, script))
        conf["spark.executor.resource.gpu.amount"] = str(gpus.executor_amount)
        conf["spark.task.resource.gpu.amount"] = _amount(gpus.task_amount)
    return conf


def _amount(amount: float) -> str:
    return str(int(amount)) if float(amount).is_integer() else repr(float(amount))


def _slots(config: Config) -> int:
    cl = config.cluster
    return cl.workers * (cl.worker_cores // cl.task_cpus)


def _gpu_slots(config: Config, gpus: GpuPlan) -> int | None:
    if gpus.kind == "none":
        return None
    return config.cluster.workers * tasks_per_executor(gpus.executor_amount, gpus.task_amount)


# ---------------------------------------------------------------------------------------------- context


@contextmanager
def cluster(config: Config, run_dir: Path) -> Iterator[Cluster]:
    """The cluster of one run, up for the duration of the block; see the module docstring.

    Nothing is started for local, local_cluster and remote. For standalone, the master and workers are
    stopped when the block ends however it ends, SIGTERM to this process included (it raises `Terminated`
    in the main thread while the cluster is up); a SIGKILL of this process cannot be handled: the PIDs to
    stop by hand are in `run_dir/cluster/cluster.json`.
    """
    cl = config.cluster
    gpus = gpu_plan(config)
    run_dir = Path(run_dir).resolve()
    if cl.mode is ClusterMode.local:
        cores = cl.cores or os.cpu_count() or 1
        yield Cluster(f"local[{cores}]", {}, cores, None, gpus, (), None)
        return
    if cl.mode is ClusterMode.remote and (not cl.master or cl.master == "???"):
        raise ConfigError("cluster.master is required with cluster=remote, e.g. cluster.master=spark://host:7077")
    check_executors(cl)
    starts_workers = cl.mode in (ClusterMode.local_cluster, ClusterMode.standalone)
    if starts_workers and gpus.kind == "real" and cl.workers > 1:
        log.warning(
            "%d workers on one machine each discover all %d GPUs: Spark will schedule every GPU %d times",
            cl.workers,
            gpus.per_worker,
            cl.workers,
        )
    script = discovery_script(run_dir, gpus) if gpus.kind != "none" and starts_workers else None
    conf = app_conf(config, gpus, script)
    slots, gpu_slots = _slots(config), _gpu_slots(config, gpus)
    if cl.mode is ClusterMode.remote:
        yield Cluster(cl.master, conf, slots, gpu_slots, gpus, (), None)
    elif cl.mode is ClusterMode.local_cluster:
        master = f"local-cluster[{cl.workers},{cl.worker_cores},{memory_mb(cl.worker_memory)}]"
        yield Cluster(master, conf, slots, gpu_slots, gpus, (), None)
    elif cl.mode is ClusterMode.standalone:
        worker_conf = worker_gpu_conf(gpus, script) if script is not None else {}
        with _standalone(config, run_dir, worker_conf, gpus) as (master, pids, log_dir):
            yield Cluster(master, conf, slots, gpu_slots, gpus, pids, log_dir)
    else:  # pragma: no cover - the schema's enum is exhaustive
        raise ConfigError(f"cluster.mode={cl.mode}: unknown")


def spark_home() -> Path:
    """The Spark distribution inside the installed pyspark package (bin/spark-class, jars/)."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def _free_ports(count: int) -> list[int]:
    """Ports free on the loopback now (all bound at once, so they differ); a race with other programs is
    possible but the start would then fail loudly in the log."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _master_state(webui_port: int) -> dict[str, Any] | None:
    """The master's JSON status page, or None while it is not answering. Never through an HTTP proxy."""
    try:
        with _NO_PROXY.open(f"http://{LOOPBACK}:{webui_port}/json/", timeout=2) as response:
            return json.load(response)
    except (OSError, ValueError, urllib.error.URLError):
        return None


_STACK_FRAME = re.compile(r"^\s+(at |\.\.\. \d+ more)")


def _tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log without Java stack frames, which would crowd out the error lines."""
    try:
        text = [line for line in path.read_text(errors="replace").splitlines() if not _STACK_FRAME.match(line)]
    except OSError as error:
        return f"({error})"
    return "\n".join(text[-lines:])


@dataclass
class _Started:
    name: str
    process: subprocess.Popen
    log: Path


def _logs(started: list[_Started]) -> str:
    return "\n".join(f"--- {s.name} ({s.log}), last lines:\n{_tail(s.log)}" for s in started)


def _wait_until(what: str, check: Callable[[], Any], started: list[_Started], timeout: float) -> Any:
    """Poll `check` until it returns something truthy; fail fast if a started process exits."""
    deadline = time.monotonic() + timeout
    while True:
        for s in started:
            code = s.process.poll()
            if code is not None:
                raise ClusterError(
                    f"the standalone {s.name} exited with status {code} while waiting for {what}\n{_logs(started)}"
                )
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}\n{_logs(started)}")
        time.sleep(0.2)


class _SignalGuard:
    """SIGTERM raises `Terminated` in the main thread while the cluster is up (`kill PID` then stops it like
    Ctrl-C does); during the cleanup, SIGTERM and SIGINT are noted and ignored, so a second kill or Ctrl-C
    cannot cut it short and leave processes behind; afterwards the previous handlers come back. Off the
    main thread Python cannot install handlers: then only the normal exits are covered."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.active = threading.current_thread() is threading.main_thread()
        if not self.active:
            log.warning("cluster() entered off the main thread: SIGTERM will not stop the standalone cluster")
            return
        self.previous = {sig: signal.getsignal(sig) for sig in self.SIGNALS}
        signal.signal(signal.SIGTERM, self._terminate)

    @staticmethod
    def _terminate(signum: int, frame: Any) -> None:
        raise Terminated()

    @staticmethod
    def _ignore(signum: int, frame: Any) -> None:
        log.warning("signal %d ignored while the standalone cluster is being stopped", signum)

    def defer(self) -> None:
        if self.active:
            for sig in self.SIGNALS:
                signal.signal(sig, self._ignore)

    def restore(self) -> None:
        if self.active:
            for sig, handler in self.previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


@contextmanager
def _standalone(
    config: Config, run_dir: Path, worker_conf: dict[str, str], gpus: GpuPlan
) -> Iterator[tuple[str, tuple[int, ...], Path]]:
    """Start a master and `cluster.workers` workers on the loopback; yield (master URL, PIDs, log dir)."""
    cl = config.cluster
    log_dir = run_dir / "cluster"
    work_dir, conf_dir = log_dir / "work", log_dir / "conf"
    for directory in (log_dir, work_dir, conf_dir):
        directory.mkdir(parents=True, exist_ok=True)
    home = spark_home()
    spark_class = str(home / "bin" / "spark-class")
    overrides = {
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": LOOPBACK,
        "SPARK_WORKER_DIR": str(work_dir),
        "SPARK_LOG_DIR": str(log_dir),
        # An empty conf dir: no spark-defaults.conf or spark-env.sh of the machine leaks into the measurement.
        "SPARK_CONF_DIR": str(conf_dir),
        "PYSPARK_PYTHON": sys.executable,
    }
    # Spark 4's master also opens a REST submission server on the fixed port 6066 by default: not needed,
    # and a second cluster on the machine would collide on it.
    overrides["SPARK_MASTER_OPTS"] = " ".join(
        filter(None, [os.environ.get("SPARK_MASTER_OPTS", ""), java_options({"spark.master.rest.enabled": "false"})])
    )
    env = {**os.environ, **overrides}
    env.pop("SPARK_ENV_LOADED", None)
    worker_env = dict(env)
    worker_overrides = {}
    if worker_conf:
        opts = " ".join(filter(None, [os.environ.get("SPARK_WORKER_OPTS", ""), java_options(worker_conf)]))
        worker_overrides["SPARK_WORKER_OPTS"] = opts
        worker_env.update(worker_overrides)
    port, webui = _free_ports(2)
    master_url = f"spark://{LOOPBACK}:{port}"
    record: dict[str, Any] = {
        "master": master_url,
        "master_webui": f"http://{LOOPBACK}:{webui}/",
        "env": overrides,
        "worker_env": worker_overrides,
        "commands": {},
        "pids": {},
        "timings_s": {},
    }
    started: list[_Started] = []

    def spawn(name: str, args: list[str], process_env: dict[str, str]) -> None:
        log_path = log_dir / f"{name}.log"
        with open(log_path, "wb") as out:
            process = subprocess.Popen(
                args,
                env=process_env,
                cwd=log_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(_Started(name, process, log_path))
        record["commands"][name] = args
        record["pids"][name] = process.pid
        _write_record(log_dir, record)

    guard = _SignalGuard()
    try:
        t0 = time.monotonic()
        spawn(
            "master",
            [spark_class, MASTER_CLASS, "--host", LOOPBACK, "--port", str(port), "--webui-port", str(webui)],
            env,
        )
        _wait_until(
            "the master to answer",
            lambda: (_master_state(webui) or {}).get("status") == "ALIVE",
            started,
            REGISTER_TIMEOUT,
        )
        record["timings_s"]["master_up"] = round(time.monotonic() - t0, 3)
        t1 = time.monotonic()
        for i in range(cl.workers):
            spawn(
                f"worker-{i + 1}",
                [
                    spark_class,
                    WORKER_CLASS,
                    master_url,
                    "--host",
                    LOOPBACK,
                    "--cores",
                    str(cl.worker_cores),
                    "--memory",
                    f"{memory_mb(cl.worker_memory)}m",
                    "--webui-port",
                    "0",
                    "--work-dir",
                    str(work_dir),
                ],
                worker_env,
            )
        state = _wait_until(
            f"{cl.workers} worker(s) to register with the master",
            lambda: _registered(_master_state(webui), cl.workers),
            started,
            max(1.0, REGISTER_TIMEOUT - (time.monotonic() - t0)),
        )
        record["timings_s"]["workers_registered"] = round(time.monotonic() - t1, 3)
        _check_worker_gpus(state, gpus, started)
        _write_record(log_dir, record)
        log.info(
            "standalone %s up: master %.1f s, %d worker(s) registered %.1f s later",
            master_url,
            record["timings_s"]["master_up"],
            cl.workers,
            record["timings_s"]["workers_registered"],
        )
        yield master_url, tuple(s.process.pid for s in started), log_dir
    finally:
        guard.defer()
        try:
            t2 = time.monotonic()
            # Workers first (each kills its executors on SIGTERM) while the master is there to see them go;
            # a worker that outlived its master would keep trying to reconnect. Then the master.
            try:
                stop_processes([s.process.pid for s in started if s.name != "master"])
            finally:
                stop_processes([s.process.pid for s in started if s.name == "master"])
                for s in started:
                    try:
                        s.process.wait(timeout=1)
                    except subprocess.TimeoutExpired:
                        pass
            record["timings_s"]["stop"] = round(time.monotonic() - t2, 3)
            _write_record(log_dir, record)
            log.info("standalone %s stopped in %.1f s", master_url, record["timings_s"]["stop"])
        finally:
            guard.restore()


def _registered(state: dict[str, Any] | None, workers: int) -> dict[str, Any] | None:
    if not state:
        return None
    alive = [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]
    return state if len(alive) >= workers else None


def _check_worker_gpus(state: dict[str, Any], gpus: GpuPlan, started: list[_Started]) -> None:
    """Every registered worker offers the planned GPUs (Spark would otherwise wait for executors forever)."""
    if gpus.kind == "none":
        return
    for worker in state.get("workers", []):
        resources = worker.get("resources")
        if resources is None:  # not reported by this Spark version: nothing to check
            continue
        addresses = (resources.get("gpu") or {}).get("addresses", [])
        if len(addresses) < gpus.per_worker:
            raise ClusterError(
                f"worker {worker.get('id')} offers GPUs {addresses}, expected {gpus.per_worker}\n{_logs(started)}"
            )


def _write_record(log_dir: Path, record: dict[str, Any]) -> None:
    (log_dir / "cluster.json").write_text(json.dumps(record, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------- stopping


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent PID, start time in clock ticks) from /proc, or None if there is no such process."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes().decode(errors="replace")
    except OSError:
        return None
    fields = data[data.rindex(")") + 2 :].split()  # the command name may contain spaces and parentheses
    return fields[0], int(fields[1]), int(fields[19])


def _process_table() -> dict[int, tuple[str, int, int]]:
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None:
                table[int(entry.name)] = stat
    return table


def _alive(table: dict[int, tuple[str, int, int]], pid: int, start: int) -> bool:
    """The same process (PID and start time: PIDs get reused) still exists and is not a zombie."""
    stat = table.get(pid)
    return stat is not None and stat[2] == start and stat[0] not in ("Z", "X")


def _add_descendants(known: dict[int, int], table: dict[int, tuple[str, int, int]]) -> None:
    """Add to `known` (PID -> start time) every live descendant of its live members."""
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    stack = [pid for pid, start in known.items() if _alive(table, pid, start)]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in known and table[child][0] not in ("Z", "X"):
                known[child] = table[child][2]
                stack.append(child)


def _reap(pids: Iterable[int]) -> None:
    """Collect the exit status of those that are our children, so they do not linger as zombies."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except (ChildProcessError, OSError):
            pass


def _send(pid: int, start: int, sig: int) -> None:
    stat = _proc_stat(pid)
    if stat is None or stat[2] != start:
        return
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _describe(pid: int) -> str:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        return f"{pid} ({' '.join(a.decode(errors='replace') for a in args if a)[:200]})"
    except OSError:
        return str(pid)


def stop_processes(pids: Iterable[int], timeout: float = 20.0) -> None:
    """Stop processes and everything they spawned: SIGTERM, wait, SIGKILL; raise if any survive.

    Descendants (a standalone Worker's executor JVMs, their pyspark daemons and Python workers) are found
    via /proc before the first signal, because once their parent dies they are re-parented and nothing
    links them to it any more; processes spawned while waiting are added as they appear. The given PIDs
    get SIGTERM first, in order, and time to stop their own children cleanly (a Worker kills its
    executors on shutdown); descendants still alive once their roots are gone get SIGTERM, and whatever is
    left at `timeout` gets SIGKILL. Every PID is paired with its start time, so a reused PID is never hit.
    Zombies count as gone (ours are reaped).
    """
    pids = list(pids)
    _reap(pids)
    table = _process_table()
    roots = {pid: table[pid][2] for pid in pids if pid in table and _alive(table, pid, table[pid][2])}
    if not roots:
        return
    known = dict(roots)
    _add_descendants(known, table)
    for pid, start in roots.items():
        _send(pid, start, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    orphans_signalled = False
    while True:
        _reap(pids)
        table = _process_table()
        _add_descendants(known, table)
        alive = {pid: start for pid, start in known.items() if _alive(table, pid, start)}
        if not alive:
            return
        if not orphans_signalled and not any(pid in roots for pid in alive):
            for pid, start in alive.items():
                _send(pid, start, signal.SIGTERM)
            orphans_signalled = True
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    log.warning("SIGKILL to %s: still running %.0f s after SIGTERM", sorted(alive), timeout)
    for pid, start in alive.items():
        _send(pid, start, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        _reap(pids)
        table = _process_table()
        alive = {pid: start for pid, start in alive.items() if _alive(table, pid, start)}
        if not alive:
            return
        time.sleep(0.1)
    raise ClusterError(f"processes still running after SIGKILL: {', '.join(_describe(pid) for pid in alive)}")
