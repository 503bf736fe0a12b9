"""The original study's overhead microbenchmark, done over cached data, and its decomposition.

The original read Parquet, then ran a scalar pandas UDF that slept 1 s and returned the images: expected
~1 s, measured 84.8 s. Here the read is done before timing, the expected time comes from the UDF calls Spark
really made, and each part of the difference is its own case:

- faithful: sleep, image column in and out (the original);
- sleep_tiny: the same sleep over the id column only (no image round trip);
- tiny_no_sleep: the id column through the same UDF, no sleep (job, task and Python call costs);
- image_round_trip / image_in_only: the image column through Arrow both ways / one way, no sleep;
- scan_only: the cached images through the sink with no Python at all;
- read_parquet: the read the original had inside its timed region;
- arrow batch rows (maxRecordsPerBatch) and Python worker reuse on/off, each at several settings.
"""

from __future__ import annotations

import math
import time

import pandas as pd
import pytest
from pyspark.sql import functions as F

from tests.bench.harness import (
    SLEEP_S,
    BenchData,
    CallLog,
    expected_sleep_s,
    measure,
    noop,
    record,
)
from tests.helpers.spark import context_conf, sql_conf

BATCH_ROWS = "spark.sql.execution.arrow.maxRecordsPerBatch"


def scalar_udf(log: CallLog, column: str, returns: str, keep: bool, *, sleep: bool):
    """The original's dummy preprocess: a scalar pandas UDF that may sleep, returning its input or its sizes."""

    @F.pandas_udf(returns)
    def dummy_preprocess(values: pd.Series) -> pd.Series:
        log.record(len(values))
        if sleep:
            time.sleep(SLEEP_S)
        return values if keep else values.str.len().astype("int32")

    return dummy_preprocess(column).alias("out")


def expected_calls(partition_rows: list[int], batch_rows: int) -> int:
    """Arrow batches a scalar UDF gets: each task cuts its partition into maxRecordsPerBatch rows."""
    return sum(math.ceil(rows / batch_rows) for rows in partition_rows if rows)


SLEEP_CASES = {
    # case: (column, return type, keep the values)
    "faithful": ("image", "binary", True),
    "sleep_tiny": ("id", "string", True),
}


@pytest.mark.parametrize("case", SLEEP_CASES)
def test_sleeping_udf(benchmark, spark, bench: BenchData, case: str) -> None:
    column, returns, keep = SLEEP_CASES[case]
    log = CallLog(spark.sparkContext)
    udf = lambda: scalar_udf(log, column, returns, keep, sleep=True)  # noqa: E731
    measured = measure(benchmark, spark, case, lambda: bench.raw.frame.select("id", udf()), log)
    calls = len(measured.calls)
    expected = expected_sleep_s(calls, bench.slots)
    info = record(
        benchmark,
        case,
        "faithful" if case == "faithful" else "decomposition",
        measured,
        bench.images,
        bench.slots,
        expected_s=expected,
        overhead_s=measured.median_s - expected,
        overhead_ratio=measured.median_s / expected,
        image_bytes=bench.raw.dataset.size_bytes,
    )
    assert calls == expected_calls(bench.raw.partition_rows, int(spark.conf.get(BATCH_ROWS)))
    assert info["rows_seen"] == bench.images
    assert min(measured.seconds) >= expected  # the sleeps alone take that long


NO_SLEEP_CASES = {
    # case: (column, return type, keep the values); None: no UDF at all
    "tiny_no_sleep": ("id", "string", True),
    "image_round_trip": ("image", "binary", True),
    "image_in_only": ("image", "int", False),
    "scan_only": None,
}


@pytest.mark.parametrize("case", NO_SLEEP_CASES)
def test_no_sleep(benchmark, spark, bench: BenchData, case: str) -> None:
    log = CallLog(spark.sparkContext)
    udf = NO_SLEEP_CASES[case]
    build = lambda: bench.raw.frame.select("id", scalar_udf(log, *udf, sleep=False) if udf else "image")  # noqa: E731
    measured = measure(benchmark, spark, case, build, log if udf else None)
    info = record(benchmark, case, "decomposition", measured, bench.images, bench.slots)
    if udf:
        assert info["calls"] == expected_calls(bench.raw.partition_rows, int(spark.conf.get(BATCH_ROWS)))
        assert info["rows_seen"] == bench.images


def test_read_parquet(benchmark, spark, bench: BenchData) -> None:
    """The read the original timed with its UDF: Parquet from disk (page cache warm) to the sink."""
    read = lambda: spark.read.parquet(str(bench.raw.dataset.path))  # noqa: E731
    measured = measure(benchmark, spark, "read_parquet", read)
    record(benchmark, "read_parquet", "decomposition", measured, bench.images, bench.slots)
    assert read().count() == bench.images


@pytest.mark.parametrize("batch_rows", [8, 32, 128])
def test_arrow_batch_rows(benchmark, spark, bench: BenchData, batch_rows: int) -> None:
    """The image round trip at several maxRecordsPerBatch: more, smaller batches cost more calls."""
    log = CallLog(spark.sparkContext)
    case = f"image_round_trip@{batch_rows}"
    with sql_conf(spark, BATCH_ROWS, str(batch_rows)):
        build = lambda: bench.raw.frame.select("id", scalar_udf(log, "image", "binary", True, sleep=False))  # noqa: E731
        measured = measure(benchmark, spark, case, build, log)
    ms_per_call = 1000 * measured.median_s / len(measured.calls)
    info = record(
        benchmark,
        case,
        "batch_rows",
        measured,
        bench.images,
        bench.slots,
        batch_rows=batch_rows,
        ms_per_call=ms_per_call,
    )
    assert info["calls"] == expected_calls(bench.raw.partition_rows, batch_rows)
    assert info["rows_per_call_max"] <= batch_rows


@pytest.mark.parametrize("reuse", [True, False], ids=["reuse_on", "reuse_off"])
def test_python_worker_reuse(benchmark, spark, bench: BenchData, reuse: bool) -> None:
    """The id column through a scalar UDF with Python workers kept between tasks, or started for each task."""
    log = CallLog(spark.sparkContext)
    case = f"worker_reuse_{'on' if reuse else 'off'}"
    build = lambda: bench.raw.frame.select("id", scalar_udf(log, "id", "string", True, sleep=False))  # noqa: E731
    with context_conf(spark, "spark.python.worker.reuse", str(reuse).lower()):
        measured = measure(benchmark, spark, case, build, log)
        log.clear()
        noop(build())  # once more, untimed: did its tasks find the workers of the timed round?
        again = {call.pid for call in log.calls()}
    info = record(benchmark, case, "worker_reuse", measured, bench.images, bench.slots, reuse=reuse)
    timed_pids = {call.pid for call in measured.calls}
    if reuse:
        assert again & timed_pids
    else:  # a fresh Python process for every task
        assert info["worker_pids"] == info["tasks"] and again.isdisjoint(timed_pids)
