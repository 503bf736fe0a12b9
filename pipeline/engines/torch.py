"""engine=torch: the same data, preprocessing and model code in one process, without Spark.

The single-machine baseline a Spark variant is measured against: a PyTorch DataLoader whose worker processes
(`engine.loader_workers`) preprocess while the main process predicts. `pipeline.verify` runs the reference
of `verify=true` through the same loader, with no workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.config.schema import Config, Sink
from pipeline.data.datasets import Dataset
from pipeline.engines.base import Measurement, Pass, run_passes
from pipeline.inference.model import model_builds, pick_device, use_threads
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
from pipeline.rundir import RunDir, staged


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


def loader(dataset: Dataset, step: Step, workers: int, device: str) -> DataLoader:
    return DataLoader(
        ParquetBatches(dataset.path, step),
        batch_size=None,
        num_workers=workers,
        pin_memory=device.startswith("cuda"),
        persistent_workers=workers > 0,
        multiprocessing_context="spawn" if workers > 0 else None,
    )


def predict_all(loader: DataLoader, step: Step, device: str) -> tuple[pd.DataFrame, list[BadImageRecord]]:
    frames, bad = [], []
    for prepared in loader:
        output = step.finish(prepared, device)
        frames.append(to_pandas(output.columns))
        bad.extend(output.bad)
    empty = PREDICTION_SCHEMA.empty_table().to_pandas()
    return (pd.concat(frames, ignore_index=True) if frames else empty), bad


def run(config: Config, dataset: Dataset, inference: Inference, run_dir: Path, plan: None) -> Measurement:
    device = pick_device("none")
    use_threads(os.cpu_count() or 1)
    step = fused(inference)
    batches = loader(dataset, step, config.engine.loader_workers, device)
    sink_dir = RunDir(run_dir).predictions if config.sink is Sink.parquet else None
    outcome: dict[str, object] = {}

    def action() -> None:
        predictions, bad = predict_all(batches, step, device)
        if sink_dir is not None:  # staged: a failed write (a full disk) leaves no half file to read as predictions
            table = pa.Table.from_pandas(predictions, schema=PREDICTION_SCHEMA, preserve_index=False)
            with staged(sink_dir / "part-00000.parquet") as staging:
                pq.write_table(table, staging)
        outcome.update(predictions=predictions, bad=bad)

    def observe(times: dict[str, float]) -> Pass:
        predicted, bad = len(outcome["predictions"]), list(outcome["bad"])
        tasks = {"worker_pids": [os.getpid()], "max_model_loads_per_worker": model_builds(inference.model)}
        return Pass(times, predicted + len(bad), predicted, bad, tasks)

    warmups, timed_passes = run_passes(config.warmup, config.repeats, [("predict", action)], observe, outcome.clear)
    return Measurement(warmups, timed_passes, predictions=outcome.get("predictions"))
