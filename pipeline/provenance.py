"""What a result says about where it came from: the variant a config is, the config as recorded, and what
the run ran on (versions, machine, GPU, weights, git sha). Fills a `pipeline.results.Result`.

torch and torchvision are imported only when asked for (the GPU probe, the weights kind), so importing this
costs no more than the schema.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from pipeline.config.schema import Config, DatasetConfig, DecodeOn, ModelName, PreprocessConfig
from pipeline.projection.simulated import device_record, label
from pipeline.results import Result, Variant, now

PACKAGES = ("pyspark", "torch", "torchvision", "pyarrow", "pandas", "numpy", "pillow", "hydra-core")


def variant_of(config: Config) -> Variant:
    """The choices and knobs that make this run a variant; the report groups and labels by these.

    A knob is recorded only where it acts, so a result never claims what did not run: Spark's (the UDF style's
    included) for engine=spark, the torch model's (precision, channels_last, compile) for a network (the null
    model runs none; a simulated device has the precision of its profile). `model` names the network
    (`model_name`); the crop sizes are recorded where they are not the defaults.
    """
    spark = config.engine.name.value == "spark"
    network = config.model.name is ModelName.resnet50
    precision = config.model.precision.value if network else None
    row_group_size = config.dataset.row_group_size
    return Variant(
        engine=config.engine.name.value,
        udf=config.udf.style.value if spark else None,
        topology=config.topology.kind.value if spark else None,
        cluster=config.cluster.mode.value if spark else None,
        prefetch=(spark and getattr(config.udf, "prefetch", 0)) or None,  # iterator_pandas_udf only
        rebuild_model_per_batch=(spark and getattr(config.udf, "rebuild_model_per_batch", False)) or None,  # scalar
        loader_workers=config.engine.loader_workers if config.engine.name.value == "torch" else None,
        batch_size=config.model.batch_size,
        max_records_per_batch=config.spark.max_records_per_batch if spark else None,
        partitions=config.spark.partitions if spark else None,
        python_worker_reuse=config.spark.python_worker_reuse if spark else None,
        gpu_task_amount=config.gpu.task_amount if spark else None,
        sink=config.sink.value,
        dataset_source=config.dataset.source.value,
        image_format=config.dataset.format.value,
        weights=_weights(config),
        model=model_name(config),
        device=label(config.device) if config.device is not None else None,
        precision=config.device.precision if config.device is not None else precision,
        channels_last=None if config.model.channels_last or not network else False,
        compile=(network and config.model.compile) or None,
        decoder=config.preprocess.decoder.value,
        decode_on=None if config.preprocess.decode_on is DecodeOn.task else config.preprocess.decode_on.value,
        max_bytes_per_batch=config.spark.max_bytes_per_batch if spark else None,
        row_group_size=None if row_group_size == DatasetConfig.row_group_size else row_group_size,
        python_udf_pipelined=(spark and config.spark.python_udf_pipelined) or None,
        python_udf_pipelined_queue_depth=(
            config.spark.python_udf_pipelined_queue_depth if spark and config.spark.python_udf_pipelined else None
        ),
        arrow_compression_codec=_codec(config) if spark else None,
        python_unix_domain_socket=(spark and config.spark.python_unix_domain_socket) or None,
        python_udf_arrow=False if spark and not config.spark.python_udf_arrow else None,
        resize_size=_unless_default(config.preprocess, "resize_size"),
        crop_size=_unless_default(config.preprocess, "crop_size"),
    )


def _unless_default(preprocess: PreprocessConfig, key: str) -> int | None:
    value = getattr(preprocess, key)
    return None if value == getattr(PreprocessConfig, key) else value


def model_name(config: Config) -> str:
    """The model as results and reports name it: the architecture ("resnet50", "resnet18", ...), "factory
    package.module:function", or the option of a model that runs no network (null_model, accelerator)."""
    model = config.model
    if model.name is not ModelName.resnet50:
        return model.name.value
    return f"factory {model.factory}" if model.factory else model.arch


WEIGHTS_TEXT = {
    "random": "random weights",
    "file": "weights from a file",
    "factory": "the factory's own weights",
    "none": "no weights",
}


def model_label(config: Config) -> str:
    """The model and its weights in words, e.g. "resnet18 (random weights)", "factory mypkg.models:tiny (the
    factory's own weights)", "resnet50 (torchvision IMAGENET1K_V2 weights)"."""
    kind = _weights(config)
    weights = f"torchvision {config.model.weights} weights" if kind == "torchvision" else WEIGHTS_TEXT[kind]
    return f"{model_name(config)} ({weights})"


def model_record(config: Config) -> dict[str, Any]:
    """The result's model section (env.model): what ran, with which weights, on which input. The network's
    classes and parameters are added once it was built (`pipeline.run`)."""
    network = config.model.name is ModelName.resnet50
    preprocess = config.preprocess
    return {
        "name": model_name(config),
        "label": model_label(config),
        "arch": config.model.arch if network and config.model.factory is None else None,
        "factory": config.model.factory if network else None,
        "weights": _weights(config),
        "seed": config.model.seed if network and _weights(config) in ("random", "factory") else None,
        "input": [3, preprocess.crop_size, preprocess.crop_size],
        "resize_size": preprocess.resize_size,
    }


def _codec(config: Config) -> str | None:
    codec = config.spark.arrow_compression_codec.value
    return None if codec == "none" else codec


def _weights(config: Config) -> str:
    if config.model.name in (ModelName.null_model, ModelName.accelerator):
        return "none"
    from pipeline.data.weights import weights_kind  # torchvision: its weights names

    return weights_kind(config.model.weights, config.model.arch, config.model.factory)


def _git_sha() -> str | None:
    source = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=source, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if sha.returncode != 0:
        return None
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def load_average() -> list[float] | None:
    """The machine's 1, 5 and 15-minute load averages: how busy it was besides the run (a 2-core machine at
    load 6 runs a job at a fraction of its idle speed), kept with every result so a figure says its load."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(config: Config) -> dict[str, Any]:
    """What the run ran on. Imported lazily: torch's CUDA probe is only worth paying once per run."""
    import torch

    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    weights = _weights(config)
    return {
        "python": platform.python_version(),
        "versions": versions,
        "platform": platform.platform(),
        "hostname": platform.node(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "gpu_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "gpus": "none",
        "weights": weights,
        "weights_note": "random weights: predictions are deterministic but accuracy is meaningless"
        if weights == "random"
        else None,
        "model": model_record(config),
        "git_sha": _git_sha(),
        "load_average": load_average(),  # at the start; `load_average_end` when the run ends (pipeline.run)
        "device": device_record(config.device) if config.device is not None else None,
    }


def config_record(config: Config) -> dict[str, Any]:
    """The config as a result records it."""
    return OmegaConf.to_container(OmegaConf.structured(config), enum_to_str=True)


def new_result(config: Config, run_dir: Path) -> Result:
    """A `running` result of this config, before anything is measured."""
    return Result(
        status="running",
        variant=variant_of(config),
        config=config_record(config),
        env=environment(config),
        run_dir=str(run_dir),
        started_at=now(),
    )
