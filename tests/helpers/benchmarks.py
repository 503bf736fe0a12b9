"""Whether a test session times the microbenchmarks or runs each once as a test."""

from __future__ import annotations

import pytest

TIMING_OPTIONS = ("benchmark_only", "benchmark_enable", "benchmark_json")


def benchmarks_timed(config: pytest.Config) -> bool:
    """Whether this session times the benchmarks in tests/bench, or runs each once as a test."""
    return any(config.getoption(option, None) for option in TIMING_OPTIONS)
