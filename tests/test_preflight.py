"""Before any pass on a cluster of other machines, one small job asks every executor whether it can run the tool:
each reports its node and Python and what a fresh interpreter with the worker's path fails to import; a node that
cannot fails the run there, named, with the fix for the `cluster.ship` mode; the check is bounded in time and its
function travels by value, so it runs where the tool is not."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
from pyspark import cloudpickle

from pipeline.config.schema import Ship
from pipeline.spark.eventlog import stages
from pipeline.spark.preflight import (
    DESCRIPTION,
    NodeCannotRun,
    PreflightTimedOut,
    _probe,
    failed_task,
    first_tasks,
    preflight,
)


def test_every_executor_reports_its_node_python_and_versions(spark):
    record = preflight(spark, 2, Ship.installed, 120, modules=("numpy", "pipeline"))
    (executor,) = record["executors"]  # local[2]: the driver runs both tasks
    assert executor["host"] == socket.gethostname() and executor["missing"] == []
    assert executor["python"] == record["driver_python"] == ".".join(map(str, sys.version_info[:3]))
    assert "numpy" in executor["versions"] and record["tasks"] == 2 and record["seconds"] > 0


def test_a_module_an_executor_cannot_import_fails_the_run_naming_the_node_the_module_and_the_fix(spark):
    with pytest.raises(NodeCannotRun) as refused:
        preflight(spark, 2, Ship.installed, 120, modules=("numpy", "no_such_module_here"))
    message = str(refused.value)
    assert f"on {socket.gethostname()}: ModuleNotFoundError: No module named 'no_such_module_here'" in message
    assert "(import no_such_module_here)" in message and "numpy" not in message
    assert "cluster.ship=code (the tool's code" in message


def test_a_module_of_a_package_that_failed_is_not_named_again(spark):
    with pytest.raises(NodeCannotRun) as refused:
        preflight(spark, 1, Ship.code, 120, modules=("no_such_package", "no_such_package.sub"))
    assert "no_such_package.sub" not in str(refused.value)


def test_the_check_travels_by_value_so_it_runs_where_the_tool_is_not():
    pickled = cloudpickle.dumps(_probe(("pipeline",), 10))
    assert b"pipeline.spark" not in pickled  # no reference to the tool's modules, only the names to import


def test_the_check_is_bounded_and_its_job_cancelled(spark):
    with pytest.raises(PreflightTimedOut, match=r"did not finish in cluster.preflight_timeout_s=0.001 s"):
        preflight(spark, 2, Ship.env, 0.001, modules=("numpy",))
    assert spark.range(3).count() == 3  # the session goes on


def test_a_task_that_fails_before_the_check_runs_names_its_executor_and_node():
    error = RuntimeError(
        "Job aborted due to stage failure: Task 0 in stage 0.0 failed 4 times, most recent failure: Lost task 0.3 in "
        "stage 0.0 (TID 3) (10.200.0.3 executor 1): java.io.IOException: Cannot run program "
        '"./environment/bin/python": error=2, No such file or directory'
    )
    cannot = failed_task(error, Ship.env)
    assert str(cannot).startswith(
        "cannot run Python with cluster.ship=env on 10.200.0.3 executor 1: IOException: Cannot run program"
    )
    assert "the interpreter the virtualenv was made from" in str(cannot)
    assert failed_task(RuntimeError("something else"), Ship.env) is None


def test_the_event_log_gives_each_executor_the_seconds_it_took_to_get_ready_for_its_first_task(spark):
    preflight(spark, 2, Ship.code, 120, modules=("numpy",))
    event_log = Path(urlparse(spark.conf.get("spark.eventLog.dir")).path)
    assert any(stage["job_description"] == DESCRIPTION for stage in stages(event_log))
    first = first_tasks(event_log)
    assert list(first) == ["driver"] and first["driver"] >= 0
