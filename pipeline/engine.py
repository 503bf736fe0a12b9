"""What an engine hands back: timed passes over the whole data set, and the predictions of one of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from pipeline.inference import BadImageRecord
from pipeline.timing import timed


@dataclass
class Pass:
    seconds: float
    predicted: int
    bad: list[BadImageRecord]
    tasks: dict[str, Any] = field(default_factory=dict)


@dataclass
class Measurement:
    warmups: list[Pass]
    timed: list[Pass]
    startup_s: float = 0.0
    predictions: pd.DataFrame | None = None
    spark_conf: dict[str, str] = field(default_factory=dict)


def run_passes(
    warmup: int, repeats: int, action: Callable[[], None], observe: Callable[[float], Pass], reset: Callable[[], None]
) -> tuple[list[Pass], list[Pass]]:
    """`warmup` uncounted then `repeats` timed passes; the timer wraps `action` alone, bookkeeping is outside."""
    passes = []
    for _ in range(warmup + repeats):
        reset()
        _, seconds = timed(action)
        passes.append(observe(seconds))
    return passes[:warmup], passes[warmup:]
