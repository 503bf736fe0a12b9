"""The cluster one run uses: what Spark is told about it, and, in standalone mode, the processes behind it.

`cluster(config, run_dir, plan)` is a context manager that yields a `Cluster`: the value of `spark.master`,
the confs the mode needs, and the processes the harness started, on top of the run's `Plan`
(`pipeline.spark.plan`: slots, GPU slots, model slots, GPU amounts, memory sizes, decided once by
validation). The SparkSession is built inside the context, so the application ends before its cluster does:

    with cluster(config, run_dir, plan) as c:
        conf = spark_conf(config, run_dir, input_bytes, c)  # spark.master = c.master, plus c.conf
        with spark_session(conf) as spark:
            ...

Modes (`cluster.mode`):
- local          `local[N]` in the driver JVM; nothing started; no GPU scheduling (Spark hangs with it).
- local_cluster  `local-cluster[W,C,M]`: the driver JVM runs W workers that start real executor JVMs.
- standalone     a real master and W workers started here from the installed pyspark
                 (`pipeline.spark.standalone`), logs in `run_dir/cluster/`, stopped by PID with the
                 executors they spawned however the context ends (return, exception, Ctrl-C, SIGTERM).
- remote         an existing cluster (`cluster.master`); nothing started.

GPUs are real (counted with nvidia-smi) or emulated (`gpu.emulate=N`: N fake addresses per worker, so GPU
scheduling itself can be measured on a machine without GPUs). Spark learns them from `discover_gpus.sh`.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from pipeline.config.schema import ClusterConfig, ClusterMode, Config, RemoteConfig
from pipeline.spark import plan as planning
from pipeline.spark.plan import LOOPBACK, ClusterError, GpuPlan, Plan
from pipeline.spark.standalone import spark_home, standalone

log = logging.getLogger(__name__)

DISCOVERY_SCRIPT = Path(__file__).with_name("discover_gpus.sh")
EMULATE_ENV = "SPARK_INFERENCE_BENCH_EMULATE_GPUS"


@dataclass(frozen=True)
class Cluster:
    """What a SparkSession needs to run on this cluster, and what was started for it.

    `conf` holds only the confs the mode needs (the plan's, plus GPU discovery for local-cluster);
    `spark.master` is `master`, kept apart so a caller can record the URL without mistaking it for a tuning
    knob. The concurrency Spark will allow is the plan's.
    """

    plan: Plan
    master: str  # value of spark.master
    conf: dict[str, str]  # executor cores/memory, task cpus, GPU resources, discovery
    pids: tuple[int, ...]  # processes the harness started (standalone master + workers), empty otherwise
    log_dir: Path | None  # where their logs are (standalone, local-cluster)
    driver_host: str = LOOPBACK  # the address the executors reach the driver at, which it binds (`driver_host`)

    @property
    def slots(self) -> int:
        return self.plan.slots

    @property
    def gpu_slots(self) -> int | None:
        return self.plan.gpu_slots

    @property
    def gpus(self) -> GpuPlan:
        return self.plan.gpus


def driver_host(cl: ClusterConfig) -> str:
    """Where the executors reach the driver: loopback for every cluster the harness starts on this machine; for
    cluster=remote, `cluster.driver_host`, else this machine's address on the route to the master (the source
    address the kernel picks for it: no packet is sent), else the address this machine's name resolves to
    (yarn names no host). An executor told 127.0.0.1 on another machine exits at launch, over and over."""
    if not isinstance(cl, RemoteConfig):
        return LOOPBACK
    if cl.driver_host:
        return cl.driver_host
    host = urlparse(str(cl.master).replace("k8s://", "", 1)).hostname
    try:
        if host is None:
            return socket.gethostbyname(socket.gethostname())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((socket.gethostbyname(host), 9))
            return probe.getsockname()[0]
    except OSError as error:
        raise ClusterError(
            f"cluster.master={cl.master}: no route from this machine to {host or 'its own name'} ({error}); set "
            "cluster.driver_host=ADDR, the address the cluster's executors reach this machine at"
        ) from None


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


@contextmanager
def cluster(config: Config, run_dir: Path, plan: Plan | None = None) -> Iterator[Cluster]:
    """The cluster of one run, up for the duration of the block; see the module docstring.

    `plan` is `config`'s (`pipeline.spark.plan.plan`), made here if not given. Nothing is started for
    local, local_cluster and remote. For standalone, the master and workers are stopped when the block ends
    however it ends, SIGTERM to this process included (it raises `processes.Terminated` in the main thread
    while the cluster is up); a SIGKILL of this process cannot be handled: the PIDs to stop by hand are in
    `run_dir/cluster/cluster.json`.
    """
    plan = plan or planning.plan(config)
    run_dir = Path(run_dir).resolve()
    if plan.mode is ClusterMode.local:
        yield Cluster(plan, plan.master, {}, (), None)
        return
    gpus = plan.gpus
    if plan.starts_workers and gpus.kind == "real" and plan.workers > 1:
        log.warning(
            "%d workers on one machine each discover all %d GPUs: Spark will schedule every GPU %d times",
            plan.workers,
            gpus.per_worker,
            plan.workers,
        )
    script = discovery_script(run_dir, gpus) if gpus.kind != "none" and plan.starts_workers else None
    worker_conf = worker_gpu_conf(gpus, script) if script is not None else {}
    if plan.mode is ClusterMode.standalone:  # its workers get worker_conf on their command line
        with standalone(plan, run_dir, worker_conf) as (master, pids, log_dir):
            yield Cluster(plan, master, dict(plan.conf), pids, log_dir)
    elif plan.mode is ClusterMode.local_cluster:  # its workers live in the driver JVM and read the app's conf
        yield Cluster(plan, plan.master, {**plan.conf, **worker_conf}, (), run_dir / "cluster")
    else:  # remote: its workers were configured by whoever started them, on other machines maybe
        yield Cluster(plan, plan.master, dict(plan.conf), (), None, driver_host(config.cluster))


def keep_worker_logs(app_id: str, run_dir: Path) -> Path | None:
    """Move the executors' logs of a local-cluster application into `run_dir/cluster/work/APP_ID`; the path, or
    None when there were none. Its workers live in the driver JVM, which gives them no work dir of their own: they
    write each executor's stdout and stderr under SPARK_HOME/work, inside the Python environment, where they would
    pile up unseen and apart from the run they explain."""
    source = spark_home() / "work" / app_id
    if not source.is_dir():
        return None
    target = Path(run_dir).resolve() / "cluster" / "work" / app_id
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(source, target)
    return target
