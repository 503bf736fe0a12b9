"""The one place wall time is measured: around an action, nothing else inside the timer."""

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


def now() -> float:
    """The clock `timed` reads, for the spans a callable cannot wrap (from a generator's yield to its resumption)."""
    return time.perf_counter()
