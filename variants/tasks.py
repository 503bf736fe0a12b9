"""What each Spark task reports about itself, gathered on the driver through one accumulator.

Spark merges an accumulator update only from a task attempt that succeeded; keying each record by
(stage, partition) makes a recomputed partition replace its earlier record instead of counting twice.
The records are the run's evidence: images and bad images per task, the worker process, how many times
that process built the model, the device and GPU addresses, and when the task ran.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from pyspark import SparkContext, TaskContext
from pyspark.accumulators import AccumulatorParam

from pipeline.inference import BadImageRecord
from pipeline.model import load_model, pick_device, use_threads


class _Merge(AccumulatorParam):
    def zero(self, value: dict) -> dict:
        return {}

    def addInPlace(self, value1: dict, value2: dict) -> dict:
        value1.update(value2)
        return value1


@dataclass
class TaskRecord:
    stage: int
    partition: int
    attempt: int
    pid: int
    cpus: int
    device: str
    gpu_addresses: list[str]
    start: float
    end: float = 0.0
    images: int = 0
    model_loads: int = 0
    bad: list[BadImageRecord] = field(default_factory=list)

    def add(self, predicted: int, bad: list[BadImageRecord]) -> None:
        self.images += predicted + len(bad)
        self.bad.extend(bad)


class TaskLedger:
    """Driver side: one accumulator per run, cleared before each pass."""

    def __init__(self, context: SparkContext) -> None:
        self._records = context.accumulator({}, _Merge())

    def clear(self) -> None:
        self._records.value = {}

    def records(self) -> list[TaskRecord]:
        return [self._records.value[key] for key in sorted(self._records.value)]

    @contextmanager
    def task(self) -> Iterator[TaskRecord]:
        """Executor side: set up this task's device and threads, and report its record when it ends."""
        context = TaskContext.get()
        gpus = context.resources().get("gpu")
        addresses = list(gpus.addresses) if gpus else []
        cpus = context.cpus()
        use_threads(cpus)
        record = TaskRecord(
            stage=context.stageId(),
            partition=context.partitionId(),
            attempt=context.attemptNumber(),
            pid=os.getpid(),
            cpus=cpus,
            device=pick_device(addresses),
            gpu_addresses=addresses,
            start=time.time(),
        )
        yield record
        record.end = time.time()
        record.model_loads = load_model.cache_info().misses
        self._records.add({(record.stage, record.partition): record})


def summarize(records: list[TaskRecord]) -> dict:
    """The facts a result keeps about one pass's tasks."""
    loads: dict[int, int] = {}
    for record in records:
        loads[record.pid] = max(loads.get(record.pid, 0), record.model_loads)
    return {
        "tasks": len(records),
        "images": sum(record.images for record in records),
        "worker_pids": sorted(loads),
        "max_model_loads_per_worker": max(loads.values(), default=0),
        "records": [asdict(record) for record in records],
    }
