"""Spark confs for one test on the test session's one SparkSession, restored after it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import SparkSession


@contextmanager
def sql_conf(spark: SparkSession, key: str, value: str) -> Iterator[None]:
    """A runtime SQL conf for the block, restored after it."""
    before = spark.conf.get(key, None)
    spark.conf.set(key, value)
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)
