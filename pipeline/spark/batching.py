"""Whether a run's batch axes took effect, from the batches its tasks report they were handed.

`spark.max_records_per_batch` and `model.batch_size` are requests: Spark 4.3 cuts the Arrow batches it hands
a UDF at whichever comes first of maxRecordsPerBatch rows, maxBytesPerBatch bytes
(`spark.sql.execution.arrow.maxBytesPerBatch`, internal, 64 MiB by default) and, for a scalar UDF over a
vectorized Parquet scan, one Parquet row group (measured; see docs/methodology.md, batching). A scalar UDF
and predict_batch_udf run the model on one Arrow batch at a time, so a capped Arrow batch caps the model
batch too. Nothing in Spark says so; the task records do (`pipeline.spark.ledger`): a stage whose largest
batch is smaller than both the request and a task's rows did not get what was asked, and the cap that won
is named from what was measured (a batch within one row group of the data set; a batch whose bytes plus
one more row pass maxBytesPerBatch).
"""

from __future__ import annotations

import statistics
from typing import Any

from pipeline.config.schema import Config, UdfStyle
from pipeline.inference.steps import STEPS

MAX_BYTES_KEY = "spark.sql.execution.arrow.maxBytesPerBatch"
DEFAULT_MAX_BYTES_PER_BATCH = 64 * 2**20  # Spark 4.3's default for the internal conf (checked by a test)
BATCH_FIELDS = ("udf_call_rows", "udf_call_bytes", "model_call_rows")


def spread(values: list[int]) -> dict[str, float] | None:
    """min, median, max and count of one kind of batch, None when there was none."""
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "count": len(values)}


def batch_sizes(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per stage of one pass (model stages and the others): the rows of the batches Spark handed the UDF,
    their Arrow bytes and the rows of the model calls, each as `spread`, from the tasks' own reports."""
    stages: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for record in records:
        stages.setdefault((record["step"], record["stage"]), []).append(record)
    return [
        {
            "step": step,
            "stage_id": stage,
            "runs_model": STEPS[step].runs_model,
            "tasks": len(tasks),
            **{name: spread([value for task in tasks for value in task.get(name, [])]) for name in BATCH_FIELDS},
        }
        for (step, stage), tasks in sorted(stages.items(), key=lambda item: item[0][1])
    ]


def max_bytes_per_batch(conf: dict[str, str]) -> int:
    """The maxBytesPerBatch the application ran with: its conf, else Spark's default."""
    value = conf.get(MAX_BYTES_KEY)
    return int(value) if value is not None else DEFAULT_MAX_BYTES_PER_BATCH


def _short_tasks(records: list[dict[str, Any]], field: str, requested: int) -> list[dict[str, Any]]:
    """The tasks whose largest batch of `field` is smaller than both the request and the rows they had: the
    request did not take effect there (a task with fewer rows than asked for had them all in one batch)."""
    return [
        record for record in records if record.get(field) and max(record[field]) < min(requested, sum(record[field]))
    ]


def _udf_cap(records: list[dict[str, Any]], row_group_rows: int, max_bytes: int) -> str:
    """Which cap won over the Arrow batches of `records` (tasks of one step)."""
    largest = max(max(record["udf_call_rows"]) for record in records)
    rows = sum(sum(record["udf_call_rows"]) for record in records)
    row_bytes = sum(sum(record["udf_call_bytes"]) for record in records) / max(1, rows)
    biggest = max(max(record["udf_call_bytes"]) for record in records)
    if biggest + row_bytes > max_bytes:
        return (
            f"{MAX_BYTES_KEY}={max_bytes} (spark.max_bytes_per_batch): the largest batch held {biggest} bytes "
            f"({largest} rows of about {row_bytes:.0f} bytes), and one more row would pass the limit"
        )
    if STEPS[records[0]["step"]].reads_images and row_group_rows and largest <= row_group_rows:
        return (
            f"the data set's Parquet row groups of {row_group_rows} rows (dataset.row_group_size): Spark's "
            f"vectorized reader hands the UDF at most one row group per batch (largest batch {largest} rows)"
        )
    return f"not named by what was measured: the largest batch had {largest} rows"


def check_batches(
    records: list[dict[str, Any]], config: Config, conf: dict[str, str], row_group_rows: int
) -> dict[str, Any]:
    """`evidence.checks` entries for the batch axes of one pass's task `records`.

    `batch_axes_took_effect` is False when a request was cut short, and `batch_caps` then names, per axis
    and step, the cap that won; `batching` keeps what was requested and the largest batches seen. A style
    whose Arrow batches the UDF cannot see (predict_batch_udf slices them before calling us;
    rdd_map_partitions has none) is not checked for maxRecordsPerBatch.
    """
    max_bytes = max_bytes_per_batch(conf)
    requested_records, requested_batch = config.spark.max_records_per_batch, config.model.batch_size
    caps: list[str] = []
    batching: dict[str, Any] = {
        "max_records_per_batch": requested_records,
        "max_bytes_per_batch": max_bytes,
        "model_batch_size": requested_batch,
        "row_group_rows": row_group_rows,
        "largest_udf_call_rows": {},
        "largest_model_call_rows": {},
    }
    steps = sorted({record["step"] for record in records})
    sees_arrow_batches = config.udf.style not in (UdfStyle.predict_batch_udf, UdfStyle.rdd_map_partitions)
    for step in steps:
        mine = [record for record in records if record["step"] == step]
        udf_calls = [value for record in mine for value in record.get("udf_call_rows", [])]
        model_calls = [value for record in mine for value in record.get("model_call_rows", [])]
        if udf_calls:
            batching["largest_udf_call_rows"][step] = max(udf_calls)
        if model_calls:
            batching["largest_model_call_rows"][step] = max(model_calls)
        short = _short_tasks(mine, "udf_call_rows", requested_records) if sees_arrow_batches else []
        if short:
            caps.append(
                f"spark.max_records_per_batch={requested_records} did not take effect in the {step} step: "
                f"capped by {_udf_cap(short, row_group_rows, max_bytes)}"
            )
        if STEPS[step].runs_model and _short_tasks(mine, "model_call_rows", requested_batch):
            cause = (
                f"the Arrow batches it was handed (largest {max(udf_calls)} rows; a {config.udf.style.value} "
                "runs the model on one batch at a time)"
                if udf_calls and max(udf_calls) < requested_batch
                else "not named by what was measured"
            )
            caps.append(
                f"model.batch_size={requested_batch} did not take effect in the {step} step (largest model call "
                f"{max(model_calls)} rows): capped by {cause}"
            )
    return {"batch_axes_took_effect": not caps, "batch_caps": caps, "batching": batching}
