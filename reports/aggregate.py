"""Every job under some directories, read back from disk into one table: one row per job, failed and
unfinished ones included, so a report never silently drops a variant.

A job dir is a directory holding `result.json` (written atomically by the job, also when it fails), or
`job.yaml` (written when the job starts), or any non-hidden subdirectory of a Hydra sweep dir (one holding
`multirun.yaml`). A job dir without `result.json` is a row with status `missing`, one whose result.json is
not JSON a row with status `unreadable`. Hidden files and
directories (`.hydra/`, the `.result.json.*.tmp` a job is still writing) are never read as results.

The file names are `pipeline.rundir`'s, and each record is read through the result contract
(`pipeline.results.as_result`): a row holds the fields the job wrote, by the names it wrote them under.
"""

from __future__ import annotations

import json
import os
import re
import statistics
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from pipeline.results import VARIANT_FIELDS, Metrics, Result, as_result, read_result
from pipeline.rundir import JOB_FILE, RESULT_FILE, RunDir, atomic_write, files_named
from pipeline.spark.plan import is_connect_url
from reports.cost import CostUnavailable, run_cost

SWEEP_FILE = "multirun.yaml"
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
MISSING_REASON = "no result.json: the job has not finished (interrupted sweep, or still running)"

# Always in a label (values only), in this order; the other fields join a label as key=value when they vary.
HEADLINE_FIELDS = ("udf", "topology", "cluster", "batch_size")
# What a run did beyond its variant, read from its result: the images, the machine, the cluster's shape and the
# GPU amounts its tasks took as the run resolved them (`cluster`), the predict stage's partitions (`config`),
# and whether Spark Connect carried it. A run is only ever compared, pooled or labelled apart with these too.
RUN_FIELDS = ("num_images", "hostname", "shape", "gpu_amounts", "predict_partitions", "connect")
SAME_RUN = (*VARIANT_FIELDS, *RUN_FIELDS)
VALUE_ONLY = ("udf", "topology", "cluster", "device", "shape", "gpu_amounts")  # named by their value in a label
SHORT_NAMES = {
    "batch_size": "bs",
    "max_records_per_batch": "arrow_batch",
    "partitions": "partitions",
    "python_worker_reuse": "worker_reuse",
    "gpu_task_amount": "gpu_per_task",
    "prefetch": "prefetch",
    "rebuild_model_per_batch": "rebuild_model",
    "loader_workers": "loader_workers",
    "sink": "sink",
    "dataset_source": "data",
    "image_format": "format",
    "weights": "weights",
    "engine": "engine",
    "model": "model",
    "device": "device",
    "precision": "precision",
    "channels_last": "channels_last",
    "compile": "compile",
    "decoder": "decoder",
    "decode_on": "decode_on",
    "max_bytes_per_batch": "arrow_bytes",
    "row_group_size": "row_group",
    "python_udf_pipelined": "pipelined",
    "python_udf_pipelined_queue_depth": "queue_depth",
    "arrow_compression_codec": "arrow_codec",
    "python_unix_domain_socket": "unix_socket",
    "python_udf_arrow": "python_udf_arrow",
    "resize_size": "resize",
    "crop_size": "crop",
    "num_images": "images",
    "hostname": "host",
    "predict_partitions": "predict_partitions",
}
CSV_COLUMNS = (
    "label",
    "status",
    "reason",
    "throughput_images_per_s",
    "usd_per_million_images",
    "usd_per_pass",
    "cost_note",
    "cpu_core_ms_per_image",
    "cpu_kinds",
    *VARIANT_FIELDS,
    "num_images",
    "shape",
    "gpu_amounts",
    "predict_partitions",
    "connect",
    "num_bad_images",
    "repeats",
    "throughput_per_repeat",
    "throughput_min",
    "throughput_max",
    "wall_s",
    "startup_s",
    "cluster_start_s",
    "data_prepare_s",
    "data_generated_on",
    "data_generation_images_per_s",
    "nodes_ran_tasks",
    "intermediate_bytes",
    "model_builds",
    "max_model_loads_per_worker",
    "model_slots",
    "slot_utilization",
    "idle_slot_stages",
    "violation",
    "batch_caps",
    "gpus",
    "gpu_name",
    "hostname",
    "git_sha",
    "error_type",
    "error_message",
    "started_at",
    "job_dir",
)

INTEGER_COLUMNS = (
    "batch_size",
    "max_records_per_batch",
    "partitions",
    "prefetch",
    "loader_workers",
    "num_images",
    "num_bad_images",
    "repeats",
    "intermediate_bytes",
    "model_builds",
    "max_model_loads_per_worker",
    "model_slots",
    "max_bytes_per_batch",
    "row_group_size",
    "python_udf_pipelined_queue_depth",
    "predict_partitions",
)
FLAG_COLUMNS = (
    "connect",
    "python_worker_reuse",
    "rebuild_model_per_batch",
    "channels_last",
    "compile",
    "python_udf_pipelined",
    "python_unix_domain_socket",
    "python_udf_arrow",
)


@dataclass(frozen=True)
class Job:
    """One job dir and what it left: its result record (None when it has none) and its Hydra overrides."""

    dir: Path
    result: dict[str, Any] | None
    overrides: tuple[str, ...]

    @cached_property
    def decoded(self) -> Result | None:
        """The record decoded by the result contract (`pipeline.results.as_result`); None when there is none."""
        return None if self.result is None else as_result(self.result)


def _natural_key(path: Path) -> list[Any]:
    """Order 2 before 10, as Hydra numbers a sweep's jobs."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def job_dirs(directory: Path) -> list[Path]:
    """The job dirs at or under `directory` (see the module docstring)."""
    root = Path(directory).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"no such directory: {directory}")
    found: set[Path] = set()
    for marker in (RESULT_FILE, JOB_FILE):
        found.update(path.parent for path in files_named(root, marker))
    for sweep in files_named(root, SWEEP_FILE):
        found.update(child for child in sweep.parent.iterdir() if child.is_dir() and not child.name.startswith("."))
    return sorted(found, key=_natural_key)


def _overrides(job_dir: Path) -> tuple[str, ...]:
    path = job_dir / OVERRIDES_FILE
    if not path.is_file():
        return ()
    return tuple(str(item) for item in yaml.safe_load(path.read_text()) or ())


def find_jobs(directories: Iterable[Path]) -> list[Job]:
    """Every job under `directories`, each once, in sweep order; raises FileNotFoundError for a missing dir."""
    seen: dict[Path, None] = {}
    for directory in directories:
        seen.update(dict.fromkeys(job_dirs(directory)))
    return [Job(job_dir, _read(RunDir(job_dir).result), _overrides(job_dir)) for job_dir in seen]


def _read(path: Path) -> dict[str, Any] | None:
    """The result record; None when there is none; an `unreadable` record when it is not JSON."""
    if not path.is_file():
        return None
    try:
        return read_result(path)
    except json.JSONDecodeError as error:
        return {"status": "unreadable", "error": {"type": "JSONDecodeError", "message": f"{path} is not JSON: {error}"}}


def _label_value(field: str, value: Any) -> str:
    if field == "connect":
        return "Connect" if value else "classic"
    if field in VALUE_ONLY:  # device: "simulated ...", shape: "4 slots, 2 emulated GPUs"
        return str(value)
    return f"{SHORT_NAMES[field]}={value}"


def variant_label(variant: dict[str, Any], fields: Iterable[str], headline: Iterable[str] = HEADLINE_FIELDS) -> str:
    """A readable name for a variant: its `headline` fields, then `fields` (`label_fields`) as key=value.

    A plot that shows some fields by facet or colour leaves them out of `headline`.
    """
    wanted = list(dict.fromkeys([*headline, *fields]))
    if pd.notna(variant.get("device")) and "device" not in wanted:  # a simulated device is always named
        wanted.append("device")
    if other_network(variant.get("model")) and "model" not in wanted:  # so is a network other than ResNet50
        wanted.append("model")
    if pd.notna(variant.get("engine")) and variant["engine"] != "spark":
        wanted = ["engine", *[field for field in wanted if field not in ("udf", "topology", "cluster")]]
    return " · ".join(_label_value(field, variant[field]) for field in wanted if pd.notna(variant.get(field)))


def other_network(model: Any) -> bool:
    """A network other than ResNet50 (`model.arch`, `model.factory`); the null model and a simulated device are
    not networks, and ResNet50 is every older result's."""
    return isinstance(model, str) and model not in ("resnet50", "null_model", "accelerator")


def fastest_ok(rows: pd.DataFrame) -> pd.Series | None:
    """The ok run of `rows` with the highest throughput; None when none is ok with a throughput."""
    ok = rows[(rows["status"] == "ok") & rows["throughput_images_per_s"].notna()]
    return None if ok.empty else ok.loc[ok["throughput_images_per_s"].idxmax()]


def _values(column: pd.Series) -> int:
    """How many values a column takes, the missing one (a knob at its default, or not recorded) counted too."""
    return column.dropna().astype(str).nunique() + int(column.isna().any())


def varying_fields(frame: pd.DataFrame, fields: Iterable[str] = VARIANT_FIELDS) -> list[str]:
    """The variant fields, of `fields`, that take more than one value among the runs of one engine.

    A knob left at its default (None) against one set varies (a fast path on against none); a field that only
    some engines have (Spark's Arrow batch size) does not for that alone. The engine is never an extra: a label
    names it first when it is not Spark."""
    known = frame[frame["engine"].notna()].groupby("engine")
    return [field for field in fields if field != "engine" and known[field].agg(_values).gt(1).any()]


def label_fields(frame: pd.DataFrame) -> list[str]:
    """The fields a label names beyond HEADLINE_FIELDS: every variant field that varies, then each RUN_FIELDS
    fact (images, machine, cluster shape...) that tells apart runs the fields before it would name alike, so
    runs that did different work never share a label (the run's shape follows its cluster mode mostly and is
    named only where it does not)."""
    fields = [field for field in varying_fields(frame) if field not in HEADLINE_FIELDS]
    known = frame[frame["engine"].notna()]
    for field in RUN_FIELDS:
        named = ["engine", "device", *HEADLINE_FIELDS, *fields]
        if known.groupby(named, dropna=False)[field].agg(_values).gt(1).any():
            fields.append(field)
    return fields


def comparable(frame: pd.DataFrame, compared: Iterable[str]) -> Iterator[tuple[dict[str, Any], pd.DataFrame]]:
    """The runs of `frame` in groups that may be set against each other on the `compared` axes, with the values
    each group shares.

    The rule, for every comparison the reports make (peers, Connect, fast paths, model server): two runs are
    compared only when they are equal in everything that defines the work and the variant (SAME_RUN: every
    variant field, the image count, the machine, the cluster's shape and GPU amounts, the predict partitions,
    Connect or not) except the compared axes. A comparison names its axes; nothing else may differ, so a
    ratio never mixes the effect of its axis with another knob's, another data set's or another machine's.
    """
    compared = set(compared)
    keys = [field for field in SAME_RUN if field not in compared]
    for values, group in frame.groupby(keys, dropna=False, sort=True):
        yield {key: None if _missing(value) else value for key, value in zip(keys, values)}, group


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def work_text(work: dict[str, Any]) -> str:
    """The work a comparison's runs did, for its table and its sweep-end line: the model (and its simulated
    device, precision and weights), the data, the JPEG decoder, the sink and the machine."""
    model = str(work["model"]) + "".join(
        f" ({value})" for value in (work.get("device"), work.get("precision")) if value is not None
    )
    if work.get("crop_size") is not None or work.get("resize_size") is not None:
        model += f", input {work.get('crop_size') or 224} px (resize {work.get('resize_size') or 256})"
    if work.get("weights") not in (None, "none"):
        model += f", {work['weights']} weights"
    data = f"{work['num_images']} {work['image_format']} images ({work['dataset_source']})"
    if work.get("row_group_size") is not None:
        data += f", row groups of {work['row_group_size']}"
    parts = [model, data]
    if work.get("decoder") is not None and work.get("image_format") != "raw":
        parts.append(f"{work['decoder']} decoder")
    if work.get("sink") not in (None, "noop"):
        parts.append(f"sink {work['sink']}")
    parts.append(f"on {work['hostname']}")
    return " · ".join(parts)


def _median(values: list[float] | None) -> float | None:
    return statistics.median(values) if values else None


def _cpu_ms_per_image(metrics: Metrics) -> float | None:
    """What a run's choices cost in cores, beside its throughput: the CPU every process of the run on this machine
    used in a timed pass (`metrics.process_cpu_s`, summed over its kinds; the median over the passes), in core-ms
    an image. None where none was recorded (engine=torch or ray, runs from before it was), never 0."""
    cpu = metrics.process_cpu_s
    if not cpu or not metrics.num_images:
        return None
    per_pass = statistics.median(sum(seconds) for seconds in zip(*cpu.values(), strict=True))
    return per_pass / metrics.num_images * 1000


def _reason(status: str, error: dict[str, Any] | None) -> str:
    if status == "missing":
        return MISSING_REASON
    if error:
        return f"{error.get('type', 'Error')}: {error.get('message', '')}"
    return ""


def _shape(result: Result) -> str | None:
    """The cluster a run had, as it resolved it (its `cluster` record; the workers from its config): task slots,
    as workers × slots a worker with more than one worker, and GPUs. None without a record (engine=torch)."""
    record, cluster = result.cluster, result.config.get("cluster") or {}
    mode = cluster.get("backend") if cluster.get("mode") == "connect" else cluster.get("mode")
    workers = 1 if mode == "local" else int(cluster.get("workers") or 1)
    gpus = record.get("gpus") or {}
    parts = []
    if record.get("slots"):
        slots = int(record["slots"])
        parts.append(f"{workers}×{slots // workers} slots" if workers > 1 else f"{slots} slots")
    count = gpus.get("count", (gpus.get("per_worker") or 0) * workers)  # Ray records its count, Spark a worker's
    if count:
        parts.append(f"{count} {gpus.get('kind')} GPUs")
    return ", ".join(parts) or None


def _gpu_amounts(result: Result) -> str | None:
    """The GPUs a task took, as the run resolved them (the variant's gpu_task_amount is the config's, where 0
    means "as the topology needs"), and a stage_level predict task's. None when tasks took no GPU."""
    gpus = result.cluster.get("gpus") or {}
    if not gpus.get("task_amount"):
        return None
    text = f"{gpus['task_amount']:g} GPU a task"
    if result.variant and result.variant.topology == "stage_level":
        text += f", {gpus['predict_task_amount']:g} a predict task"
    return text


def _connect(result: Result) -> bool | None:
    """Whether a Spark run went through Spark Connect: its cluster record says so, or (a run refused before it
    had one) its config (cluster=connect, or an sc:// master). None for the other engines."""
    if not result.variant or result.variant.engine != "spark":
        return None
    master = (result.config.get("cluster") or {}).get("master")
    return "connect" in result.cluster or result.variant.cluster == "connect" or is_connect_url(master)


def _row(job: Job) -> dict[str, Any]:
    result = job.decoded or as_result({})  # no record: every field empty
    status = result.status or "missing"
    metrics, env, error = result.metrics, result.env, result.error
    repeats = metrics.throughput_per_repeat
    row: dict[str, Any] = {
        "job_dir": str(job.dir),
        "status": status,
        "reason": _reason(status, error),
        "error_type": (error or {}).get("type"),
        "error_message": (error or {}).get("message"),
        "overrides": " ".join(job.overrides),
        **(asdict(result.variant) if result.variant else dict.fromkeys(VARIANT_FIELDS)),
        "num_images": metrics.num_images,
        "shape": _shape(result),
        "gpu_amounts": _gpu_amounts(result),
        "predict_partitions": (result.config.get("topology") or {}).get("predict_partitions"),
        "connect": _connect(result),
        "num_bad_images": metrics.num_bad_images,
        "throughput_images_per_s": metrics.throughput_images_per_s,
        "throughput_per_repeat": list(repeats),
        "repeats": len(repeats),
        "throughput_min": min(repeats, default=None),
        "throughput_max": max(repeats, default=None),
        "wall_s": _median(metrics.wall_s),
        "cpu_core_ms_per_image": _cpu_ms_per_image(metrics),
        # the kinds of process counted: no Python workers where the executors are on other machines (cluster=remote),
        # no executor JVM under cluster=local (its tasks run in the driver's)
        "cpu_kinds": "; ".join(metrics.process_cpu_s) or None,
        "startup_s": metrics.startup_s,
        "cluster_start_s": metrics.cluster_start_s,
        "data_prepare_s": metrics.data_prepare_s,
        # generated by this run (else empty): where, and images/s (`pipeline.spark.generation`, `datasets`)
        "data_generated_on": (result.dataset.get("generation") or {}).get("on"),
        "data_generation_images_per_s": (result.dataset.get("generation") or {}).get("images_per_s"),
        "nodes_ran_tasks": " ".join(result.evidence.get("task_nodes") or {}) or None,  # hosts of the last pass's tasks
        "intermediate_bytes": metrics.intermediate_bytes,
        "model_builds": result.tasks.get("model_builds"),
        "max_model_loads_per_worker": metrics.max_model_loads_per_worker,
        "model_slots": result.cluster.get("model_slots"),
        "slot_utilization": (result.evidence.get("checks") or {}).get("min_slot_utilization"),
        "idle_slot_stages": "; ".join((result.evidence.get("checks") or {}).get("idle_slot_stages") or []) or None,
        "violation": (result.evidence.get("checks") or {}).get("violation"),
        # the batch axes that did not take effect and the caps that won (pipeline.spark.batching)
        "batch_caps": "; ".join((result.evidence.get("checks") or {}).get("batch_caps") or []) or None,
        "gpus": env.get("gpus"),
        "gpu_name": env.get("gpu_name"),
        "hostname": env.get("hostname"),
        "git_sha": env.get("git_sha"),
        "started_at": result.started_at,
        "usd_per_pass": None,
        "usd_per_million_images": None,
        "cost_note": None,
    }
    row["weights"] = row["weights"] or env.get("weights")
    if result.variant and not row["model"]:
        row["model"] = "resnet50"  # results from before the null model was an option
    if job.result is not None:
        try:
            cost = run_cost(job.result)
            row["usd_per_pass"], row["usd_per_million_images"] = cost.usd_per_pass, cost.usd_per_million_images
        except CostUnavailable as reason:
            row["cost_note"] = str(reason)
    return row


def job_frame(jobs: list[Job]) -> pd.DataFrame:
    """One row per job; `label` names the variant by its headline fields and `label_fields`, `run_label` the
    run (the label, plus its sweep and job dir when several runs share it).

    Counts are nullable integers and flags nullable booleans, so a job without them stays empty rather than
    turning 32 into 32.0.
    """
    rows = [_row(job) for job in jobs]
    frame = pd.DataFrame(rows, columns=[*dict.fromkeys([*CSV_COLUMNS, "overrides"])])
    frame = frame.astype(
        {column: "Int64" for column in INTEGER_COLUMNS} | {column: "boolean" for column in FLAG_COLUMNS}
    )
    extra = label_fields(frame)
    frame["label"] = [
        variant_label(row, extra) if row["engine"] is not None else (row["overrides"] or Path(row["job_dir"]).name)
        for row in rows
    ]
    repeated = frame["label"].duplicated(keep=False)
    frame["run_label"] = [
        f"{label} [{Path(job_dir).parent.name}/{Path(job_dir).name}]" if twice else label
        for label, job_dir, twice in zip(frame["label"], frame["job_dir"], repeated)
    ]
    return frame


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """results.csv: CSV_COLUMNS, job dirs relative to the file, per-repeat throughputs joined by ';'."""
    table = frame[list(CSV_COLUMNS)].copy()
    table["job_dir"] = [os.path.relpath(job_dir, Path(path).resolve().parent) for job_dir in table["job_dir"]]
    table["throughput_per_repeat"] = [
        ";".join(repr(value) for value in values) for values in table["throughput_per_repeat"]
    ]
    return atomic_write(path, table.to_csv(index=False))
