"""How a microbenchmark case is timed and what it reports.

A case is one Spark action (a `noop` write, which evaluates every output column: `count()` would let the
optimizer prune a UDF whose result nobody reads) over data that is already cached. pytest-benchmark times
it after warm-up rounds; UDFs report each call through a `CallLog` accumulator, so the expected time of a
sleeping UDF comes from the calls Spark really made, not from a batch size we believe it used.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark import SparkContext, TaskContext, cloudpickle
from pyspark.accumulators import AccumulatorParam
from pyspark.sql import DataFrame, SparkSession

from pipeline.data.datasets import Dataset
from pipeline.spark.ledger import TaskLedger

# Python workers cannot import `tests`: functions and classes defined here travel to them by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROUNDS = 5
WARMUP_ROUNDS = 1  # starts the Python workers and fills their imports before the first timed round
SLEEP_S = 1.0


@dataclass(frozen=True)
class Cached:
    """A data set read into Spark's cache: what the cases scan, and how it is cut into tasks."""

    dataset: Dataset
    frame: DataFrame
    partition_rows: list[int]


@dataclass(frozen=True)
class BenchData:
    raw: Cached  # the original study's images: decoded 256x256x3 uint8 arrays, 192 KiB each
    jpeg: Cached  # this project's images: ImageNet-sized JPEGs, ~120 KB each
    images: int
    slots: int
    preprocess_ms_per_image: float  # the JPEGs through `Preprocessing` in one process, one thread, no Spark


@dataclass(frozen=True)
class Call:
    """One invocation of a UDF's Python function (one Arrow batch for the Arrow styles)."""

    pid: int
    partition: int
    rows: int


class _Append(AccumulatorParam):
    def zero(self, value: list) -> list:
        return []

    def addInPlace(self, value1: list, value2: list) -> list:
        value1.extend(value2)
        return value1


class CallLog:
    """Driver side: cleared before each round, read after; executor side: `record` once per call."""

    def __init__(self, context: SparkContext) -> None:
        self._calls = context.accumulator([], _Append())

    def clear(self) -> None:
        self._calls.value = []

    def record(self, rows: int) -> None:
        # plain tuples: the update travels back with plain pickle, which cannot rebuild a by-value class
        self._calls.add([(os.getpid(), TaskContext.get().partitionId(), rows)])

    def calls(self) -> list[Call]:
        return [Call(*call) for call in self._calls.value]


class SilentLedger(TaskLedger):
    """A ledger whose tasks report nothing: the pass without records that the records' cost is measured against."""

    def report(self, name: str, data: bytes) -> None:
        pass


class TimedLedger(TaskLedger):
    """A ledger that times each report its tasks write (the channel's one cost inside a pass: the write the silent
    ledger skips) and keeps the seconds, a line a report, in a file per worker process beside its directory."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.times.mkdir(exist_ok=True)  # on the driver, once: its tasks run on this machine

    @property
    def times(self) -> Path:
        return self.directory.with_name(f"{self.directory.name}-write-s")

    def report(self, name: str, data: bytes) -> None:
        started = time.perf_counter()
        super().report(name, data)
        elapsed = time.perf_counter() - started
        with (self.times / str(os.getpid())).open("a") as out:
            out.write(f"{elapsed}\n")

    def write_s(self) -> list[float]:
        """Every report's write, in seconds, over the passes so far."""
        return [float(line) for path in self.times.glob("*") for line in path.read_text().split()]


def noop(frame: DataFrame) -> None:
    """The sink: every column evaluated and dropped."""
    frame.write.format("noop").mode("overwrite").save()


@dataclass
class Measured:
    """The timed rounds of one case (the same rounds pytest-benchmark times) and the last round's UDF calls."""

    seconds: list[float]
    calls: list[Call] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)


def measure(
    benchmark: Any,
    spark: SparkSession,
    case: str,
    build: Callable[[], DataFrame],
    log: CallLog | None = None,
    reset: Callable[[], None] | None = None,
) -> Measured:
    """Time the `noop` write of `build()` with `benchmark.pedantic`; disabled benchmarks run it once, as a test.

    Before each round, outside the timer: `log` and `reset` (another accumulator's clear) are cleared and the
    DataFrame is built anew. A new DataFrame means new UDF objects: predict_batch_udf keeps its predict function
    per Python worker and UDF, and a kept function holds the accumulators of the task that built it, whose
    later updates Spark never collects.
    """
    seconds: list[float] = []

    def setup() -> tuple[tuple[DataFrame], dict]:
        for clear in (log.clear if log else None, reset):
            if clear is not None:
                clear()
        return (build(),), {}

    def timed(frame: DataFrame) -> None:
        spark.sparkContext.setJobDescription(f"bench:{case}")
        started = time.perf_counter()
        noop(frame)
        seconds.append(time.perf_counter() - started)

    benchmark.pedantic(timed, setup=setup, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS, iterations=1)
    spark.sparkContext.setJobDescription(None)
    return Measured(timed_rounds(benchmark, seconds), log.calls() if log is not None else [])


def timed_rounds(benchmark: Any, seconds: list[float]) -> list[float]:
    """The rounds pytest-benchmark times, of one figure per round `measure` ran: all but its warm-up rounds, or the
    one round a disabled benchmark runs as a test."""
    return seconds[WARMUP_ROUNDS:] if benchmark.enabled else seconds


def expected_sleep_s(calls: int, slots: int) -> float:
    """A UDF that sleeps SLEEP_S per call, its calls spread perfectly over the task slots, and nothing else."""
    return math.ceil(calls / slots) * SLEEP_S


def record(
    benchmark: Any, case: str, group: str, measured: Measured, images: int, slots: int, **figures: Any
) -> dict[str, Any]:
    """The case's figures in `benchmark.extra_info` (the report reads them from the JSON); returns them."""
    calls = measured.calls
    info: dict[str, Any] = {
        "case": case,
        "group": group,
        "images": images,
        "slots": slots,
        "timed_rounds": len(measured.seconds),
        "measured_s": measured.median_s,
        "ms_per_image": 1000 * measured.median_s / images,
        "images_per_s": images / measured.median_s,
    }
    if calls:
        info |= {
            "calls": len(calls),
            "rows_per_call_max": max(call.rows for call in calls),
            "rows_seen": sum(call.rows for call in calls),
            "tasks": len({call.partition for call in calls}),
            "worker_pids": len({call.pid for call in calls}),
        }
    info |= figures
    benchmark.extra_info.update(info)
    return info
