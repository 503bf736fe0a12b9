"""Where a pass's time goes: the stage's slot time split into the tasks' own timers and Spark's metrics, part by
part on hand-made event logs, and Spark's metrics as a real pass of the test session's application has them."""

from __future__ import annotations

import pytest

from pipeline.engines.spark import measure
from pipeline.spark.time_split import PARTS, split
from reports import plots
from tests.helpers.config import compose_config
from tests.helpers.eventlog import completed_stages, task, write_log

RUN = "internal.metrics.executorRunTime"
DESERIALIZE = "internal.metrics.executorDeserializeTime"
SCAN = "scan time"


def stage_row(stage_id: int, step: str, duration_s: float, attempt: int = 0) -> dict:
    """A stage attempt's row as the evidence has it."""
    return {"stage_id": stage_id, "attempt": attempt, "step": step, "duration_s": duration_s}


def timers(stage: int, partition: int, **timed) -> dict:
    """A task record (`pipeline.spark.ledger`) of a partition's first attempt with the given timers."""
    return {"stage": stage, "partition": partition, "attempt": 0, **timed}


def part_values(row: dict) -> dict:
    return {part: row[part] for part in (*PARTS, "overlap_s")}


def test_each_part_is_its_timer_or_spark_metric_on_its_steps_slots(tmp_path):
    log = write_log(
        tmp_path / "app",
        [
            *task(0, 0, 0, 1000, index=0, metrics={RUN: 1000, DESERIALIZE: 100, SCAN: 200}),
            *task(1, 0, 0, 1500, index=1, metrics={RUN: 1400, DESERIALIZE: 100, SCAN: 100}),
            *task(2, 1, 2000, 4000, index=0, metrics={RUN: 2000}),
        ],
    )
    records = [
        timers(0, 0, input_waits=[0.2, 0.1], prepare_s=0.5, finish_s=0.1, results_s=0.2),
        timers(0, 1, input_waits=[0.3], between_calls=[0.1], prepare_s=0.6, finish_s=0.1, results_s=0.1),
        timers(1, 0, input_waits=[0.1], finish_s=1.5, results_s=0.2),
    ]
    stages = [stage_row(0, "preprocess", 2.0), stage_row(1, "predict", 3.0)]
    preprocess, predict = split(log, stages, records, {True: 2, False: 4})
    # preprocessing on the 4 slots, the model on its 2: 2.6 s of run time, 0.3 s of it the scan
    assert (preprocess["slots"], preprocess["slot_s"], preprocess["task_run_s"]) == (4, 8.0, pytest.approx(2.6))
    assert part_values(preprocess) == pytest.approx(
        {
            "jvm_scan_s": 0.3,
            "rows_to_python_s": 0.4,  # 0.7 s of waits and gaps between calls, less the scan
            "prepare_s": 1.1,
            "model_s": 0.2,
            "results_back_s": 0.3,
            "other_task_s": 0.3,
            "idle_slot_s": 5.4,
            "overlap_s": 0.0,
        }
    )
    assert (predict["slots"], predict["slot_s"], predict["task_run_s"]) == (2, 6.0, 2.0)
    assert part_values(predict) == pytest.approx(
        {
            "jvm_scan_s": 0.0,
            "rows_to_python_s": 0.1,
            "prepare_s": 0.0,
            "model_s": 1.5,
            "results_back_s": 0.2,
            "other_task_s": 0.2,
            "idle_slot_s": 4.0,
            "overlap_s": 0.0,
        }
    )


def test_timers_longer_than_the_run_time_are_an_overlap_not_negative_other_time(tmp_path):
    log = write_log(tmp_path / "app", task(0, 0, 0, 1000, metrics={RUN: 1000}))
    records = [timers(0, 0, prepare_s=0.8, finish_s=0.6)]  # prefetch prepared while the model ran
    [row] = split(log, [stage_row(0, "fused", 1.0)], records, {True: 1, False: 1})
    assert (row["other_task_s"], row["overlap_s"]) == (0.0, pytest.approx(0.4))


def test_a_scan_longer_than_the_waits_leaves_no_negative_transfer_time(tmp_path):
    log = write_log(tmp_path / "app", task(0, 0, 0, 1000, metrics={RUN: 1000, SCAN: 500}))
    [row] = split(log, [stage_row(0, "fused", 1.0)], [timers(0, 0, input_waits=[0.2])], {True: 1, False: 1})
    assert (row["jvm_scan_s"], row["rows_to_python_s"]) == (0.5, 0.0)


def test_a_failed_attempt_held_its_slot_and_counts_in_the_run_time(tmp_path):
    boom = {"Reason": "ExceptionFailure", "Description": "boom"}
    log = write_log(
        tmp_path / "app",
        [
            *task(0, 0, 0, 300, index=0, metrics={RUN: 300}, reason=boom),
            *task(1, 0, 300, 1000, index=0, attempt=1, metrics={RUN: 700}),
        ],
    )
    [row] = split(log, [stage_row(0, "fused", 1.0)], [timers(0, 0) | {"attempt": 1}], {True: 1, False: 1})
    assert row["task_run_s"] == pytest.approx(1.0)


def test_a_stage_run_again_splits_each_attempt_once(tmp_path):
    # attempt 0 ran partitions 0 and 1; partition 1's output was lost and attempt 1 ran it again (its task
    # attempt numbers restart at 0), which is the record the ledger kept; stage 5 is another pass's
    log = write_log(
        tmp_path / "app",
        [
            *task(0, 0, 0, 1000, index=0, metrics={RUN: 1000}),
            *task(1, 0, 0, 1000, index=1, metrics={RUN: 1000}),
            *task(2, 0, 2000, 2500, index=1, stage_attempt=1, metrics={RUN: 500}),
            *task(3, 5, 3000, 4000, index=0, metrics={RUN: 9000}),
        ],
    )
    records = [timers(0, 0, prepare_s=0.4), timers(0, 1, prepare_s=0.3)]
    stages = [stage_row(0, "fused", 2.0), stage_row(0, "fused", 1.0, attempt=1)]
    first, again = split(log, stages, records, {True: 2, False: 2})
    assert [(row["attempt"], row["task_run_s"], row["prepare_s"]) for row in (first, again)] == [
        (0, 2.0, 0.4),
        (1, 0.5, 0.3),
    ]
    assert (first["other_task_s"], again["other_task_s"]) == pytest.approx((1.6, 0.2))  # partition 1's redone work


@pytest.mark.parametrize("style", ["map_in_pandas", "scalar_pandas_udf"])
def test_a_real_pass_has_sparks_metrics_and_every_record_in_its_stage(spark, tmp_path, tiny_dataset, inference, style):
    config = compose_config(f"udf={style}", "warmup=1", "repeats=1")
    records = measure(spark, config, tiny_dataset, inference, tmp_path, predict_slots=2).timed[0].tasks["records"]
    step_of = {record["stage"]: record["step"] for record in records}
    log_dir, stages = completed_stages(spark, lambda stage: stage["stage_id"] in step_of)
    [row] = split(log_dir, [{**stage, "step": step_of[stage["stage_id"]]} for stage in stages], records, {True: 2})
    assert row["step"] == "fused" and row["prepare_s"] > 0 and row["model_s"] > 0
    assert row["prepare_s"] == pytest.approx(sum(record["prepare_s"] for record in records))  # each record once
    assert all(record["prepare_cpu_s"] > 0 for record in records if record["rows_in"])  # its CPU beside its wall
    spark_metrics = row["spark"]
    assert spark_metrics["executor_run_s"] > 0 and spark_metrics["executor_cpu_s"] > 0
    assert spark_metrics["python_run_s"] > 0 and spark_metrics["bytes_to_python"] > 0  # the Python UDF SQL metrics


def test_the_report_stacks_each_run_parts_and_skips_runs_without_them():
    parts = {part: float(number) for number, part in enumerate(PARTS, 1)}
    runs = [("a", {"evidence": {"time": [parts, parts]}}), ("torch", {"evidence": {}})]
    chart = plots.time_split(runs)
    [ax] = chart.figure.axes
    assert [bar.get_width() for bar in ax.patches] == [2.0 * number for number in range(1, len(PARTS) + 1)]
    assert plots.time_split(runs[1:]) is None
