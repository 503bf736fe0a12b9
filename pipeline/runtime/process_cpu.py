"""CPU seconds a pass cost every process of the run on this machine, by the part of Spark each process is.

Why: the bottleneck model's CPU term counts what the tasks measure of themselves (decoding, Arrow, their own
per-task cost); on a node whose task slots outnumber its cores, the driver's JVM, the executors' JVMs and the
Python workers' daemon use cores the tasks then lack. Marking the job process's tree before and after each
timed pass says how much, so a calibration can measure that CPU rather than assume it. Only processes this job
started are seen (its driver JVM, a local-cluster's executors, a harness-started server). The executors of a
cluster on other machines are read by their own tasks instead (`executor_now`, `pipeline.spark.ledger`), and the
kinds recorded say what was counted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

import psutil

from pipeline.runtime.processes import jvm_above

DRIVER = "driver python"  # the job process: the pass's actions, the progress thread
DRIVER_JVM = "driver jvm"  # the SparkContext: planning, scheduling, the local-cluster master and worker
EXECUTOR_JVMS = "executor jvms"  # task threads: scan, Arrow in and out, shuffle, writes
PYTHON_WORKERS = "python workers"  # pyspark's daemon and the workers it forks: decoding, the model
CONNECT_SERVER = "connect server"  # a Spark Connect server's JVM the job started (its driver)
OTHER = "other"  # anything else under the job: a model server, its Triton


@dataclass(frozen=True)
class _Seen:
    kind: str
    own_s: float  # user + system of the process itself
    reaped_s: float  # user + system of its children it has waited for (gone Python workers, for example)


CpuMark = dict[tuple[int, float], _Seen]  # by (pid, creation time): a reused PID is another process


def _kind(process: psutil.Process, root: psutil.Process, kinds: dict[int, str]) -> str:
    command = " ".join(process.cmdline())
    if process.name().startswith("java") or " org.apache.spark." in command:
        if "CoarseGrainedExecutorBackend" in command:
            return EXECUTOR_JVMS
        if "SparkConnectServer" in command:
            return CONNECT_SERVER
        return DRIVER_JVM
    if process.pid == root.pid:
        return DRIVER
    parent = kinds.get(process.ppid())
    if parent in (DRIVER_JVM, EXECUTOR_JVMS, CONNECT_SERVER, PYTHON_WORKERS):
        return PYTHON_WORKERS
    return OTHER


def mark(root: psutil.Process | None = None) -> CpuMark:
    """The CPU each process under `root` (this process by default) has used so far; a process that ends while it
    is read is left out."""
    root = root or psutil.Process()
    seen: CpuMark = {}
    kinds: dict[int, str] = {}
    try:
        tree = [root, *root.children(recursive=True)]  # parents before their children
    except psutil.Error:
        return seen
    for process in tree:
        try:
            with process.oneshot():
                kind = kinds[process.pid] = _kind(process, root, kinds)
                times = process.cpu_times()
                seen[(process.pid, process.create_time())] = _Seen(
                    kind, times.user + times.system, times.children_user + times.children_system
                )
        except psutil.Error:
            continue
    return seen


def used(before: CpuMark, after: CpuMark) -> dict[str, float]:
    """CPU seconds each kind of process used between two marks. A process started between them counts all it used;
    one that ended between them counts where its parent reaped it (its whole life), else nowhere: a Python worker
    forked and reaped inside the pass is counted, one left to init is not."""
    totals: dict[str, float] = {}
    for key, now in after.items():
        then = before.get(key, _Seen(now.kind, 0.0, 0.0))
        totals[now.kind] = totals.get(now.kind, 0.0) + (now.own_s - then.own_s) + (now.reaped_s - then.reaped_s)
    return {kind: round(seconds, 4) for kind, seconds in sorted(totals.items())}


JVM, DAEMON, WORKER = "jvm", "daemon", "worker"  # what `executor_now` reads


@cache
def _executor_chain(worker_pid: int) -> tuple[psutil.Process, psutil.Process | None] | None:
    """This Python worker's executor JVM and the daemon between them, if any."""
    jvm = jvm_above(worker_pid)
    parent = psutil.Process(worker_pid).parent()
    return None if jvm is None else (jvm, None if parent is None or parent.pid == jvm.pid else parent)


def executor_now() -> dict[str, float]:
    """CPU seconds so far of this Python worker, of the daemon that forked it and of their executor's JVM, each its
    own (children left out): what a task on another machine reads of its executor, as it starts and ends
    (`pipeline.spark.ledger`). Three processes read directly: walking the executor's tree (`mark`) scans every
    process on the node, ~10 ms a read on the namespace cluster here. Empty outside a JVM's worker."""
    try:
        found = _executor_chain(os.getpid())
        if found is None:
            return {}
        jvm, daemon = found
        read = {JVM: jvm, **({DAEMON: daemon} if daemon else {})}
        own = {name: sum(process.cpu_times()[:2]) for name, process in read.items()}
        return {name: round(seconds, 4) for name, seconds in {**own, WORKER: sum(os.times()[:2])}.items()}
    except psutil.Error:
        return {}
