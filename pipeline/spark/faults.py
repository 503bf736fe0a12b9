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

import contextlib
import os
import signal
import sys
import time

import psutil
from pyspark import TaskContext

from pipeline.runtime.processes import jvm_above

KILL_ENV = "SPARK_INFERENCE_BENCH_KILL_EXECUTOR"
EXECUTOR_CLASS = "CoarseGrainedExecutorBackend"


def armed(step: str, partition: int) -> bool:
    """Whether this task attempt is the one `KILL_ENV` names."""
    target = os.environ.get(KILL_ENV)
    if not target:
        return False
    name, _, number = target.partition(":")
    return name == step and int(number) == partition and TaskContext.get().attemptNumber() == 0


def executor_jvm(pid: int) -> psutil.Process:
    """The executor JVM above Python worker `pid`; raises RuntimeError if its JVM is none (local mode's driver)."""
    jvm = jvm_above(pid)
    with contextlib.suppress(psutil.Error):
        if jvm is not None and any(EXECUTOR_CLASS in arg for arg in jvm.cmdline()):
            return jvm
    raise RuntimeError(f"{KILL_ENV}: no executor JVM above Python worker {pid}; use local_cluster or standalone")


def kill_executor() -> None:
    """SIGKILL this task's executor JVM, wait until it is gone, and end this Python worker with it."""
    from pipeline.runtime.processes import running

    jvm = executor_jvm(os.getpid())
    context = TaskContext.get()
    print(
        f"{KILL_ENV}: SIGKILL to executor JVM {jvm.pid} in stage {context.stageId()} partition "
        f"{context.partitionId()} attempt {context.attemptNumber()}",
        file=sys.stderr,
        flush=True,
    )
    jvm.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 30
    while running(jvm) and time.monotonic() < deadline:
        time.sleep(0.05)
    os._exit(1)
