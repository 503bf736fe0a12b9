"""A Series → DataFrame scalar pandas UDF, the original study's style: one call per Arrow batch.

`udf.rebuild_model_per_batch=true` reproduces the original's confound — the model rebuilt for every call —
so its cost can be measured apart from the style; off by default.
"""

from __future__ import annotations

import pandas as pd
from pyspark.resource import ResourceProfile
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline.config.schema import UdfConfig
from pipeline.inference.model import load_model
from pipeline.inference.steps import Step, aligned, num_rows
from pipeline.runtime.timing import timed
from pipeline.spark.ledger import TaskLedger, arrow_bytes
from variants.spark_schema import spark_schema


def apply(
    frame: DataFrame, step: Step, ledger: TaskLedger, options: UdfConfig, profile: ResourceProfile | None = None
) -> DataFrame:
    rebuild = options.rebuild_model_per_batch and step.runs_model

    @F.pandas_udf(spark_schema(step))
    def run(*series: pd.Series) -> pd.DataFrame:
        columns = {name: values.tolist() for name, values in zip(step.inputs, series)}
        with ledger.task(step) as task:
            task.called(num_rows(columns), arrow_bytes(series))
            if rebuild:
                load_model(step.inference.model, task.device, rebuild=True)
            output = step(columns, task.device)
            task.add(output)
            results, task.results_s = timed(lambda: pd.DataFrame(aligned(output, num_rows(columns), step.schema)))
        return results

    # non-deterministic: keeps the optimizer from evaluating the UDF once per field it reads (see predict_batch_udf)
    result = frame.select(run.asNondeterministic()(*step.inputs).alias("out"))
    return result.where(F.col("out.id").isNotNull()).select("out.*")
