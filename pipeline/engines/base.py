"""The one interface every engine implements, and what it hands back: timed passes over the whole data set.

An engine is a module with `run(config, dataset, inference, run_dir, plan) -> Measurement` (see
`pipeline.engines.ENGINES`). It times passes with `run_passes`, so the timer wraps each job's action and
nothing else, and reports what it ran on in the typed fields of `Measurement`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from pipeline.config.schema import Config
from pipeline.data.datasets import Dataset
from pipeline.inference.steps import BadImageRecord, Inference
from pipeline.runtime.timing import timed

if TYPE_CHECKING:
    from pipeline.spark.plan import Plan


@dataclass
class Pass:
    jobs: dict[str, float]  # wall seconds of each job of the pass, in order
    read: int
    predicted: int
    bad: list[BadImageRecord]
    tasks: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by kind of process (pipeline.runtime.process_cpu)

    @property
    def seconds(self) -> float:
        return sum(self.jobs.values())


@dataclass
class Measurement:
    """An engine's passes and what it ran them on. The Spark-only fields stay empty for other engines."""

    warmups: list[Pass]
    timed: list[Pass]
    startup_s: float = 0.0  # engine start (SparkSession, ray.init), never inside a pass
    predictions: pd.DataFrame | None = None  # id, top1, prob of the last pass, when verification needs them
    cluster: dict[str, Any] = field(default_factory=dict)  # where it ran: master, slots, GPUs, app ids
    cluster_start_s: float | None = None  # a standalone cluster's start, apart from the application's
    spark_conf: dict[str, str] = field(default_factory=dict)
    intermediate_bytes: int | None = None  # two_stage's crops between its jobs
    evidence: dict[str, Any] = field(default_factory=dict)  # stages, timeline, GPUs of the last timed pass
    checks: dict[str, Any] = field(default_factory=dict)  # the claims of the variant, each with what was measured
    faults: dict[str, Any] | None = None  # failed attempts, retries and lost executors over the application


class EngineRun(Protocol):
    """An engine's `run`. `plan` is what validation decided for a Spark run's applications (`pipeline.spark.plan`);
    None for the engines that start no Spark application."""

    def __call__(
        self, config: Config, dataset: Dataset, inference: Inference, run_dir: Path, plan: Plan | None
    ) -> Measurement: ...


def run_passes(
    warmup: int,
    repeats: int,
    jobs: Sequence[tuple[str, Callable[[], None]]],
    observe: Callable[[dict[str, float]], Pass],
    reset: Callable[[], None],
) -> tuple[list[Pass], list[Pass]]:
    """`warmup` uncounted then `repeats` timed passes; the timer wraps each job's action alone."""
    passes = []
    for _ in range(warmup + repeats):
        reset()
        passes.append(observe({name: timed(action)[1] for name, action in jobs}))
    return passes[:warmup], passes[warmup:]
