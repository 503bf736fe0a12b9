"""The one result schema: what a run measured, on what, with which settings; written atomically by the job."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from pipeline.schema import Config, DecodeOn, ModelName
from pipeline.inference.weights import weights_kind

SCHEMA_VERSION = 1
RESULT_FILE = "result.json"
PACKAGES = ("pyspark", "torch", "torchvision", "pyarrow", "pandas", "numpy", "pillow", "hydra-core")


@dataclass
class Metrics:
    num_images: int | None = None
    num_predicted: int | None = None
    num_bad_images: int | None = None
    wall_s: list[float] = field(default_factory=list)
    warmup_s: list[float] = field(default_factory=list)
    job_s: dict[str, list[float]] = field(default_factory=dict)
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
class Result:
    status: str
    variant: dict[str, Any]
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
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def variant_of(config: Config) -> dict[str, Any]:
    """The choices and knobs that make this run a variant; the report groups and labels by these."""
    spark = config.engine.name.value == "spark"
    return {
        "engine": config.engine.name.value,
        "udf": config.udf.style.value if spark else None,
        "topology": config.topology.kind.value if spark else None,
        "cluster": config.cluster.mode.value if spark else None,
        "prefetch": getattr(config.udf, "prefetch", 0) or None,  # iterator_pandas_udf only
        "rebuild_model_per_batch": getattr(config.udf, "rebuild_model_per_batch", False) or None,  # scalar only
        "loader_workers": config.engine.loader_workers if config.engine.name.value == "torch" else None,
        "batch_size": config.model.batch_size,
        "max_records_per_batch": config.spark.max_records_per_batch if spark else None,
        "partitions": config.spark.partitions if spark else None,
        "python_worker_reuse": config.spark.python_worker_reuse if spark else None,
        "gpu_task_amount": config.gpu.task_amount if spark else None,
        "sink": config.sink.value,
        "dataset_source": config.dataset.source.value,
        "image_format": config.dataset.format.value,
        "weights": _weights(config),
        "model": config.model.name.value,
        "precision": config.model.precision.value,
        "channels_last": None if config.model.channels_last else False,
        "compile": config.model.compile or None,
        "decoder": config.preprocess.decoder.value,
        "decode_on": None if config.preprocess.decode_on is DecodeOn.task else config.preprocess.decode_on.value,
    }


def _weights(config: Config) -> str:
    return "none" if config.model.name is ModelName.null_model else weights_kind(config.model.weights)


def _git_sha() -> str | None:
    source = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=source, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if sha.returncode != 0:
        return None
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(config: Config) -> dict[str, Any]:
    """What the run ran on. Imported lazily: torch's CUDA probe is only worth paying once per run."""
    import torch

    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    weights = _weights(config)
    return {
        "python": platform.python_version(),
        "versions": versions,
        "platform": platform.platform(),
        "hostname": platform.node(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "gpu_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "gpus": "none",
        "weights": weights,
        "weights_note": "random weights: predictions are deterministic but accuracy is meaningless"
        if weights == "random"
        else None,
        "git_sha": _git_sha(),
    }


def config_record(config: Config) -> dict[str, Any]:
    """The config as a result records it."""
    return OmegaConf.to_container(OmegaConf.structured(config), enum_to_str=True)


def new_result(config: Config, run_dir: Path) -> Result:
    return Result(
        status="running",
        variant=variant_of(config),
        config=config_record(config),
        env=environment(config),
        run_dir=str(run_dir),
        started_at=now(),
    )


def write_result(run_dir: Path, result: Result) -> Path:
    """Write result.json atomically: a temp file in the same directory, then a rename."""
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / RESULT_FILE
    staging = run_dir / f".{RESULT_FILE}.{os.getpid()}.tmp"
    staging.write_text(json.dumps(asdict(result), indent=2, default=str))
    os.replace(staging, target)
    return target


def read_result(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def as_result(record: dict[str, Any]) -> Result:
    """A result.json record as a Result."""
    return Result(**{**record, "metrics": Metrics(**record["metrics"])})


def summary(result: Result) -> str:
    """The one screen a run ends with."""
    metrics, variant = result.metrics, result.variant
    name = " ".join(f"{key}={value}" for key, value in variant.items() if value is not None)
    lines = [f"status: {result.status}    {name}"]
    if result.error:
        lines.append(f"error: {result.error['type']}: {result.error['message']}")
    if metrics.throughput_images_per_s is not None:
        walls = ", ".join(f"{seconds:.2f}" for seconds in metrics.wall_s)
        lines += [
            f"throughput: {metrics.throughput_images_per_s:.2f} images/s (median of {len(metrics.wall_s)} timed "
            f"passes over {metrics.num_images} images; wall s: {walls})",
            f"images: {metrics.num_images} read, {metrics.num_predicted} predicted, {metrics.num_bad_images} bad",
            f"not timed: data {metrics.data_prepare_s:.1f} s ({'generated' if metrics.data_generated else 'cached'}), "
            f"startup {metrics.startup_s:.1f} s, warm-up {sum(metrics.warmup_s):.1f} s",
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
    if result.env.get("weights_note"):
        lines.append(f"note: {result.env['weights_note']}")
    lines.append(f"result: {Path(result.run_dir) / RESULT_FILE}")
    return "\n".join(lines)
