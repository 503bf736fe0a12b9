"""Proof that a Spark variant did what its name says, kept in its result.

From the application's event log (parsed after it stopped): per stage of the last timed pass, its step,
task count, the most tasks that ran at once, the executors and the task timeline; from the tasks' own
reports: the GPU addresses each model task received and the batches each stage's UDF and model calls were
handed (`pipeline.spark.batching`). Checked here: no stage that runs the model ever ran
more tasks at once than the GPU slots, and under stage_level the preprocess stage ran wider than the
predict stage. A run that breaks a claim fails with the reason (the original study's stage-level run
silently ran more predict tasks than GPUs and died of CUDA out-of-memory).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.config.schema import Topology
from pipeline.inference.steps import STEPS, Preprocess, Served
from pipeline.spark import fastpaths
from pipeline.spark.batching import batch_sizes
from pipeline.spark.eventlog import event_log_file, executors, jobs, stages, tasks
from pipeline.spark.nodes import nodes_of
from pipeline.spark.plan import Plan
from pipeline.spark.utilization import idle_slot_stages, slot_usage

MODEL_STEPS = tuple(name for name, kind in STEPS.items() if kind.runs_model)
STAGE_KEYS = (
    "stage_id",
    "attempt",
    "num_tasks",
    "tasks",
    "failed_tasks",
    "max_concurrent",
    "executors",
    "duration_s",
    "resource_profile_id",
    "task_resources",
)


class ProfileNotRespected(RuntimeError):
    """A model stage ran more tasks at once than the GPU slots it asked for."""


def _usage(stage: dict[str, Any], attempts: list[dict[str, Any]], slots: int) -> dict[str, Any]:
    """A stage's slots, how busy it kept them (`utilization.slot_usage`) and the rows each task read, by
    partition (successful attempts; a task that read nothing is there with 0)."""
    busy = [(t["launch"], t["run_end"]) for t in attempts if t["launch"] is not None and t["run_end"] is not None]
    if stage["submitted"] is None or stage["completed"] is None:
        usage = slot_usage([], 0.0, 0.0, slots)
    else:
        usage = slot_usage(busy, stage["submitted"], stage["completed"], slots)
    done = sorted((t for t in attempts if t["successful"]), key=lambda t: t["partition_id"])
    return {"slots": slots, **usage, "rows_per_task": [t["records_read"] for t in done]}


class EvidenceMissing(RuntimeError):
    """The event log lacks what a finished pass must have left in it."""


def collect(
    event_log_dir: Path, records: list[dict[str, Any]], description: str, slots: int, model_slots: int
) -> dict[str, Any]:
    """Stages, timeline and GPU assignments of the pass whose jobs carry `description` and whose tasks reported
    `records` (`pipeline.spark.ledger.summarize`); each stage with its slot utilization over `slots` task slots
    (`model_slots` for a stage that runs the model)."""
    log = event_log_file(event_log_dir)
    step_of = {record["stage"]: record["step"] for record in records}
    chosen = [stage for stage in stages(log) if stage["job_description"] == description]
    if not chosen:  # the pass ran: a log without its stages was cut short, and every claim from it would be empty
        raise EvidenceMissing(
            f"the event log {log} holds no stage of {description!r}: Spark could not write it whole (a full or "
            "unwritable run dir?), so the run's evidence cannot be read"
        )
    ids = {stage["stage_id"] for stage in chosen}
    start = min((stage["submitted"] for stage in chosen if stage["submitted"]), default=0.0)
    attempts = [task for task in tasks(log) if task["stage_id"] in ids]
    timeline = [
        {
            "stage_id": task["stage_id"],
            "step": step_of.get(task["stage_id"]),
            "executor_id": task["executor_id"],
            "host": task.get("host"),
            "slot": task["slot"],
            "start_s": task["launch"] - start,
            "end_s": (task.get("run_end") or task["finish"] or task["launch"]) - start,
            "successful": task["successful"],
        }
        for task in attempts
    ]
    rows = [
        {
            "step": step_of.get(stage["stage_id"]),
            **{key: stage.get(key) for key in STAGE_KEYS},
            **_usage(
                stage,
                [t for t in attempts if (t["stage_id"], t["stage_attempt"]) == (stage["stage_id"], stage["attempt"])],
                model_slots if step_of.get(stage["stage_id"]) in MODEL_STEPS else slots,
            ),
        }
        for stage in chosen
    ]
    batches = batch_sizes(records)
    fast_paths = fastpaths.evidence(records, log, ids)
    end = max((stage["completed"] for stage in chosen if stage["completed"]), default=start)
    return {
        **collect_tasks(records),
        "stages": rows,
        "timeline": timeline,
        "nodes": node_usage(attempts, executors(log), start, end, slots),
        "batches": batches,
        "fast_paths": fast_paths,
    }


def node_usage(
    attempts: list[dict[str, Any]], added: list[dict[str, Any]], start: float, end: float, slots: int
) -> list[dict[str, Any]]:
    """Per node (an executor's host) over the pass's wall time [start, end]: its executors, the task attempts it
    ran, and how busy it kept its share of the `slots` task slots (by its executors' cores); a cluster of other
    machines shows here a node that idled while another worked. A node is named by the address Spark knows its
    executors by; `task_nodes` (`nodes.nodes_of`) names it as its tasks saw it: host name, machine and CPUs."""
    executors = [e for e in added if e["executor_id"] != "driver" and e.get("host")]
    cores = {e["executor_id"]: e.get("cores") or 0 for e in executors}
    total = sum(cores.values())
    hosts = sorted({e["host"] for e in executors} | {t["host"] for t in attempts if t.get("host")})
    found = []
    for host in hosts:
        ran = [t for t in attempts if t.get("host") == host]
        ids = sorted({e["executor_id"] for e in executors if e["host"] == host} | {str(t["executor_id"]) for t in ran})
        share = sum(cores.get(i, 0) for i in ids)
        host_slots = max(1, round(slots * share / total)) if total and share else slots
        busy = [(t["launch"], t["run_end"]) for t in ran if t["launch"] is not None and t.get("run_end") is not None]
        found.append(
            {
                "host": host,
                "executors": ids,
                "slots": host_slots,
                "tasks": len(ran),
                **slot_usage(busy, start, end, host_slots),
            }
        )
    return found


def collect_tasks(records: list[dict[str, Any]]) -> dict[str, Any]:
    """What the tasks' own reports (`records`) prove without an event log (an sc:// server's log out of reach): the GPU
    addresses each model task received; no stages, no timeline."""
    gpu_tasks = [
        {"stage": record["stage"], "partition": record["partition"], "gpu_addresses": record["gpu_addresses"]}
        for record in records
        if record["step"] in MODEL_STEPS
    ]
    return {"stages": [], "timeline": [], "model_task_gpus": gpu_tasks, "nodes": [], "task_nodes": nodes_of(records)}


def join(preprocess: dict[str, Any], predict: dict[str, Any], app_ids: tuple[str, str]) -> dict[str, Any]:
    """The evidence of one two_stage pass whose jobs ran in two applications, as if one had run both.

    Stage ids restart at 0 in each application, so every stage row names its `app_id`. In the timeline, the
    first application's executors become `preprocess/<id>` (both number theirs from 0), and the predict
    tasks start where the preprocess tasks ended: the pass's wall time is job 1's plus job 2's.
    """
    offset = max((task["end_s"] for task in preprocess["timeline"]), default=0.0)
    timeline = [{**task, "executor_id": f"preprocess/{task['executor_id']}"} for task in preprocess["timeline"]]
    timeline += [
        {**task, "start_s": task["start_s"] + offset, "end_s": task["end_s"] + offset} for task in predict["timeline"]
    ]
    stages = [
        {**row, "app_id": app_id} for found, app_id in zip((preprocess, predict), app_ids) for row in found["stages"]
    ]

    def tagged(key: str) -> list[dict[str, Any]]:  # the rows of both applications, each naming its app_id
        pairs = zip((preprocess, predict), app_ids)
        return [{**row, "app_id": app_id} for found, app_id in pairs for row in found.get(key, [])]

    fast_paths = fastpaths.join(preprocess.get("fast_paths"), predict.get("fast_paths"))
    return {
        "stages": stages,
        "timeline": timeline,
        "model_task_gpus": predict["model_task_gpus"],
        "nodes": tagged("nodes"),
        "task_nodes": predict.get("task_nodes", {}),  # the predict application's: where the model ran
        "batches": tagged("batches"),
        "time": tagged("time"),
        "fast_paths": fast_paths,
    }


def join_faults(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """`faults` of two applications of one run, together: their lists joined, their counts added."""
    return {key: first[key] + second[key] for key in first}


def faults(event_log_dir: Path) -> dict[str, Any]:
    """What went wrong in the whole application and what Spark did about it: every task attempt that did not
    succeed (with its end reason), the attempts that re-ran a partition, stage attempts that re-ran a stage,
    and the executors lost while jobs ran (those removed when the application stopped are not losses)."""
    log = event_log_file(event_log_dir)
    attempts = tasks(log)
    last_job_end = max((job["completed"] for job in jobs(log) if job["completed"]), default=None)
    lost = [
        {"executor_id": e["executor_id"], "reason": e["removed_reason"]}
        for e in executors(log)
        if e["removed"] is not None and (last_job_end is None or e["removed"] <= last_job_end)
    ]
    failed = [
        {key: task[key] for key in ("stage_id", "stage_attempt", "partition_id", "attempt", "executor_id", "failure")}
        for task in attempts
        if task["end_reason"] is not None and not task["successful"]
    ]
    return {
        "failed_tasks": failed,
        "task_retries": sum(1 for task in attempts if task["attempt"] and not task["speculative"]),
        "stage_retries": sum(1 for stage in stages(log) if stage["attempt"]),
        "executors_lost": lost,
    }


def _widest(rows: list[dict[str, Any]], steps: tuple[str, ...]) -> int:
    return max((row["max_concurrent"] or 0 for row in rows if row["step"] in steps), default=0)


def check(found: dict[str, Any], plan: Plan, topology: Topology) -> dict[str, Any]:
    """The claims this variant makes, each with what was measured against the run's `plan`; `violation` says
    which one broke."""
    rows = found["stages"]
    model_width, model_slots = _widest(rows, MODEL_STEPS), plan.model_slots
    checks: dict[str, Any] = {
        "slots": plan.slots,
        "gpu_slots": plan.gpu_slots,
        "gpus": plan.gpus.kind,
        "model_slots": model_slots,
        "model_stage_max_concurrent": model_width,
        "violation": None,
    }
    if topology in (Topology.split, Topology.stage_level, Topology.two_stage):
        checks["preprocess_stage_max_concurrent"] = _widest(rows, (Preprocess.name,))
    checks["nodes_ran_tasks"] = len(found.get("task_nodes") or {})  # which ones: evidence.task_nodes
    utilizations = [row["slot_utilization"] for row in rows if row.get("slot_utilization") is not None]
    checks["min_slot_utilization"] = min(utilizations, default=None)
    checks["idle_slot_stages"] = idle_slot_stages(rows)  # flagged, not a violation: the split is what is wrong
    checks["every_slot_busy"] = not checks["idle_slot_stages"]
    if topology is Topology.model_server and not rows:  # no event log (an sc:// server's, out of reach)
        checks["preprocessing_on_every_slot"] = None  # not measured: not a violation
    elif topology is Topology.model_server:  # decoding decoupled from the model: every slot, not the GPU count
        width = checks["served_stage_max_concurrent"] = _widest(rows, (Served.name,))
        # a stage of fewer tasks than slots (a small data set, spark.partitions below them) can fill only as many
        tasks = max((row["num_tasks"] for row in rows if row["step"] == Served.name), default=plan.slots)
        wanted = min(plan.slots, tasks)
        checks["preprocessing_on_every_slot"] = width == wanted
        if width != wanted:
            checks["violation"] = (
                f"topology=model_server: the decoding stage ran {width} tasks at once on {plan.slots} task slots "
                f"({wanted} wanted); preprocessing did not decouple from the model"
            )
    if plan.gpu_slots is None:
        return checks
    checks["model_stages_within_gpu_slots"] = model_width <= model_slots
    checks["every_model_task_had_a_gpu"] = all(task["gpu_addresses"] for task in found["model_task_gpus"])
    if topology is Topology.stage_level:
        checks["preprocess_ran_wider_than_predict"] = checks["preprocess_stage_max_concurrent"] > model_width
    if not checks["model_stages_within_gpu_slots"]:
        amount = plan.gpus.predict_task_amount if topology is Topology.stage_level else plan.gpus.task_amount
        checks["violation"] = (
            f"a model stage ran {model_width} tasks at once on {model_slots} GPU slots ({amount} GPU per task)"
        )
    return checks


def enforce(checks: dict[str, Any]) -> None:
    """Fail the run, after its measurements are recorded, if a claim broke."""
    if checks.get("violation"):
        raise ProfileNotRespected(checks["violation"])
