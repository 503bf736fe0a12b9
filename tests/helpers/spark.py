"""Spark confs for one test on the test session's one SparkSession, restored after it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from pyspark.sql import SparkSession

from pipeline.spark.session import sql_confs


def sql_conf(spark: SparkSession, key: str, value: str) -> AbstractContextManager[None]:
    """A runtime SQL conf for the block, restored after it."""
    return sql_confs(spark, {key: value})


@contextmanager
def context_conf(spark: SparkSession, key: str, value: str) -> Iterator[None]:
    """A SparkContext conf (one `spark.conf.set` refuses with CANNOT_MODIFY_CONFIG, and `getConf()` is a copy)
    on the context's live conf for the tasks started in the block, restored after it. Local mode only: the
    local executor shares that conf, and Spark's Python runners read it as each task starts and keep one worker
    daemon per worker environment, so new tasks get a daemon of the matching kind. Measured on pyspark 4.3.0
    with `spark.python.worker.reuse`: off, every task ran in a new Python process; set back, the earlier
    workers served the tasks again. On a cluster the executors hold their own copy: there it takes a new
    application."""
    conf = spark.sparkContext._jsc.sc().conf()
    before = conf.get(key, None)
    conf.set(key, value)
    try:
        yield
    finally:
        if before is None:
            conf.remove(key)
        else:
            conf.set(key, before)
