"""`pyspark.sql.functions.arrow_udf` (Spark 4.1+), iterator form: Arrow arrays in, a struct array out, no pandas.

The iterator form gets every Arrow batch of a task through one call, so the model is built once per task
(once per worker, by `load_model`'s cache) and batches are re-cut to the model's batch size as in
mapInArrow. Like the pandas iterator UDF it must return as many rows as it received; bad images come back
as null structs and are dropped afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
from pyspark.resource import ResourceProfile
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline.config.schema import UdfConfig
from pipeline.inference.steps import Step, aligned, rebatch, to_arrow
from pipeline.spark.ledger import TaskLedger
from variants.spark_schema import spark_schema


def apply(
    frame: DataFrame, step: Step, ledger: TaskLedger, options: UdfConfig, profile: ResourceProfile | None = None
) -> DataFrame:
    @F.arrow_udf(spark_schema(step))
    def run(batches: Iterator[tuple[pa.Array, ...]]) -> Iterator[pa.Array]:
        with ledger.task(step) as task:
            fed = task.fed(_tuples(batches), lambda arrays: (len(arrays[0]), sum(array.nbytes for array in arrays)))
            inputs = ({name: array.to_pylist() for name, array in zip(step.inputs, arrays)} for arrays in fed)
            for columns in rebatch(inputs, step.batch_size):
                output = step.finish(step.prepare(columns), task.device)
                task.add(output)
                rows = aligned(output, len(output) + len(output.bad), step.schema)
                yield from task.handed_back(lambda: to_arrow(rows, step.schema).to_struct_array())

    # non-deterministic: keeps the optimizer from evaluating the UDF once per field it reads (see predict_batch_udf)
    result = frame.select(run.asNondeterministic()(*step.inputs).alias("out"))
    return result.where(F.col("out.id").isNotNull()).select("out.*")


def _tuples(batches: Iterator[pa.Array | tuple[pa.Array, ...]]) -> Iterator[tuple[pa.Array, ...]]:
    """Spark hands a one-column arrow_udf bare arrays and a wider one tuples; one shape for both."""
    for batch in batches:
        yield batch if isinstance(batch, tuple) else (batch,)
