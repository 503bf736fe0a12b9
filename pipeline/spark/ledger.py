"""What each Spark task reports about itself, gathered on the driver through one side file per task report.

Each task attempt writes its records into the ledger's directory on the storage root (`pipeline.data.storage`:
the run dir on one machine, a directory every node shares on a cluster of other machines), one pickled file per
report, written to a hidden temporary name and renamed, so the driver reads whole files only, named by step,
stage, partition, task attempt and part. No accumulator: Spark Connect has no SparkContext to make one with,
and one channel serves every mode (classic or Connect, this machine or others, whose executors reach the storage
root for the data set and the sink already). Its cost inside a timed pass is measured (`tests/bench`).

The driver keeps, per (step, stage, partition), only the parts of its latest task attempt (the highest task attempt
id, unique in an application): a retried or recomputed partition replaces its earlier attempt's parts instead of
counting twice, and a failed attempt's partial parts never count, as Spark's accumulators would drop them.
Whole-partition variants report one part per task; per-batch variants (scalar UDFs, predict_batch_udf) one part per
batch, keyed by the batch's ordinal in its task attempt (0, 1, ...): something the data cannot repeat (a key taken
from the batch's first image id let two batches that start with the same id overwrite each other). The records are
the run's evidence: rows in and out and bad images per task, the worker process, how many times it built the model,
the device and the GPU addresses the scheduler gave the task, the node and machine it ran on, and when it ran.

They also prove the batch axes and split the task's time: the rows and Arrow bytes of every batch Spark
handed the UDF (`udf_call_rows`, `udf_call_bytes`), the rows of every model call (`model_call_rows`), and
the task's own timers: waiting for Spark's next batch (`input_waits`, one per batch: the JVM's read and scan and
the rows sent to Python), the CPU phase (`prepare_s`: decode + preprocess), the model phase (`finish_s`) and handing
results back (`results_s`: converting them and waiting until Spark asked for more, the sink included).
A `maxRecordsPerBatch` that never shows up in `udf_call_rows` did not take effect, whatever the conf says.
"""

from __future__ import annotations

import os
import pickle
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from pyspark import TaskContext

from pipeline.inference import accelerator
from pipeline.inference.model import model_builds, use_threads
from pipeline.inference.steps import BadImageRecord, Output, Step
from pipeline.rundir import atomic_write
from pipeline.runtime import process_cpu
from pipeline.runtime.timing import now
from pipeline.spark import faults
from pipeline.spark.fastpaths import worker_view
from pipeline.spark.nodes import where

T = TypeVar("T")
_END: Any = object()  # the end of an iterator, for next(iterator, _END)

SUFFIX = ".task"


@dataclass
class TaskRecord:
    step: str
    stage: int
    partition: int
    attempt: int
    pid: int
    cpus: int
    device: str
    gpu_addresses: list[str]
    start: float
    end: float = 0.0
    rows_in: int = 0
    rows_out: int = 0
    model_loads: int = 0  # times this worker process has built the step's model so far
    model_builds: int = 0  # models built while this task ran
    bad: list[BadImageRecord] = field(default_factory=list)
    udf_call_rows: list[int] = field(default_factory=list)  # rows of each batch Spark handed the UDF
    udf_call_bytes: list[int] = field(default_factory=list)  # Arrow bytes of each such batch's input columns
    model_call_rows: list[int] = field(default_factory=list)  # rows of each model call (finish phase)
    prepare_s: float = 0.0  # decode + preprocess (with prefetch: in the background thread)
    prepare_cpu_s: float = 0.0  # the Python worker's CPU seconds meanwhile (`Prepared.prepare_cpu_s`)
    finish_s: float = 0.0  # the model (a preprocess step: the crops as bytes)
    results_s: float = 0.0  # results converted and handed back, until Spark asked for more
    # seconds the UDF waited for each batch Spark handed it (`fed`); batch k+1 fetched while batch k
    # computed (pipelined reader, spark.python_udf_pipelined) shows as waits near 0
    input_waits: list[float] = field(default_factory=list)
    # per-call styles (scalar pandas UDF, predict_batch_udf: Spark calls the UDF once per batch, each call a
    # part of the task's record): seconds from one call's return to the next call, Spark taking the last
    # result back and handing the next batch over; the first call's wait is not seen from inside the UDF
    between_calls: list[float] = field(default_factory=list)
    python_worker: dict = field(default_factory=dict)  # `fastpaths.worker_view` of the worker that ran it
    host: str = ""  # the node it ran on, and its machine and CPUs (`pipeline.spark.nodes.where`)
    executor: str = ""  # its executor's id: a node may run several
    machine: str = ""
    cpu_count: int | None = None
    device_busy_s: float = 0.0  # model=accelerator: seconds this task's calls held the simulated device
    device_wait_s: float = 0.0  # ... and waited for its lock (another task held the same GPU)
    device_calls: int = 0
    # executors on other machines (`TaskLedger.reads_executor_cpu`): the CPU seconds its Python worker, that worker's
    # daemon and its executor's JVM had used when the task started and ended (`process_cpu.executor_now`; empty
    # where the driver sees them), and the seconds reading them took the task
    executor_cpu_start: dict[str, float] = field(default_factory=dict)
    executor_cpu_end: dict[str, float] = field(default_factory=dict)
    executor_cpu_read_s: float = 0.0

    def add(self, output: Output) -> None:
        if self.rows_in and faults.armed(self.step, self.partition):  # a batch is already in Spark's hands
            faults.kill_executor()
        self.rows_in += len(output) + len(output.bad)
        self.rows_out += len(output)
        self.bad.extend(output.bad)
        self.model_call_rows.extend(output.model_calls)
        self.prepare_s += output.prepare_s
        self.prepare_cpu_s += output.prepare_cpu_s
        self.finish_s += output.finish_s

    def fed(self, batches: Iterable[T], size: Callable[[T], tuple[int, int]] | None) -> Iterator[T]:
        """The batches Spark hands the UDF, the wait for each timed and, unless `size` is None (rows that
        come one by one, not in Arrow batches), its (rows, Arrow bytes) by `size` recorded: what the UDF
        really got, whatever maxRecordsPerBatch asked for."""
        iterator = iter(batches)
        while True:
            started = now()
            batch = next(iterator, _END)
            if batch is _END:
                return
            self.input_waits.append(now() - started)
            if size is not None:
                self.called(*size(batch))
            yield batch

    def called(self, rows: int, nbytes: int) -> None:
        """One batch Spark handed the UDF (a scalar UDF's call): its rows and Arrow bytes."""
        self.udf_call_rows.append(rows)
        self.udf_call_bytes.append(nbytes)

    def handed_back(self, convert: Callable[[], T]) -> Iterator[T]:
        """One result, converted by `convert` and yielded to Spark; from the conversion until Spark asks for
        the next result (its serialization, the transfer, the work downstream, the sink) is `results_s`."""
        started = now()
        yield convert()
        self.results_s += now() - started

    def merge(self, other: TaskRecord) -> TaskRecord:
        return replace(
            self,
            start=min(self.start, other.start),
            end=max(self.end, other.end),
            rows_in=self.rows_in + other.rows_in,
            rows_out=self.rows_out + other.rows_out,
            model_loads=max(self.model_loads, other.model_loads),
            model_builds=self.model_builds + other.model_builds,
            bad=self.bad + other.bad,
            udf_call_rows=self.udf_call_rows + other.udf_call_rows,
            udf_call_bytes=self.udf_call_bytes + other.udf_call_bytes,
            model_call_rows=self.model_call_rows + other.model_call_rows,
            input_waits=self.input_waits + other.input_waits,
            between_calls=[*self.between_calls, max(0.0, other.start - self.end), *other.between_calls],
            prepare_s=self.prepare_s + other.prepare_s,
            prepare_cpu_s=self.prepare_cpu_s + other.prepare_cpu_s,
            finish_s=self.finish_s + other.finish_s,
            results_s=self.results_s + other.results_s,
            device_busy_s=self.device_busy_s + other.device_busy_s,
            device_wait_s=self.device_wait_s + other.device_wait_s,
            device_calls=self.device_calls + other.device_calls,
            executor_cpu_start=self.executor_cpu_start if self.start <= other.start else other.executor_cpu_start,
            executor_cpu_end=other.executor_cpu_end if other.end >= self.end else self.executor_cpu_end,
            executor_cpu_read_s=self.executor_cpu_read_s + other.executor_cpu_read_s,
        )


_parts: dict[tuple[int, str], int] = {}  # (task attempt id, step) -> parts this worker process has reported


def _next_part(context: TaskContext, step: str) -> int:
    """The ordinal of the next part `step` reports in this task attempt (a Python worker runs one task at a
    time, so the counts of earlier attempts are dropped)."""
    attempt = context.taskAttemptId()
    if any(key[0] != attempt for key in _parts):
        _parts.clear()
    number = _parts.get((attempt, step), 0)
    _parts[(attempt, step)] = number + 1
    return number


class TaskLedger:
    """Driver side: a directory of side files, cleared before each pass; executor side: `task`.

    The ledger is pickled into the UDFs' closures, so it carries nothing but the directory and
    `reads_executor_cpu` (the driver's counts stay on the driver: `_builds` is not sent). `reads_executor_cpu`:
    the executors run where the driver's process tree does not reach (a cluster of other machines), so each task
    records its executor's CPU as it starts and ends (`executor_cpu`)."""

    def __init__(self, directory: Path, reads_executor_cpu: bool = False) -> None:
        self.directory = Path(directory).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.reads_executor_cpu = reads_executor_cpu
        self._builds: Counter[int] = Counter()  # builds of the model per worker PID, over this ledger's passes

    def __getstate__(self) -> dict:
        return {"directory": self.directory, "reads_executor_cpu": self.reads_executor_cpu}

    def __setstate__(self, state: dict) -> None:
        self.directory = state["directory"]
        self.reads_executor_cpu = state["reads_executor_cpu"]
        self._builds = Counter()

    def summary(self, records: list[TaskRecord]) -> dict:
        """`summarize` of one pass's records, with `max_model_loads_per_worker` counting the builds of the
        model each worker made during this ledger's passes so far (one run's): a reused worker's earlier
        builds of it (another run in the same application, a test session's) are not this run's."""
        for record in records:
            self._builds[record.pid] += record.model_builds
        reports = list(self.directory.glob(f"*{SUFFIX}"))
        channel = {
            "how": "a file per task report on the storage root",
            "directory": str(self.directory),
            "reports": len(reports),
            "bytes": sum(path.stat().st_size for path in reports),
            # the tasks' reading of their executors' CPU (executors on other machines), inside the pass
            "executor_cpu_read_s": round(sum(record.executor_cpu_read_s for record in records), 4),
        }
        return {
            **summarize(records),
            "max_model_loads_per_worker": max(self._builds.values(), default=0),
            "channel": channel,
        }

    def clear(self) -> None:
        """Remove every report (and any temporary file a killed task left): the next pass starts empty."""
        for path in self.directory.iterdir():
            path.unlink(missing_ok=True)

    def remove(self) -> None:
        """Remove the directory with what is in it, when the run has read the last pass."""
        self.clear()
        self.directory.rmdir()

    def records(self) -> list[TaskRecord]:
        """One record per (step, stage, partition): the parts of its latest task attempt, merged."""
        latest: dict[tuple, int] = {}
        parts: dict[tuple, list[tuple[int, TaskRecord]]] = {}
        for path in self.directory.glob(f"*{SUFFIX}"):  # hidden temporary files do not match
            (step, stage, partition, attempt_id, part), record = pickle.loads(path.read_bytes())
            task = (step, stage, partition)
            if attempt_id > latest.get(task, -1):
                latest[task], parts[task] = attempt_id, []
            if attempt_id == latest[task]:
                parts[task].append((part, record))
        merged = []
        for task in sorted(parts, key=str):
            ordered = [record for _, record in sorted(parts[task], key=lambda item: item[0])]
            first = ordered[0]
            for record in ordered[1:]:
                first = first.merge(record)
            merged.append(first)
        return merged

    @contextmanager
    def task(self, step: Step) -> Iterator[TaskRecord]:
        """Executor side: set this task's torch threads and device, and write its record when it ends, as
        the next part of this task attempt's step; the model builds it counts are those of the step's model."""
        context = TaskContext.get()
        part = _next_part(context, step.name)
        gpus = context.resources().get("gpu")
        addresses = list(gpus.addresses) if gpus else []
        cpus = context.cpus()
        use_threads(cpus)
        builds = model_builds(step.inference.model)
        used = accelerator.usage()
        read_from = now()
        # a task's later parts (per-batch styles) need no start: its merged record starts at its first part's
        started_at = process_cpu.executor_now() if self.reads_executor_cpu and part == 0 else {}
        record = TaskRecord(
            step=step.name,
            stage=context.stageId(),
            partition=context.partitionId(),
            attempt=context.attemptNumber(),
            pid=os.getpid(),
            cpus=cpus,
            device=step.inference.device(addresses),
            gpu_addresses=addresses,
            start=time.time(),
            python_worker=worker_view(),
            **where(),
            executor_cpu_start=started_at,
            executor_cpu_read_s=now() - read_from if self.reads_executor_cpu else 0.0,
        )
        yield record
        record.end = time.time()
        if self.reads_executor_cpu:
            read_from = now()
            record.executor_cpu_end = process_cpu.executor_now()
            record.executor_cpu_read_s += now() - read_from
        record.model_loads = model_builds(step.inference.model)
        record.model_builds = record.model_loads - builds
        usage = accelerator.usage()
        record.device_busy_s, record.device_wait_s = usage.busy_s - used.busy_s, usage.wait_s - used.wait_s
        record.device_calls = usage.calls - used.calls
        attempt_id = context.taskAttemptId()
        key = (step.name, record.stage, record.partition, attempt_id, part)
        name = f"{step.name}-stage{record.stage}-part{record.partition}-attempt{record.attempt}-tid{attempt_id}-{part}"
        self.report(f"{name}{SUFFIX}", pickle.dumps((key, record)))

    def report(self, name: str, data: bytes) -> None:
        """Executor side: one task report, whole, under `name` in the directory (its one write)."""
        atomic_write(self.directory / name, data)


def executor_cpu(records: list[TaskRecord]) -> dict[str, dict[str, float]]:
    """Per executor ("host/executor id") whose tasks read it (`process_cpu.executor_now`): the CPU its JVM and its
    Python workers' daemon used from its first task's start to its last task's end in the pass, and each of its
    Python workers from the first start to the last end of that worker's tasks, by kind. Not seen: a worker's CPU
    outside its tasks (a new worker's start, once per worker: workers are reused unless
    `spark.python_worker_reuse=false`), the JVM's before the first task and after the last."""
    by_executor: dict[str, list[TaskRecord]] = {}
    for record in records:
        if record.executor_cpu_start and record.executor_cpu_end:
            by_executor.setdefault(f"{record.host}/{record.executor}", []).append(record)
    found: dict[str, dict[str, float]] = {}
    for key, ran in sorted(by_executor.items()):
        by_worker: dict[int, list[TaskRecord]] = {}
        for record in ran:
            by_worker.setdefault(record.pid, []).append(record)
        workers = sum(_used(tasks, process_cpu.WORKER) for tasks in by_worker.values())
        found[key] = {
            process_cpu.EXECUTOR_JVMS: round(_used(ran, process_cpu.JVM), 4),
            process_cpu.PYTHON_WORKERS: round(_used(ran, process_cpu.DAEMON) + workers, 4),
        }
    return found


def _used(records: list[TaskRecord], name: str) -> float:
    """CPU seconds process `name` used from the earliest start to the latest end among `records`."""
    first, last = min(records, key=lambda r: r.start), max(records, key=lambda r: r.end)
    return last.executor_cpu_end.get(name, 0.0) - first.executor_cpu_start.get(name, 0.0)


def summarize(records: list[TaskRecord]) -> dict:
    """The facts a result keeps about one pass's tasks."""
    steps: dict[str, dict[str, int]] = {}
    for record in records:
        totals = steps.setdefault(record.step, {"tasks": 0, "rows_in": 0, "rows_out": 0, "bad": 0})
        totals["tasks"] += 1
        totals["rows_in"] += record.rows_in
        totals["rows_out"] += record.rows_out
        totals["bad"] += len(record.bad)
    return {
        "steps": steps,
        "worker_pids": sorted({record.pid for record in records}),
        "hosts": sorted({record.host for record in records}),
        "model_builds": sum(record.model_builds for record in records),
        "records": [asdict(record) for record in records],
        "executor_cpu": executor_cpu(records),  # empty where the driver sees the executors' processes
    }


def merge(first: dict, second: dict) -> dict:
    """One pass's `summarize` from two applications that ran different steps of it (two_stage on two clusters)."""
    return {
        "steps": {**first["steps"], **second["steps"]},
        "worker_pids": sorted({*first["worker_pids"], *second["worker_pids"]}),
        "hosts": sorted({*first.get("hosts", []), *second.get("hosts", [])}),
        "max_model_loads_per_worker": max(first["max_model_loads_per_worker"], second["max_model_loads_per_worker"]),
        "model_builds": first["model_builds"] + second["model_builds"],
        "records": first["records"] + second["records"],
        "executor_cpu": {**first.get("executor_cpu", {}), **second.get("executor_cpu", {})},
        "channel": {
            **second["channel"],
            "reports": first["channel"]["reports"] + second["channel"]["reports"],
            "bytes": first["channel"]["bytes"] + second["channel"]["bytes"],
            "executor_cpu_read_s": first["channel"].get("executor_cpu_read_s", 0.0)
            + second["channel"].get("executor_cpu_read_s", 0.0),
        },
    }


def arrow_bytes(columns: Iterable[Sequence[Any]]) -> int:
    """Bytes the columns take as Arrow lays them out: binary and string values plus their 4-byte offsets,
    fixed-width values at their width (validity bitmaps left out). How a pandas or NumPy UDF measures the
    Arrow batch it was handed without converting it back; `pa.RecordBatch.nbytes` for Arrow batches."""
    total = 0
    for values in columns:
        dtype = getattr(values, "dtype", None)
        if dtype is not None and dtype.kind != "O" and getattr(values, "ndim", 1) == 1:
            total += int(values.nbytes)
            continue
        total += 4 * (len(values) + 1)
        for value in values:
            if isinstance(value, (bytes, bytearray, memoryview)):
                total += len(value)
            elif isinstance(value, str):
                total += len(value.encode())
            elif value is not None:
                total += 8
    return total
