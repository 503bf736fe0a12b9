"""The CPU a pass costs every process of the run on this machine (pipeline.runtime.process_cpu): counted by kind of
process, a process started inside the pass counted whole, a reaped one under its parent."""

from __future__ import annotations

import json
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


def test_a_python_worker_reads_its_own_cpu_its_daemons_and_its_jvms(tmp_path):
    """A task on another machine reads these three (`executor_now`): here a process named java (this interpreter
    under that name) that burns 0.3 s, starts a daemon, which starts the worker."""
    java = tmp_path / "java"
    java.symlink_to(sys.executable)
    worker = "import json; from pipeline.runtime import process_cpu; print(json.dumps(process_cpu.executor_now()))"
    start = (
        "import subprocess, sys; sys.stdout.write(subprocess.run([{python!r}, '-c', {code!r}], capture_output=True, "
    )
    start += "text=True).stdout)\n"
    daemon = start.format(python=sys.executable, code=worker)
    jvm = BURN.format(seconds=0.3) + start.format(python=sys.executable, code=daemon)
    finished = subprocess.run([str(java), "-c", jvm], capture_output=True, text=True, timeout=120)
    read = json.loads(finished.stdout or "null")
    assert read and read[process_cpu.JVM] >= 0.3 and read[process_cpu.WORKER] > 0, finished.stderr[-2000:]
    assert process_cpu.DAEMON in read


def test_a_process_outside_any_jvm_has_no_executor_to_read():
    assert process_cpu.executor_now() == {}


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
        # an executor's tree marked from its own JVM
        (_Fake(10, f"{JAVA} org.apache.spark.executor.CoarseGrainedExecutorBackend --driver-url x"), {}, EXECUTOR_JVMS),
    ],
)
def test_each_process_is_named_by_the_part_of_spark_it_is(process, kinds, kind):
    assert process_cpu._kind(process, ROOT, kinds) == kind
