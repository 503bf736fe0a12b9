"""The seven UDF styles with nothing inside them.

`IDENTITY[style](frame, log)` sends (id, image) through the style's Python function and back unchanged, so
its time is the style's own cost of moving images between the JVM and Python. `predict_batch_udf` may only
return numeric, string or array columns, so its identity returns each image's byte count: the image goes
in, not back out.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark import cloudpickle
from pyspark.ml.functions import predict_batch_udf
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType

from pipeline.config.schema import UdfStyle
from tests.bench.harness import CallLog

cloudpickle.register_pickle_by_value(sys.modules[__name__])

IMAGE_DDL = "id string, image binary"


def _scalar(frame: DataFrame, log: CallLog) -> DataFrame:
    @F.pandas_udf("binary")
    def identity(images: pd.Series) -> pd.Series:
        log.record(len(images))
        return images

    return frame.select("id", identity("image").alias("image"))


def _iterator(frame: DataFrame, log: CallLog) -> DataFrame:
    @F.pandas_udf("binary")
    def identity(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        for images in batches:
            log.record(len(images))
            yield images

    return frame.select("id", identity("image").alias("image"))


def _map_in_pandas(frame: DataFrame, log: CallLog) -> DataFrame:
    def identity(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for rows in frames:
            log.record(len(rows))
            yield rows

    return frame.select("id", "image").mapInPandas(identity, IMAGE_DDL)


def _map_in_arrow(frame: DataFrame, log: CallLog) -> DataFrame:
    def identity(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            log.record(batch.num_rows)
            yield batch

    return frame.select("id", "image").mapInArrow(identity, IMAGE_DDL)


def _rdd_map_partitions(frame: DataFrame, log: CallLog) -> DataFrame:
    def identity(rows: Iterator) -> Iterator:
        count = 0
        for row in rows:
            count += 1
            yield row
        log.record(count)  # one call per partition: rows are pickled one by one, not batched

    rdd = frame.select("id", "image").rdd.mapPartitions(identity)
    return frame.sparkSession.createDataFrame(rdd, IMAGE_DDL)


def _predict_batch_udf(frame: DataFrame, log: CallLog) -> DataFrame:
    def make_predict_fn() -> Callable[[np.ndarray], np.ndarray]:
        def byte_counts(images: np.ndarray) -> np.ndarray:
            log.record(len(images))
            return np.fromiter((len(image) for image in images), dtype=np.int32, count=len(images))

        return byte_counts

    # batch_size = the Arrow batch, so that predict_batch_udf makes one call per batch like the others
    batch_rows = int(frame.sparkSession.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch"))
    run = predict_batch_udf(make_predict_fn, return_type=IntegerType(), batch_size=batch_rows)
    return frame.select("id", run("image").alias("nbytes"))


def _arrow_udf(frame: DataFrame, log: CallLog) -> DataFrame:
    @F.arrow_udf("binary")
    def identity(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
        for images in batches:
            log.record(len(images))
            yield images

    return frame.select("id", identity("image").alias("image"))


IDENTITY: dict[UdfStyle, Callable[[DataFrame, CallLog], DataFrame]] = {
    UdfStyle.scalar_pandas_udf: _scalar,
    UdfStyle.iterator_pandas_udf: _iterator,
    UdfStyle.map_in_pandas: _map_in_pandas,
    UdfStyle.map_in_arrow: _map_in_arrow,
    UdfStyle.rdd_map_partitions: _rdd_map_partitions,
    UdfStyle.predict_batch_udf: _predict_batch_udf,
    UdfStyle.arrow_udf: _arrow_udf,
}
