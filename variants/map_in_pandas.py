"""`DataFrame.mapInPandas`: one Python generator per partition, the model built once per worker process."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
from pyspark.sql import DataFrame

from pipeline.inference import PREDICTION_DDL, Inference, rebatch
from variants.tasks import TaskLedger


def predictions(images: DataFrame, inference: Inference, ledger: TaskLedger) -> DataFrame:
    def predict_partition(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        with ledger.task() as task:
            for rows in rebatch(frames, inference.batch_size):
                prepared = inference.prepare(rows)
                predicted = inference.predict(prepared, task.device)
                task.add(len(predicted), prepared.bad)
                yield predicted

    return images.mapInPandas(predict_partition, PREDICTION_DDL)
