"""`DataFrame.mapInArrow`: like mapInPandas, but Arrow record batches in and out, no pandas conversion."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
from pyspark.resource import ResourceProfile
from pyspark.sql import DataFrame

from pipeline.config.schema import UdfConfig
from pipeline.inference.steps import Step, rebatch, to_arrow
from pipeline.spark.ledger import TaskLedger
from variants.spark_schema import spark_schema


def apply(
    frame: DataFrame, step: Step, ledger: TaskLedger, options: UdfConfig, profile: ResourceProfile | None = None
) -> DataFrame:
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        with ledger.task(step) as task:
            fed = task.fed(batches, lambda batch: (batch.num_rows, batch.select(list(step.inputs)).nbytes))
            inputs = ({name: batch.column(name).to_pylist() for name in step.inputs} for batch in fed)
            for columns in rebatch(inputs, step.batch_size):
                output = step.finish(step.prepare(columns), task.device)
                task.add(output)
                yield from task.handed_back(lambda: to_arrow(output.columns, step.schema))

    return frame.mapInArrow(run, spark_schema(step), profile=profile)
