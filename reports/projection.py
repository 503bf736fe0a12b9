"""Results projected onto real instances: what the rates measured here imply on a catalogue machine.

Why: this machine has two cores and no GPU, so what a user asks (throughput and cost on a GPU instance) can
only be answered by projection: the bottleneck model (`pipeline.projection.bottleneck`) fed with the rates measured
here (`pipeline.projection.rates`, from the result files on disk), the instance's shape and its device profile. Every
figure is labelled a projection, never a measurement, and carries the assumptions it rests on:

- CPU costs per image (decode + preprocess, moving bytes, model builds) are divided by the instance's
  `vcpu_speed`: one vCPU's rate with all vCPUs busy relative to one core here (each instance's source says
  whether it is measured or assumed);
- Spark's fixed costs per job, task and Arrow batch are taken as measured here, not scaled;
- the device is its profile (conf/device/): published or ours, as its `kind` says, never measured here;
- not modelled: the read from S3 or any network, memory (a shape that would run out of it is not detected),
  GPU decoding, stragglers and failures. The driver runs on one of the nodes and is not billed apart.

Topologies on an instance: fused, split and two_stage at 1 GPU per task; stage_level preprocessing at
gpus / vcpus GPUs per task (the original's 1/12 on a g4dn.12xlarge) and predicting at 1 GPU per task;
model_server's decoding tasks at gpus / vcpus too, its server's request and CPU costs as measured here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.projection.bottleneck import (
    DECOUPLED,
    NULL_DEVICE,
    TOPOLOGIES,
    Device,
    Prediction,
    Rates,
    Shape,
    Workload,
    image_bytes,
    predict,
)
from pipeline.projection.instances import Instance, load
from pipeline.projection.rates import measured_rates
from reports.aggregate import fastest_ok, find_jobs, job_frame, other_network

SECONDS_PER_HOUR = 3600
MILLION = 1_000_000
IMAGES_PER_FILE = 1000  # the original's ~1,000 images a Parquet file: one input task each
SCALED = (
    "preprocess_s",
    "transfer_s_per_byte",
    "shuffle_s_per_byte",
    "write_s_per_byte",
    "read_s_per_byte",
    "serve_cpu_s_per_image",
    "scan_s_per_image",
    "crop_transfer_s_per_byte",
    "job_cpu_s",
)
LABEL = "PROJECTION from rates measured on this machine, not a measurement"


@dataclass(frozen=True)
class Row:
    topology: str
    nodes: int
    images_per_s: float
    usd_per_million: float
    bound: str
    utilization: dict[str, float]


@dataclass(frozen=True)
class Projection:
    instance: str
    nodes: int
    rows: list[Row]
    assumptions: list[tuple[str, str]]  # (what, value and source)


def scaled(rates: Rates, vcpu_speed: float) -> Rates:
    """The rates on a vCPU `vcpu_speed` times as fast as a core here: CPU costs per image and per byte, and a
    model build and the model server's CPU per image, divided by it; Spark's fixed costs (job, task, Arrow batch)
    and a server request's round trip as measured here."""
    changes = {name: getattr(rates, name) / vcpu_speed for name in SCALED}
    return replace(rates, model_build_s=rates.model_build_s / vcpu_speed, **changes)


def shape_on(instance: Instance, nodes: int, topology: str, predict_amount: float = 1.0) -> Shape:
    """`nodes` of the instance for `topology` (amounts in the module docstring; `predict_amount`: stage_level's
    GPUs per predict task, below 1 for several predict tasks sharing a GPU)."""
    vcpus, gpus = instance.config.vcpus, instance.config.gpus
    if not gpus:
        return Shape(nodes, vcpus)
    amount = gpus / vcpus if topology in DECOUPLED else 1.0
    return Shape(nodes, vcpus, gpus, task_gpu_amount=amount, predict_gpu_amount=predict_amount)


def usd_per_million(instance: Instance, nodes: int, images_per_s: float) -> float:
    """Every node billed for the time a million images take."""
    return nodes * instance.price.usd_per_hour * MILLION / images_per_s / SECONDS_PER_HOUR


def predict_on(
    rates: Rates,
    instance: Instance,
    nodes: int,
    workload: Workload,
    topology: str,
    device: Device | None = None,
    predict_amount: float = 1.0,
) -> Prediction:
    """One topology on `nodes` of the instance, rates scaled to its vCPUs (`device`: replaces its profile)."""
    on = device or instance.device or NULL_DEVICE
    shape = shape_on(instance, nodes, topology, predict_amount)
    return predict(topology, scaled(rates, instance.config.vcpu_speed), on, shape, workload)


def project(rates: Rates, instance: Instance, nodes: int, workload: Workload) -> Projection:
    """Every topology on one instance and on `nodes` of them, with the assumptions printed beside."""
    rows = []
    for count in sorted({1, nodes}):
        for topology in TOPOLOGIES:
            prediction = predict_on(rates, instance, count, workload, topology)
            rows.append(
                Row(
                    topology,
                    count,
                    prediction.images_per_s,
                    usd_per_million(instance, count, prediction.images_per_s),
                    prediction.bound,
                    prediction.utilization,
                )
            )
    return Projection(instance.config.name, nodes, rows, assumptions(rates, instance, workload))


def assumptions(rates: Rates, instance: Instance, workload: Workload) -> list[tuple[str, str]]:
    """What a projection rests on, each with its value and where it came from."""
    config, device, price = instance.config, instance.device_config, instance.price
    items = [
        ("label", LABEL),
        (
            "instance",
            f"{config.name}: {config.vcpus} vCPUs, {config.gpus} GPUs, {config.memory_gib:g} GiB, "
            f"${price.usd_per_hour}/h ({price.region}; {price.source}, {price.date})",
        ),
        (
            "core speed, ours",
            f"{1 / rates.preprocess_s:.0f} images/s decode + preprocess on one core here "
            f"({rates.preprocess_s * 1000:.2f} ms; {rates.sources.get('preprocess_s', '')})",
        ),
        ("core speed, theirs", f"one vCPU = {config.vcpu_speed:g} x one core here ({config.vcpu_speed_source})"),
    ]
    if device is not None:
        items.append(
            (
                "device",
                f"{device.name}: {device.images_per_s:g} images/s at batch {device.batch_size}, latency "
                f"{device.latency_s:g} s a call, host {device.host_s_per_image * 1e6:g} us an image, "
                f"{device.precision}; "
                f"{device.kind.value}: {device.source} ({device.date}); a profile, not measured here",
            )
        )
    else:
        items.append(("device", "none: the instance has no GPU, so the projection runs no model (preprocessing only)"))
    items += [
        (
            "workload",
            f"{workload.num_images:,} images in {workload.partitions or 'one task a slot'} input tasks, model batch "
            f"{workload.batch_size}, {workload.records_per_batch} rows an Arrow batch, "
            f"{workload.input_bytes_per_image:,.0f} bytes an input image"
            + (", the model rebuilt every batch" if workload.rebuild_model_per_batch else ""),
        ),
        (
            "not scaled",
            f"Spark's fixed costs as measured here: {rates.job_s:.3f} s a job, {rates.task_s * 1000:.1f} ms a task, "
            f"{rates.batch_s * 1000:.2f} ms an Arrow batch",
        ),
        ("not modelled", "the read from S3 or any network, memory, GPU decoding, stragglers and failures"),
        ("billing", "every node for the time a million images take; the driver runs on a node, not billed apart"),
    ]
    for name, source in sorted(rates.sources.items()):
        items.append((f"rate {name}", f"{getattr(rates, name):.4g} ({source})"))
    return items


def workload_of(directories: Iterable[Path], num_images: int = MILLION) -> tuple[Workload, str, str]:
    """The workload to project: the knobs of the fastest ok run under `directories` (format, model batch, Arrow
    rows), scaled to `num_images` in files of IMAGES_PER_FILE; defaults when there is none. Returns it with the
    image format and JPEG decoder it implies."""
    jobs = find_jobs(directories)
    best = fastest_ok(job_frame(jobs)) if jobs else None

    def knob(name: str, default: Any) -> Any:
        value = None if best is None else best[name]
        return default if value is None or pd.isna(value) else value

    image_format = knob("image_format", "jpeg")
    workload = Workload(
        num_images=num_images,
        batch_size=int(knob("batch_size", 32)),
        records_per_batch=int(knob("max_records_per_batch", 128)),
        partitions=math.ceil(num_images / IMAGES_PER_FILE),
        input_bytes_per_image=image_bytes(image_format),
    )
    return workload, image_format, knob("decoder", "pil")


def project_dirs(
    directories: list[Path],
    instance: str,
    nodes: int = 1,
    microbenchmark: Path | None = None,
    device: str | None = None,
) -> Projection:
    """`python -m reports DIR --project instance=NAME [--nodes N]`: the rates and workload of the results under
    `directories`, projected onto `nodes` of the instance."""
    workload, image_format, decoder = workload_of(directories)
    rates = measured_rates(directories, microbenchmark, image_format=image_format, decoder=decoder)
    projection = project(rates, load(instance, device), nodes, workload)
    others = other_networks(directories)
    if others:
        note = (
            f"the runs here include {', '.join(others)}; the device profiles (conf/device/) and the model build "
            "cost are ResNet50's, so a GPU's rate in this projection is ResNet50's, not theirs"
        )
        projection = replace(projection, assumptions=[*projection.assumptions, ("model", note)])
    return projection


def other_networks(directories: Iterable[Path]) -> list[str]:
    """The networks other than ResNet50 that ran under `directories` (`model.arch`, `model.factory`)."""
    jobs = find_jobs(directories)
    models = job_frame(jobs)["model"].dropna().unique() if jobs else []
    return sorted(str(model) for model in models if other_network(model))


def lines(projection: Projection) -> list[str]:
    """The projection as the command line prints it."""
    out = [f"Projected to real instances: {projection.instance} ({LABEL})"]
    out.append(f"{'topology':<12} {'nodes':>5} {'images/s':>10} {'$/M images':>11}  bound; utilization")
    for row in projection.rows:
        busy = ", ".join(f"{name} {value:.0%}" for name, value in row.utilization.items())
        figures = f"{row.topology:<12} {row.nodes:>5} {row.images_per_s:>10.1f} {row.usd_per_million:>11.2f}"
        out.append(f"{figures}  {row.bound}; {busy}")
    out.append("assumptions:")
    out += [f"  {what}: {value}" for what, value in projection.assumptions]
    return out
