"""The rates file: every rate the bottleneck model uses, measured by `sweep=calibrate`'s runs on one cluster.

Why: the advisor (`python -m reports advise`) ranks variants for the user's own cluster, so its rates must be that
cluster's, not this machine's scaled by assumed factors. `sweep=calibrate` runs a few short jobs there; this module
reads their results (any directory of results: it picks runs by what they ran, not by their names) and writes
one JSON file in which each figure names the runs it came from, or says why it is assumed. The per-stage time
split (`evidence.time`, `pipeline.spark.time_split`) gives the figures in slot-seconds of the tasks' own timers,
each over its run's `stretch` (the tasks' time on a core of their own: the runs' tasks share busy cores):

- decode + preprocess per image (`preprocess_s`): a no-model fused run's `prepare_s` over its images;
- the Arrow transfer per byte: its Parquet scan and wait for rows over the bytes sent to Python;
- per job: the pass's wall time outside its stages; per task: `pipeline.projection.rates.task_runs`;
- per Arrow batch: the slope of the tasks' time outside decode and model between two no-model runs at
  different `spark.max_records_per_batch`;
- shuffle, and two_stage's write and read, per byte: the results-back and read-side parts of a no-model split
  and two_stage run over the bytes they move, less the Arrow transfer the model prices apart;
- the model: its phase's time per call at two batch sizes, fitted as `latency + n x per image`, on the device
  (a real GPU) or on a core (no GPU); a simulated device is its own profile, which the runs ran;
- the model server's round trip and CPU: `pipeline.projection.rates.serve_runs`;
- a repartition's map stage, per task (`repartition_task_s`): the stage ahead of the first step in a no-model
  fused run with `spark.partitions` set, per wave of its tasks, less their scan and shuffle write;
- the JVMs' CPU around a job's tasks (`job_cpu_s`): a no-model fused pass's CPU over the run's process tree
  less what the model counts of it and what was spent outside the stage (`job_cpu`); executors on other machines
  are read by their own tasks.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.projection.bottleneck import NULL_DEVICE, Device, Rates, Shape, image_bytes, predict, shape_of
from pipeline.projection.rates import DEFAULTS, _defaults, serve_runs, task_runs
from pipeline.results import Result, read_results
from pipeline.rundir import atomic_write
from pipeline.runtime.process_cpu import PYTHON_WORKERS
from pipeline.spark.nodes import machine_cpus

RATES_FILE = "rates.json"
FORMAT = "spark-inference-bench rates 1"
# overrides of a calibrate run that say where and what it ran: the advice's runs repeat them
KEPT_OVERRIDES = ("cluster", "gpu", "storage", "model", "device", "preprocess", "cost", "+spark.conf", "spark.conf")
VARIED = ("model.batch_size",)  # set by each variant the advice runs


class RatesFileError(ValueError):
    """A rates file that cannot be read: its path and what is wrong with it."""


@dataclass(frozen=True)
class ModelCost:
    """A model call of n images takes `latency_s + n x s_per_image`, on a device (`on_device`: a GPU, real or
    simulated, shared by the tasks its slots allow) or on the task's core (no GPU), plus `host_s_per_image` of CPU."""

    name: str
    on_device: bool
    latency_s: float
    s_per_image: float
    host_s_per_image: float
    source: str

    def device(self, batch_size: int) -> Device:
        """The bottleneck model's Device for calls of `batch_size`: a device's law, or CPU work per image."""
        if self.on_device:
            return Device(self.name, 1.0 / self.s_per_image, batch_size, self.latency_s, self.host_s_per_image)
        per_image = self.s_per_image + self.latency_s / batch_size + self.host_s_per_image
        return Device(f"{self.name} on a core", math.inf, batch_size, 0.0, per_image)


@dataclass(frozen=True)
class Calibration:
    """What a rates file holds: the rates, the model's cost, the cluster's shape and the overrides that run there."""

    rates: Rates
    model: ModelCost | None
    shape: Shape
    overrides: tuple[str, ...]
    cluster_mode: str
    image_format: str = "jpeg"
    decoder: str = "pil"
    written_at: str = ""
    directories: tuple[str, ...] = ()
    machine: Mapping[str, Any] = field(default_factory=dict)
    usd_per_hour: float | None = None  # the cluster's billed machines (cluster.nodes) at the cost table's prices
    price_source: str = ""


TIME_KEYS = ("wall_s", "task_run_s", "jvm_scan_s", "rows_to_python_s", "prepare_s", "model_s", "results_back_s")


def _fused(result: Result, step: str = "fused") -> list[dict[str, Any]]:
    """The time split's rows of `step` (`pipeline.spark.time_split`); an older result's rows without a part: none."""
    rows = [row for row in result.evidence.get("time") or [] if row.get("step") == step]
    return [row for row in rows if all(key in row for key in TIME_KEYS) and isinstance(row.get("spark"), dict)]


def _ok_spark(results: Iterable[tuple[Path, Result]]) -> list[tuple[Path, Result]]:
    return [
        (path, result)
        for path, result in results
        if result.status == "ok" and result.variant is not None and result.variant.engine == "spark"
    ]


def _repartitioned(result: Result) -> bool:
    """Whether the run repartitioned its input (`spark.partitions`): a map stage ahead of its first step."""
    return bool((result.config.get("spark") or {}).get("partitions"))


def _null(results: list[tuple[Path, Result]], topology: str, repartitioned: bool = False) -> list[tuple[Path, Result]]:
    """The no-model runs of `topology`, with their input repartitioned or (the costs of a one-stage job) not."""
    return [
        (p, r)
        for p, r in results
        if (r.variant.model, r.variant.topology) == ("null_model", topology) and _repartitioned(r) == repartitioned
    ]


def _records(result: Result, step: str) -> list[dict[str, Any]]:
    return [record for record in (result.tasks or {}).get("records") or [] if record.get("step") == step]


def _median(found: list[tuple[Path, float]], what: str) -> tuple[float, str] | None:
    if not found:
        return None
    runs = ", ".join(str(path.parent) for path, _ in found)
    return statistics.median(value for _, value in found), f"measured: {what}; median of {len(found)} run(s): {runs}"


def stretch(result: Result, step: str = "fused") -> float:
    """How much longer than on a core of its own a task's work took in the run: its decode phase's wall time over the
    CPU its Python worker spent in it (`prepare_cpu_s`), at least 1 (threads beside the decoding count in the
    process's CPU; they are no faster core). A calibration's tasks run as many at once as the cluster has slots,
    beside the JVMs' work, so where slots outnumber free cores each waits for one, and every cost it times
    stretches alike; the costs are divided by this, and the bottleneck model's CPU term shares the cores among the
    tasks again: a stage of fewer tasks than cores runs at the unstretched costs (docs/measurements.md "On a core of
    its own"). 1 for a result recorded before the CPU was."""
    records = _records(result, step)
    wall = sum(record.get("prepare_s", 0.0) for record in records)
    cpu = sum(record.get("prepare_cpu_s", 0.0) for record in records)
    return wall / cpu if 0 < cpu < wall else 1.0


def preprocess(nulls: list[tuple[Path, Result]]) -> tuple[float, str] | None:
    """Decode + preprocess seconds per image on a core of its own: the fused stage's `prepare_s` over its images,
    less its wait for a core (`stretch`)."""
    found = [
        (path, sum(row["prepare_s"] for row in rows) / result.metrics.num_images / stretch(result))
        for path, result in nulls
        if (rows := _fused(result)) and result.metrics.num_images
    ]
    return _median(found, "no-model fused runs' decode + preprocess time (prepare_s) per image, over its stretch")


def _python_side(result: Result) -> tuple[int, float, float] | None:
    """(Arrow batches, bytes sent to Python, seconds the UDF waited for rows and handed results back) of a run's
    fused stage: the per-batch and per-byte part of the task's time that the task cost (`rates.task_runs`, its
    time outside the UDF) does not hold."""
    rows, records = _fused(result), _records(result, "fused")
    batches = sum(len(record.get("udf_call_rows") or []) for record in records)
    sent = sum(row["spark"].get("bytes_to_python", 0.0) for row in rows)
    if not batches or not sent:
        return None
    waited = sum(
        sum(record.get("input_waits") or []) + sum(record.get("between_calls") or []) + record.get("results_s", 0.0)
        for record in records
    ) / stretch(result)
    return batches, sent, waited


def arrow_costs(nulls: list[tuple[Path, Result]]) -> dict[str, tuple[float, str]]:
    """`batch_s` and `transfer_s_per_byte` from no-model fused runs: each run's Python-side wait (`_python_side`)
    is batches x batch_s + bytes x transfer; two runs at different Arrow batch rows (the same bytes) give both,
    one run only the transfer (its batches' cost counted in it)."""
    points = [(path, found) for path, result in nulls if (found := _python_side(result))]
    if not points:
        return {}
    runs = ", ".join(str(path.parent) for path, _ in points)
    found: dict[str, tuple[float, str]] = {}
    by_batches = sorted(points, key=lambda point: point[1][0])
    (_, (few, sent, waited_few)), (_, (many, _, waited_many)) = by_batches[0], by_batches[-1]
    batch = (waited_many - waited_few) / (many - few) if many > few else 0.0
    if batch > 0:
        found["batch_s"] = (batch, f"measured: slope of the UDF's wait for rows and results over Arrow batches; {runs}")
    else:
        batch = 0.0
    per_byte = max(0.0, waited_few - batch * few) / sent
    how = "the UDF's wait for rows and results over its stretch, per byte sent to Python" + (
        ", less its batches" if batch else ""
    )
    found["transfer_s_per_byte"] = (per_byte, f"measured: {how}; {runs}")
    return found


def _last_pass_walls(result: Result) -> tuple[float, float] | None:
    """The last timed pass's fused stage wall time and the job's wall time outside it; None without a time split."""
    rows = _fused(result)
    if not rows or not result.metrics.wall_s:
        return None
    stage = sum(row["wall_s"] for row in rows)
    return stage, max(0.0, result.metrics.wall_s[-1] - stage)


def job_cost(nulls: list[tuple[Path, Result]]) -> tuple[float, str] | None:
    """Seconds of a job outside its stages: the last timed pass's wall time less its stages' wall time."""
    found = [(path, walls[1]) for path, result in nulls if (walls := _last_pass_walls(result))]
    return _median(found, "no-model fused runs' last pass wall time less its stage's")


def job_cpu(nulls: list[tuple[Path, Result]], rates: Rates) -> tuple[float, str] | None:
    """`job_cpu_s`: the JVMs' work around a job's tasks while its stage runs. A no-model fused run's last pass: its
    CPU over every process of the run (`metrics.process_cpu_s`), less what the model counts for its one stage from
    `rates`, less the CPU spent outside the stage: at least one core through the job's wall time outside it, and at
    least what the stage's wall time on every core had no room for (on this 2-core VM a pass is CPU on both cores
    from its start to its end, the job's time outside its stage included: docs/measurements.md). Only runs whose
    Python workers were seen count: on this machine through the job's process tree, on other machines through the
    tasks (`pipeline.spark.ledger.executor_cpu`), from their executor's first task's start to its last one's end."""
    found = []
    for path, result in nulls:
        cpu, walls = result.metrics.process_cpu_s, _last_pass_walls(result)
        if PYTHON_WORKERS not in cpu or walls is None:
            continue
        stage_wall, outside_wall = walls
        last_pass = sum(seconds[-1] for seconds in cpu.values())
        topology, shape, workload = shape_of(
            result.config, result.env.get("cpu_count"), (result.cluster or {}).get("gpus"), None
        )
        outside = min(outside_wall * shape.cpus, max(outside_wall, last_pass - stage_wall * shape.cpus))
        counted = sum(stage.cpu_s for stage in predict(topology, rates, NULL_DEVICE, shape, workload).stages)
        found.append((path, max(0.0, last_pass - counted - outside)))
    what = (
        "no-model fused runs' CPU of every process in their last pass (pipeline.runtime.process_cpu) less the tasks' "
        "CPU the model counts and the CPU outside the stage (one core through the job's time outside it, or what "
        "the stage's time on every core had no room for, whichever is more)"
    )
    return _median(found, what)


def repartition_cost(runs: list[tuple[Path, Result]], rates: Rates) -> tuple[float, str] | None:
    """`repartition_task_s`: each run's last pass's map stage (the stage ahead of its first step, step None in
    `evidence.stages`), its wall time per wave of its tasks on its slots, less what a task's scan and shuffle write
    of its images' bytes cost at `rates` (the rest of the model's `_repartition`). Wall time, as the stage ran: its
    tasks have no Python worker whose CPU would give their stretch."""
    found = []
    for path, result in runs:
        maps = [stage for stage in result.evidence.get("stages") or [] if stage.get("step") is None]
        if not maps or not maps[0].get("num_tasks") or not result.metrics.num_images:
            continue
        stage = maps[0]
        waves = math.ceil(stage["num_tasks"] / max(1, stage.get("slots") or stage["num_tasks"]))
        per_byte = rates.shuffle_s_per_byte * image_bytes((result.config.get("dataset") or {}).get("format")) / 2
        write = result.metrics.num_images / stage["num_tasks"] * (rates.scan_s_per_image + per_byte)
        found.append((path, max(0.0, stage["duration_s"] / waves - write)))
    what = "no-model fused runs with spark.partitions set: their map stage's wall time per wave less its scan and write"
    return _median(found, what)


def moved_per_byte(
    runs: list[tuple[Path, Result]], transfer_s: float, what: str, write_step: str, read_step: str
) -> dict[str, tuple[float, str]]:
    """Seconds per byte of writing (the first stage's results back, less the Arrow transfer out) and of reading
    (the second stage's scan, wait for rows and crop decoding, less the Arrow transfer in) what moves between two
    stages: split's shuffle or two_stage's Parquet files; on a core of their own (over the first stage's
    `stretch`)."""
    writes, reads = [], []
    for path, result in runs:
        first, second = _fused(result, write_step), _fused(result, read_step)
        moved = result.metrics.intermediate_bytes or sum(row["spark"].get("shuffle_write_bytes", 0.0) for row in first)
        if not first or not second or not moved:
            continue
        slower = stretch(result, write_step)
        back = sum(row["results_back_s"] for row in first) / slower
        read = sum(row["jvm_scan_s"] + row["rows_to_python_s"] + row["prepare_s"] for row in second) / slower
        writes.append((path, max(0.0, back / moved - transfer_s)))
        reads.append((path, max(0.0, read / moved - transfer_s)))
    found = {}
    if writes:
        found["write"] = _median(
            writes, f"{what} runs' results-back time over its stretch per byte moved, less the Arrow transfer"
        )
        found["read"] = _median(
            reads, f"{what} runs' scan, row wait and crop read over its stretch per byte moved, less the transfer"
        )
    return found


def model_cost(results: list[tuple[Path, Result]]) -> ModelCost | None:
    """The model's call law from fused runs of one model at two or more batch sizes (module docstring)."""
    runs = [
        (path, result)
        for path, result in results
        if result.variant.model != "null_model" and result.variant.topology == "fused"
    ]
    if not runs:
        return None
    path, result = runs[0]
    config = result.config
    device = config.get("device")
    label = result.variant.device or result.variant.model
    if result.variant.model == "accelerator" and device:
        return ModelCost(
            str(device["name"]),
            True,
            float(device.get("latency_s") or 0.0),
            1.0 / float(device["images_per_s"]),
            float(device.get("host_s_per_image") or 0.0),
            f"the simulated device's own profile ({label}), which the calibrate runs ran: {path.parent}",
        )
    points = []  # (images a call, seconds a call)
    for path, result in runs:
        records = _records(result, "fused")
        calls = sum(len(record.get("model_call_rows") or []) for record in records)
        images = sum(sum(record.get("model_call_rows") or []) for record in records)
        seconds = sum(record.get("finish_s", 0.0) for record in records)
        if calls:
            points.append((path, images / calls, seconds / calls))
    if not points:
        return None
    on_device = any(record.get("device", "cpu") != "cpu" for _, r in runs for record in _records(r, "fused"))
    names = ", ".join(str(path.parent) for path, _, _ in points)
    sizes = sorted({round(x) for _, x, _ in points})
    if len(sizes) >= 2:
        mean_x = statistics.fmean(x for _, x, _ in points)
        mean_y = statistics.fmean(y for _, _, y in points)
        slope = sum((x - mean_x) * (y - mean_y) for _, x, y in points) / sum((x - mean_x) ** 2 for _, x, _ in points)
        if slope > 0:
            latency = max(0.0, mean_y - slope * mean_x)
            how = f"measured: model phase per call fitted as latency + n x per image over calls of {sizes} images"
            return ModelCost(str(label), on_device, latency, slope, 0.0, f"{how}; runs: {names}")
    per_image = statistics.median(y / x for _, x, y in points)
    how = f"measured: model phase per image at calls of {sizes} images (no batch-size effect fitted)"
    return ModelCost(str(label), on_device, 0.0, per_image, 0.0, f"{how}; runs: {names}")


def _failed(results: list[tuple[Path, Result]], topology: str | None = None) -> str:
    """Why the calibrate runs of `topology` (any, None) did not give a figure: a failed or refused one's error."""
    for path, result in results:
        kind = ((result.config or {}).get("topology") or {}).get("kind")
        if result.status != "ok" and (topology is None or kind == topology):
            message = (result.error or {}).get("message", result.status)
            return f"the run in {path.parent} ended {result.status}: {str(message).splitlines()[0][:200]}"
    return "no such run among the results"


def calibration(directories: Iterable[Path]) -> Calibration:
    """The rates file's content from the results under `directories` (module docstring). Raises ValueError when
    no ok Spark run is there: the cluster's shape comes from them."""
    directories = [Path(directory) for directory in directories]
    everything = list(read_results(directories))
    spark = _ok_spark(everything)
    if not spark:
        raise ValueError(f"no ok Spark run under {', '.join(map(str, directories))}: run sweep=calibrate there first")
    nulls = _null(spark, "fused")
    base_path, base = (nulls or spark)[0]
    image_format = (base.config.get("dataset") or {}).get("format", "jpeg")
    decoder = (base.config.get("preprocess") or {}).get("decoder", "pil")
    values, sources = _defaults(image_format, decoder)

    def use(name: str, found: tuple[float, str] | None, why: str) -> None:
        if found is not None:
            values[name], sources[name] = found
        else:
            sources[name] = f"assumed: {why}; default {DEFAULTS_SOURCE(name, image_format, decoder)}"

    no_null = "no ok no-model fused run (calibrate=spark): " + _failed(everything, "fused")
    use("preprocess_s", preprocess(nulls), no_null)
    arrow = arrow_costs(nulls)
    use("transfer_s_per_byte", arrow.get("transfer_s_per_byte"), no_null)
    use("job_s", job_cost(nulls), no_null)
    slower = {path: stretch(result) for path, result in nulls}
    tasks = [(path, seconds / slower[path]) for path, seconds in task_runs(nulls)]
    use(
        "task_s",
        _median(tasks, "task time outside the UDF less the Arrow transfer (rates.task_runs), over its stretch"),
        no_null,
    )
    use(
        "batch_s",
        arrow.get("batch_s"),
        "no two no-model fused runs at different Arrow batch rows gave a positive slope",
    )
    split = moved_per_byte(
        _null(spark, "split"), values["transfer_s_per_byte"], "no-model split", "preprocess", "predict"
    )
    no_split = "no ok no-model split run (calibrate=split): " + _failed(everything, "split")
    use("shuffle_s_per_byte", _both(split), no_split)
    staged = moved_per_byte(
        _null(spark, "two_stage"), values["transfer_s_per_byte"], "no-model two_stage", "preprocess", "predict"
    )
    no_two = "no ok no-model two_stage run (calibrate=two_stage): " + _failed(everything, "two_stage")
    use("write_s_per_byte", staged.get("write"), no_two)
    use("read_s_per_byte", staged.get("read"), no_two)
    repartitioned = _null(spark, "fused", repartitioned=True)
    no_repartition = "no ok no-model fused run with spark.partitions set (calibrate=repartition): " + _failed(
        [(p, r) for p, r in everything if _repartitioned(r)], "fused"
    )
    use("repartition_task_s", repartition_cost(repartitioned, Rates(**values)), no_repartition)
    served = serve_runs(spark)
    no_server = "no ok model_server run (calibrate=server): " + _failed(everything, "model_server")
    if served:
        runs = ", ".join(str(path.parent) for path, _, _ in served)
        use("request_s", (statistics.median(r for _, r, _ in served), f"measured: rates.serve_runs; runs: {runs}"), "")
        cpu = statistics.median(c for _, _, c in served)
        use("serve_cpu_s_per_image", (cpu, f"measured: rates.serve_runs; runs: {runs}"), "")
    else:
        use("request_s", None, no_server)
        use("serve_cpu_s_per_image", None, no_server)
    sources["model_build_s"] = (
        "not measured, not used by the advice (only the original's per-batch rebuild pays it); "
        + (sources["model_build_s"])
    )
    no_cpu = "no no-model fused run recorded the CPU of its Python workers"
    use("job_cpu_s", job_cpu(nulls, Rates(**{**values, "job_cpu_s": 0.0})), no_cpu)
    rates = replace(Rates(**values), sources=sources)
    topology, shape, _ = shape_of(
        base.config,
        base.env.get("cpu_count"),
        None,
        machine_cpus(base.evidence.get("task_nodes") or {}) or None,
    )
    shape = Shape(shape.nodes, shape.cores_per_node, shape.gpus_per_node, cpus_per_node=shape.cpus_per_node)
    return Calibration(
        rates=rates,
        model=model_cost(spark),
        shape=shape,
        overrides=_overrides(base_path.parent),
        cluster_mode=str(base.config["cluster"]["mode"]),
        image_format=image_format,
        decoder=decoder,
        written_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        directories=tuple(str(directory) for directory in directories),
        machine={"cpu_count": base.env.get("cpu_count"), "load_average_1m": _load()},
        **_price(base.config),
    )


def DEFAULTS_SOURCE(name: str, image_format: str, decoder: str) -> str:  # noqa: N802 - reads like the table
    """The default's value and source, for a figure no run gave."""
    values, sources = _defaults(image_format, decoder)
    return f"{values[name]:.4g} ({sources[name].removeprefix('default: ')})"


def _both(found: dict[str, tuple[float, str]]) -> tuple[float, str] | None:
    """A shuffle's write and read together (the model prices the pair, half on each side)."""
    if "write" not in found:
        return None
    (write, how), (read, _) = found["write"], found["read"]
    return write + read, how.replace("results-back time", "shuffle write + read time")


def _price(config: Mapping[str, Any]) -> dict[str, Any]:
    """What the calibrated cluster costs an hour: its billed machines (`cluster.nodes`) at the cost table's prices."""
    prices = (config.get("cost") or {}).get("prices") or {}
    nodes = (config.get("cluster") or {}).get("nodes") or []
    try:
        total = sum(int(node["count"]) * float(prices[node["instance"]]["usd_per_hour"]) for node in nodes)
    except (KeyError, TypeError, ValueError):
        return {"usd_per_hour": None, "price_source": "no price for the cluster's billed machines"}
    named = ", ".join(f"{node['count']} x {node['instance']}" for node in nodes)
    return {
        "usd_per_hour": total or None,
        "price_source": f"cluster.nodes ({named}) at cost={config['cost'].get('name')}",
    }


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _overrides(run_dir: Path) -> tuple[str, ...]:
    """The run's own command-line overrides (.hydra/overrides.yaml) that say where and what it ran."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return ()
    from omegaconf import OmegaConf

    kept = []
    for override in OmegaConf.to_container(OmegaConf.load(path)):
        key = str(override).split("=", 1)[0].lstrip("~")
        if key.split(".")[0] in KEPT_OVERRIDES or key in KEPT_OVERRIDES:
            if key not in VARIED:
                kept.append(str(override))
    return tuple(kept)


def to_json(found: Calibration) -> dict[str, Any]:
    """The file's JSON document."""
    rates = found.rates
    return {
        "format": FORMAT,
        "written_at": found.written_at,
        "directories": list(found.directories),
        "machine": dict(found.machine),
        "image_format": found.image_format,
        "decoder": found.decoder,
        "cluster_mode": found.cluster_mode,
        "overrides": list(found.overrides),
        "usd_per_hour": found.usd_per_hour,
        "price_source": found.price_source,
        "shape": asdict(found.shape),
        "rates": {
            name: {"value": getattr(rates, name), "source": rates.sources.get(name, "")}
            for name in Rates.__dataclass_fields__
            if name != "sources"
        },
        "model": None if found.model is None else asdict(found.model),
    }


def kept_rates(directories: Iterable[Path]) -> list[Path]:
    """The rates files a calibration left beside its runs: `RATES_FILE` at the top of each of `directories`."""
    return [path for directory in directories if (path := Path(directory) / RATES_FILE).is_file()]


def write(directories: Iterable[Path], path: Path) -> Path:
    """Measure the rates of the results under `directories` and write them to `path` (atomically)."""
    document = to_json(calibration(directories))
    return atomic_write(Path(path), json.dumps(document, indent=2) + "\n")


def load(path: Path) -> Calibration:
    """A rates file written by `write`; RatesFileError naming the file and the key for one that is not."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise RatesFileError(f"{path}: no such rates file (python -m pipeline sweep=calibrate writes one)") from error
    except (OSError, json.JSONDecodeError) as error:
        raise RatesFileError(f"{path}: not a readable JSON rates file ({error})") from error
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise RatesFileError(
            f"{path}: key 'format' must be {FORMAT!r}, not "
            f"{document.get('format') if isinstance(document, dict) else document!r}"
        )
    try:
        figures = document["rates"]
        if "stage_cpu_s" in figures:  # files written before 2026-12-07: the same one-stage job's figure
            figures["job_cpu_s"] = figures.pop("stage_cpu_s")
        if "repartition_task_s" not in figures:  # files written before 2026-12-08
            figures["repartition_task_s"] = {"value": 0.0, "source": "not in this rates file: a repartition is free"}
        rates = Rates(
            **{name: float(figures[name]["value"]) for name in figures},
            sources={name: str(figures[name]["source"]) for name in figures},
        )
        model = None if document.get("model") is None else ModelCost(**document["model"])
        shape = Shape(**document["shape"])
    except (KeyError, TypeError, ValueError) as error:
        raise RatesFileError(f"{path}: missing or bad key {error}") from error
    return Calibration(
        rates=rates,
        model=model,
        shape=shape,
        overrides=tuple(document.get("overrides") or ()),
        cluster_mode=str(document.get("cluster_mode", "local")),
        image_format=str(document.get("image_format", "jpeg")),
        decoder=str(document.get("decoder", "pil")),
        written_at=str(document.get("written_at", "")),
        directories=tuple(document.get("directories") or ()),
        machine=document.get("machine") or {},
        usd_per_hour=document.get("usd_per_hour"),
        price_source=str(document.get("price_source", "")),
    )


__all__ = [
    "RATES_FILE",
    "Calibration",
    "ModelCost",
    "RatesFileError",
    "calibration",
    "kept_rates",
    "load",
    "write",
    "DEFAULTS",
]
