"""Where a pass's time goes, per stage: the stage's slot time split into its parts.

A stage of wall time W on S slots has W x S slot-seconds. Spark's own metrics (its tasks' accumulable updates
in the event log) give the executors' run and CPU time, GC, shuffle bytes, the scan time of the Parquet
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
holds is only as exact as those timers, which docs/methodology.md discusses with measurements.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.inference.steps import STEPS
from pipeline.spark.eventlog import task_metrics

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


def _spark_metrics(ended: list[dict[str, Any]], attempts: set[tuple[int, int]]) -> dict[tuple[int, int], dict]:
    """Spark's own metrics of each stage attempt (stage id, attempt) in `attempts`, summed over its task attempts
    that ended (`ended`: `eventlog.task_metrics`; failed and killed ones too: they held their slots, and
    Spark's stage totals count them), in seconds, bytes and counts as SPARK_METRICS names them. Summed from
    the tasks, not read from the stage's own accumulables: a SQL metric's there is its running total, which
    a stage's later attempt carries with the earlier attempts' counts in it."""
    found: dict[tuple[int, int], dict[str, float]] = {key: {} for key in attempts}
    for task in ended:
        metrics = found.get((task["stage_id"], task["stage_attempt"]))
        if metrics is None:
            continue
        for name, value in task["metrics"].items():
            if name in SPARK_METRICS:
                key, divisor = SPARK_METRICS[name]
                metrics[key] = metrics.get(key, 0.0) + value / divisor
    return found


def _ran_in(ended: list[dict[str, Any]], records: list[dict[str, Any]], last: dict[int, int]) -> list[int | None]:
    """The stage attempt each task record ran in: that of the latest task attempt (by task id, as the ledger
    keeps a partition's latest) of its stage, partition and attempt number, which restarts in every stage
    attempt; the stage's `last` attempt for a record the log does not show."""
    ran = {(task["stage_id"], task["partition_id"], task["attempt"]): task["stage_attempt"] for task in ended}
    return [
        ran.get((record["stage"], record["partition"], record["attempt"]), last.get(record["stage"]))
        for record in records
    ]


def split(
    event_log: Path, stages: list[dict[str, Any]], records: list[dict[str, Any]], slots: dict[bool, int]
) -> list[dict[str, Any]]:
    """One row per stage attempt of `stages` (evidence stage rows of one pass) that ran a step: its wall time,
    slot time (on `slots[runs_model]` slots: a model stage may run on fewer), the parts (PARTS, slot-seconds)
    and Spark's own metrics (`spark`).

    A stage Spark ran again (a lost executor's output recomputed) has a row per attempt, each with its own
    wall time and Spark's metrics, and the timers of the task records that ran in it. A partition's record
    is its latest attempt's, so an earlier stage attempt's work that a later one redid counts once, in the
    later row's parts; in its own row it is `other_task_s`."""
    rows = [stage for stage in stages if stage.get("step")]
    last: dict[int, int] = {}
    for stage in rows:
        last[stage["stage_id"]] = max(last.get(stage["stage_id"], 0), stage["attempt"])
    ended = task_metrics(event_log)
    metrics = _spark_metrics(ended, {(stage["stage_id"], stage["attempt"]) for stage in rows})
    ran_in = _ran_in(ended, records, last)
    result = []
    for stage in rows:
        key = (stage["stage_id"], stage["attempt"])
        mine = [record for record, attempt in zip(records, ran_in) if (record["stage"], attempt) == key]
        spark = metrics[key]
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
                "attempt": key[1],
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
