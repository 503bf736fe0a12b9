"""The CPU a pass costs every process of the run on this machine (pipeline.runtime.process_cpu): counted by kind of
process, a process started inside the pass counted whole, a reaped one under its parent."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass

import psutil
import pytest

from pipeline.runtime import process_cpu
from pipeline.runtime.process_cpu import (
    CONNECT_SERVER,
    DRIVER,
    DRIVER_JVM,
    EXECUTOR_JVMS,
    OTHER,
    PYTHON_WORKERS,
)

BURN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass\n"


def _burn(seconds: float, then_sleep: bool) -> subprocess.Popen:
    code = BURN.format(seconds=seconds) + ("time.sleep(60)\n" if then_sleep else "")
    return subprocess.Popen([sys.executable, "-c", code])


def _used_cpu(child: subprocess.Popen, at_least: float) -> None:
    deadline = time.monotonic() + 30
    while sum(psutil.Process(child.pid).cpu_times()[:2]) < at_least:
        assert time.monotonic() < deadline, "the child never used its CPU"
        time.sleep(0.05)


def test_a_process_started_between_the_marks_counts_all_it_used_under_its_kind():
    before = process_cpu.mark()
    child = _burn(0.3, then_sleep=True)
    try:
        _used_cpu(child, 0.3)
        used = process_cpu.used(before, process_cpu.mark())
    finally:
        child.kill()
        child.wait()
    assert used[OTHER] >= 0.3


def test_a_child_reaped_between_the_marks_counts_under_its_parent():
    before = process_cpu.mark()
    child = _burn(0.3, then_sleep=False)
    child.wait()
    assert process_cpu.used(before, process_cpu.mark())[DRIVER] >= 0.3


def test_a_trees_totals_differ_by_what_it_used_between_them_a_reaped_child_included():
    before = process_cpu.totals(psutil.Process())
    _burn(0.3, then_sleep=False).wait()
    after = process_cpu.totals(psutil.Process())
    assert after[DRIVER] - before[DRIVER] >= 0.3


def test_a_process_outside_any_jvm_has_no_executor_to_read():
    assert process_cpu.executor_jvm() is None


@dataclass
class _Fake:
    """What `_kind` reads of a process."""

    pid: int
    command: str
    parent: int = 1

    def cmdline(self) -> list[str]:
        return self.command.split()

    def name(self) -> str:
        return self.command.split()[0].rsplit("/", 1)[-1]

    def ppid(self) -> int:
        return self.parent


ROOT = _Fake(10, "python -m pipeline.job RUN")
JAVA = "/usr/lib/jvm/bin/java -cp jars"


@pytest.mark.parametrize(
    ("process", "kinds", "kind"),
    [
        (ROOT, {}, DRIVER),
        (_Fake(11, f"{JAVA} org.apache.spark.deploy.SparkSubmit pyspark-shell", 10), {}, DRIVER_JVM),
        (
            _Fake(12, f"{JAVA} org.apache.spark.executor.CoarseGrainedExecutorBackend --driver-url x", 11),
            {},
            EXECUTOR_JVMS,
        ),
        (_Fake(13, f"{JAVA} org.apache.spark.sql.connect.service.SparkConnectServer", 10), {}, CONNECT_SERVER),
        (_Fake(14, "python -m pyspark.daemon", 12), {12: EXECUTOR_JVMS}, PYTHON_WORKERS),
        (_Fake(15, "python -m pyspark.daemon", 14), {14: PYTHON_WORKERS}, PYTHON_WORKERS),
        (_Fake(16, "python -m pipeline.serving.server", 10), {10: DRIVER}, OTHER),
        # an executor's tree read from its own JVM (a task on another machine: process_cpu.totals)
        (_Fake(10, f"{JAVA} org.apache.spark.executor.CoarseGrainedExecutorBackend --driver-url x"), {}, EXECUTOR_JVMS),
    ],
)
def test_each_process_is_named_by_the_part_of_spark_it_is(process, kinds, kind):
    assert process_cpu._kind(process, ROOT, kinds) == kind
