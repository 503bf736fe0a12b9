"""Executor loss on demand: a model task that SIGKILLs the executor JVM it runs in, for the fault tests.

Spark promises that a lost executor costs a retry, not a result. To show that this pipeline keeps the promise,
the loss has to be real (a SIGKILL of an executor JVM, which gets no chance to clean up) and has to land at
a known point: in the model stage, in the middle of a partition whose first batch is already in Spark's
hands. A test polling for executor PIDs from outside cannot aim that well on a busy machine, so the task
aims itself. With `SPARK_INFERENCE_BENCH_KILL_EXECUTOR=STEP:PARTITION` in the executors' environment (set
it through `spark.conf`: `spark.executorEnv.SPARK_INFERENCE_BENCH_KILL_EXECUTOR`), the first attempt of
PARTITION in a STEP task, when it starts its second model batch, kills its executor JVM (the ancestor
process running CoarseGrainedExecutorBackend) and exits. Retried attempts pass, so each pass of the fused
topology loses exactly one executor (a topology with a shuffle may resubmit a stage, whose first attempt
kills again: pyspark does not tell a task its stage attempt). Without an executor JVM (cluster=local) the
task fails.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from pyspark import TaskContext

KILL_ENV = "SPARK_INFERENCE_BENCH_KILL_EXECUTOR"
EXECUTOR_CLASS = "CoarseGrainedExecutorBackend"


def armed(step: str, partition: int) -> bool:
    """Whether this task attempt is the one `KILL_ENV` names."""
    target = os.environ.get(KILL_ENV)
    if not target:
        return False
    name, _, number = target.partition(":")
    return name == step and int(number) == partition and TaskContext.get().attemptNumber() == 0


def _parent(pid: int) -> int:
    data = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    return int(data[data.rindex(")") + 2 :].split()[1])


def _gone(pid: int) -> bool:
    try:
        data = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except OSError:
        return True
    return data[data.rindex(")") + 2 :].split()[0] in ("Z", "X")


def executor_jvm(pid: int) -> int:
    """The nearest ancestor of `pid` that is an executor JVM; raises RuntimeError if there is none."""
    ancestor = _parent(pid)
    while ancestor > 1:
        if EXECUTOR_CLASS in Path(f"/proc/{ancestor}/cmdline").read_bytes().decode(errors="replace"):
            return ancestor
        ancestor = _parent(ancestor)
    raise RuntimeError(f"{KILL_ENV}: no executor JVM above Python worker {pid}; use local_cluster or standalone")


def kill_executor() -> None:
    """SIGKILL this task's executor JVM, wait until it is gone, and end this Python worker with it."""
    jvm = executor_jvm(os.getpid())
    context = TaskContext.get()
    print(
        f"{KILL_ENV}: SIGKILL to executor JVM {jvm} in stage {context.stageId()} partition "
        f"{context.partitionId()} attempt {context.attemptNumber()}",
        file=sys.stderr,
        flush=True,
    )
    os.kill(jvm, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not _gone(jvm) and time.monotonic() < deadline:
        time.sleep(0.05)
    os._exit(1)
