"""`DataFrame.mapInPandas`: one Python generator per partition, rows re-batched to the model's batch size."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
from pyspark.resource import ResourceProfile
from pyspark.sql import DataFrame

from pipeline.config.schema import UdfConfig
from pipeline.inference.steps import Step, rebatch, to_pandas
from pipeline.spark.ledger import TaskLedger, arrow_bytes
from variants.spark_schema import spark_schema


def apply(
    frame: DataFrame, step: Step, ledger: TaskLedger, options: UdfConfig, profile: ResourceProfile | None = None
) -> DataFrame:
    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        with ledger.task(step) as task:
            fed = task.fed(frames, lambda rows: (len(rows), arrow_bytes(rows[name] for name in step.inputs)))
            batches = ({name: rows[name].tolist() for name in step.inputs} for rows in fed)
            for columns in rebatch(batches, step.batch_size):
                output = step.finish(step.prepare(columns), task.device)
                task.add(output)
                yield from task.handed_back(lambda: to_pandas(output.columns))

    return frame.mapInPandas(run, spark_schema(step), profile=profile)
