"""An Iterator[pd.Series] → Iterator[pd.DataFrame] pandas UDF: model once per task, optional prefetch.

`udf.prefetch=N` prepares up to N batches ahead in a background thread — open-source Spark has no
prefetch; Databricks' closed one gave +41% in the original study.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
from pyspark.resource import ResourceProfile
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline.config.schema import UdfConfig
from pipeline.inference.steps import Step, aligned, prefetched, rebatch
from pipeline.spark.ledger import TaskLedger, arrow_bytes
from variants.spark_schema import spark_schema


def apply(
    frame: DataFrame, step: Step, ledger: TaskLedger, options: UdfConfig, profile: ResourceProfile | None = None
) -> DataFrame:
    @F.pandas_udf(spark_schema(step))
    def run(batches: Iterator[tuple[pd.Series, ...]]) -> Iterator[pd.DataFrame]:
        with ledger.task(step) as task:
            fed = task.fed(batches, lambda batch: (len(batch[0]), arrow_bytes(batch)))
            inputs = ({name: series.tolist() for name, series in zip(step.inputs, batch)} for batch in fed)
            for prepared in prefetched(step, rebatch(inputs, step.batch_size), options.prefetch):
                output = step.finish(prepared, task.device)
                task.add(output)
                rows = len(output) + len(output.bad)
                yield from task.handed_back(lambda: pd.DataFrame(aligned(output, rows, step.schema)))

    # non-deterministic: keeps the optimizer from evaluating the UDF once per field it reads (see predict_batch_udf)
    result = frame.select(run.asNondeterministic()(*step.inputs).alias("out"))
    return result.where(F.col("out.id").isNotNull()).select("out.*")
