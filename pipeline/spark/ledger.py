"""What each Spark task reports about itself, gathered on the driver through one accumulator.

Spark merges an accumulator update only from a task attempt that succeeded; keying each record by
(step, stage, partition, part) makes a recomputed partition replace its earlier record instead of counting
twice. Whole-partition variants report one part per task; per-batch variants (scalar UDFs,
predict_batch_udf) one part per batch, keyed by the batch's ordinal in its task attempt (0, 1, ...):
something the data cannot repeat (a key taken from the batch's first image id let two batches that start
with the same id overwrite each other). The records are the run's
evidence: rows in and out and bad images per task, the worker process, how many times it built the model,
the device and the GPU addresses the scheduler gave the task, and when it ran.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace

from pyspark import SparkContext, TaskContext
from pyspark.accumulators import Accumulator, AccumulatorParam, _accumulatorRegistry

from pipeline.inference import accelerator
from pipeline.inference.model import model_builds, pick_device, use_threads
from pipeline.inference.steps import BadImageRecord, Output, Step
from pipeline.spark import faults


class _Merge(AccumulatorParam):
    def zero(self, value: dict) -> dict:
        return {}

    def addInPlace(self, value1: dict, value2: dict) -> dict:
        value1.update(value2)
        return value1


@dataclass
class TaskRecord:
    step: str
    stage: int
    partition: int
    attempt: int
    pid: int
    cpus: int
    device: str
    gpu_addresses: list[str]
    start: float
    end: float = 0.0
    rows_in: int = 0
    rows_out: int = 0
    model_loads: int = 0  # times this worker process has built the step's model so far
    model_builds: int = 0  # models built while this task ran
    bad: list[BadImageRecord] = field(default_factory=list)
    device_busy_s: float = 0.0  # model=accelerator: seconds this task's calls held the simulated device
    device_wait_s: float = 0.0  # ... and waited for its lock (another task held the same GPU)
    device_calls: int = 0

    def add(self, output: Output) -> None:
        if self.rows_in and faults.armed(self.step, self.partition):  # a batch is already in Spark's hands
            faults.kill_executor()
        self.rows_in += len(output) + len(output.bad)
        self.rows_out += len(output)
        self.bad.extend(output.bad)

    def merge(self, other: TaskRecord) -> TaskRecord:
        return replace(
            self,
            start=min(self.start, other.start),
            end=max(self.end, other.end),
            rows_in=self.rows_in + other.rows_in,
            rows_out=self.rows_out + other.rows_out,
            model_loads=max(self.model_loads, other.model_loads),
            model_builds=self.model_builds + other.model_builds,
            bad=self.bad + other.bad,
            device_busy_s=self.device_busy_s + other.device_busy_s,
            device_wait_s=self.device_wait_s + other.device_wait_s,
            device_calls=self.device_calls + other.device_calls,
        )


_parts: dict[tuple[int, str], int] = {}  # (task attempt id, step) -> parts this worker process has reported


def _next_part(context: TaskContext, step: str) -> int:
    """The ordinal of the next part `step` reports in this task attempt (a Python worker runs one task at a
    time, so the counts of earlier attempts are dropped)."""
    attempt = context.taskAttemptId()
    if any(key[0] != attempt for key in _parts):
        _parts.clear()
    number = _parts.get((attempt, step), 0)
    _parts[(attempt, step)] = number + 1
    return number


class TaskLedger:
    """Driver side: one accumulator per application, cleared before each pass; executor side: `task`."""

    def __init__(self, context: SparkContext) -> None:
        self._records = context.accumulator({}, _Merge())
        self._builds: Counter[int] = Counter()  # builds of the model per worker PID, over this ledger's passes

    def summary(self, records: list[TaskRecord]) -> dict:
        """`summarize` of one pass's records, with `max_model_loads_per_worker` counting the builds of the
        model each worker made during this ledger's passes so far (one run's): a reused worker's earlier
        builds of it (another run in the same application, a test session's) are not this run's."""
        for record in records:
            self._builds[record.pid] += record.model_builds
        return {**summarize(records), "max_model_loads_per_worker": max(self._builds.values(), default=0)}

    def clear(self) -> None:
        self._records.value = {}

    def records(self) -> list[TaskRecord]:
        """One record per (step, stage, partition), parts merged."""
        merged: dict[tuple, TaskRecord] = {}
        for key in sorted(self._records.value, key=str):
            record = self._records.value[key]
            task = key[:3]
            merged[task] = merged[task].merge(record) if task in merged else record
        return list(merged.values())

    @contextmanager
    def task(self, step: Step) -> Iterator[TaskRecord]:
        """Executor side: set this task's torch threads and device, and report its record when it ends, as
        the next part of this task attempt's step; the model builds it counts are those of the step's model."""
        context = TaskContext.get()
        part = _next_part(context, step.name)
        gpus = context.resources().get("gpu")
        addresses = list(gpus.addresses) if gpus else []
        cpus = context.cpus()
        use_threads(cpus)
        builds = model_builds(step.inference.model)
        used = accelerator.usage()
        record = TaskRecord(
            step=step.name,
            stage=context.stageId(),
            partition=context.partitionId(),
            attempt=context.attemptNumber(),
            pid=os.getpid(),
            cpus=cpus,
            device=pick_device(addresses, simulated=step.inference.model.name == "accelerator"),
            gpu_addresses=addresses,
            start=time.time(),
        )
        yield record
        record.end = time.time()
        record.model_loads = model_builds(step.inference.model)
        record.model_builds = record.model_loads - builds
        now = accelerator.usage()
        record.device_busy_s, record.device_wait_s = now.busy_s - used.busy_s, now.wait_s - used.wait_s
        record.device_calls = now.calls - used.calls
        self._live().add({(step.name, record.stage, record.partition, part): record})

    def _live(self) -> Accumulator:
        """The instance of the accumulator that this task's updates are sent from.

        A worker registers the accumulators it deserializes for the task at hand and, when the task ends,
        sends those instances' updates. A function kept across tasks (predict_batch_udf keeps its predict
        function per worker) holds the instance of the task that built it, whose updates are never sent
        again: measured, every record after the first pass was lost. The registry has this task's own.
        """
        return _accumulatorRegistry.get(self._records.aid, self._records)


def summarize(records: list[TaskRecord]) -> dict:
    """The facts a result keeps about one pass's tasks."""
    steps: dict[str, dict[str, int]] = {}
    for record in records:
        totals = steps.setdefault(record.step, {"tasks": 0, "rows_in": 0, "rows_out": 0, "bad": 0})
        totals["tasks"] += 1
        totals["rows_in"] += record.rows_in
        totals["rows_out"] += record.rows_out
        totals["bad"] += len(record.bad)
    return {
        "steps": steps,
        "worker_pids": sorted({record.pid for record in records}),
        "model_builds": sum(record.model_builds for record in records),
        "records": [asdict(record) for record in records],
    }


def merge(first: dict, second: dict) -> dict:
    """One pass's `summarize` from two applications that ran different steps of it (two_stage on two clusters)."""
    return {
        "steps": {**first["steps"], **second["steps"]},
        "worker_pids": sorted({*first["worker_pids"], *second["worker_pids"]}),
        "max_model_loads_per_worker": max(first["max_model_loads_per_worker"], second["max_model_loads_per_worker"]),
        "model_builds": first["model_builds"] + second["model_builds"],
        "records": first["records"] + second["records"],
    }
