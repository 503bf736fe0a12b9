"""The result contract: what a result.json holds, how it is written and how any record on disk is read back.

The job writes results through it and the reports read them through it, so the two cannot disagree on a
field. It imports nothing heavy (no torch, torchvision or pyspark): a report can be built on a machine that
only has the result files. What fills a result (the variant of a config, the environment, the git sha) is
`pipeline.provenance`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.rundir import RESULT_FILE, RunDir, atomic_write, files_named

SCHEMA_VERSION = 1


@dataclass
class Metrics:
    num_images: int | None = None
    num_predicted: int | None = None
    num_bad_images: int | None = None
    wall_s: list[float] = field(default_factory=list)
    warmup_s: list[float] = field(default_factory=list)
    job_s: dict[str, list[float]] = field(default_factory=dict)
    # CPU seconds of each timed pass by kind of process on this machine (pipeline.runtime.process_cpu)
    process_cpu_s: dict[str, list[float]] = field(default_factory=dict)
    intermediate_bytes: int | None = None
    cluster_start_s: float | None = None
    throughput_images_per_s: float | None = None
    throughput_per_repeat: list[float] = field(default_factory=list)
    startup_s: float | None = None
    data_prepare_s: float | None = None
    data_generated: bool | None = None
    weights_prepare_s: float | None = None
    reference_s: float | None = None
    max_model_loads_per_worker: int | None = None
    failed_tasks: int | None = None  # task attempts that did not succeed, over the whole application
    task_retries: int | None = None  # attempts that re-ran a partition
    executors_lost: int | None = None  # executors removed while jobs ran
    top1_agreement: float | None = None
    max_abs_prob_diff: float | None = None
    verified_images: int | None = None


@dataclass
class Variant:
    """The choices and knobs that make a run a variant; the report groups and labels by these, in this order.

    None where a knob does not apply (Spark's knobs for engine=torch) or is at its default and left out of
    labels (prefetch 0, channels_last on, decode_on=task). No field has a default, so whoever builds a
    Variant (`pipeline.provenance.variant_of`) names every one; older records that lack a field read as None.
    """

    engine: str | None
    udf: str | None
    topology: str | None
    cluster: str | None
    batch_size: int | None
    max_records_per_batch: int | None
    partitions: int | None
    python_worker_reuse: bool | None
    gpu_task_amount: float | None
    prefetch: int | None
    rebuild_model_per_batch: bool | None
    loader_workers: int | None
    sink: str | None
    dataset_source: str | None
    image_format: str | None
    weights: str | None
    model: str | None  # the network ("resnet50", "resnet18", "factory pkg.mod:fn"), or null_model, accelerator
    device: str | None  # model=accelerator: "simulated <device> <rate> img/s" (pipeline.projection.simulated.label)
    precision: str | None
    channels_last: bool | None
    compile: bool | None
    decoder: str | None
    decode_on: str | None
    max_bytes_per_batch: int | None  # None: Spark's default (64 MiB)
    row_group_size: int | None  # None: the default 32 rows
    python_udf_pipelined: bool | None  # Spark 4.3's pipelined Python UDF reader (None: off)
    python_udf_pipelined_queue_depth: int | None  # with python_udf_pipelined only
    arrow_compression_codec: str | None  # JVM -> Python Arrow compression (None: none)
    python_unix_domain_socket: bool | None  # None: TCP on 127.0.0.1
    python_udf_arrow: bool | None  # spark.sql.execution.pythonUDF.arrow.enabled (None: on, 4.3's default)
    resize_size: int | None  # preprocess.resize_size (None: the default 256)
    crop_size: int | None  # preprocess.crop_size, the model's input side (None: the default 224)


VARIANT_FIELDS = tuple(variant_field.name for variant_field in fields(Variant))


@dataclass
class Result:
    """One run's result.json. `variant` is None for a job that died before it could say what it was (on
    disk: `{}`); the dict fields are free-form records of their producers."""

    status: str
    variant: Variant | None
    config: dict[str, Any]
    env: dict[str, Any]
    run_dir: str
    started_at: str
    finished_at: str | None = None
    error: dict[str, str] | None = None
    metrics: Metrics = field(default_factory=Metrics)
    dataset: dict[str, Any] = field(default_factory=dict)
    bad_images: list[dict[str, str]] = field(default_factory=list)
    tasks: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    cluster: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    spark_conf: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION


def now() -> str:
    """A result's timestamps: UTC, ISO 8601, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def as_record(result: Result) -> dict[str, Any]:
    """The result as result.json holds it."""
    record = asdict(result)
    if record["variant"] is None:
        record["variant"] = {}
    return record


def write_result(run_dir: Path, result: Result) -> Path:
    """Write RUN_DIR/result.json atomically (`pipeline.rundir.atomic_write`): whole or absent."""
    return atomic_write(RunDir(Path(run_dir)).result, json.dumps(as_record(result), indent=2, default=str))


def read_result(path: Path) -> dict[str, Any]:
    """The record in a result.json, as JSON reads it (`as_result` decodes it)."""
    return json.loads(Path(path).read_text())


def read_results(directories: Iterable[Path]) -> list[tuple[Path, Result]]:
    """Every result.json at or under `directories` that is JSON, decoded, each file once however the directories
    overlap, in path order; found as the reports' job table finds them (`pipeline.rundir.files_named`)."""
    paths = {path.resolve(): None for directory in directories for path in files_named(directory, RESULT_FILE)}
    found = []
    for path in sorted(paths):
        try:
            found.append((path, as_result(read_result(path))))
        except (OSError, json.JSONDecodeError):
            continue
    return found


def _decode(cls: type, record: dict[str, Any], **nested: Any) -> Any:
    """An instance of the dataclass `cls` from the record's fields it knows; unknown keys are dropped, and a
    field the record lacks (or holds null for, where the field has a non-null default) takes its default, or
    None where it has none."""
    values = {}
    for known in fields(cls):
        if known.default is not MISSING:
            default = known.default
        elif known.default_factory is not MISSING:
            default = known.default_factory()
        else:
            default = None
        value = nested[known.name] if known.name in nested else record.get(known.name)
        values[known.name] = default if value is None else value
    return cls(**values)


def as_result(record: dict[str, Any]) -> Result:
    """Any result record on disk as a Result: a whole one, an older one without some fields, a lost job's
    (variant {}), or the `unreadable` stand-in a report makes for a file that is not JSON. Nothing is
    checked or invented: what the record lacks is empty (see `_decode`)."""
    variant = record.get("variant")
    return _decode(
        Result,
        record,
        variant=_decode(Variant, variant) if variant else None,
        metrics=_decode(Metrics, record.get("metrics") or {}),
        config=record.get("config") or {},
        env=record.get("env") or {},
    )


def _has_weights(result: Result) -> bool:
    """The run prepared model weights (not the null model's or a simulated device's none)."""
    return result.metrics.weights_prepare_s is not None and result.env.get("weights") not in (None, "none")


def model_text(model: dict[str, Any]) -> str:
    """A result's model section (env.model) in words: network and weights, input, size once it was built."""
    text = f"{model.get('label')}, input {'x'.join(str(side) for side in model.get('input') or [])}"
    if model.get("resize_size"):
        text += f" (resize {model['resize_size']})"
    parameters = model.get("parameters")
    if parameters:
        size = f"{parameters / 1e6:.1f} M" if parameters >= 100_000 else f"{parameters:,}"
        text += f", {size} parameters, {model.get('classes')} classes"
    return text


def summary(result: Result) -> str:
    """The one screen a run ends with."""
    metrics = result.metrics
    variant = asdict(result.variant) if result.variant else {}
    name = " ".join(f"{key}={value}" for key, value in variant.items() if value is not None)
    lines = [f"status: {result.status}    {name}"]
    if result.error:
        lines.append(f"error: {result.error['type']}: {result.error['message']}")
    model = result.env.get("model") or {}
    if model.get("parameters"):
        lines.append(f"model: {model_text(model)}")
    if metrics.throughput_images_per_s is not None:
        walls = ", ".join(f"{seconds:.2f}" for seconds in metrics.wall_s)
        lines += [
            f"throughput: {metrics.throughput_images_per_s:.2f} images/s (median of {len(metrics.wall_s)} timed "
            f"passes over {metrics.num_images} images; wall s: {walls})",
            f"images: {metrics.num_images} read, {metrics.num_predicted} predicted, {metrics.num_bad_images} bad",
            "not timed: "
            + ", ".join(
                [
                    f"data {metrics.data_prepare_s:.1f} s ({'generated' if metrics.data_generated else 'cached'})",
                    *([f"weights {metrics.weights_prepare_s:.1f} s"] if _has_weights(result) else []),
                    *([f"reference {metrics.reference_s:.1f} s"] if metrics.reference_s else []),
                    f"startup {metrics.startup_s:.1f} s",
                    f"warm-up {sum(metrics.warmup_s):.1f} s",
                ]
            ),
            f"model loads per worker process: {metrics.max_model_loads_per_worker}",
        ]
    if metrics.failed_tasks:
        lines.append(
            f"faults: {metrics.failed_tasks} failed task attempts, {metrics.task_retries} retries, "
            f"{metrics.executors_lost} executors lost (evidence.faults in result.json)"
        )
    for bad in result.bad_images[:10]:
        lines.append(f"  bad image {bad['id']}: {bad['reason']}")
    if len(result.bad_images) > 10:
        lines.append(f"  ... and {len(result.bad_images) - 10} more in result.json")
    if metrics.top1_agreement is not None:
        lines.append(
            f"verify: top-1 agreement {metrics.top1_agreement:.4f}, max |prob diff| {metrics.max_abs_prob_diff:.2e} "
            f"over {metrics.verified_images} images vs the in-process reference"
        )
    device = result.env.get("device")
    if device:
        lines.append(
            f"device: {device['label']}, no GPU ran ({device['kind']} figure: {device['source']})"
            + (f"; overridden: {', '.join(device['overridden'])}" if device.get("overridden") else "")
        )
    usage = result.evidence.get("simulated_device")
    if usage and usage.get("busy_fraction") is not None:
        lines.append(
            f"device busy {usage['busy_fraction']:.0%} of the last pass on {usage['devices']} simulated devices, "
            f"model tasks waited {usage['wait_fraction_of_model_tasks'] or 0:.0%} of their time for one"
        )
    if result.env.get("weights_note"):
        lines.append(f"note: {result.env['weights_note']}")
    lines.append(f"result: {RunDir(Path(result.run_dir)).result}")
    return "\n".join(lines)
