"""`pyspark.ml.functions.predict_batch_udf`: Spark's own inference UDF.

It builds the predict function once per Python worker (needs spark.python.worker.reuse) and slices each
Arrow batch into `batch_size` rows itself. Its results may only be numeric, string or 2-D numeric arrays,
so bad images come back as rows with top1 = -1 that are dropped, and a topology's separate preprocess step
(whose output is binary) runs as an iterator pandas UDF — the mechanism predict_batch_udf is built on.
The UDF is marked non-deterministic, as are the other UDFs whose struct output is filtered and then
expanded: otherwise the optimizer may evaluate it once per field it reads, running the model twice.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pyspark.ml.functions import predict_batch_udf
from pyspark.resource import ResourceProfile
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline.config.schema import IteratorPandasUdfConfig, UdfConfig
from pipeline.inference.steps import Output, Step
from pipeline.runtime.timing import timed
from pipeline.spark.ledger import TaskLedger, arrow_bytes
from variants import iterator_pandas_udf
from variants.spark_schema import spark_schema


def _full_rows(output: Output, rows: int) -> dict[str, np.ndarray]:
    """One result row per input row; rows of bad images keep top1 = -1."""
    result = {
        "id": np.full(rows, "", dtype=object),
        "label": np.zeros(rows, dtype=np.int32),
        "top1": np.full(rows, -1, dtype=np.int32),
        "prob": np.full(rows, np.nan, dtype=np.float32),
        "top5": np.full((rows, 5), -1, dtype=np.int32),
    }
    positions = np.asarray(output.positions, dtype=np.int64)
    for name, values in result.items():
        if len(positions):
            values[positions] = np.asarray(output.columns[name], dtype=values.dtype)
    return result


def apply(
    frame: DataFrame, step: Step, ledger: TaskLedger, options: UdfConfig, profile: ResourceProfile | None = None
) -> DataFrame:
    if not step.runs_model:
        return iterator_pandas_udf.apply(frame, step, ledger, IteratorPandasUdfConfig(), profile)  # no prefetch

    def make_predict_fn() -> Callable[..., dict[str, np.ndarray]]:
        # one named parameter per input column: predict_batch_udf counts them to pass columns apart
        def predict(ids: np.ndarray, labels: np.ndarray, values: np.ndarray) -> dict[str, np.ndarray]:
            columns = {name: list(array) for name, array in zip(step.inputs, (ids, labels, values))}
            with ledger.task(step) as task:
                # predict_batch_udf hides the Arrow batch: it calls this with its slices of batch_size rows
                task.called(len(ids), arrow_bytes((ids, labels, values)))
                output = step(columns, task.device)
                task.add(output)
                rows, task.results_s = timed(lambda: _full_rows(output, len(ids)))
            return rows

        return predict

    run = predict_batch_udf(make_predict_fn, return_type=spark_schema(step), batch_size=step.batch_size)
    run = run.asNondeterministic()
    result = frame.select(run(*step.inputs).alias("out"))
    return result.where(F.col("out.top1") >= 0).select("out.*")
