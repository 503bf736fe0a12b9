"""The original study's table reproduced on paper: each published configuration projected from our rates.

Why: the original's figures (../shared/reference/anchors.md section 1) come from the CPU:GPU balance of its
instances, which this machine cannot reproduce by running. So each configuration is projected with the
bottleneck model twice: with *the original's own costs* (its raw arrays as an int16 list column read from
Parquet and moved through Arrow, its UDFs' float preprocessing, each measured here with its data path and real
Spark by `tests.bench.original_costs`, `pipeline.projection.rates.original_costs`; float32 crops in its shuffle
and intermediate files, the model rebuilt for every Arrow batch in its scalar UDFs, its Arrow batch sizes,
PyTorch fp32 on T4s: device t4_fp32) and with *our best
variant* on the same instances (uint8 arrays and crops, the model built once per worker, the fastest
topology on the shape, a prefetching fused task, Arrow and model batches of 256). Published vs projected and
their ratio; `python -m reports --original-table [DIR ...]` prints it all, from the rates under the DIRs
(`pipeline.projection.rates`; its defaults without any). Every projected figure is a projection, never a measurement.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.projection.bottleneck import (
    DECOUPLED,
    RAW_BYTES,
    TOPOLOGIES,
    Prediction,
    Rates,
    Shape,
    Workload,
    image_bytes,
    predict,
)
from pipeline.projection.instances import Instance, device_profile, load, names
from pipeline.projection.rates import FLOAT_CROP_BYTES, INT16_BYTES, measured_rates, original_costs
from reports.projection import MILLION, predict_on, scaled, usd_per_million

IMAGES_10G = 16_232  # "10 GB": 32 input partitions
IMAGES_300G = 488_207
ORIGINAL_DEVICE = "t4_fp32"  # PyTorch 1.12/1.13 fp32 on T4s
OUR_BATCH = 256
PREDICT_AMOUNTS = (1.0, 0.25, 0.125)  # stage_level's GPUs per predict task our best variant tries


@dataclass(frozen=True)
class Configuration:
    """One published configuration: where it ran and how, and what it published (None: it failed)."""

    name: str
    published: float | None
    note: str
    instance: str
    nodes: int
    topology: str
    num_images: int
    records_per_batch: int
    rebuild: bool
    prefetch: bool = False
    local_mode: bool = False  # Spark local mode: no GPU scheduling, every core a slot
    predict_partitions: int | None = None
    preprocess_instance: str | None = None  # two_stage's CPU cluster
    driver: bool = True  # a driver node that runs no tasks, billed like the original did


CONFIGURATIONS = (
    Configuration(
        "Local", 117.658, "", "g4dn_16xlarge", 1, "split", IMAGES_10G, 1000, True, local_mode=True,
        predict_partitions=1, driver=False,
    ),
    Configuration("Standard 1 GPU", 30.29, "", "g4dn_xlarge", 1, "fused", IMAGES_10G, 1000, True),
    Configuration("Standard 4 GPU", 147.848, "", "g4dn_12xlarge", 1, "fused", IMAGES_10G, 1000, True),
    Configuration("Iterator", 113.353, "", "g4dn_12xlarge", 1, "fused", IMAGES_10G, 1000, False),
    Configuration("Iterator + prefetch", 159.862, "", "g4dn_12xlarge", 1, "fused", IMAGES_10G, 64, False, True),
    Configuration(
        "2-stage", 108.768, "49.7 s preprocess + 99.5 s predict", "g4dn_12xlarge", 1, "two_stage", IMAGES_10G, 1000,
        True, preprocess_instance="m6gd_12xlarge",
    ),
    Configuration(
        "Stage-level", None, "failed: CUDA OOM (profile not respected)", "g4dn_12xlarge", 1, "stage_level",
        IMAGES_10G, 1000, True,
    ),
    Configuration("300 GB, 4 nodes", 689.084, "708.5 s", "g4dn_12xlarge", 4, "fused", IMAGES_300G, 1000, True),
)  # fmt: skip


@dataclass(frozen=True)
class TableRow:
    name: str
    our_topology: str  # our best variant's topology (stage_level@A: A GPUs a predict task)
    instance: str
    published: float | None
    note: str
    original: Prediction  # with the original's own costs
    ours: Prediction  # our best variant on the same instances
    usd_original: float  # per million images, the original's nodes (its driver billed) at the projected rate
    usd_ours: float

    @property
    def ratio(self) -> float | None:
        """Projected (original's costs) / published."""
        return self.original.images_per_s / self.published if self.published else None


Costs = Mapping[str, tuple[float, str]]  # rate name -> (value, where it came from)


def _original_rates(rates: Rates, costs: Costs | None = None) -> Rates:
    """Our rates with the original's own costs in place of ours (`costs`, else
    `pipeline.projection.rates.original_costs()`: its int16 list column's scan and Arrow transfer, its UDFs'
    pandas side, its model build, measured here with its data path by `tests.bench.original_costs`), each with
    its source. Spark's fixed costs (job, task, Arrow batch) stay ours: the same engine's."""
    costs = original_costs() if costs is None else costs
    values = {name: value for name, (value, _) in costs.items()}
    return replace(rates, **values, sources={**rates.sources, **{name: source for name, (_, source) in costs.items()}})


def _shape(config: Configuration, instance: Instance, topology: str, predict_amount: float = 1.0) -> Shape:
    vcpus, gpus = instance.config.vcpus, instance.config.gpus
    if config.local_mode:
        return Shape(config.nodes, vcpus, gpus)
    amount = gpus / vcpus if topology in DECOUPLED else 1.0
    shape = Shape(config.nodes, vcpus, gpus, task_gpu_amount=amount, predict_gpu_amount=predict_amount)
    if topology == "two_stage" and config.preprocess_instance:
        cpu = load(config.preprocess_instance)
        shape = replace(
            shape,
            preprocess_nodes=config.nodes,
            preprocess_cores_per_node=cpu.config.vcpus,
            preprocess_cpu_speed=cpu.config.vcpu_speed / instance.config.vcpu_speed,
        )
    return shape


def _usd(config: Configuration, instance: Instance, prediction: Prediction) -> float:
    """$ per million images: the GPU nodes (and a driver node like them, as the original billed) for the run,
    two_stage's CPU cluster (and its driver) for its preprocess job."""
    drivers = 1 if config.driver else 0
    if config.topology == "two_stage" and config.preprocess_instance and prediction.topology == "two_stage":
        cpu = load(config.preprocess_instance)
        pre, pred = prediction.stages
        scale = MILLION / config.num_images / 3600
        return scale * (
            (config.nodes + drivers) * cpu.price.usd_per_hour * pre.seconds
            + (config.nodes + drivers) * instance.price.usd_per_hour * (prediction.seconds - pre.seconds)
        )
    return usd_per_million(instance, config.nodes + drivers, prediction.images_per_s)


def row(config: Configuration, rates: Rates, costs: Costs | None = None) -> TableRow:
    """One configuration projected with the original's costs (`_original_rates`) and with our best variant."""
    instance = load(config.instance, ORIGINAL_DEVICE)
    original_rates = scaled(_original_rates(rates, costs), instance.config.vcpu_speed)
    workload = Workload(
        num_images=config.num_images,
        batch_size=config.records_per_batch,
        records_per_batch=config.records_per_batch,
        partitions=math.ceil(config.num_images / 1000) if config.num_images != IMAGES_10G else 32,
        predict_partitions=config.predict_partitions,
        input_bytes_per_image=INT16_BYTES,
        crop_bytes_per_image=FLOAT_CROP_BYTES,
        rebuild_model_per_batch=config.rebuild,
        prefetch=config.prefetch,
    )
    device = instance.device
    assert device is not None  # every configuration's instance has T4s
    original = predict(config.topology, original_rates, device, _shape(config, instance, config.topology), workload)
    ours_rates = scaled(rates, instance.config.vcpu_speed)
    ours_workload = replace(
        workload,
        batch_size=OUR_BATCH,
        records_per_batch=OUR_BATCH,
        input_bytes_per_image=RAW_BYTES,
        crop_bytes_per_image=224 * 224 * 3,
        rebuild_model_per_batch=False,
        prefetch=True,
        predict_partitions=None,
    )
    on_cluster = replace(config, local_mode=False)  # ours schedules GPUs (a standard cluster on the same node)
    candidates = {
        _name(topology, amount): predict(
            topology, ours_rates, device, _shape(on_cluster, instance, topology, amount), ours_workload
        )
        for topology in TOPOLOGIES
        for amount in (PREDICT_AMOUNTS if topology == "stage_level" else (1.0,))
    }
    best = max(candidates, key=lambda name: candidates[name].images_per_s)
    ours = candidates[best]
    return TableRow(
        config.name,
        best,
        f"{config.nodes} x {config.instance}"
        + (f" + {config.preprocess_instance}" if config.preprocess_instance else ""),
        config.published,
        config.note,
        original,
        ours,
        _usd(config, instance, original),
        _usd(config, instance, ours),
    )


def _name(topology: str, amount: float) -> str:
    return f"{topology}@{amount:g}" if topology == "stage_level" else topology


COLUMNS = [
    _name(topology, amount)
    for topology in TOPOLOGIES
    for amount in (PREDICT_AMOUNTS if topology == "stage_level" else (1.0,))
]


def table(
    directories: list[Path], microbenchmark: Path | None = None, costs: Path | None = None
) -> tuple[list[TableRow], Rates]:
    """Every configuration, from the raw-array rates under `directories` (defaults without any) and the
    original's own costs from `costs` (a `tests.bench.original_costs` JSON; the figures measured here without)."""
    rates = measured_rates(directories, microbenchmark, image_format="raw")
    measured = original_costs(costs)
    return [row(config, rates, measured) for config in CONFIGURATIONS], _original_rates(rates, measured)


@dataclass(frozen=True)
class Winner:
    instance: str
    device: str
    by_topology: dict[str, tuple[float, float, str]]  # topology -> (images/s, $ per million, bound)
    best: str


def winners(rates: Rates, image_format: str = "jpeg") -> list[Winner]:
    """On every GPU instance of the catalogue, one node: each topology's projected throughput, cost and bound
    for our best variant (JPEGs at our decode rate unless `image_format`="raw"), and the cheapest."""
    found = []
    for name in names():
        instance = load(name)
        if instance.device is None:
            continue
        workload = Workload(
            num_images=MILLION,
            batch_size=OUR_BATCH,
            records_per_batch=OUR_BATCH,
            partitions=MILLION // 1000,
            input_bytes_per_image=image_bytes(image_format),
            prefetch=True,
        )
        by_topology = {}
        for topology in TOPOLOGIES:
            for amount in PREDICT_AMOUNTS if topology == "stage_level" else (1.0,):
                prediction = predict_on(rates, instance, 1, workload, topology, predict_amount=amount)
                by_topology[_name(topology, amount)] = (
                    prediction.images_per_s,
                    usd_per_million(instance, 1, prediction.images_per_s),
                    prediction.bound,
                )
        best = min(by_topology, key=lambda topology: by_topology[topology][1])
        found.append(Winner(name, instance.device.name, by_topology, best))
    return found


def report(directories: list[Path], microbenchmark: Path | None = None, costs: Path | None = None) -> str:
    """`python -m reports --original-table [DIR ...] [--original-costs FILE]`: the table and the winners, from
    the rates under the DIRs and the original's own costs (FILE: a `tests.bench.original_costs` JSON)."""
    rows, rates = table(directories, microbenchmark, costs)
    return markdown(rows, rates, measured_rates(directories, microbenchmark, image_format="jpeg"))


def markdown(rows: list[TableRow], rates: Rates, jpeg: Rates) -> str:
    """The table, the ratios and the winners per instance shape as Markdown for docs/measurements.md; `rates`
    are the original's (`_original_rates`)."""
    t4, _ = device_profile(ORIGINAL_DEVICE)
    out = [
        "PROJECTION from rates measured on this machine (`pipeline.projection.rates`), not a measurement. Device "
        f"{t4.name} ({t4.images_per_s:g} img/s a T4, approximate). Original's costs, measured here with its data "
        f"path (`tests.bench.original_costs`), core-ms an image: its int16 list column ({INT16_BYTES:,} B) read "
        f"from Parquet {rates.scan_s_per_image * 1000:.2f} and through Arrow "
        f"{rates.transfer_s_per_byte * INT16_BYTES * 1000:.2f}, its UDFs' float preprocessing "
        f"{rates.preprocess_s * 1000:.2f}, its float32 crops ({FLOAT_CROP_BYTES:,} B) read from Parquet "
        f"{rates.read_s_per_byte * FLOAT_CROP_BYTES * 1000:.2f} and through Arrow "
        f"{rates.crop_transfer_s_per_byte * FLOAT_CROP_BYTES * 1000:.2f}, the model rebuilt every Arrow "
        f"batch ({rates.model_build_s:.2f} s a core here) in scalar UDFs. Ours: uint8, the model once per worker, "
        f"batches of {OUR_BATCH}, the fastest topology (stage_level@A: A GPUs a predict task).",
        "",
        "| configuration | instances | published img/s | projected, original's costs | ratio | bound | "
        "projected, our best variant | our topology, bound | $/M images (original's / ours, projected) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for item in rows:
        published = f"{item.published:,.1f}" if item.published else item.note
        ratio = f"{item.ratio:.2f}" if item.ratio else "–"
        out.append(
            f"| {item.name} | {item.instance} | {published} | {item.original.images_per_s:,.1f} | {ratio} | "
            f"{item.original.bound} | {item.ours.images_per_s:,.1f} | {item.our_topology}, {item.ours.bound} | "
            f"{item.usd_original:.2f} / {item.usd_ours:.2f} |"
        )
    out += [
        "",
        "The original's rates (core-seconds here; scaled by each instance's vCPU speed; ours differ in "
        "scan_s_per_image, transfer_s_per_byte, crop_transfer_s_per_byte, preprocess_s, read_s_per_byte, "
        "model_build_s):",
        "",
    ]
    for name, source in sorted(rates.sources.items()):
        out.append(f"- {name} = {getattr(rates, name):.4g}: {source}")
    out += [
        "",
        "Which topology wins where (our best variant, JPEGs decoded with Pillow, 1 node, 1M images; projected):",
        "",
        "| instance | device | " + " | ".join(f"{name} img/s, $/M, bound" for name in COLUMNS) + " | cheapest |",
        "|---|---|" + "---|" * len(COLUMNS) + "---|",
    ]
    for winner in winners(jpeg):
        cells = " | ".join(f"{rate:,.0f}, ${usd:.2f}, {bound}" for rate, usd, bound in winner.by_topology.values())
        out.append(f"| {winner.instance} | {winner.device} | {cells} | {winner.best} |")
    return "\n".join(out)
