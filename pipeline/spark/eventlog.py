"""What a run's Spark application actually did, read back from its event log (plain JSON lines).

Every run writes one uncompressed, unrolled event log into `<run_dir>/eventlog/` (see `session.spark_conf`).
This module turns it into plain dicts: one per stage attempt, task attempt, executor and job, with times in
epoch seconds. They are the evidence for a variant's claims, e.g. that a predict stage under a GPU
ResourceProfile never ran more tasks at once than there are GPU slots while its preprocess stage ran more.

Field names are Spark's JsonProtocol ones, checked against logs written by pyspark 4.3.0 (local[2] and
local-cluster with fake GPUs). Unknown event types are skipped; missing optional fields become None.

Note: a DataFrame action names all its stages after the action ("save at NativeMethodAccessorImpl.java:0"),
so tell a job's stages apart by order, `parent_ids`, `num_tasks` and `resource_profile_id`, not by name.
"""

from __future__ import annotations

import copy
import functools
import heapq
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INPROGRESS = ".inprogress"
COMPRESSED = (".lz4", ".lzf", ".snappy", ".zstd")
ROLLED_PREFIX = "eventlog_v2_"

# The events this module reads; every other line is skipped without a full JSON parse.
JOB_START = "SparkListenerJobStart"
JOB_END = "SparkListenerJobEnd"
STAGE_SUBMITTED = "SparkListenerStageSubmitted"
STAGE_COMPLETED = "SparkListenerStageCompleted"
TASK_START = "SparkListenerTaskStart"
TASK_END = "SparkListenerTaskEnd"
EXECUTOR_ADDED = "SparkListenerExecutorAdded"
EXECUTOR_REMOVED = "SparkListenerExecutorRemoved"
PROFILE_ADDED = "SparkListenerResourceProfileAdded"
WANTED = {
    JOB_START,
    JOB_END,
    STAGE_SUBMITTED,
    STAGE_COMPLETED,
    TASK_START,
    TASK_END,
    EXECUTOR_ADDED,
    EXECUTOR_REMOVED,
    PROFILE_ADDED,
}
EVENT_PREFIX = re.compile(r'^\s*\{\s*"Event"\s*:\s*"([^"]+)"')


# --------------------------------------------------------------------------------------------- the log file


def event_log_file(event_log_dir: Path) -> Path:
    """The one application log in `event_log_dir`.

    A finished log wins over `.inprogress` ones; a lone `.inprogress` log (application still running or
    killed) is returned when there is no finished one. Raises FileNotFoundError when there is none and
    ValueError when there are several, or when the log is rolled or compressed (this parser reads plain
    JSON lines only: set spark.eventLog.compress=false and spark.eventLog.rolling.enabled=false).
    """
    directory = Path(event_log_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"no event log directory {directory}")
    entries = sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    rolled = [p for p in entries if p.is_dir() and p.name.startswith(ROLLED_PREFIX)]
    files = [p for p in entries if p.is_file() and not p.name.endswith(".crc")]
    compressed = [p for p in files if p.name.removesuffix(INPROGRESS).endswith(COMPRESSED)]
    if rolled or compressed:
        raise ValueError(
            f"{directory} holds a rolled or compressed event log ({', '.join(p.name for p in rolled + compressed)}); "
            "only plain JSON lines are read: set spark.eventLog.compress=false and spark.eventLog.rolling.enabled=false"
        )
    finished = [p for p in files if not p.name.endswith(INPROGRESS)]
    candidates = finished or [p for p in files if p.name.endswith(INPROGRESS)]
    if not candidates:
        raise FileNotFoundError(f"no Spark event log in {directory}")
    if len(candidates) > 1:
        raise ValueError(
            f"several event logs in {directory}: {', '.join(p.name for p in candidates)}; expected one application"
        )
    return candidates[0]


# --------------------------------------------------------------------------------------------- parsing


@dataclass
class _Log:
    jobs: dict[int, dict[str, Any]] = field(default_factory=dict)
    stages: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)  # insertion = submission order
    tasks: dict[int, dict[str, Any]] = field(default_factory=dict)
    updates: dict[int, dict[str, float]] = field(default_factory=dict)  # task id -> accumulable name -> update
    executors: dict[str, dict[str, Any]] = field(default_factory=dict)
    profiles: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)


def _seconds(millis: Any) -> float | None:
    """Epoch milliseconds to seconds; Spark writes 0 or leaves the field out for 'not yet'."""
    return millis / 1000.0 if isinstance(millis, (int, float)) and millis > 0 else None


def _events(path: Path):
    """(line number, event) for every event this module reads; a torn last line (log still being written) is
    ignored, a bad line anywhere else is an error."""
    torn: tuple[int, json.JSONDecodeError] | None = None
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            if torn is not None:
                raise ValueError(f"{path}:{torn[0]}: not JSON: {torn[1]}")
            match = EVENT_PREFIX.match(line)
            if match and match.group(1) not in WANTED:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError as error:
                torn = (number, error)
                continue
            if isinstance(event, dict) and event.get("Event") in WANTED:
                yield number, event


def _stage_record(log: _Log, info: dict[str, Any]) -> dict[str, Any]:
    key = (info.get("Stage ID"), info.get("Stage Attempt ID", 0))
    if key not in log.stages:
        log.stages[key] = {
            "stage_id": key[0],
            "attempt": key[1],
            "name": None,
            "num_tasks": None,
            "parent_ids": [],
            "resource_profile_id": None,
            "submitted": None,
            "completed": None,
            "failure_reason": None,
            "job_ids": [],
            "stage_description": None,
        }
    record = log.stages[key]
    for name, source in (
        ("name", "Stage Name"),
        ("num_tasks", "Number of Tasks"),
        ("resource_profile_id", "Resource Profile Id"),
    ):
        if info.get(source) is not None:
            record[name] = info[source]
    if info.get("Parent IDs") is not None:
        record["parent_ids"] = sorted(info["Parent IDs"])
    for name, source in (("submitted", "Submission Time"), ("completed", "Completion Time")):
        if _seconds(info.get(source)) is not None:
            record[name] = _seconds(info[source])
    if info.get("Failure Reason"):
        record["failure_reason"] = info["Failure Reason"]
    return record


def _task_record(log: _Log, event: dict[str, Any]) -> dict[str, Any] | None:
    info = event.get("Task Info") or {}
    task_id = info.get("Task ID")
    if task_id is None:
        return None
    record = log.tasks.setdefault(
        task_id, {"task_id": task_id, "finish": None, "end_reason": None, "failure": None, "executor_time_s": None}
    )
    record.update(
        stage_id=event.get("Stage ID"),
        stage_attempt=event.get("Stage Attempt ID", 0),
        index=info.get("Index"),
        partition_id=info.get("Partition ID", info.get("Index")),
        attempt=info.get("Attempt", 0),
        executor_id=info.get("Executor ID"),
        host=info.get("Host"),
        launch=_seconds(info.get("Launch Time")),
        speculative=bool(info.get("Speculative", False)),
        locality=info.get("Locality"),
        failed=bool(info.get("Failed", False)),
        killed=bool(info.get("Killed", False)),
    )
    if _seconds(info.get("Finish Time")) is not None:
        record["finish"] = _seconds(info["Finish Time"])
    if _seconds(info.get("Getting Result Time")) is not None:
        record["getting_result"] = _seconds(info["Getting Result Time"])
    return record


def _failure_text(reason: dict[str, Any]) -> str:
    """A one-line account of why a task attempt failed, e.g. 'ExceptionFailure: ValueError: boom'."""
    kind = reason.get("Reason", "Unknown")
    for key in ("Description", "Kill Reason", "Loss Reason", "Message"):
        text = reason.get(key)
        if isinstance(text, str) and text.strip():
            lines = [
                line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("SQLSTATE")
            ]
            if not lines:
                continue
            # A Python traceback ends with the exception itself; a one-line Java message gets its class.
            message = lines[-1] if len(lines) > 1 else lines[0]
            if len(lines) == 1 and reason.get("Class Name"):
                message = f"{reason['Class Name']}: {message}"
            return f"{kind}: {message}"
    if reason.get("Class Name"):
        return f"{kind}: {reason['Class Name']}"
    return kind


def _executor_time(metrics: Any) -> float | None:
    """Seconds the executor spent on the task: deserialize + run + result serialization (Task Metrics, ms)."""
    if not isinstance(metrics, dict):
        return None
    parts = [
        metrics.get(key) for key in ("Executor Deserialize Time", "Executor Run Time", "Result Serialization Time")
    ]
    if parts[1] is None:
        return None
    return sum(part for part in parts if isinstance(part, (int, float))) / 1000.0


def _records_read(metrics: Any) -> int | None:
    """Rows the task read: from its input (a file scan) plus from shuffles (Task Metrics); None without metrics."""
    if not isinstance(metrics, dict):
        return None
    read = (metrics.get("Input Metrics") or {}).get("Records Read")
    shuffled = (metrics.get("Shuffle Read Metrics") or {}).get("Total Records Read")
    if read is None and shuffled is None:
        return None
    return (read or 0) + (shuffled or 0)


def _updates(info: dict[str, Any]) -> dict[str, float]:
    """A task attempt's accumulable updates by name, the numeric ones (Spark writes the SQL metrics' as strings)."""
    found: dict[str, float] = {}
    for accumulable in info.get("Accumulables") or []:
        try:
            found[accumulable["Name"]] = float(accumulable["Update"])
        except (KeyError, TypeError, ValueError):
            continue
    return found


def _requests(requests: Any) -> dict[str, float]:
    if not isinstance(requests, dict):
        return {}
    return {name: request.get("Amount") if isinstance(request, dict) else request for name, request in requests.items()}


def _parse(path: Path) -> _Log:
    log = _Log()
    active_jobs: list[int] = []
    for _, event in _events(path):
        kind = event["Event"]
        if kind == JOB_START:
            job_id = event.get("Job ID")
            stage_ids = event.get("Stage IDs")
            if stage_ids is None:
                stage_ids = [info.get("Stage ID") for info in event.get("Stage Infos", [])]
            log.jobs[job_id] = {
                "job_id": job_id,
                "description": (event.get("Properties") or {}).get("spark.job.description"),
                "stage_ids": sorted(stage_ids),
                "submitted": _seconds(event.get("Submission Time")),
                "completed": None,
                "result": None,
            }
            active_jobs.append(job_id)
        elif kind == JOB_END:
            job = log.jobs.get(event.get("Job ID"))
            if job is not None:
                job["completed"] = _seconds(event.get("Completion Time"))
                job["result"] = (event.get("Job Result") or {}).get("Result")
            if event.get("Job ID") in active_jobs:
                active_jobs.remove(event["Job ID"])
        elif kind == STAGE_SUBMITTED:
            record = _stage_record(log, event.get("Stage Info") or {})
            # The jobs that asked for this attempt: running now and listing the stage. A later job that
            # lists the stage but reuses its output (a skipped stage) is not one of them.
            record["job_ids"] = sorted(j for j in active_jobs if record["stage_id"] in log.jobs[j]["stage_ids"])
            record["stage_description"] = (event.get("Properties") or {}).get("spark.job.description")
        elif kind == STAGE_COMPLETED:
            _stage_record(log, event.get("Stage Info") or {})
        elif kind == TASK_START:
            _task_record(log, event)
        elif kind == TASK_END:
            record = _task_record(log, event)
            if record is None:
                continue
            reason = event.get("Task End Reason") or {}
            record["end_reason"] = reason.get(
                "Reason", "Success" if not (record["failed"] or record["killed"]) else "Unknown"
            )
            record["task_type"] = event.get("Task Type")
            if record["end_reason"] != "Success" or record["failed"] or record["killed"]:
                record["failure"] = _failure_text(reason) if reason else record["end_reason"]
            record["executor_time_s"] = _executor_time(event.get("Task Metrics"))
            record["records_read"] = _records_read(event.get("Task Metrics"))
            log.updates[record["task_id"]] = _updates(event.get("Task Info") or {})
        elif kind == EXECUTOR_ADDED:
            info = event.get("Executor Info") or {}
            resources = info.get("Resources") or {}
            log.executors[str(event.get("Executor ID"))] = {
                "executor_id": str(event.get("Executor ID")),
                "host": info.get("Host"),
                "cores": info.get("Total Cores"),
                "resources": {
                    name: list((value or {}).get("addresses", [])) if isinstance(value, dict) else list(value or [])
                    for name, value in resources.items()
                },
                "resource_profile_id": info.get("Resource Profile Id"),
                "added": _seconds(event.get("Timestamp")),
                "removed": None,
                "removed_reason": None,
            }
        elif kind == EXECUTOR_REMOVED:
            executor = log.executors.get(str(event.get("Executor ID")))
            if executor is not None:
                executor["removed"] = _seconds(event.get("Timestamp"))
                executor["removed_reason"] = event.get("Removed Reason")
        elif kind == PROFILE_ADDED:
            log.profiles[event.get("Resource Profile Id")] = {
                "executor": _requests(event.get("Executor Resource Requests")),
                "task": _requests(event.get("Task Resource Requests")),
            }
    return log


@functools.lru_cache(maxsize=8)
def _cached(path: str, mtime_ns: int, size: int) -> _Log:
    return _parse(Path(path))


def _load(event_log: Path) -> _Log:
    """The parsed log, read once per version of the file (so stages(), tasks() ... share one parse)."""
    path = Path(event_log)
    if path.is_dir():
        path = event_log_file(path)
    stat = path.stat()
    return _cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


# --------------------------------------------------------------------------------------------- sweep line


def _sweep(intervals: list[tuple[float, float, Any]]) -> list[tuple[bool, Any]]:
    """(is_start, key) for every interval end point in time order.

    At one instant, ends of intervals that began earlier come first (an end at t frees its slot for a start
    at t), then starts, then ends of zero-length intervals (which hold a slot for their instant).
    """
    points = []
    for order, (start, end, key) in enumerate(intervals):
        if end < start:
            raise ValueError(f"interval ends before it starts: ({start}, {end})")
        points.append((start, 1, order, True, key))
        points.append((end, 2 if end == start else 0, order, False, key))
    points.sort(key=lambda point: point[:3])
    return [(is_start, key) for *_, is_start, key in points]


def max_concurrent(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant; an interval ending at t does not overlap one starting at t."""
    running = peak = 0
    for is_start, _ in _sweep([(start, end, None) for start, end in intervals]):
        running += 1 if is_start else -1
        peak = max(peak, running)
    return peak


def _busy(record: dict[str, Any]) -> tuple[float, float] | None:
    """The interval a task attempt held its executor slot for sure: [launch, launch + executor time].

    The driver stamps `finish` only after it has handled the result, while the freed slot is offered again as
    soon as the executor's status update arrives, so [launch, finish] of consecutive tasks in one slot
    overlap by that lag (measured: 10-100 ms in local[2]; 4 "concurrent" tasks on 2 cores). The executor time
    (deserialize + run + result serialization, measured on the executor) ends before that status update is
    sent, so [launch, launch + executor time] lies inside the span the scheduler counted the slot as taken:
    their concurrency never exceeds the slots the scheduler granted, and an overlap of N of them means N
    slots were held at once. Without task metrics (running or lost tasks) the interval ends at `finish`
    (or never, while running).
    """
    launch = record.get("launch")
    if launch is None:
        return None
    if record.get("executor_time_s") is not None:
        end = launch + record["executor_time_s"]
        if record.get("finish") is not None:
            end = min(end, record["finish"])
        return launch, end
    if record.get("finish") is not None:
        return launch, max(launch, record["finish"])
    return launch, math.inf


def _assign_slots(records: list[dict[str, Any]]) -> None:
    """Per executor, give each task the lowest slot number free at its launch (one Gantt row per slot), a
    slot being held over the task's busy interval [launch, run_end]."""
    by_executor: dict[Any, list[tuple[float, float, dict[str, Any]]]] = {}
    for record in records:
        record["slot"] = None
        busy = _busy(record)
        if busy is not None:
            by_executor.setdefault(record.get("executor_id"), []).append((*busy, record))
    for intervals in by_executor.values():
        free: list[int] = []
        used = 0
        for is_start, record in _sweep(intervals):
            if is_start:
                if free:
                    record["slot"] = heapq.heappop(free)
                else:
                    record["slot"], used = used, used + 1
            else:
                heapq.heappush(free, record["slot"])


def _succeeded(record: dict[str, Any]) -> bool:
    return record["end_reason"] == "Success" and not record["failed"] and not record["killed"]


def _executor_order(executor_id: Any) -> tuple[bool, Any]:
    text = str(executor_id)
    return (text.isdigit(), int(text) if text.isdigit() else text)


# --------------------------------------------------------------------------------------------- the API


def tasks(event_log: Path) -> list[dict[str, Any]]:
    """One dict per task attempt, by task id (= launch order).

    Keys: stage_id, stage_attempt, task_id, index, partition_id, attempt, executor_id, host, launch and
    finish (epoch s, driver clock; finish None while running), duration_s (finish - launch), executor_time_s
    (deserialize + run + result serialization on the executor; None without task metrics), run_end (end of
    the busy interval, see `_busy`), scheduler_delay_s (as the Spark UI defines it), successful, end_reason
    ("Success", "ExceptionFailure", "TaskKilled", ...; None while running), failure (one line, e.g.
    "ExceptionFailure: ValueError: boom"; None unless it failed), failed, killed, speculative, locality,
    task_type, records_read (rows read from files and shuffles; None without task metrics), slot (per
    executor, the lowest slot free at launch; draw [launch, run_end] in row `slot`: bars
    in one row never overlap, and an executor never uses more slots than it ran tasks at once).
    """
    log = _load(event_log)
    records = [copy.deepcopy(log.tasks[task_id]) for task_id in sorted(log.tasks)]
    for record in records:
        record.setdefault("task_type", None)
        record.setdefault("records_read", None)
        getting_result = record.pop("getting_result", None)
        launch, finish = record.get("launch"), record.get("finish")
        record["duration_s"] = finish - launch if launch is not None and finish is not None else None
        busy = _busy(record)
        record["run_end"] = busy[1] if busy is not None and busy[1] != math.inf else None
        fetch = finish - getting_result if finish is not None and getting_result is not None else 0.0
        record["scheduler_delay_s"] = (
            max(0.0, record["duration_s"] - record["executor_time_s"] - fetch)
            if record["duration_s"] is not None and record["executor_time_s"] is not None
            else None
        )
        record["successful"] = _succeeded(record)
    _assign_slots(records)
    return records


def task_metrics(event_log: Path) -> list[dict[str, Any]]:
    """One dict per task attempt that ended, by task id: task_id, stage_id, stage_attempt, partition_id, attempt,
    successful, and `metrics`, its accumulable updates by Spark's name ("internal.metrics.executorRunTime",
    "scan time", ...). A failed or killed attempt carries only the metrics Spark counts for failed tasks (run
    and CPU time: the slot it held), none of the SQL metrics."""
    log = _load(event_log)
    keys = ("task_id", "stage_id", "stage_attempt", "partition_id", "attempt")
    return [
        {
            **{key: log.tasks[task_id][key] for key in keys},
            "successful": _succeeded(log.tasks[task_id]),
            "metrics": dict(log.updates[task_id]),
        }
        for task_id in sorted(log.updates)
    ]


def stages(event_log: Path) -> list[dict[str, Any]]:
    """One dict per stage attempt that was submitted, in submission order (skipped stages are absent).

    Keys: stage_id, attempt, name, job_ids, job_description (the `spark.job.description` of its job),
    resource_profile_id, task_resources (the profile's per-task requests, e.g. {"cpus": 1.0, "gpu": 1.0}),
    num_tasks, tasks (task attempts seen), failed_tasks (attempts that ended unsuccessfully), max_concurrent
    (most of its task attempts busy at one instant, over [launch, run_end]: see `_busy`), max_concurrent_wall
    (the same over [launch, finish], inflated by the driver's result-handling lag), executors (sorted ids),
    parent_ids, submitted, completed (epoch s), duration_s, failure_reason (None unless the stage failed).
    """
    log = _load(event_log)
    by_stage: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for record in log.tasks.values():
        by_stage.setdefault((record.get("stage_id"), record.get("stage_attempt")), []).append(record)
    result = []
    for key, stage in log.stages.items():
        attempts = by_stage.get(key, [])
        descriptions = [log.jobs[j]["description"] for j in stage["job_ids"] if log.jobs[j]["description"] is not None]
        submitted, completed = stage["submitted"], stage["completed"]
        profile = log.profiles.get(stage["resource_profile_id"], {})
        result.append(
            {
                "stage_id": stage["stage_id"],
                "attempt": stage["attempt"],
                "name": stage["name"],
                "job_ids": list(stage["job_ids"]),
                "job_description": descriptions[0] if descriptions else stage["stage_description"],
                "resource_profile_id": stage["resource_profile_id"],
                "task_resources": dict(profile.get("task", {})),
                "num_tasks": stage["num_tasks"],
                "tasks": len(attempts),
                "failed_tasks": sum(
                    1
                    for t in attempts
                    if t["end_reason"] is not None and (t["end_reason"] != "Success" or t["failed"] or t["killed"])
                ),
                "max_concurrent": max_concurrent([busy for busy in map(_busy, attempts) if busy is not None]),
                "max_concurrent_wall": max_concurrent(
                    [
                        (t["launch"], max(t["launch"], t["finish"] if t["finish"] is not None else math.inf))
                        for t in attempts
                        if t.get("launch") is not None
                    ]
                ),
                "executors": sorted(
                    {str(t["executor_id"]) for t in attempts if t.get("executor_id") is not None}, key=_executor_order
                ),
                "parent_ids": list(stage["parent_ids"]),
                "submitted": submitted,
                "completed": completed,
                "duration_s": completed - submitted if submitted is not None and completed is not None else None,
                "failure_reason": stage["failure_reason"],
            }
        )
    return result


def executors(event_log: Path) -> list[dict[str, Any]]:
    """One dict per executor added, by id ("driver" in local mode): executor_id, host, cores, resources
    ({"gpu": ["0", "1"]}), resource_profile_id, added and removed (epoch s), removed_reason."""
    log = _load(event_log)
    return [copy.deepcopy(log.executors[e]) for e in sorted(log.executors, key=_executor_order)]


def jobs(event_log: Path) -> list[dict[str, Any]]:
    """One dict per job, by id: job_id, description, stage_ids (including skipped ones), submitted,
    completed (epoch s), duration_s, result ("JobSucceeded", "JobFailed"; None while running)."""
    log = _load(event_log)
    result = []
    for job_id in sorted(log.jobs):
        job = copy.deepcopy(log.jobs[job_id])
        submitted, completed = job["submitted"], job["completed"]
        job["duration_s"] = completed - submitted if submitted is not None and completed is not None else None
        result.append(job)
    return result


def resource_profiles(event_log: Path) -> dict[int, dict[str, dict[str, float]]]:
    """Resource profile id -> {"executor": {resource: amount}, "task": {resource: amount}}."""
    return copy.deepcopy(_load(event_log).profiles)
