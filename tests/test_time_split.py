"""Where a pass's time goes: the stage's slot time split into the tasks' own timers and Spark's metrics,
on a real pass of the test session's application."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest

from pipeline.engines.spark import measure
from pipeline.spark.eventlog import event_log_file, stages
from pipeline.spark.time_split import PARTS, split
from reports import plots
from tests.helpers.config import compose_config


@pytest.mark.parametrize("style", ["map_in_pandas", "scalar_pandas_udf"])
def test_a_stage_slot_time_is_split_into_parts_that_add_up(spark, tmp_path, tiny_dataset, inference, style):
    config = compose_config(f"udf={style}", "warmup=1", "repeats=1")
    records = measure(spark, config, tiny_dataset, inference, tmp_path, predict_slots=2).timed[0].tasks["records"]
    log_dir = Path(urlparse(spark.conf.get("spark.eventLog.dir")).path)
    step_of = {record["stage"]: record["step"] for record in records}
    rows = [
        {**stage, "step": step_of[stage["stage_id"]]}
        for stage in stages(event_log_file(log_dir))
        if stage["stage_id"] in step_of
    ]
    [row] = split(log_dir, rows, records, {True: 2, False: 2})
    assert row["step"] == "fused" and row["slot_s"] == pytest.approx(row["wall_s"] * 2)
    assert row["prepare_s"] > 0 and row["model_s"] > 0 and row["results_back_s"] >= 0
    assert row["spark"]["executor_run_s"] > 0 and row["spark"]["executor_cpu_s"] > 0
    assert row["spark"]["python_run_s"] > 0 and row["spark"]["bytes_to_python"] > 0  # the Python UDF SQL metrics
    # other and idle are what is left: the parts cover the slot time (or the run time, if clock skew made it
    # longer), plus what overlapped
    covered = max(row["slot_s"], row["task_run_s"]) + row["overlap_s"]
    assert sum(row[part] for part in PARTS) == pytest.approx(covered, rel=1e-6)


def test_the_report_stacks_each_run_parts_and_skips_runs_without_them():
    parts = {part: float(number) for number, part in enumerate(PARTS, 1)}
    runs = [("a", {"evidence": {"time": [parts, parts]}}), ("torch", {"evidence": {}})]
    chart = plots.time_split(runs)
    [ax] = chart.figure.axes
    assert [bar.get_width() for bar in ax.patches] == [2.0 * number for number in range(1, len(PARTS) + 1)]
    assert plots.time_split(runs[1:]) is None
