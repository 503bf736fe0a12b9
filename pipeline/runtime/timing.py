"""The one clock of what throughput is computed from: each timed pass's jobs (`pipeline.engines.base.run_passes`) and
the phases of a step or a task inside them, timed around an action with nothing else inside the timer.

Set-up durations a result also records (data preparation, weights, a cluster's or an engine's start, a server's)
are taken where they happen, around blocks a callable cannot wrap (a context manager's entry); none is inside a pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def timed(action: Callable[[], T]) -> tuple[T, float]:
    """Run `action` and return its value and its wall time in seconds."""
    started = time.perf_counter()
    value = action()
    return value, time.perf_counter() - started


def timed_with_cpu(action: Callable[[], T]) -> tuple[T, float, float]:
    """`timed`, and the CPU seconds this process spent meanwhile (every thread of it): a phase's wall time over its
    CPU time is how long it waited for a core, which the calibration (`pipeline.projection.calibrate`) takes out
    of the costs it measures on busy cores."""
    cpu = time.process_time()
    value, seconds = timed(action)
    return value, seconds, time.process_time() - cpu


def now() -> float:
    """The clock `timed` reads, for the spans a callable cannot wrap (from a generator's yield to its resumption)."""
    return time.perf_counter()
