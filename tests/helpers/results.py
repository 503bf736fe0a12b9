"""Hand-made results for report tests, built on the result contract (`pipeline.results`), so that a record has
the fields, names and shape a job writes and the reports read: a field the contract renames fails here first."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.results import VARIANT_FIELDS, Metrics, Result, Variant, now, write_result

# a Spark run of the null model on 64 synthetic JPEGs, unless a test says otherwise
VARIANT = {
    "engine": "spark",
    "udf": "map_in_pandas",
    "topology": "fused",
    "cluster": "local",
    "batch_size": 32,
    "model": "null_model",
    "dataset_source": "synthetic",
    "image_format": "jpeg",
    "decoder": "pil",
}
SPARK_ONLY = ("udf", "topology", "cluster")


def result(
    images_per_s: float | Sequence[float] = (),
    *,
    status: str = "ok",
    num_images: int = 64,
    first: float | None = None,
    hostname: str = "here",
    error: dict[str, str] | None = None,
    config: dict[str, Any] | None = None,
    cluster_record: dict[str, Any] | None = None,
    evidence: dict[str, Any] | None = None,
    tasks: dict[str, Any] | None = None,
    process_cpu_s: dict[str, list[float]] | None = None,
    **variant: Any,
) -> Result:
    """One run's result: VARIANT updated with `variant` (Spark's fields empty for another engine unless given),
    a timed pass over `num_images` at each of `images_per_s` (the metrics `pipeline.run` derives from the walls
    those rates take), and a warm-up pass at `first` images/s. `cluster_record` is the result's `cluster` (the
    variant's cluster mode is `cluster`); `process_cpu_s` the CPU seconds of each timed pass by kind of process."""
    fields = dict.fromkeys(VARIANT_FIELDS) | VARIANT | variant
    if fields["engine"] != "spark":
        fields |= {key: variant.get(key) for key in SPARK_ONLY}
    rates = [images_per_s] if isinstance(images_per_s, (int, float)) else list(images_per_s)
    walls = [num_images / rate for rate in rates]
    metrics = Metrics(
        num_images=num_images,
        wall_s=walls,
        warmup_s=[num_images / first] if first else [],
        process_cpu_s=process_cpu_s or {},
    )
    if walls:
        metrics.throughput_per_repeat = [num_images / wall for wall in walls]
        metrics.throughput_images_per_s = num_images / statistics.median(walls)
    return Result(
        status=status,
        variant=Variant(**fields),
        config=config or {},
        env={"hostname": hostname},
        run_dir="",
        started_at=now(),
        error=error,
        metrics=metrics,
        cluster=cluster_record or {},
        evidence=evidence or {},
        tasks=tasks or {},
    )


def write(job_dir: Path, images_per_s: float | Sequence[float] = (), **kwargs: Any) -> Path:
    """`result(images_per_s, **kwargs)` written as JOB_DIR/result.json, as the job writes it."""
    made = result(images_per_s, **kwargs)
    made.run_dir = str(job_dir)
    return write_result(job_dir, made)
