"""The oracle of `verify=true`: the in-process reference run of a data set, and the agreement of a run with it.

The reference is the canonical path (Pillow decoding on the CPU, fp32, not compiled) whatever options the
run chose, through the torch engine's loader in one process, and cached per data set, weights and
preprocessing, so every variant of a sweep is checked against the very same predictions.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from pipeline.data.datasets import Dataset
from pipeline.engines.torch import loader, predict_all
from pipeline.inference.model import ModelSpec, use_threads
from pipeline.inference.preprocess import Preprocessing
from pipeline.inference.steps import PREDICTION_SCHEMA, Inference, Prepared, fused
from pipeline.rundir import atomic_write
from pipeline.runtime import progress

# what makes a ModelSpec's predictions (the rest is how fast they come: precision aside, which the reference fixes)
NETWORK_KEYS = ("name", "arch", "factory", "seed", "pretrained", "weights_file")


def canonical(inference: Inference) -> Inference:
    """The same data format, crop sizes, network and weights in the plain path every option is checked against:
    Pillow decoding on the CPU, fp32, not compiled."""
    preprocessing = inference.preprocessing
    return replace(
        inference,
        preprocessing=Preprocessing(
            image_format=preprocessing.image_format,
            resize_size=preprocessing.resize_size,
            crop_size=preprocessing.crop_size,
        ),
        model=replace(ModelSpec(), **{key: getattr(inference.model, key) for key in NETWORK_KEYS}),
    )


def _counted(batches: Iterable[Prepared], shown: tqdm) -> Iterator[Prepared]:
    """The reference's batches, each counted on its bar by its rows once the one before it was predicted."""
    for prepared in batches:
        yield prepared
        shown.update(len(prepared.ids))


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
    with progress.bar("reference run (verify)", dataset.num_images) as shown:
        predictions, _ = predict_all(_counted(loader(dataset, step, 0, "cpu"), shown), step, "cpu")
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(predictions, schema=PREDICTION_SCHEMA, preserve_index=False), sink)
    atomic_write(path, sink.getvalue().to_pybytes())
    return predictions


def compare(predicted: pd.DataFrame, reference: pd.DataFrame) -> dict:
    """Agreement of a run's predictions with the reference's, joined by image id, counted per reference image:
    an image agrees when it was predicted and every prediction of it has the reference's top-1 class (a
    repeated prediction is counted in `duplicate_ids`, never as a second image)."""
    merged = reference.merge(predicted, on="id", how="left", suffixes=("_ref", "_run"))
    merged["agrees"] = merged["top1_ref"] == merged["top1_run"]
    merged["prob_diff"] = (merged["prob_ref"] - merged["prob_run"]).abs()
    per_image = merged.groupby("id", sort=False).agg(
        found=("top1_run", lambda values: bool(values.notna().all())),
        agrees=("agrees", "all"),
        prob_diff=("prob_diff", "max"),
    )
    found = per_image["found"]
    prob_diff = per_image.loc[found, "prob_diff"]
    return {
        "reference_images": len(reference),
        "compared": int(found.sum()),
        "missing_ids": per_image.index[~found].tolist()[:20],
        "unexpected_ids": sorted(set(predicted["id"]) - set(reference["id"]))[:20],
        "duplicate_ids": int(predicted["id"].duplicated().sum()),
        "top1_agreement": float((per_image["agrees"] & found).mean()) if len(reference) else 1.0,
        "max_abs_prob_diff": float(prob_diff.max()) if len(prob_diff) else 0.0,
    }
