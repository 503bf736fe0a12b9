"""engine=torch: the same data, preprocessing and model code in one process, without Spark.

It is the reference that `verify=true` compares Spark's predictions with (run in-process, cached per data,
weights and preprocessing), and the single-machine baseline a Spark variant is measured against: a PyTorch
DataLoader whose worker processes (`engine.loader_workers`) preprocess while the main process predicts.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.data.datasets import Dataset
from pipeline.engines.base import Measurement, Pass, run_passes
from pipeline.inference.steps import (
    IMAGE_COLUMNS,
    PREDICTION_SCHEMA,
    BadImageRecord,
    Columns,
    Inference,
    Prepared,
    Step,
    fused,
    rebatch,
    to_pandas,
)
from pipeline.inference.model import ModelSpec, pick_device, use_threads
from pipeline.inference.preprocess import Preprocessing


class ParquetBatches(IterableDataset):
    """Row groups dealt round-robin to the loader's workers, cut into prepared model batches."""

    def __init__(self, path: Path, step: Step) -> None:
        self.units = [
            (str(file), group)
            for file in sorted(Path(path).glob("*.parquet"))
            for group in range(pq.ParquetFile(file).num_row_groups)
        ]
        self.step = step

    def _columns(self, worker: int, workers: int) -> Iterator[Columns]:
        for file, group in self.units[worker::workers]:
            table = pq.ParquetFile(file).read_row_group(group, columns=list(IMAGE_COLUMNS))
            yield {name: table.column(name).to_pylist() for name in IMAGE_COLUMNS}

    def __iter__(self) -> Iterator[Prepared]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        if info:
            use_threads(1)
        for columns in rebatch(self._columns(worker, workers), self.step.batch_size):
            yield self.step.prepare(columns)


def _loader(dataset: Dataset, step: Step, workers: int, device: str) -> DataLoader:
    return DataLoader(
        ParquetBatches(dataset.path, step),
        batch_size=None,
        num_workers=workers,
        pin_memory=device.startswith("cuda"),
        persistent_workers=workers > 0,
        multiprocessing_context="spawn" if workers > 0 else None,
    )


def _predict_all(loader: DataLoader, step: Step, device: str) -> tuple[pd.DataFrame, list[BadImageRecord]]:
    frames, bad = [], []
    for prepared in loader:
        output = step.finish(prepared, device)
        frames.append(to_pandas(output.columns))
        bad.extend(output.bad)
    empty = PREDICTION_SCHEMA.empty_table().to_pandas()
    return (pd.concat(frames, ignore_index=True) if frames else empty), bad


def run_torch(
    dataset: Dataset, inference: Inference, *, workers: int, warmup: int, repeats: int, sink_dir: Path | None
) -> Measurement:
    device = pick_device()
    use_threads(os.cpu_count() or 1)
    step = fused(inference)
    loader = _loader(dataset, step, workers, device)
    outcome: dict[str, object] = {}

    def action() -> None:
        predictions, bad = _predict_all(loader, step, device)
        if sink_dir is not None:
            sink_dir.mkdir(parents=True, exist_ok=True)
            table = pa.Table.from_pandas(predictions, schema=PREDICTION_SCHEMA, preserve_index=False)
            pq.write_table(table, sink_dir / "part-00000.parquet")
        outcome.update(predictions=predictions, bad=bad)

    def observe(times: dict[str, float]) -> Pass:
        predicted, bad = len(outcome["predictions"]), list(outcome["bad"])
        return Pass(times, predicted + len(bad), predicted, bad)

    warmups, timed_passes = run_passes(warmup, repeats, [("predict", action)], observe, outcome.clear)
    return Measurement(warmups, timed_passes, predictions=outcome.get("predictions"))


def canonical(inference: Inference) -> Inference:
    """The same data format, model and weights in the plain path every option is checked against: Pillow
    decoding on the CPU, fp32, not compiled."""
    return replace(
        inference,
        preprocessing=Preprocessing(image_format=inference.preprocessing.image_format),
        model=ModelSpec(name=inference.model.name, weights_file=inference.model.weights_file),
    )


def reference_predictions(dataset: Dataset, inference: Inference, cache_dir: str | Path) -> pd.DataFrame:
    """Predictions of the in-process reference (the canonical path of this data set, model and weights);
    cached on disk."""
    inference = canonical(inference)
    weights = inference.model.weights_file
    key_source = {
        "dataset": dataset.spec,
        "weights": [weights, Path(weights).stat().st_size, Path(weights).stat().st_mtime_ns] if weights else None,
        "model": repr(inference.model),
        "preprocessing": repr(inference.preprocessing),
        "torch": torch.__version__,
    }
    key = hashlib.sha256(json.dumps(key_source, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir).expanduser() / "reference" / f"{key}.parquet"
    if path.is_file():
        return pd.read_parquet(path)
    use_threads(os.cpu_count() or 1)
    step = fused(inference)
    predictions, _ = _predict_all(_loader(dataset, step, 0, "cpu"), step, "cpu")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(pa.Table.from_pandas(predictions, schema=PREDICTION_SCHEMA, preserve_index=False), staging)
    os.replace(staging, path)
    return predictions


def compare(predicted: pd.DataFrame, reference: pd.DataFrame) -> dict:
    """Agreement of a run's predictions with the reference's, joined by image id."""
    merged = reference.merge(predicted, on="id", how="left", suffixes=("_ref", "_run"))
    found = merged["top1_run"].notna()
    agree = (merged["top1_ref"] == merged["top1_run"]) & found
    prob_diff = (merged.loc[found, "prob_ref"] - merged.loc[found, "prob_run"]).abs()
    return {
        "reference_images": len(reference),
        "compared": int(found.sum()),
        "missing_ids": merged.loc[~found, "id"].head(20).tolist(),
        "unexpected_ids": sorted(set(predicted["id"]) - set(reference["id"]))[:20],
        "duplicate_ids": int(predicted["id"].duplicated().sum()),
        "top1_agreement": float(agree.mean()) if len(reference) else 1.0,
        "max_abs_prob_diff": float(prob_diff.max()) if len(prob_diff) else 0.0,
    }
