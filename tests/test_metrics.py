"""pipeline.spark.eventlog: stage, task and executor facts read back from Spark event logs.

Most tests read one real event log, written once per module by a small Spark application (local[2]) run in a
subprocess; the rest use hand-made logs in Spark's own JSON format to pin down one behaviour each.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.spark import eventlog as metrics
from tests.helpers.eventlog import EPOCH_MS, job_start, stage_event, task, task_event, write_log

SLEEP_S = 0.5
PARTITIONS = 4
DESCRIPTIONS = ["pass 1 (warm-up) x", "pass 2 (timed) x"]

# Two passes of the shape every variant has: mapInPandas over 4 partitions (each task sleeps 0.5 s), then a
# repartition(1) stage, written to the noop sink; each pass labelled as spark_engine.measure labels it.
APP = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from pyspark.sql import SparkSession

    log_dir, sleep_s, partitions, descriptions = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
    conf = {
        "spark.master": "local[2]",
        "spark.app.name": "test-metrics",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.adaptive.enabled": "false",
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": log_dir.resolve().as_uri(),
        "spark.eventLog.compress": "false",
        "spark.eventLog.rolling.enabled": "false",
    }
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    try:
        def slow(batches):
            time.sleep(sleep_s)
            yield from batches

        frame = spark.range(0, 2 * partitions, 1, partitions).mapInPandas(slow, "id long").repartition(1)
        for description in descriptions:
            spark.sparkContext.setJobDescription(description)
            frame.write.format("noop").mode("overwrite").save()
    finally:
        spark.stop()
    """
)


@pytest.fixture(scope="module")
def event_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The event log of APP, run once in its own process (so no SparkSession of the test process is touched)."""
    work = tmp_path_factory.mktemp("metrics-app")
    log_dir = work / "eventlog"
    log_dir.mkdir()
    env = dict(
        os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable
    )
    command = [sys.executable, "-c", APP, str(log_dir), str(SLEEP_S), str(PARTITIONS), *DESCRIPTIONS]
    # Its own process group, so that a timeout ends the JVM and Python workers it started, and nothing else.
    process = subprocess.Popen(
        command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"the Spark application did not finish in 240 s:\n{output[-3000:]}")
    assert process.returncode == 0, output[-3000:]
    return metrics.event_log_file(log_dir)


# --------------------------------------------------------------------------------------------- max_concurrent


def test_max_concurrent_counts_overlapping_intervals() -> None:
    assert metrics.max_concurrent([(0, 10), (1, 3), (2, 4), (5, 6)]) == 3


def test_max_concurrent_end_frees_the_slot_for_a_start_at_the_same_time() -> None:
    assert metrics.max_concurrent([(0, 1), (1, 2), (2, 3)]) == 1


def test_max_concurrent_of_nothing_is_zero() -> None:
    assert metrics.max_concurrent([]) == 0


def test_max_concurrent_counts_a_zero_length_interval_inside_another() -> None:
    assert metrics.max_concurrent([(0, 2), (1, 1)]) == 2


def test_max_concurrent_rejects_an_interval_that_ends_before_it_starts() -> None:
    with pytest.raises(ValueError, match="ends before"):
        metrics.max_concurrent([(2, 1)])


# --------------------------------------------------------------------------------------------- event_log_file


def test_event_log_file_prefers_the_finished_log_to_an_inprogress_one(tmp_path: Path) -> None:
    (tmp_path / "local-1.inprogress").write_text("")
    (tmp_path / "local-2").write_text("")
    assert metrics.event_log_file(tmp_path) == tmp_path / "local-2"


def test_event_log_file_takes_a_lone_inprogress_log(tmp_path: Path) -> None:
    (tmp_path / "local-1.inprogress").write_text("")
    assert metrics.event_log_file(tmp_path) == tmp_path / "local-1.inprogress"


def test_event_log_file_refuses_several_applications(tmp_path: Path) -> None:
    (tmp_path / "local-1").write_text("")
    (tmp_path / "local-2").write_text("")
    with pytest.raises(ValueError, match="several"):
        metrics.event_log_file(tmp_path)


def test_event_log_file_refuses_an_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        metrics.event_log_file(tmp_path)


def test_event_log_file_refuses_a_compressed_log(tmp_path: Path) -> None:
    (tmp_path / "local-1.zstd").write_text("")
    with pytest.raises(ValueError, match="compress"):
        metrics.event_log_file(tmp_path)


# --------------------------------------------------------------------------------------------- a real log
# (slow: the log of an application the module runs in its own process)


@pytest.mark.slow
def test_real_log_has_two_stages_per_pass_in_submission_order(event_log: Path) -> None:
    found = metrics.stages(event_log)
    assert [(s["stage_id"], s["attempt"]) for s in found] == [(0, 0), (1, 0), (2, 0), (3, 0)]
    assert [s["parent_ids"] for s in found] == [[], [0], [], [2]]
    assert all(s["name"].startswith("save at ") for s in found)  # a DataFrame action names its stages


@pytest.mark.slow
def test_real_log_runs_one_task_per_partition(event_log: Path) -> None:
    found = metrics.stages(event_log)
    assert [(s["num_tasks"], s["tasks"], s["failed_tasks"]) for s in found] == [
        (PARTITIONS, PARTITIONS, 0),
        (1, 1, 0),
    ] * 2
    assert len(metrics.tasks(event_log)) == 2 * (PARTITIONS + 1)


@pytest.mark.slow
def test_real_log_never_runs_more_tasks_than_local_2_has_cores(event_log: Path) -> None:
    assert [s["max_concurrent"] for s in metrics.stages(event_log)] == [2, 1, 2, 1]


@pytest.mark.slow
def test_real_log_maps_each_stage_to_its_job_description(event_log: Path) -> None:
    found = metrics.stages(event_log)
    assert [(s["job_ids"], s["job_description"]) for s in found] == [
        ([0], DESCRIPTIONS[0]),
        ([0], DESCRIPTIONS[0]),
        ([1], DESCRIPTIONS[1]),
        ([1], DESCRIPTIONS[1]),
    ]


@pytest.mark.slow
def test_real_log_jobs_carry_description_and_span_their_stages(event_log: Path) -> None:
    found, stages = metrics.jobs(event_log), metrics.stages(event_log)
    assert [(j["job_id"], j["description"], j["stage_ids"], j["result"]) for j in found] == [
        (0, DESCRIPTIONS[0], [0, 1], "JobSucceeded"),
        (1, DESCRIPTIONS[1], [2, 3], "JobSucceeded"),
    ]
    for job in found:
        mine = [s for s in stages if s["stage_id"] in job["stage_ids"]]
        assert job["submitted"] <= min(s["submitted"] for s in mine)
        assert job["completed"] >= max(s["completed"] for s in mine)


@pytest.mark.slow
def test_real_log_has_the_local_driver_executor_with_two_cores(event_log: Path) -> None:
    (executor,) = metrics.executors(event_log)
    assert (executor["executor_id"], executor["cores"], executor["resources"]) == ("driver", 2, {})
    assert executor["host"]
    assert all(s["executors"] == ["driver"] for s in metrics.stages(event_log))
    assert {t["executor_id"] for t in metrics.tasks(event_log)} == {"driver"}


@pytest.mark.slow
def test_real_log_slots_fit_the_cores_and_never_overlap(event_log: Path) -> None:
    found = metrics.tasks(event_log)
    assert {t["slot"] for t in found} == {0, 1}
    for slot in (0, 1):
        row = sorted((t["launch"], t["run_end"]) for t in found if t["slot"] == slot)
        assert all(end <= next_start for (_, end), (next_start, _) in zip(row, row[1:]))


@pytest.mark.slow
def test_real_log_sleeping_tasks_last_at_least_the_sleep(event_log: Path) -> None:
    found = metrics.tasks(event_log)
    sleeping = [t for t in found if t["stage_id"] in (0, 2)]
    assert len(sleeping) == 2 * PARTITIONS
    assert all(t["executor_time_s"] >= SLEEP_S and t["duration_s"] >= t["executor_time_s"] for t in sleeping)
    assert all(t["successful"] and t["failure"] is None and t["end_reason"] == "Success" for t in found)
    assert all(s["duration_s"] >= SLEEP_S for s in metrics.stages(event_log) if s["stage_id"] in (0, 2))


@pytest.mark.slow
def test_real_log_stage_profile_is_the_default_one(event_log: Path) -> None:
    assert {s["resource_profile_id"] for s in metrics.stages(event_log)} == {0}
    assert metrics.resource_profiles(event_log)[0]["task"] == {"cpus": 1.0}
    assert all(s["task_resources"] == {"cpus": 1.0} for s in metrics.stages(event_log))


# --------------------------------------------------------------------------------------------- hand-made logs


def test_busy_interval_ignores_the_drivers_result_handling_lag(tmp_path: Path) -> None:
    # One slot: the second task starts when the executor freed it (1.02 s), before the driver stamped the
    # first one finished (1.10 s); its executor time (1.00 s) is what held the slot.
    log = write_log(
        tmp_path / "app",
        [
            stage_event("Submitted", 0, submitted=0),
            *task(0, 0, launch=0, finish=1100, run_ms=1000),
            *task(1, 0, launch=1020, finish=2100, run_ms=1000),
        ],
    )
    (stage,) = metrics.stages(log)
    assert (stage["max_concurrent"], stage["max_concurrent_wall"]) == (1, 2)
    assert [t["slot"] for t in metrics.tasks(log)] == [0, 0]


def test_slots_reuse_the_lowest_free_number_per_executor(tmp_path: Path) -> None:
    log = write_log(
        tmp_path / "app",
        [
            stage_event("Submitted", 0, tasks=7, submitted=0),
            *task(0, 0, launch=0, finish=1600, run_ms=1500),  # slot 0, free from 1500
            *task(1, 0, launch=0, finish=3100, run_ms=3000),  # slot 1, busy until 3000
            *task(2, 0, launch=0, finish=1100, run_ms=1000),  # slot 2, free from 1000
            *task(3, 0, launch=2000, finish=2600, run_ms=500),  # 0 and 2 free: the lowest, 0
            *task(4, 0, launch=2000, finish=2600, run_ms=500),  # then 2
            *task(5, 0, launch=2500, finish=2700, run_ms=100),  # 3 and 4 end at 2500: their slots are free at 2500
            *task(6, 0, launch=0, finish=1000, run_ms=1000, executor="1"),  # another executor counts from 0
        ],
    )
    assert [t["slot"] for t in metrics.tasks(log)] == [0, 1, 2, 0, 2, 0, 0]


def test_a_failed_attempt_and_its_retry_are_both_counted(tmp_path: Path) -> None:
    boom = {
        "Reason": "ExceptionFailure",
        "Class Name": "org.apache.spark.api.python.PythonException",
        "Description": "[PYTHON_EXCEPTION] An exception was thrown from the Python worker: Traceback (most "
        'recent call last):\n  File "x.py", line 1, in f\nValueError: boom once\n SQLSTATE: 38000',
    }
    log = write_log(
        tmp_path / "app",
        [
            stage_event("Submitted", 0, submitted=0),
            *task(0, 0, launch=0, finish=500, run_ms=400, index=0, reason=boom),
            *task(1, 0, launch=0, finish=900, run_ms=800, index=1),
            *task(2, 0, launch=500, finish=900, run_ms=300, index=0, attempt=1),
            stage_event("Completed", 0, submitted=0, completed=1000),
        ],
    )
    (stage,) = metrics.stages(log)
    assert (stage["num_tasks"], stage["tasks"], stage["failed_tasks"]) == (2, 3, 1)
    first, _, retry = metrics.tasks(log)
    assert (first["successful"], first["end_reason"], first["failure"]) == (
        False,
        "ExceptionFailure",
        "ExceptionFailure: ValueError: boom once",
    )
    assert (retry["index"], retry["attempt"], retry["successful"], retry["failure"]) == (0, 1, True, None)


def test_gpu_resources_of_executors_and_profiles_are_read(tmp_path: Path) -> None:
    # ExecutorAdded and ResourceProfileAdded exactly as pyspark 4.3.0 wrote them on local-cluster with a
    # discovery script reporting two GPUs and a task-only profile of one GPU per task.
    log = write_log(
        tmp_path / "app",
        [
            '{"Event":"SparkListenerResourceProfileAdded","Resource Profile Id":0,"Executor Resource Requests":'
            '{"memory":{"Resource Name":"memory","Amount":1024,"Discovery Script":"","Vendor":""},"gpu":'
            '{"Resource Name":"gpu","Amount":2,"Discovery Script":"","Vendor":""}},"Task Resource Requests":'
            '{"cpus":{"Resource Name":'
            '"cpus","Amount":1.0},"gpu":{"Resource Name":"gpu","Amount":0.5}}}',
            '{"Event":"SparkListenerExecutorAdded","Timestamp":1795723388124,"Executor ID":"0","Executor Info":{"Host":'
            '"127.0.0.1","Total Cores":2,"Log Urls":{},"Attributes":{},"Resources":{"gpu":{"name":"gpu","addresses":'
            '["0","1"]}},"Resource Profile Id":0,"Registration Time":1795723388124}}',
            '{"Event":"SparkListenerResourceProfileAdded","Resource Profile Id":1,"Executor Resource Requests":{},'
            '"Task Resource Requests":{"cpus":{"Resource Name":"cpus","Amount":1.0},"gpu":{"Resource Name":"gpu",'
            '"Amount":1.0}}}',
            stage_event("Submitted", 0, profile=0),
            stage_event("Submitted", 1, profile=1),
        ],
    )
    (executor,) = metrics.executors(log)
    assert (executor["executor_id"], executor["cores"], executor["resources"]) == ("0", 2, {"gpu": ["0", "1"]})
    assert [s["task_resources"] for s in metrics.stages(log)] == [{"cpus": 1.0, "gpu": 0.5}, {"cpus": 1.0, "gpu": 1.0}]


def test_a_stage_reused_by_a_later_job_stays_with_the_job_that_ran_it(tmp_path: Path) -> None:
    log = write_log(
        tmp_path / "app",
        [
            job_start(0, [0, 1], "pass 1 (warm-up) x"),
            stage_event("Submitted", 0),
            stage_event("Submitted", 1),
            {
                "Event": "SparkListenerJobEnd",
                "Job ID": 0,
                "Completion Time": EPOCH_MS + 2000,
                "Job Result": {"Result": "JobSucceeded"},
            },
            job_start(1, [0, 2], "pass 2 (timed) x", at=3000),  # stage 0's shuffle output is reused: skipped
            stage_event("Submitted", 2),
        ],
    )
    assert [(s["stage_id"], s["job_ids"], s["job_description"]) for s in metrics.stages(log)] == [
        (0, [0], "pass 1 (warm-up) x"),
        (1, [0], "pass 1 (warm-up) x"),
        (2, [1], "pass 2 (timed) x"),
    ]


def test_unknown_events_missing_fields_and_a_torn_last_line_are_tolerated(tmp_path: Path) -> None:
    log = write_log(
        tmp_path / "app.inprogress",
        [
            {"Event": "org.apache.spark.sql.execution.ui.SparkListenerSQLExecutionStart", "executionId": 0},
            {"Event": "SparkListenerSomethingNew", "Stage ID": 0},
            stage_event("Submitted", 0, profile=None),
            task_event("Start", 0, 0, launch=1000),  # still running: no end, no metrics
            '{"Event":"SparkListenerTaskEnd","Stage ID":0,"Task In',
        ],
    )
    (stage,) = metrics.stages(log)
    assert (stage["resource_profile_id"], stage["submitted"], stage["duration_s"], stage["tasks"]) == (
        None,
        None,
        None,
        1,
    )
    (running,) = metrics.tasks(log)
    assert (running["finish"], running["successful"], running["end_reason"], running["slot"]) == (None, False, None, 0)


def test_a_torn_line_before_the_end_is_an_error(tmp_path: Path) -> None:
    log = write_log(
        tmp_path / "app", ['{"Event":"SparkListenerTaskEnd","Stage ID":0,"Task In', stage_event("Submitted", 0)]
    )
    with pytest.raises(ValueError, match="not JSON"):
        metrics.stages(log)
