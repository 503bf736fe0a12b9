"""The inference step every engine and every Spark variant runs: rows of encoded images in, predictions out.

It knows nothing of Spark. A Spark variant only decides how rows reach `Inference.prepare` and `Inference.predict` (and in which
process); the reference engine calls the same code in one process, so predictions can be compared exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from pipeline.model import ModelSpec, load_model, predict
from pipeline.preprocess import Preprocessing

PREDICTION_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("label", pa.int32()),
        ("top1", pa.int32()),
        ("prob", pa.float32()),
        ("top5", pa.list_(pa.int32())),
    ]
)
PREDICTION_DDL = "id string, label int, top1 int, prob float, top5 array<int>"


class BadImageError(RuntimeError):
    """Raised under on_bad_image=fail: the run stops naming the image."""


@dataclass(frozen=True)
class BadImageRecord:
    id: str
    reason: str


@dataclass(frozen=True)
class Prepared:
    """A model batch after CPU preprocessing: uint8 crops of the good images and the list of bad ones."""

    ids: list[str]
    labels: list[int]
    crops: torch.Tensor
    bad: list[BadImageRecord]


@dataclass(frozen=True, kw_only=True)
class Inference:
    """What a task needs to turn images into predictions; small and picklable, shipped to every task."""

    preprocessing: Preprocessing
    model: ModelSpec
    batch_size: int
    fail_on_bad_image: bool = False

    def prepare(self, rows: pd.DataFrame) -> Prepared:
        """CPU preprocessing of one model batch of rows (id, label, image)."""
        crops, positions, failures = self.preprocessing.crops(rows["image"].tolist())
        ids = rows["id"].astype(str).tolist()
        bad = [BadImageRecord(ids[position], reason) for position, reason in failures]
        if bad and self.fail_on_bad_image:
            raise BadImageError(f"bad image id={bad[0].id}: {bad[0].reason} (on_bad_image=fail)")
        labels = rows["label"].tolist()
        return Prepared([ids[p] for p in positions], [int(labels[p]) for p in positions], crops, bad)

    def predict(self, prepared: Prepared, device: str = "cpu") -> pd.DataFrame:
        """Normalize on `device` and predict one prepared batch; the model is loaded once per process."""
        if not prepared.ids:
            return empty_predictions()
        batch = self.preprocessing.normalize(prepared.crops.to(device, non_blocking=True))
        predicted = predict(load_model(self.model, device), batch)
        return pd.DataFrame(
            {
                "id": prepared.ids,
                "label": np.asarray(prepared.labels, dtype=np.int32),
                "top1": predicted.top1.astype(np.int32),
                "prob": predicted.prob.astype(np.float32),
                "top5": list(predicted.top5.astype(np.int32)),
            }
        )

    def batches(self, rows: pd.DataFrame) -> Iterator[pd.DataFrame]:
        """`rows` cut into model batches of `batch_size`."""
        for start in range(0, len(rows), self.batch_size):
            yield rows.iloc[start : start + self.batch_size]


def empty_predictions() -> pd.DataFrame:
    return PREDICTION_SCHEMA.empty_table().to_pandas()


def rebatch(frames: Iterator[pd.DataFrame], size: int) -> Iterator[pd.DataFrame]:
    """Re-chunk a stream of frames into frames of exactly `size` rows (the last may be shorter).

    Spark cuts Arrow batches by `maxRecordsPerBatch`, not by the model's batch size; carrying the remainder
    over keeps every model call full, so batch size means the same thing in every variant.
    """
    pending: list[pd.DataFrame] = []
    count = 0
    for frame in frames:
        pending.append(frame)
        count += len(frame)
        if count < size:
            continue
        merged = pd.concat(pending, ignore_index=True)
        full = (len(merged) // size) * size
        for start in range(0, full, size):
            yield merged.iloc[start : start + size]
        pending, count = [merged.iloc[full:]], len(merged) - full
    if count:
        yield pd.concat(pending, ignore_index=True)
