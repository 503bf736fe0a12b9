"""Where a pass's time goes, per stage: the stage's slot time split into its parts.

A stage of wall time W on S slots has W x S slot-seconds. Spark's own metrics (the stage's accumulables in
the event log) give the executors' run and CPU time, GC, shuffle bytes, the scan time of the Parquet
read and the Python UDF SQL metrics; the tasks' own timers (`pipeline.spark.ledger`) give the waits for
Spark's next batch, decode + preprocess, the model and handing results back. Parts, in slot-seconds:

- `jvm_scan_s`: the Parquet scan ("scan time");
- `rows_to_python_s`: the Python side's wait for its next batch less the scan (Arrow conversion and the
  transfer of the rows to the Python worker; never below 0); for the per-call styles (a scalar pandas UDF,
  predict_batch_udf) the time between one call's return and the next call, which also holds the last
  result's way back to the JVM;
- `prepare_s`: decode + preprocess; `model_s`: the model phase (a preprocess stage: its crop bytes);
- `results_back_s`: results converted and handed back until Spark asked for more, which includes the
  work downstream of the UDF (the noop sink, a shuffle write) in the same task;
- `other_task_s`: the rest of the executors' run time (Python worker start, task setup, the UDF harness);
  `overlap_s` instead when the parts add up to more than the run time (prefetch prepares batches in a
  thread while the model runs);
- `idle_slot_s`: slot time no task ran in (scheduling, stragglers, the driver between stages).

The parts add up to the slot time by construction (other and idle are what is left); what each of them
holds is only as exact as those timers, which the README discusses with measurements.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.inference.steps import STEPS
from pipeline.spark.eventlog import event_log_file

STAGE_COMPLETED = "SparkListenerStageCompleted"
SPARK_METRICS = {  # accumulable name -> (key, divisor to seconds or 1 for counts and bytes)
    "internal.metrics.executorRunTime": ("executor_run_s", 1e3),
    "internal.metrics.executorDeserializeTime": ("executor_deserialize_s", 1e3),
    "internal.metrics.executorCpuTime": ("executor_cpu_s", 1e9),
    "internal.metrics.jvmGCTime": ("gc_s", 1e3),
    "internal.metrics.shuffle.write.bytesWritten": ("shuffle_write_bytes", 1),
    "internal.metrics.shuffle.read.remoteBytesRead": ("shuffle_remote_read_bytes", 1),
    "internal.metrics.shuffle.read.localBytesRead": ("shuffle_local_read_bytes", 1),
    "scan time": ("scan_s", 1e3),
    "time to start Python workers": ("python_start_s", 1e3),
    "time to initialize Python workers": ("python_init_s", 1e3),
    "time to run Python workers": ("python_run_s", 1e3),
    "time to execute Python code": ("python_code_s", 1e3),
    "data sent to Python workers": ("bytes_to_python", 1),
    "data returned from Python workers": ("bytes_from_python", 1),
}
PARTS = (
    "jvm_scan_s",
    "rows_to_python_s",
    "prepare_s",
    "model_s",
    "results_back_s",
    "other_task_s",
    "idle_slot_s",
)


def stage_metrics(event_log_dir: Path, stage_ids: set[int]) -> dict[int, dict[str, float]]:
    """Spark's own metrics of each stage in `stage_ids`, summed over its tasks (its completed attempt's
    accumulables), in seconds, bytes and counts as SPARK_METRICS names them."""
    found: dict[int, dict[str, float]] = {}
    with event_log_file(event_log_dir).open() as lines:
        for line in lines:
            if STAGE_COMPLETED not in line:
                continue
            info = json.loads(line).get("Stage Info") or {}
            if info.get("Stage ID") not in stage_ids:
                continue
            metrics: dict[str, float] = {}
            for accumulable in info.get("Accumulables") or []:
                known = SPARK_METRICS.get(accumulable.get("Name"))
                if known is None:
                    continue
                key, divisor = known
                try:
                    metrics[key] = metrics.get(key, 0.0) + float(accumulable.get("Value")) / divisor
                except (TypeError, ValueError):
                    continue
            found[info["Stage ID"]] = metrics
    return found


def split(
    event_log_dir: Path, stages: list[dict[str, Any]], records: list[dict[str, Any]], slots: dict[bool, int]
) -> list[dict[str, Any]]:
    """One row per stage of `stages` (evidence stage rows of one pass) that ran a step: its wall time, slot
    time (on `slots[runs_model]` slots: a model stage may run on fewer), the parts (PARTS, slot-seconds) and
    Spark's own metrics (`spark`)."""
    rows = [stage for stage in stages if stage.get("step")]
    metrics = stage_metrics(event_log_dir, {stage["stage_id"] for stage in rows})
    result = []
    for stage in rows:
        mine = [record for record in records if record["stage"] == stage["stage_id"]]
        spark = metrics.get(stage["stage_id"], {})
        wall = stage.get("duration_s") or 0.0
        width = slots[STEPS[stage["step"]].runs_model]
        slot_s = wall * width
        run_s = spark.get("executor_run_s", 0.0) + spark.get("executor_deserialize_s", 0.0)
        waited = sum(sum(record.get("input_waits", [])) + sum(record.get("between_calls", [])) for record in mine)
        scan = spark.get("scan_s", 0.0)
        parts = {
            "jvm_scan_s": scan,
            "rows_to_python_s": max(0.0, waited - scan),
            "prepare_s": sum(record.get("prepare_s", 0.0) for record in mine),
            "model_s": sum(record.get("finish_s", 0.0) for record in mine),
            "results_back_s": sum(record.get("results_s", 0.0) for record in mine),
        }
        left = run_s - sum(parts.values())
        parts["other_task_s"] = max(0.0, left)
        parts["idle_slot_s"] = max(0.0, slot_s - run_s)
        result.append(
            {
                "stage_id": stage["stage_id"],
                "step": stage["step"],
                "wall_s": wall,
                "slots": width,
                "slot_s": slot_s,
                "task_run_s": run_s,
                "overlap_s": max(0.0, -left),
                **parts,
                "spark": spark,
            }
        )
    return result
