"""Event logs: hand-made ones in Spark's own JSON format, to pin down one behaviour each, and the test session's
own, read once its listener has written what a test waits for.

Times of the hand-made events are milliseconds after EPOCH_MS: Spark writes 0 for "not yet", so a real time is
never 0.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pyspark.sql import SparkSession

from pipeline.spark.eventlog import event_log_file, stages

EPOCH_MS = 1_795_000_000_000


def write_log(path: Path, events: list[dict | str]) -> Path:
    """A hand-made event log: dicts as JSON lines, strings verbatim."""
    path.write_text("".join((e if isinstance(e, str) else json.dumps(e, separators=(",", ":"))) + "\n" for e in events))
    return path


def job_start(job_id: int, stage_ids: list[int], description: str | None = None, at: int = 1000) -> dict:
    properties = {"spark.job.description": description} if description else {}
    return {
        "Event": "SparkListenerJobStart",
        "Job ID": job_id,
        "Submission Time": EPOCH_MS + at,
        "Stage IDs": stage_ids,
        "Properties": properties,
    }


def stage_event(kind: str, stage_id: int, attempt: int = 0, tasks: int = 2, profile: int | None = 0, **times) -> dict:
    """A stage attempt's Submitted or Completed event; `submitted` and `completed` times as keywords."""
    info = {
        "Stage ID": stage_id,
        "Stage Attempt ID": attempt,
        "Stage Name": f"stage {stage_id}",
        "Number of Tasks": tasks,
    }
    if profile is not None:
        info["Resource Profile Id"] = profile
    names = {"submitted": "Submission Time", "completed": "Completion Time"}
    info.update({names[key]: EPOCH_MS + value for key, value in times.items()})
    return {"Event": f"SparkListenerStage{kind}", "Stage Info": info}


def task_event(
    kind: str,
    task_id: int,
    stage_id: int,
    launch: int,
    finish: int = 0,
    index: int | None = None,
    attempt: int = 0,
    executor: str = "0",
    run_ms: int | None = None,
    reason: dict | None = None,
    stage_attempt: int = 0,
    metrics: dict[str, Any] | None = None,
) -> dict:
    """A task attempt's Start or End event. An End carries its `reason` (Success by default; a TaskKilled
    reason marks the attempt killed, any other failed, as Spark does) and `metrics`, accumulable updates by
    Spark's name, as its Task Info's Accumulables (the SQL metrics' updates are strings there, as Spark
    writes them)."""
    ended = reason or {"Reason": "Success"}
    killed = kind == "End" and ended["Reason"] == "TaskKilled"
    info = {
        "Task ID": task_id,
        "Index": task_id if index is None else index,
        "Attempt": attempt,
        "Launch Time": EPOCH_MS + launch,
        "Executor ID": executor,
        "Host": "h",
        "Finish Time": EPOCH_MS + finish if finish else 0,
        "Failed": kind == "End" and ended["Reason"] not in ("Success", "TaskKilled"),
        "Killed": killed,
    }
    if kind == "End" and metrics:
        info["Accumulables"] = [
            {"ID": number, "Name": name, "Update": value if name.startswith("internal.") else str(value)}
            for number, (name, value) in enumerate(metrics.items())
        ]
    event = {"Event": f"SparkListenerTask{kind}", "Stage ID": stage_id, "Stage Attempt ID": stage_attempt}
    event["Task Info"] = info
    if kind == "End":
        event["Task End Reason"] = ended
        if run_ms is not None:
            event["Task Metrics"] = {
                "Executor Deserialize Time": 0,
                "Executor Run Time": run_ms,
                "Result Serialization Time": 0,
            }
    return event


def task(task_id: int, stage_id: int, launch: int, finish: int, run_ms: int | None = None, **kw) -> list[dict]:
    """A task attempt's Start and End events; `task_event`'s keywords for the End's `metrics` and `reason`."""
    ended = {key: kw.pop(key) for key in ("metrics", "reason") if key in kw}
    return [
        task_event("Start", task_id, stage_id, launch, **kw),
        task_event("End", task_id, stage_id, launch, finish, run_ms=run_ms, **kw, **ended),
    ]


def session_log_dir(spark: SparkSession) -> Path:
    """The directory the test session's application writes its event log to."""
    return Path(urlparse(spark.sparkContext.getConf().get("spark.eventLog.dir")).path)


def completed_stages(
    spark: SparkSession, chosen: Callable[[dict[str, Any]], bool], seconds: float = 60.0
) -> tuple[Path, list[dict[str, Any]]]:
    """The session's event log and the stage attempts (`eventlog.stages`) `chosen` picks from it, polled until
    there are some and every one has completed: Spark's listener writes the log asynchronously, so a job that
    has returned may not be in it yet."""
    directory = session_log_dir(spark)
    deadline = time.monotonic() + seconds
    while True:
        found = [stage for stage in stages(event_log_file(directory)) if chosen(stage)]
        if found and all(stage["completed"] is not None for stage in found):
            return directory, found
        if time.monotonic() > deadline:
            raise AssertionError(f"the session's event log never showed the chosen stages completed: {found}")
        time.sleep(0.2)
