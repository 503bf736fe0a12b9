"""The plan of a run's Spark applications, decided once from the config before anything starts.

`plan(config)` checks the cluster, GPU and memory settings and returns a frozen `Plan`: the value of
`spark.master` (except for standalone, whose URL is known once its master is up), the confs the mode needs,
how many tasks can run at once by CPU, by GPU and in the model stage, and the memory sizes. It raises
ConfigError for a combination Spark would refuse or hang on, naming the key, and ClusterError when real
GPUs are asked for and nvidia-smi finds none; nvidia-smi is its only look outside the config. Validation
builds it (`pipeline.config.validate.validate` returns it), the cluster context starts what it describes
(`pipeline.spark.cluster.cluster`), and the evidence checks the run against it (`pipeline.spark.evidence`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

from pipeline.config.schema import (
    ClusterConfig,
    ClusterMode,
    Config,
    ConfigError,
    ConnectConfig,
    ExecutorsConfig,
    GpuConfig,
    LocalClusterConfig,
    LocalConfig,
    RemoteConfig,
    Ship,
    StandaloneConfig,
    Topology,
)

LOOPBACK = "127.0.0.1"


class ClusterError(RuntimeError):
    """The cluster could not be started, found or stopped; the message carries what the logs said."""


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
class Plan:
    """One Spark application's cluster as Spark will see it, computed with Spark's own rules.

    `slots` and `gpu_slots` are the concurrency Spark will allow, `model_slots` how many model tasks may run
    at once (the GPU slots at the amount the model stage asks for: under stage_level the predict profile's;
    the CPU slots without GPUs), so results can state the parallelism they ran at and the evidence can
    check it. `conf` holds the application confs of the mode (executor cores and memory, task CPUs, GPU
    amounts), not `spark.master` and not the GPU discovery script, whose path only exists once the cluster
    context has written it. `preprocess` is the plan of two_stage's preprocess application when
    `topology.preprocess_cluster` gives it a cluster of its own.
    """

    mode: ClusterMode
    master: str | None  # spark.master; None for standalone, whose URL is known once its master is up
    workers: int
    worker_cores: int
    worker_memory_mb: int | None  # what each worker offers (local_cluster, standalone); None otherwise
    executor_memory_mb: int | None  # every mode but local
    slots: int  # task slots by CPU: cores / task_cpus over all executors
    gpu_slots: int | None  # concurrent tasks the GPUs allow at task_amount (None without GPUs)
    model_slots: int
    gpus: GpuPlan
    conf: dict[str, str]
    preprocess: Plan | None = None
    # the job talks to Spark through Spark Connect: `connect_server` is True when the harness starts the server
    # (cluster=connect, in front of the backend `mode`), False for a server at cluster.master=sc://...
    connect: bool = False
    connect_server: bool = False

    @property
    def starts_jvm(self) -> bool:
        """Whether the run starts a JVM (its driver, its workers, a Connect server): all but a Connect client of a
        server the harness did not start, whose job talks gRPC only and needs no Java here."""
        return not self.connect or self.connect_server

    @property
    def starts_workers(self) -> bool:
        """Whether the run starts the workers itself (local-cluster in the driver JVM, standalone here)."""
        return self.mode in (ClusterMode.local_cluster, ClusterMode.standalone)


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


APPLICATION_FRACTION_LIMIT = 0.5  # spark.task.resource.gpu.amount: SparkContext refuses 0.6 in 4.3.0 (measured)
PROFILE_FRACTION_LIMIT = 1.0  # a TaskResourceRequests amount (stage-level profile): SPARK-45527's "<= 1.0"


def _check_amount(key: str, amount: float, limit: float) -> None:
    """Spark 4.3's rules for task resource amounts: a whole number, or a fraction <= `limit`.

    Measured on pyspark 4.3.0: the application's `spark.task.resource.gpu.amount` still has the old rule,
    SparkContext failing with "The task resource amount 0.6 must be either <= 0.5, or a whole number"; the
    "<= 1.0" of SPARK-45527 is the rule of task resource requests in a ResourceProfile (the predict
    profile of stage_level), where 0.6 and 0.75 schedule one task per GPU address (measured; the slow test runs 0.6)."""
    if amount <= 0:
        raise ConfigError(f"{key}={amount}: must be > 0")
    if amount > limit and not float(amount).is_integer():
        raise ConfigError(f"{key}={amount}: Spark 4.3 accepts a whole number of GPUs per task or a fraction <= {limit}")


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
    has, a task amount above the executor's, 0.7 GPU per task for the application), and ClusterError when
    real GPUs are asked for and nvidia-smi finds none. For `remote`, whose workers were started elsewhere:
    `gpu.emulate=N` plans for workers started with N emulated GPUs, and real GPUs are counted with `gpu.executor_amount`
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
        _check_amount("gpu.task_amount", task_amount, APPLICATION_FRACTION_LIMIT)
    elif config.topology.kind in (Topology.stage_level, Topology.model_server):  # every CPU slot runs a task
        cpu_slots = max(1, config.cluster.worker_cores // max(1, config.cluster.task_cpus))
        shares = math.ceil(cpu_slots / executor_amount)
        task_amount = 1.0 if shares <= 1 else 1.0 / shares
    else:
        task_amount = 1.0
    predict_task_amount = float(gpu.predict_task_amount)
    _check_amount("gpu.predict_task_amount", predict_task_amount, PROFILE_FRACTION_LIMIT)
    for key, amount in (("gpu.task_amount", task_amount), ("gpu.predict_task_amount", predict_task_amount)):
        if amount > executor_amount:
            raise ConfigError(
                f"{key}={amount}: more than the {executor_amount} GPUs of an executor; no task could ever start"
            )
    return GpuPlan(kind, per_worker, executor_amount, task_amount, predict_task_amount)


# ---------------------------------------------------------------------------------------------- plan


def _memory(cl: ClusterConfig, key: str) -> tuple[int | None, int | None]:
    """(worker MiB, executor MiB) of a cluster, refusing sizes and counts a worker could never launch an
    executor with; `key` is where `cl` sits in the config. Which keys a mode has is its schema's; every mode has
    the driver's memory, which goes to spark.driver.memory as written, so it is held to the same rule."""
    memory_mb(cl.driver_memory, f"{key}.driver_memory")
    if isinstance(cl, LocalConfig):  # local[N] runs tasks in the driver: no executors to size
        if cl.cores is not None and cl.cores < 1:
            raise ConfigError(f"{key}.cores={cl.cores}: must be an integer >= 1")
        return None, None
    if isinstance(cl, RemoteConfig):
        _remote(cl, key)
    assert isinstance(cl, ExecutorsConfig)
    for name in ("workers", "worker_cores", "task_cpus"):
        if getattr(cl, name) < 1:
            raise ConfigError(f"{key}.{name}={getattr(cl, name)}: must be an integer >= 1")
    if cl.task_cpus > cl.worker_cores:
        raise ConfigError(
            f"{key}.task_cpus={cl.task_cpus} > {key}.worker_cores={cl.worker_cores}: no task could ever start"
        )
    executor_mb = memory_mb(cl.executor_memory, f"{key}.executor_memory")
    if not isinstance(cl, (LocalClusterConfig, StandaloneConfig)):
        return None, executor_mb
    worker_mb = memory_mb(cl.worker_memory, f"{key}.worker_memory")
    if executor_mb > worker_mb:
        raise ConfigError(
            f"{key}.executor_memory={cl.executor_memory} > {key}.worker_memory={cl.worker_memory}: a worker "
            "could never launch an executor and the application would wait forever"
        )
    return worker_mb, executor_mb


def _remote(cl: RemoteConfig, key: str) -> None:
    """A remote cluster's own keys: its master, the preflight's bound, an environment there is to ship."""
    if not cl.master or cl.master == "???":
        raise ConfigError(f"{key}=remote needs {key}.master, e.g. {key}.master=spark://host:7077")
    if not cl.preflight_timeout_s > 0:
        raise ConfigError(f"{key}.preflight_timeout_s={cl.preflight_timeout_s}: must be > 0 seconds")
    if cl.ship is Ship.env and sys.prefix == sys.base_prefix:
        raise ConfigError(
            f"{key}.ship=env packs this Python's virtualenv, and {sys.executable} runs in none (sys.prefix is its "
            f"installation, {sys.prefix}): run the tool from a virtualenv, or install it on the nodes "
            f"({key}.ship=installed) or ship its code ({key}.ship=code)"
        )


def _app_conf(cl: ClusterConfig, gpus: GpuPlan) -> dict[str, str]:
    """The application confs of a non-local mode (everything but spark.master and GPU discovery).

    One executor per worker with all its cores. The worker-side GPU confs (what a worker offers and its
    discovery script) are the cluster context's: local-cluster takes them as application confs too (its
    workers run in the driver JVM and read the application's conf), standalone workers get them on their
    command line, and a remote cluster's workers were configured by whoever started them.
    """
    conf = {
        "spark.executor.cores": str(cl.worker_cores),
        "spark.executor.memory": cl.executor_memory,
        "spark.task.cpus": str(cl.task_cpus),
    }
    if cl.mode is ClusterMode.remote:
        conf["spark.executor.instances"] = str(cl.workers)
        if str(cl.master).startswith("spark://"):
            # a standalone master ignores spark.executor.instances (measured on 4.3: 1 asked, an executor on each
            # of 3 workers); its cap on the application's cores is what keeps it to cluster.workers executors
            conf["spark.cores.max"] = str(cl.workers * cl.worker_cores)
    if gpus.kind != "none":
        conf["spark.executor.resource.gpu.amount"] = str(gpus.executor_amount)
        conf["spark.task.resource.gpu.amount"] = _amount(gpus.task_amount)
    return conf


def _amount(amount: float) -> str:
    return str(int(amount)) if float(amount).is_integer() else repr(float(amount))


def _application(config: Config, memory: tuple[int | None, int | None], gpus: GpuPlan, preprocess: Plan | None) -> Plan:
    cl = config.cluster
    worker_mb, executor_mb = memory
    if cl.mode is ClusterMode.local:
        cores = cl.cores or os.cpu_count() or 1
        return Plan(cl.mode, f"local[{cores}]", 1, cores, None, None, cores, None, cores, gpus, {}, preprocess)
    slots = cl.workers * (cl.worker_cores // cl.task_cpus)
    gpu_slots = model_slots = None
    if gpus.kind != "none":
        gpu_slots = cl.workers * tasks_per_executor(gpus.executor_amount, gpus.task_amount)
        model_slots = gpu_slots
        if config.topology.kind is Topology.stage_level:
            model_slots = cl.workers * tasks_per_executor(gpus.executor_amount, gpus.predict_task_amount)
    if cl.mode is ClusterMode.local_cluster:
        master = f"local-cluster[{cl.workers},{cl.worker_cores},{worker_mb}]"
    else:
        master = cl.master if cl.mode is ClusterMode.remote else None
    return Plan(
        mode=cl.mode,
        master=master,
        workers=cl.workers,
        worker_cores=cl.worker_cores,
        worker_memory_mb=worker_mb,
        executor_memory_mb=executor_mb,
        slots=slots,
        gpu_slots=gpu_slots,
        model_slots=slots if model_slots is None else model_slots,
        gpus=gpus,
        conf=_app_conf(cl, gpus),
        preprocess=preprocess,
    )


def _preprocess(config: Config) -> Plan | None:
    """two_stage's job 1 on a cluster of its own: a second application, started before the predict one in
    this process, so both share its driver JVM, whose heap is fixed when the first application starts. It
    schedules no GPUs (`gpu.*` describes the predict cluster), as `engines.spark.preprocess_config` runs it."""
    key, cl = "topology.preprocess_cluster", getattr(config.topology, "preprocess_cluster", None)
    if cl is None:  # topology=two_stage only: the other topologies' schemas have no such key
        return None
    memory = _memory(cl, key)
    if cl.driver_memory != config.cluster.driver_memory:
        raise ConfigError(
            f"{key}.driver_memory={cl.driver_memory} != cluster.driver_memory={config.cluster.driver_memory}: both "
            "applications run in one driver JVM, whose heap the first one fixes; set them equal"
        )
    none = GpuPlan("none", 0, 0, 0.0, 0.0)
    return _application(dataclasses.replace(config, cluster=cl, gpu=GpuConfig()), memory, none, None)


def is_connect_url(master: str | None) -> bool:
    """Whether `master` is a Spark Connect server's URL (sc://HOST:PORT) rather than a cluster's."""
    return bool(master) and str(master).startswith("sc://")


CONNECT_BACKENDS = (ClusterMode.local, ClusterMode.local_cluster, ClusterMode.standalone)


def connect_backend(cl: ConnectConfig) -> ClusterConfig:
    """The backend cluster behind cluster=connect's server, as the config of that mode: the plan, the cluster
    context and the evidence treat it like that mode, and the server runs the application on it."""
    if cl.backend not in CONNECT_BACKENDS:
        names = ", ".join(mode.value for mode in CONNECT_BACKENDS)
        raise ConfigError(f"cluster.backend={cl.backend.value}: cluster=connect runs in front of {names}")
    shared = {"driver_memory": cl.driver_memory, "nodes": cl.nodes}
    if cl.backend is ClusterMode.local:
        if cl.workers != 1:
            raise ConfigError(f"cluster.workers={cl.workers} with cluster.backend=local: local[N] has one 'worker'")
        return LocalConfig(cores=cl.worker_cores, **shared)
    keys = {name: getattr(cl, name) for name in ("workers", "worker_cores", "executor_memory", "task_cpus")}
    schema = LocalClusterConfig if cl.backend is ClusterMode.local_cluster else StandaloneConfig
    return schema(worker_memory=cl.worker_memory, **keys, **shared)


def plan(config: Config) -> Plan:
    """The plan of `config`'s application (and of two_stage's preprocess application); see the module doc.

    Checked in this order, the first failure raised: `cluster`, `topology.preprocess_cluster`, `gpu`.
    cluster=connect is planned as its backend, marked `connect`; cluster=remote with an sc:// master too.
    """
    if isinstance(config.cluster, ConnectConfig):
        backend = plan(dataclasses.replace(config, cluster=connect_backend(config.cluster)))
        return dataclasses.replace(backend, connect=True, connect_server=True)
    if isinstance(config.cluster, RemoteConfig) and is_connect_url(config.cluster.master):
        return dataclasses.replace(_plan(config), connect=True)
    return _plan(config)


def _plan(config: Config) -> Plan:
    memory = _memory(config.cluster, "cluster")
    preprocess = _preprocess(config)
    return _application(config, memory, gpu_plan(config), preprocess)
