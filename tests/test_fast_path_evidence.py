"""What a run can show the fast paths did, from hand-made task records and event logs: the input waits of each
step, first batch apart from the later ones, and Spark's own count of what crossed to Python."""

from __future__ import annotations

import pytest

from pipeline.spark.fastpaths import evidence, join, python_metrics
from tests.helpers.eventlog import task, write_log

SENT, RUN = "data sent to Python workers", "time to run Python workers"
NO_METRICS = {"bytes_to_python": 0, "bytes_from_python": 0, "python_run_ms": 0, "python_code_ms": 0}


def test_a_tasks_first_wait_is_kept_apart_and_a_per_call_styles_gaps_are_later_waits(tmp_path):
    records = [
        {"step": "fused", "python_worker": {"pipelined": True, "unix_domain": False}, "input_waits": [0.5, 0.01, 0.03]},
        {"step": "fused", "python_worker": {}, "input_waits": [0.7], "between_calls": [0.02, 0.04]},
        {"step": "preprocess", "python_worker": {"unix_domain": True}, "input_waits": []},
    ]
    steps = evidence(records, write_log(tmp_path / "app", []), set())["steps"]
    assert steps["fused"] == {
        "tasks": 2,
        "pipelined_tasks": 1,
        "unix_domain_tasks": 0,
        "input_batches": 6,
        "first_input_wait_s_median": pytest.approx(0.6),
        "later_input_wait_s_median": pytest.approx(0.025),
        "later_input_wait_s_total": pytest.approx(0.10),
    }
    assert steps["preprocess"] == {
        "tasks": 1,
        "pipelined_tasks": 0,
        "unix_domain_tasks": 1,
        "input_batches": 0,
        "first_input_wait_s_median": None,
        "later_input_wait_s_median": None,
        "later_input_wait_s_total": None,
    }


def test_sparks_python_metrics_count_the_successful_attempts_of_the_chosen_stages_only(tmp_path):
    failed, killed = {"Reason": "ExceptionFailure", "Description": "boom"}, {"Reason": "TaskKilled"}
    log = write_log(
        tmp_path / "app.inprogress",
        [
            *task(0, 1, 0, 100, index=0, metrics={SENT: 100, RUN: 30}),
            *task(1, 1, 0, 100, index=1, metrics={SENT: 50, RUN: 10}, reason=failed),
            *task(2, 1, 0, 100, index=1, attempt=1, metrics={SENT: 70, RUN: 20}, reason=killed),
            *task(3, 1, 100, 200, index=1, attempt=2, metrics={SENT: 200, RUN: 40}),
            *task(4, 2, 200, 300, index=0, metrics={SENT: 1000, RUN: 500}),  # another pass's stage
            '{"Event":"SparkListenerTaskEnd","Stage ID":1,"Task In',  # the log of a running application
        ],
    )
    assert python_metrics(log, {1}) == {**NO_METRICS, "bytes_to_python": 300, "python_run_ms": 70}
    assert python_metrics(log, set()) == NO_METRICS


def test_two_applications_evidence_puts_their_steps_side_by_side_and_adds_sparks_counts():
    preprocess = {"steps": {"preprocess": {"tasks": 4}}, "spark_python_metrics": {**NO_METRICS, "bytes_to_python": 10}}
    predict = {"steps": {"predict": {"tasks": 2}}, "spark_python_metrics": {**NO_METRICS, "bytes_to_python": 5}}
    assert join(preprocess, predict) == {
        "steps": {"preprocess": {"tasks": 4}, "predict": {"tasks": 2}},
        "spark_python_metrics": {**NO_METRICS, "bytes_to_python": 15},
    }
    assert join(None, predict) is predict and join(preprocess, None) is preprocess
