"""`RDD.mapPartitions` over the DataFrame's rows: the pre-Arrow way, rows pickled to and from Python."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

from pyspark.resource import ResourceProfile
from pyspark.sql import DataFrame, Row

from pipeline.config.schema import UdfConfig
from pipeline.inference.steps import Columns, Step
from pipeline.spark.ledger import TaskLedger
from variants.spark_schema import spark_schema


def _batches(rows: Iterator[Row], names: tuple[str, ...], size: int) -> Iterator[Columns]:
    while chunk := list(islice(rows, size)):
        yield {name: [row[name] for row in chunk] for name in names}


def apply(
    frame: DataFrame, step: Step, ledger: TaskLedger, options: UdfConfig, profile: ResourceProfile | None = None
) -> DataFrame:
    names = step.schema.names

    def run(rows: Iterator[Row]) -> Iterator[tuple]:
        with ledger.task(step) as task:
            # rows come pickled one by one, not in Arrow batches: no UDF calls to count, the wait is timed
            for columns in task.fed(_batches(rows, step.inputs, step.batch_size), None):
                output = step.finish(step.prepare(columns), task.device)
                task.add(output)
                values = [output.columns[name] for name in names]
                yield from zip(*(v.tolist() if hasattr(v, "tolist") else v for v in values))

    rdd = frame.select(*step.inputs).rdd.mapPartitions(run)
    if profile is not None:
        rdd = rdd.withResources(profile)
    return frame.sparkSession.createDataFrame(rdd, spark_schema(step))
