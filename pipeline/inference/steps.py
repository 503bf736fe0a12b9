"""The inference steps every engine and every Spark variant runs, on plain columns, knowing nothing of Spark.

A topology cuts the work into steps — `fused` (image → prediction), or `preprocess` (image → uint8 crop)
then `predict` (crop → prediction) — and a Spark variant only decides how rows reach a step and in which
process. The reference engine calls the same steps in one process, so predictions compare exactly.

Each step has two phases: `prepare` (CPU work on one model batch) and `finish` (the model or the
serialization), so a variant can prepare the next batch while the current one finishes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from pipeline.inference.accelerator import simulated_predictions
from pipeline.inference.model import ModelSpec, Predictions, load_model, pick_device, predict
from pipeline.inference.preprocess import Preprocessing, to_device
from pipeline.runtime.timing import timed, timed_with_cpu

Columns = dict[str, Any]  # column name → a sequence of values, one per row

PREDICTION_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("label", pa.int32()),
        ("top1", pa.int32()),
        ("prob", pa.float32()),
        ("top5", pa.list_(pa.int32())),
    ]
)
CROP_SCHEMA = pa.schema([("id", pa.string()), ("label", pa.int32()), ("crop", pa.binary())])
IMAGE_COLUMNS = ("id", "label", "image")
CROP_COLUMNS = ("id", "label", "crop")


class RemoteModel(Protocol):
    """A model that runs in another process (topology=model_server's server, `pipeline.serving.client`): the
    served step hands it uint8 crops and gets predictions back, knowing nothing of how they travel."""

    def predict(self, crops: np.ndarray) -> Predictions: ...


class BadImageError(RuntimeError):
    """Raised under on_bad_image=fail: the run stops naming the image."""


@dataclass(frozen=True)
class BadImageRecord:
    id: str
    reason: str


@dataclass(frozen=True)
class Output:
    """A step's result for one batch: output columns for the good rows, where they came from, the bad ones.

    It also says where its time went and how big its model calls were, so an engine can prove its batch
    sizes and split a task's time without timing steps from outside: `prepare_s` is the CPU phase (decode
    and preprocess, or reading crops back), `finish_s` the model phase (the model, or the crop bytes of a
    preprocess step; decoding too under `decode_on=model_device`), `model_calls` the rows of each call of
    the finish phase (the model batch the step was handed, its bad images included: a bad image dropped from
    a batch does not make `model.batch_size` fail to take effect; the model itself gets the good rows).
    """

    columns: Columns
    positions: list[int]
    bad: list[BadImageRecord] = field(default_factory=list)
    prepare_s: float = 0.0
    finish_s: float = 0.0
    model_calls: tuple[int, ...] = ()
    prepare_cpu_s: float = 0.0  # the process's CPU seconds in the CPU phase (see Prepared)

    def __len__(self) -> int:
        return len(self.positions)


@dataclass(frozen=True)
class Prepared:
    """A batch after its CPU phase: uint8 crops (N,3,crop,crop) of the good rows, or, when images are decoded
    on the model's device, the still-encoded images of every row."""

    ids: list[str]
    labels: list[int]
    crops: torch.Tensor | None
    positions: list[int]
    bad: list[BadImageRecord]
    encoded: list[bytes] | None = None
    prepare_s: float = 0.0  # how long the CPU phase took (see Output)
    # the worker process's CPU seconds meanwhile: with prefetch or loader threads, what its other threads did too
    prepare_cpu_s: float = 0.0

    def pin_memory(self) -> Prepared:
        """The batch with its crops in pinned memory. torch's DataLoader (`pin_memory=True`) pins what its workers
        yield by calling this, in a thread of its own, so the model phase's copy to the GPU finds them pinned
        (`preprocess.to_device`) instead of pinning them itself; a dataclass it would pass through unpinned."""
        return self if self.crops is None else replace(self, crops=self.crops.pin_memory())


@dataclass(frozen=True, kw_only=True)
class Inference:
    """What a task needs to turn images into predictions; small and picklable, shipped to every task."""

    preprocessing: Preprocessing
    model: ModelSpec
    batch_size: int
    fail_on_bad_image: bool = False
    server: RemoteModel | None = None  # topology=model_server: where the `served` step sends its crops
    gpus: str = "none"  # the kind of GPU addresses its tasks are handed (`GpuPlan.kind`): real, emulated or none

    def device(self, addresses: Sequence[str]) -> str:
        """Where a task handed these GPU addresses runs the model (`pipeline.inference.model.pick_device`)."""
        return pick_device(self.gpus, addresses, simulated=self.model.name == "accelerator")

    def crop_batch(self, columns: Columns) -> Prepared:
        """Decode and crop one batch of (id, label, image) rows on the CPU; bad images are listed, not raised.
        With `decode_on="model_device"` the images stay encoded until `predictions`."""
        prepared, seconds, cpu = timed_with_cpu(lambda: self._crop_batch(columns))
        return replace(prepared, prepare_s=seconds, prepare_cpu_s=cpu)

    def _crop_batch(self, columns: Columns) -> Prepared:
        images = list(columns["image"])
        if self.preprocessing.decode_on == "model_device":
            return replace(self._prepared(columns, None, list(range(len(images))), []), encoded=images)
        crops, positions, failures = self.preprocessing.crops(images)
        return self._prepared(columns, crops, positions, failures)

    def _decoded(self, prepared: Prepared, device: str) -> Prepared:
        crops, positions, failures = self.preprocessing.crops(prepared.encoded, device)
        return self._prepared({"id": prepared.ids, "label": prepared.labels}, crops, positions, failures)

    def read_crops(self, columns: Columns) -> Prepared:
        """A batch of (id, label, crop) rows written by the preprocess step, back to uint8 crops."""
        prepared, seconds, cpu = timed_with_cpu(lambda: self._read_crops(columns))
        return replace(prepared, prepare_s=seconds, prepare_cpu_s=cpu)

    def _read_crops(self, columns: Columns) -> Prepared:
        size = self.preprocessing.crop_size
        crops = [torch.frombuffer(bytearray(crop), dtype=torch.uint8) for crop in columns["crop"]]
        stacked = (
            torch.stack(crops).view(-1, 3, size, size) if crops else torch.empty((0, 3, size, size), dtype=torch.uint8)
        )
        return self._prepared(columns, stacked, list(range(len(crops))), [])

    def crop_bytes(self, prepared: Prepared) -> Output:
        """Crops as uint8 CHW bytes, 4x smaller than the float32 tensors the model takes."""
        crops, seconds = timed(lambda: [crop.numpy().tobytes() for crop in prepared.crops])
        columns = {"id": prepared.ids, "label": np.asarray(prepared.labels, dtype=np.int32), "crop": crops}
        rows = len(prepared.positions) + len(prepared.bad)
        return Output(
            columns,
            prepared.positions,
            prepared.bad,
            prepare_s=prepared.prepare_s,
            prepare_cpu_s=prepared.prepare_cpu_s,
            finish_s=seconds,
            model_calls=(rows,),
        )

    def _prepared(
        self, columns: Columns, crops: torch.Tensor | None, positions: list[int], failures: list[tuple[int, str]]
    ) -> Prepared:
        ids = [str(value) for value in columns["id"]]
        bad = [BadImageRecord(ids[position], reason) for position, reason in failures]
        if bad and self.fail_on_bad_image:
            raise BadImageError(f"bad image id={bad[0].id}: {bad[0].reason} (on_bad_image=fail)")
        labels = list(columns["label"])
        return Prepared([ids[p] for p in positions], [int(labels[p]) for p in positions], crops, positions, bad)

    def predictions(self, prepared: Prepared, device: str) -> Output:
        """Normalize on `device` and predict; the model is built once per process."""
        output, seconds = timed(lambda: self._predictions(prepared, device))
        return replace(output, prepare_s=prepared.prepare_s, prepare_cpu_s=prepared.prepare_cpu_s, finish_s=seconds)

    def _predictions(self, prepared: Prepared, device: str) -> Output:
        if prepared.encoded is not None:
            prepared = self._decoded(prepared, device)
        if not prepared.ids:
            return Output(empty_columns(PREDICTION_SCHEMA), [], prepared.bad)
        if self.model.name == "accelerator":  # the device normalizes: its rate covers it
            return self.output(prepared, simulated_predictions(self.model, prepared.crops, device))
        batch = self.preprocessing.normalize(to_device(prepared.crops, device))
        return self.output(prepared, predict(load_model(self.model, device), batch, self.model))

    def served_predictions(self, prepared: Prepared) -> Output:
        """The uint8 crops to the model server (`server`), which normalizes and predicts; no model here. The
        request's round trip is the model phase (`finish_s`), as the model's call is in-process."""
        output, seconds = timed(lambda: self._served_predictions(prepared))
        return replace(output, prepare_s=prepared.prepare_s, prepare_cpu_s=prepared.prepare_cpu_s, finish_s=seconds)

    def _served_predictions(self, prepared: Prepared) -> Output:
        if not prepared.ids:
            return Output(empty_columns(PREDICTION_SCHEMA), [], prepared.bad)
        assert self.server is not None, "the served step needs the model server's address"
        return self.output(prepared, self.server.predict(prepared.crops.numpy()))

    def output(self, prepared: Prepared, predicted: Predictions) -> Output:
        """Prediction columns of a batch's good rows."""
        columns = {
            "id": prepared.ids,
            "label": np.asarray(prepared.labels, dtype=np.int32),
            "top1": predicted.top1.astype(np.int32),
            "prob": predicted.prob.astype(np.float32),
            "top5": predicted.top5.astype(np.int32),
        }
        return Output(
            columns, prepared.positions, prepared.bad, model_calls=(len(prepared.positions) + len(prepared.bad),)
        )


@dataclass(frozen=True)
class Step:
    """One unit of work a Spark stage runs: input columns, output schema, and the two phases.

    The kinds differ in what they read and whether they run the model; code that must tell them apart asks
    `reads_images` and `runs_model`, never the name, which only labels task records and stages.
    """

    inference: Inference
    name: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]]
    schema: ClassVar[pa.Schema]
    reads_images: ClassVar[bool]  # reads the data set's encoded images: its rows in are the images read
    runs_model: ClassVar[bool]  # its rows out are predictions

    @property
    def batch_size(self) -> int:
        return self.inference.batch_size

    def prepare(self, columns: Columns) -> Prepared:
        """The CPU phase of one model batch."""
        return self.inference.crop_batch(columns)

    def finish(self, prepared: Prepared, device: str) -> Output:
        """The model phase: predictions on `device`."""
        return self.inference.predictions(prepared, device)

    def __call__(self, columns: Columns, device: str) -> Output:
        """Both phases over any number of rows, in model batches of `batch_size`."""
        outputs = [self.finish(self.prepare(chunk), device) for chunk in chunks(columns, self.batch_size)]
        return concat_outputs(outputs, self.schema)


@dataclass(frozen=True)
class Fused(Step):
    """Image → prediction, in one stage."""

    name = "fused"
    inputs = IMAGE_COLUMNS
    schema = PREDICTION_SCHEMA
    reads_images = True
    runs_model = True


@dataclass(frozen=True)
class Preprocess(Step):
    """Image → uint8 crop bytes, for a stage (or a job) of its own."""

    name = "preprocess"
    inputs = IMAGE_COLUMNS
    schema = CROP_SCHEMA
    reads_images = True
    runs_model = False

    def finish(self, prepared: Prepared, device: str) -> Output:
        """No model: the crops as bytes for the next stage."""
        return self.inference.crop_bytes(prepared)


@dataclass(frozen=True)
class Predict(Step):
    """Crop bytes written by `Preprocess` → prediction."""

    name = "predict"
    inputs = CROP_COLUMNS
    schema = PREDICTION_SCHEMA
    reads_images = False
    runs_model = True

    def prepare(self, columns: Columns) -> Prepared:
        return self.inference.read_crops(columns)


@dataclass(frozen=True)
class Served(Step):
    """Image → uint8 crop in the task → prediction from the model server (topology=model_server)."""

    name = "served"
    inputs = IMAGE_COLUMNS
    schema = PREDICTION_SCHEMA
    reads_images = True
    runs_model = True

    def finish(self, prepared: Prepared, device: str) -> Output:
        return self.inference.served_predictions(prepared)


STEPS: dict[str, type[Step]] = {kind.name: kind for kind in (Fused, Preprocess, Predict, Served)}


def fused(inference: Inference) -> Step:
    return Fused(inference)


def preprocess(inference: Inference) -> Step:
    return Preprocess(inference)


def predict_crops(inference: Inference) -> Step:
    return Predict(inference)


def served(inference: Inference) -> Step:
    return Served(inference)


def num_rows(columns: Columns) -> int:
    return len(next(iter(columns.values()))) if columns else 0


def chunks(columns: Columns, size: int) -> Iterator[Columns]:
    total = num_rows(columns)
    for start in range(0, total, size):
        yield {name: values[start : start + size] for name, values in columns.items()}


def empty_columns(schema: pa.Schema) -> Columns:
    return {name: [] for name in schema.names}


def concat_outputs(outputs: Sequence[Output], schema: pa.Schema) -> Output:
    """Outputs of consecutive chunks as one, positions counted from the first chunk's first row."""
    if len(outputs) == 1:
        return outputs[0]
    columns = {name: [value for output in outputs for value in output.columns[name]] for name in schema.names}
    positions: list[int] = []
    offset = 0
    for output in outputs:
        positions += [offset + position for position in output.positions]
        offset += len(output.positions) + len(output.bad)  # rows in = good + bad
    return Output(
        columns,
        positions,
        [record for output in outputs for record in output.bad],
        prepare_s=sum(output.prepare_s for output in outputs),
        prepare_cpu_s=sum(output.prepare_cpu_s for output in outputs),
        finish_s=sum(output.finish_s for output in outputs),
        model_calls=tuple(rows for output in outputs for rows in output.model_calls),
    )


def rebatch(batches: Iterable[Columns], size: int) -> Iterator[Columns]:
    """Re-chunk a stream of column batches into batches of exactly `size` rows (the last may be shorter).

    Spark cuts Arrow batches by `maxRecordsPerBatch`, not by the model's batch size; carrying the remainder
    over keeps every model call full, so batch size means the same thing in every variant that can stream.
    """
    pending: Columns = {}
    for batch in batches:
        pending = {name: [*pending.get(name, []), *values] for name, values in batch.items()}
        full = num_rows(pending) // size * size  # sliced once each: a batch many model calls long stays linear
        for start in range(0, full, size):
            yield {name: values[start : start + size] for name, values in pending.items()}
        pending = {name: values[full:] for name, values in pending.items()}
    if num_rows(pending):
        yield pending


def to_arrow(columns: Columns, schema: pa.Schema) -> pa.RecordBatch:
    arrays = []
    for field_ in schema:
        values = columns[field_.name]
        if pa.types.is_list(field_.type):
            arrays.append(pa.array([np.asarray(row).tolist() for row in values], type=field_.type))
        else:
            arrays.append(pa.array(values, type=field_.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def to_pandas(columns: Columns) -> pd.DataFrame:
    """Columns as a DataFrame; 2-D arrays (top5) become one array per row."""
    return pd.DataFrame(
        {
            name: list(values) if isinstance(values, np.ndarray) and values.ndim > 1 else values
            for name, values in columns.items()
        }
    )


def aligned(output: Output, rows: int, schema: pa.Schema) -> Columns:
    """Output columns with one entry per input row, None where the row was a bad image.

    For variants whose UDF must return as many rows as it was given (scalar and iterator pandas UDFs,
    predict_batch_udf); they drop the None rows afterwards.
    """
    columns: Columns = {name: [None] * rows for name in schema.names}
    for name in schema.names:
        for position, value in zip(output.positions, output.columns[name]):
            columns[name][position] = value.tolist() if isinstance(value, (np.ndarray, np.generic)) else value
    return columns


def prefetched(step: Step, batches: Iterable[Columns], depth: int) -> Iterator[Prepared]:
    """`step.prepare` of each batch, up to `depth` batches ahead in a background thread.

    Open-source Spark feeds a pandas UDF one batch at a time; preparing the next batch (decode, resize) while
    the current one is in the model overlaps CPU and model time, as Databricks' closed prefetch did.
    """
    if depth == 0:
        yield from map(step.prepare, batches)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        pending: deque = deque()
        for batch in batches:
            pending.append(pool.submit(step.prepare, batch))
            if len(pending) > depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
