"""`python -m reports advise --rates FILE`: the variants the tool can run, ranked by the bottleneck model.

Why: a user asks which UDF style, topology, batch sizes, partitions and GPU amount to use on their cluster and
what it costs. `sweep=calibrate` measured that cluster's rates (`pipeline.projection.calibrate`); this module
searches the space the tool runs (`space`), predicts each point with `pipeline.projection.bottleneck.predict`,
and prints the best few with the overrides that run them here, the Spark confs and a code sketch for the
user's own job, and why the main alternatives lose. Only what `pipeline.config.validate` accepts is printed: each
shown pick's config is composed and validated as `python -m pipeline` would.

What the model cannot tell apart it says so: UDF styles cost the same per Arrow batch in it (only the iterator
style's prefetch overlaps decoding with the model), so the styles of one point tie and are listed together;
model server instances beyond one per GPU are not modelled.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from pipeline.config.schema import ConfigError, UdfStyle
from pipeline.projection.bottleneck import (
    CORES,
    DECOUPLED,
    NULL_DEVICE,
    Device,
    Prediction,
    Rates,
    Shape,
    Workload,
    image_bytes,
    predict,
)
from pipeline.projection.calibrate import Calibration
from pipeline.projection.instances import Instance

MODEL_BATCHES = (8, 16, 32, 64)
ARROW_ROWS = (32, 128, 512)
PARTITION_FACTORS = (None, 1, 2, 4)  # None: as Spark's scan splits the input; else N x the cluster's task slots
PREDICT_AMOUNTS = (1.0, 0.5)  # stage_level's GPUs per predict task
# the default style first: a tie in the model is shown as the tool's default
STYLES = tuple(sorted((style.value for style in UdfStyle), key=lambda name: name != "map_in_pandas"))
PROFILE_STYLES = ("map_in_pandas", "map_in_arrow", "rdd_map_partitions")  # validate.PROFILE_STYLES
PREFETCH_STYLE = "iterator_pandas_udf"
IMAGES_PER_FILE = 1000
ROW_GROUP = 32  # dataset.row_group_size's default
MILLION = 1_000_000


@dataclass(frozen=True)
class Candidate:
    """One point of the space: what the model tells apart (styles that tie are listed together)."""

    topology: str
    styles: tuple[str, ...]
    batch_size: int
    records_per_batch: int
    partitions: int | None
    task_gpu_amount: float
    predict_gpu_amount: float | None
    prefetch: bool
    nodes: int


@dataclass(frozen=True)
class Choice:
    candidate: Candidate
    prediction: Prediction
    usd_per_million: float | None


@dataclass(frozen=True)
class Target:
    """Where the advice is for: the calibrated cluster, or `nodes` of a catalogue instance (a projection)."""

    shape: Shape
    rates: Rates
    device: Device | None  # None: the calibrated model's cost per batch size (`Calibration.model`)
    usd_per_hour_per_node: float | None
    label: str


def target(calibration: Calibration, instance: Instance | None = None, nodes: int | None = None) -> Target:
    """The calibrated cluster (billed per hour as its rates file says), or `nodes` of `instance`, onto which the
    CPU rates are scaled by its vcpu_speed (`reports.projection.scaled`) and whose device profile runs the
    model unless the calibration measured a real device."""
    from reports.projection import scaled

    if instance is None:
        shape = replace(calibration.shape, nodes=nodes or calibration.shape.nodes)
        price = calibration.usd_per_hour / calibration.shape.nodes if calibration.usd_per_hour else None
        where = f"the calibrated cluster ({_shape_text(shape)})"
        return Target(shape, calibration.rates, None, price, where)
    config = instance.config
    shape = Shape(nodes or 1, config.vcpus, config.gpus)
    measured_device = (
        calibration.model is not None and calibration.model.on_device and "simulated" not in (calibration.model.source)
    )
    device = None if measured_device else (instance.device or NULL_DEVICE)
    where = (
        f"PROJECTION onto {nodes or 1} x {config.name} ({_shape_text(shape)}): CPU rates / vcpu_speed "
        f"{config.vcpu_speed:g}, device {'as calibrated' if device is None else device.name}"
    )
    return Target(shape, scaled(calibration.rates, config.vcpu_speed), device, instance.price.usd_per_hour, where)


def _shape_text(shape: Shape) -> str:
    gpus = f", {shape.gpus_per_node} GPU(s) each" if shape.gpus_per_node else ", no GPU"
    return f"{shape.nodes} node(s) x {shape.cores_per_node} task slots{gpus}"


def _amounts(shape: Shape, topology: str, local: bool) -> list[tuple[float, float | None]]:
    """(task GPU amount, stage_level predict amount) pairs worth trying on the shape."""
    if not shape.gpus_per_node or local:
        return [(0.0, None)]
    share = shape.gpus_per_node / shape.cores_per_node
    if topology in DECOUPLED:
        every_core = _valid_share(share)
        if topology == "stage_level":
            return [(every_core, amount) for amount in PREDICT_AMOUNTS]
        return [(every_core, None)]
    return sorted({(amount, None) for amount in (1.0, 0.5, 0.25) if amount >= share - 1e-9} | {(1.0, None)})


def _valid_share(share: float) -> float:
    """The largest amount below 1 Spark accepts (1/k) that still lets every core run a task."""
    if share >= 1:
        return 1.0
    return 1.0 / math.ceil(1.0 / share - 1e-9)


def space(shape: Shape, local: bool, gpu_device: bool, server: bool = True, connect: bool = False) -> list[Candidate]:
    """Every point the tool can run on `shape` that the model tells apart. `local`: cluster=local (no GPU
    scheduling, no stage_level); `gpu_device`: the model runs on GPUs (else on the task's core, so the topologies
    that keep GPUs apart have nothing to gain and are still listed); `server`: the server extra is installed."""
    topologies = ["fused", "split", "two_stage"]
    if not local and shape.gpus_per_node:
        topologies.append("stage_level")
    if server:
        topologies.append("model_server")
    slots = shape.nodes * shape.cores_per_node
    found = []
    for topology in topologies:
        styles = PROFILE_STYLES if topology == "stage_level" else STYLES
        if connect:
            styles = tuple(style for style in styles if style != "rdd_map_partitions")
        for amount, predict_amount in _amounts(shape, topology, local):
            for batch in MODEL_BATCHES:
                for rows in ARROW_ROWS:
                    if rows < batch:
                        continue
                    for factor in PARTITION_FACTORS:
                        partitions = None if factor is None else factor * slots
                        base = Candidate(
                            topology, styles, batch, rows, partitions, amount, predict_amount, False, shape.nodes
                        )
                        found.append(base)
                        if topology == "fused" and PREFETCH_STYLE in styles:
                            found.append(replace(base, styles=(PREFETCH_STYLE,), prefetch=True))
    return found


def workload(candidate: Candidate, images: int, image_format: str) -> Workload:
    return Workload(
        num_images=images,
        batch_size=candidate.batch_size,
        records_per_batch=candidate.records_per_batch,
        partitions=candidate.partitions,
        repartition=candidate.partitions is not None,
        input_bytes_per_image=image_bytes(image_format),
        prefetch=candidate.prefetch,
        row_group_size=ROW_GROUP,
        images_per_file=IMAGES_PER_FILE,
    )


def device_for(calibration: Calibration, where: Target, batch_size: int) -> Device:
    """The device a candidate's model calls run on: the target's profile, else the calibrated model's law."""
    if where.device is not None:
        return where.device
    if calibration.model is None:
        return NULL_DEVICE
    return calibration.model.device(batch_size)


def evaluate(calibration: Calibration, where: Target, candidate: Candidate, images: int) -> Choice:
    shape = replace(
        where.shape,
        nodes=candidate.nodes,
        task_gpu_amount=candidate.task_gpu_amount,
        predict_gpu_amount=candidate.predict_gpu_amount,
    )
    prediction = predict(
        candidate.topology,
        where.rates,
        device_for(calibration, where, candidate.batch_size),
        shape,
        workload(candidate, images, calibration.image_format),
    )
    cost = None
    if where.usd_per_hour_per_node:
        cost = candidate.nodes * where.usd_per_hour_per_node * MILLION / prediction.images_per_s / 3600
    return Choice(candidate, prediction, cost)


def rank(choices: Iterable[Choice], objective: str) -> list[Choice]:
    """Best first: the most images a second, or the fewest dollars a million images (then the faster)."""
    if objective == "cost":
        return sorted(choices, key=lambda c: (c.usd_per_million or math.inf, -c.prediction.images_per_s))
    return sorted(choices, key=lambda c: -c.prediction.images_per_s)


def overrides(calibration: Calibration, candidate: Candidate, style: str | None = None) -> list[str]:
    """`python -m pipeline` overrides that run the candidate on the calibrated cluster."""
    found = [
        *calibration.overrides,
        f"topology={candidate.topology}",
        f"udf={style or candidate.styles[0]}",
        f"model.batch_size={candidate.batch_size}",
        f"spark.max_records_per_batch={candidate.records_per_batch}",
    ]
    if candidate.prefetch:
        found.append("udf.prefetch=1")
    if candidate.partitions:
        found.append(f"spark.partitions={candidate.partitions}")
    if candidate.task_gpu_amount:
        found.append(f"gpu.task_amount={candidate.task_gpu_amount:g}")
    if candidate.predict_gpu_amount is not None:
        found.append(f"gpu.predict_task_amount={candidate.predict_gpu_amount:g}")
    if candidate.topology == "model_server" and candidate.batch_size > 128:
        found.append(f"topology.max_batch_size={candidate.batch_size}")
    return found


def accepted(calibration: Calibration, candidate: Candidate) -> tuple[str, ...]:
    """The candidate's styles whose composed config `pipeline.config.validate` accepts, as `python -m pipeline`
    would compose it with these overrides."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from pipeline.config.schema import register
    from pipeline.config.validate import validate

    register()
    kept = []
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        for style in candidate.styles:
            try:
                validate(OmegaConf.to_object(compose("config", overrides(calibration, candidate, style))))
            except (ConfigError, ValueError, Exception) as error:  # noqa: BLE001 - Hydra's own errors are refusals too
                if isinstance(error, (KeyboardInterrupt, SystemExit)):
                    raise
                continue
            kept.append(style)
    return tuple(kept)


def spark_confs(calibration: Calibration, candidate: Candidate, shape: Shape) -> dict[str, str]:
    """The Spark confs a user's own job sets for the candidate."""
    confs = {
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(candidate.records_per_batch),
        "spark.python.worker.reuse": "true",
        "spark.task.cpus": "1",
    }
    if calibration.cluster_mode != "local":
        confs["spark.executor.cores"] = str(shape.cores_per_node)
    if candidate.task_gpu_amount:
        confs["spark.executor.resource.gpu.amount"] = str(shape.gpus_per_node)
        confs["spark.task.resource.gpu.amount"] = f"{candidate.task_gpu_amount:g}"
    if candidate.partitions and candidate.topology in ("split", "stage_level"):
        confs["spark.sql.shuffle.partitions"] = str(candidate.partitions)
    return confs


_CALL = {
    "map_in_pandas": "df.mapInPandas(predict_batches, schema)  # predict_batches(iterator of pandas.DataFrame)",
    "map_in_arrow": "df.mapInArrow(predict_batches, schema)  # predict_batches(iterator of pyarrow.RecordBatch)",
    "iterator_pandas_udf": "df.select(predict_udf('image'))  # @pandas_udf over Iterator[pd.Series]",
    "scalar_pandas_udf": "df.select(predict_udf('image'))  # @pandas_udf(pd.Series) -> pd.Series",
    "predict_batch_udf": "df.select(predict_batch_udf(make_predict_fn, return_type=..., batch_size=B)('image'))",
    "arrow_udf": "df.select(predict_udf('image'))  # @arrow_udf over Iterator[pa.Array]",
    "rdd_map_partitions": "df.rdd.mapPartitions(predict_rows).toDF(schema)",
}


def sketch(candidate: Candidate) -> list[str]:
    """A few lines of the user's own job in the candidate's shape (its first style)."""
    style = candidate.styles[0]
    lines = ["model = load_model()  # once per Python worker (keep spark.python.worker.reuse=true)"]
    if candidate.partitions and candidate.topology in ("fused", "model_server", "two_stage"):
        lines.append(f"df = df.repartition({candidate.partitions})")
    call = _CALL[style].replace("batch_size=B", f"batch_size={candidate.batch_size}")
    if candidate.topology == "fused":
        lines.append(f"out = {call}  # decode, preprocess, predict in one task, {candidate.batch_size} images a call")
    elif candidate.topology in ("split", "stage_level"):
        lines.append("crops = df.mapInPandas(decode_and_crop, crop_schema)  # uint8 crops, every core")
        lines.append(f"crops = crops.repartition({candidate.partitions or 'gpu_slots'})")
        if candidate.topology == "stage_level":
            lines.append(
                "profile = ResourceProfileBuilder().require(TaskResourceRequests().resource('gpu', "
                f"{candidate.predict_gpu_amount:g})).build"
            )
            lines.append("out = crops.mapInPandas(predict_crops, schema, profile=profile)")
        else:
            lines.append(f"out = {call.replace('df.', 'crops.')}")
    elif candidate.topology == "two_stage":
        lines.append("df.mapInPandas(decode_and_crop, crop_schema).write.parquet(CROPS)  # job 1, CPU")
        lines.append(f"out = {call.replace('df.', 'spark.read.parquet(CROPS).')}  # job 2, GPU")
    else:
        lines.append("# one model server per node (Triton); each task sends its uint8 crops over gRPC")
        lines.append("out = df.mapInPandas(crop_and_request, schema)")
    return lines


def _label(candidate: Candidate) -> str:
    parts = [candidate.topology, f"batch {candidate.batch_size}", f"{candidate.records_per_batch} rows"]
    parts.append(f"{candidate.partitions} partitions" if candidate.partitions else "scan's partitions")
    if candidate.task_gpu_amount:
        parts.append(f"{candidate.task_gpu_amount:g} GPU/task")
    if candidate.predict_gpu_amount is not None:
        parts.append(f"predict {candidate.predict_gpu_amount:g} GPU/task")
    if candidate.prefetch:
        parts.append("prefetch")
    return ", ".join(parts)


def _bound(choice: Choice) -> str:
    """The bound, saying so when the cores also run the model (no GPU)."""
    bound = choice.prediction.bound
    if bound == CORES and not choice.prediction.utilization.get("gpus"):
        return "cores (decode, preprocess and the model on the CPU)"
    return bound


def _figures(choice: Choice) -> str:
    cost = "–" if choice.usd_per_million is None else f"${choice.usd_per_million:,.2f}/M images"
    busy = ", ".join(f"{name} {value:.0%}" for name, value in choice.prediction.utilization.items())
    return f"{choice.prediction.images_per_s:,.1f} img/s, {cost}; bound: {_bound(choice)}; busy: {busy}"


def why_loses(best: Choice, other: Choice) -> str:
    """One line: how much slower (or dearer) the alternative is and what holds it."""
    ratio = other.prediction.images_per_s / best.prediction.images_per_s
    stages = ", ".join(f"{stage.name} {stage.seconds:,.0f} s ({stage.bound})" for stage in other.prediction.stages)
    return f"{ratio:.2f}x the pick's img/s, bound by {_bound(other)}; stages: {stages}"


def alternatives(best: Choice, ranked: Sequence[Choice]) -> list[tuple[str, Choice]]:
    """The best point of each other topology, and the best with each other value of the pick's knobs."""
    pick = best.candidate
    found: list[tuple[str, Choice]] = []
    seen = set()

    def first(what: str, keep) -> None:
        for choice in ranked:
            if keep(choice.candidate) and choice.candidate not in seen:
                seen.add(choice.candidate)
                found.append((what, choice))
                return

    for topology in dict.fromkeys(choice.candidate.topology for choice in ranked):
        if topology != pick.topology:
            first(f"topology={topology}", lambda c, t=topology: c.topology == t)
    knobs = (
        ("model.batch_size", lambda c: c.batch_size),
        ("spark.max_records_per_batch", lambda c: c.records_per_batch),
        ("spark.partitions", lambda c: c.partitions),
        ("gpu.task_amount", lambda c: c.task_gpu_amount),
        ("udf.prefetch", lambda c: c.prefetch),
    )
    for key, value in knobs:
        others = {value(choice.candidate) for choice in ranked if choice.candidate.topology == pick.topology}
        for other in sorted(others - {value(pick)}, key=str):
            first(
                f"{key}={other if other is not None else 'scan'} ({pick.topology})",
                lambda c, v=value, o=other: c.topology == pick.topology and v(c) == o,
            )
    return found


def server_refused(calibration: Calibration) -> str | None:
    """Why the model server is left out of the search: its calibrate run ended failed on this cluster (the rates
    file's request_s says so), so a pick of it would not run there."""
    source = calibration.rates.sources.get("request_s", "")
    return source.split("; default")[0] if source.startswith("assumed:") and " ended " in source else None


def advise(
    calibration: Calibration,
    images: int = MILLION,
    objective: str = "throughput",
    instance: Instance | None = None,
    nodes: int | None = None,
    server: bool = True,
) -> tuple[Target, list[Choice]]:
    """Every candidate predicted and ranked; with an instance and the cost objective, 1..nodes of it."""
    if objective not in ("throughput", "cost"):
        raise ConfigError(f"--objective {objective}: one of throughput, cost")
    where = target(calibration, instance, nodes)
    server = server and server_refused(calibration) is None
    local = calibration.cluster_mode == "local" and instance is None
    gpu_device = bool(where.shape.gpus_per_node)
    counts = range(1, where.shape.nodes + 1) if objective == "cost" and instance is not None else [where.shape.nodes]
    choices = []
    for count in counts:
        shape = replace(where.shape, nodes=count)
        for candidate in space(shape, local, gpu_device, server, calibration.cluster_mode == "connect"):
            choices.append(evaluate(calibration, where, candidate, images))
    return where, rank(choices, objective)


TIE = 0.01  # points of one topology within 1% of each other are one pick (the model cannot tell them apart)


def _tied(choice: Choice, chosen: Sequence[Choice]) -> bool:
    return any(
        other.candidate.topology == choice.candidate.topology
        and abs(other.prediction.images_per_s / choice.prediction.images_per_s - 1) <= TIE
        for other in chosen
    )


def picks(calibration: Calibration, ranked: Sequence[Choice], top: int, check: bool = True) -> list[Choice]:
    """The best `top` points whose config `validate` accepts (styles it refuses dropped); a point tied with a
    pick of its topology (`TIE`) is not another pick."""
    found: list[Choice] = []
    for choice in ranked:
        if len(found) >= top:
            break
        if _tied(choice, found):
            continue
        styles = accepted(calibration, choice.candidate) if check else choice.candidate.styles
        if styles:
            found.append(replace(choice, candidate=replace(choice.candidate, styles=styles)))
    return found


def lines(
    calibration: Calibration,
    where: Target,
    ranked: Sequence[Choice],
    chosen: Sequence[Choice],
    images: int,
    objective: str,
    rates_path: str,
) -> list[str]:
    """The advice as printed."""
    out = [
        f"Advice for {images:,} images, objective {objective}, on {where.label}",
        f"rates: {rates_path} (written {calibration.written_at}; "
        f"{len(ranked)} points predicted by the bottleneck model)",
        f"model: {calibration.model.name if calibration.model else 'no model run (null model)'}"
        + (f" ({calibration.model.source.split(';')[0]})" if calibration.model else ""),
    ]
    for number, choice in enumerate(chosen, 1):
        candidate = choice.candidate
        ties = f" (ties in the model: {', '.join(candidate.styles[1:])})" if len(candidate.styles) > 1 else ""
        out += [
            "",
            f"#{number} {_label(candidate)}: {_figures(choice)}",
            f"   udf={candidate.styles[0]}{ties}",
            "   run here: python -m pipeline " + " ".join(overrides(calibration, candidate)),
            "   spark confs: "
            + " ".join(
                f"--conf {key}={value}" for key, value in spark_confs(calibration, candidate, where.shape).items()
            ),
            "   your job:",
            *(f"     {line}" for line in sketch(candidate)),
        ]
    refused = server_refused(calibration)
    if refused:
        out += ["", f"topology=model_server: not searched: {refused}"]
    if chosen:
        out += ["", f"why the alternatives lose (against #1, {chosen[0].prediction.images_per_s:,.1f} img/s):"]
        ties = []
        for what, choice in alternatives(chosen[0], ranked):
            if choice.prediction.images_per_s >= chosen[0].prediction.images_per_s * (1 - TIE):
                ties.append(what)
            else:
                out.append(f"  {what}: {why_loses(chosen[0], choice)}")
        if ties:
            out.append(f"  within {TIE:.0%} of #1 (the model cannot tell them apart): {', '.join(ties)}")
    out += ["", "rates used:"]
    for name, source in sorted(where.rates.sources.items()):
        out.append(f"  {name} = {getattr(where.rates, name):.4g}: {source}")
    if calibration.model is not None:
        model = calibration.model
        where_run = "on its device" if model.on_device else "on a core"
        out.append(
            f"  model: {model.latency_s * 1000:.2f} ms a call + {model.s_per_image * 1000:.2f} ms an image "
            f"{where_run}: {model.source}"
        )
    out.append(
        "not modelled: per-style costs (the styles of one point tie), server instances beyond one per GPU, "
        "memory, stragglers, reads over a network"
    )
    return out


def _importable(*names: str) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in names)


def main(argv: Sequence[str]) -> int:
    """`python -m reports advise --rates FILE [--images N] [--objective throughput|cost] [--instance NAME
    --nodes N] [--top K] [--verify K --verify-dir DIR]`; exit 2 with a message naming the bad option."""
    import argparse
    import sys
    from pathlib import Path

    from pipeline.projection.calibrate import RatesFileError, load
    from pipeline.projection.instances import load as load_instance

    parser = argparse.ArgumentParser(prog="python -m reports advise", description=__doc__.splitlines()[0])
    parser.add_argument("--rates", required=True, type=Path, help="a rates file (sweep=calibrate's rates.json)")
    parser.add_argument("--images", type=int, default=MILLION, help="images to predict for (default 1,000,000)")
    parser.add_argument("--objective", choices=("throughput", "cost"), default="throughput")
    parser.add_argument("--instance", help="price (and project) onto a catalogue instance (conf/instance/)")
    parser.add_argument("--nodes", type=int, help="nodes of --instance (default 1) or of the calibrated cluster")
    parser.add_argument("--top", type=int, default=3, help="picks to print (default 3)")
    parser.add_argument("--verify", type=int, default=0, help="run the top K picks here and compare")
    parser.add_argument("--verify-dir", type=Path, help="where the --verify runs go (default: beside the rates file)")
    parser.add_argument("--verify-images", type=int, default=128, help="images each --verify run measures")
    parser.add_argument("--verify-timeout", type=float, default=600.0, help="seconds each --verify run may take")
    arguments = parser.parse_args(list(argv))
    for key in ("images", "top", "nodes", "verify_images"):
        value = getattr(arguments, key)
        if value is not None and value < 1:
            parser.error(f"--{key.replace('_', '-')} {value}: must be a whole number >= 1")
    if arguments.verify < 0 or arguments.verify_timeout <= 0:
        parser.error("--verify takes K >= 0 and --verify-timeout seconds > 0")
    if arguments.nodes is not None and arguments.instance is None and arguments.nodes > 0:
        pass  # nodes of the calibrated cluster's kind: predicted on that many
    try:
        calibration = load(arguments.rates)
        instance = load_instance(arguments.instance) if arguments.instance else None
        where, ranked = advise(
            calibration,
            arguments.images,
            arguments.objective,
            instance,
            arguments.nodes,
            server=_importable("tritonclient", "grpc"),
        )
    except (RatesFileError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    chosen = picks(calibration, ranked, max(arguments.top, arguments.verify))
    for line in lines(
        calibration, where, ranked, chosen[: arguments.top], arguments.images, arguments.objective, str(arguments.rates)
    ):
        print(line)
    if arguments.verify:
        from reports.verify_advice import verify

        directory = arguments.verify_dir or arguments.rates.parent / "verify"
        for line in verify(
            calibration, chosen[: arguments.verify], directory, arguments.verify_images, arguments.verify_timeout
        ):
            print(line, flush=True)
    return 0
