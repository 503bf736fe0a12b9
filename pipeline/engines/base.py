"""What an engine hands back: timed passes over the whole data set, and the predictions of one of them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from pipeline.inference.steps import BadImageRecord
from pipeline.timing import timed


@dataclass
class Pass:
    jobs: dict[str, float]  # wall seconds of each job of the pass, in order
    read: int
    predicted: int
    bad: list[BadImageRecord]
    tasks: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return sum(self.jobs.values())


@dataclass
class Measurement:
    warmups: list[Pass]
    timed: list[Pass]
    startup_s: float = 0.0
    predictions: pd.DataFrame | None = None
    spark_conf: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


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
