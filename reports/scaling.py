"""Throughput against nodes (`sweep=scaling`): each point measured, the ideal line, and the bottleneck model's.

Why: the projections to N nodes (`reports.projection`) scale one node's measurement by assumption; the scaling
sweep measures it. Every ok run with a `scaling` config (`+scaling=weak|strong`) is a point: its mode, the nodes
it asked for (`cluster.workers`) and those whose tasks ran its last timed pass (`evidence.task_nodes`, the proof that
an application held to N nodes used N), its throughput, the ideal (the fewest nodes' throughput times N / fewest),
and the model's prediction for its shape (`pipeline.projection.bottleneck`, with the rates of
`pipeline.projection.rates` from the runs under the same directories, the point itself left out; the nodes'
cores are their machines' (`pipeline.spark.nodes.machine_cpus`): namespace nodes share this machine's).
The targets (issue 27) are printed, not enforced: 2 nodes over 1 at least 1.8x under a device-bound run, and each
prediction within 0.8-1.25x of the measurement.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.projection.bottleneck import device_of, predict, shape_of
from pipeline.projection.rates import measured_rates
from pipeline.spark.nodes import machine_cpus
from reports.aggregate import find_jobs

SPEEDUP_TARGET = 1.8  # 2 nodes / 1 node, device-bound
PREDICTION_TARGET = (0.8, 1.25)  # predicted / measured


@dataclass(frozen=True)
class Point:
    """One scaling run."""

    mode: str  # weak | strong
    series: str  # what the runs of one line share: the device and variant
    nodes: int  # cluster.workers
    images: int
    measured: float
    predicted: float | None
    predicted_bound: str | None
    ran_on: tuple[str, ...]  # the nodes whose tasks ran the last timed pass
    machines: int  # distinct machines under them
    device_busy: float | None  # the simulated devices' busy share of the last pass
    load_average: float | None
    job_dir: str
    ideal: float = 0.0  # filled once the series' fewest-node point is known

    @property
    def efficiency(self) -> float:
        return self.measured / self.ideal if self.ideal else float("nan")

    @property
    def ratio(self) -> float | None:
        return self.predicted / self.measured if self.predicted is not None else None


def _series(result: Any) -> str:
    variant = result.variant
    return " · ".join(str(part) for part in (variant.udf, variant.topology, variant.device or variant.model) if part)


def _predicted(result: Any, job_dir: Path, directories: list[Path]) -> tuple[float | None, str | None]:
    config = result.config
    try:
        device = device_of(config)
    except ValueError:  # a real model on this machine: nothing to model it by
        return None, None
    image_format = (config.get("dataset") or {}).get("format", "jpeg")
    decoder = (config.get("preprocess") or {}).get("decoder", "pil")
    rates = measured_rates(directories, image_format=image_format, decoder=decoder, leave_out=[job_dir])
    nodes = result.evidence.get("task_nodes") or {}
    topology, shape, workload = shape_of(
        config, result.env.get("cpu_count"), (result.cluster or {}).get("gpus"), machine_cpus(nodes)
    )
    prediction = predict(topology, rates, device, shape, workload)
    return prediction.images_per_s, prediction.bound


def points(directories: list[Path]) -> list[Point]:
    """Every ok scaling run under `directories`, with its ideal, by mode and series, then nodes."""
    directories = [Path(directory) for directory in directories]
    found = []
    for job in find_jobs(directories):
        result = job.decoded
        if result is None or result.status != "ok" or not (result.config or {}).get("scaling"):
            continue
        if result.metrics.throughput_images_per_s is None:
            continue
        nodes = result.evidence.get("task_nodes") or {}
        predicted, bound = _predicted(result, job.dir, directories)
        usage = result.evidence.get("simulated_device") or {}
        found.append(
            Point(
                mode=str(result.config["scaling"]["mode"]),
                series=_series(result),
                nodes=int(result.config["cluster"].get("workers", 1)),
                images=int(result.metrics.num_images or 0),
                measured=result.metrics.throughput_images_per_s,
                predicted=predicted,
                predicted_bound=bound,
                ran_on=tuple(nodes),
                machines=len({node.get("machine") for node in nodes.values()}),
                device_busy=usage.get("busy_fraction"),
                load_average=usage.get("load_average_1m"),
                job_dir=str(job.dir),
            )
        )
    found.sort(key=lambda point: (point.mode, point.series, point.nodes))
    ideal = {}
    for point in found:  # sorted: the first of a series has its fewest nodes
        ideal.setdefault((point.mode, point.series), point)
    return [_with_ideal(point, ideal[(point.mode, point.series)]) for point in found]


def _with_ideal(point: Point, base: Point) -> Point:
    return replace(point, ideal=base.measured * point.nodes / base.nodes)


def speedups(found: list[Point]) -> dict[tuple[str, str], float]:
    """Per (mode, series) with a 1-node and a 2-node point: the 2-node throughput over the 1-node one."""
    by = {(point.mode, point.series, point.nodes): point for point in found}
    return {
        (mode, series): by[(mode, series, 2)].measured / by[(mode, series, 1)].measured
        for mode, series, nodes in by
        if nodes == 1 and (mode, series, 2) in by
    }


def _number(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(found: list[Point]) -> list[list[str]]:
    """Rows of the scaling table, with a header row."""
    rows = [
        [
            "scaling",
            "series",
            "nodes",
            "images",
            "measured img/s",
            "ideal img/s",
            "measured/ideal",
            "predicted img/s",
            "predicted/measured",
            "predicted bound",
            "nodes that ran tasks",
            "machines",
            "device busy",
            "load average",
        ]
    ]
    for point in found:
        rows.append(
            [
                point.mode,
                point.series,
                str(point.nodes),
                str(point.images),
                _number(point.measured),
                _number(point.ideal),
                _number(point.efficiency, 2),
                _number(point.predicted),
                _number(point.ratio, 2),
                point.predicted_bound or "–",
                ", ".join(point.ran_on) or "–",
                str(point.machines or "–"),
                "–" if point.device_busy is None else f"{point.device_busy:.0%}",
                _number(point.load_average),
            ]
        )
    return rows


def targets(found: list[Point]) -> list[str]:
    """The targets (module docstring), each with its figures and whether it was met."""
    lines = []
    for (mode, series), speedup in speedups(found).items():
        met = "met" if speedup >= SPEEDUP_TARGET else "NOT met"
        lines.append(f"scaling target: {mode} {series}: 2 nodes / 1 node = {speedup:.2f} (>= {SPEEDUP_TARGET}: {met})")
    ratios = [point.ratio for point in found if point.ratio is not None]
    if ratios:
        inside = sum(PREDICTION_TARGET[0] <= ratio <= PREDICTION_TARGET[1] for ratio in ratios)
        lines.append(
            f"scaling target: {inside} of {len(ratios)} points predicted within {PREDICTION_TARGET[0]}-"
            f"{PREDICTION_TARGET[1]}x (predicted/measured {min(ratios):.2f} to {max(ratios):.2f})"
        )
    return lines


def summary(directories: list[Path]) -> list[str]:
    """The lines a sweep prints at its end: each point, then the targets, met or not; nothing without points."""
    found = points(directories)
    if not found:
        return []
    lines = ["scaling: throughput against nodes (measured, ideal, bottleneck model):"]
    return lines + [" | ".join(row) for row in table(found)] + targets(found)
