"""`DataFrame.mapInArrow`: like mapInPandas, but Arrow record batches in and out, no pandas conversion."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
from pyspark.resource import ResourceProfile
from pyspark.sql import DataFrame

from pipeline.inference.steps import Step, rebatch, to_arrow
from pipeline.schema import UdfConfig
from pipeline.spark.ledger import TaskLedger
from variants.spark_schema import spark_schema


def apply(
    frame: DataFrame, step: Step, ledger: TaskLedger, options: UdfConfig, profile: ResourceProfile | None = None
) -> DataFrame:
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        with ledger.task(step) as task:
            inputs = (
                {name: batch.column(name).to_pylist() for name in step.inputs} for batch in task.timed_input(batches)
            )
            for columns in rebatch(inputs, step.batch_size):
                output = step.finish(step.prepare(columns), task.device)
                task.add(output)
                yield to_arrow(output.columns, step.schema)

    return frame.mapInArrow(run, spark_schema(step), profile=profile)
