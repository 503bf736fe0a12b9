"""The experiment's structured-config schema.

Every axis of the matrix is a Hydra config group whose YAML options are merged into these dataclasses, so a
misspelt key, a wrong type or an unknown enum value fails at compose time with the key and the choices.
What a type cannot say (ranges, combinations) is checked by `pipeline.validate` before anything starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf


class ConfigError(ValueError):
    """An invalid value or combination, named by its config key; raised before anything starts."""


class Engine(Enum):
    spark = "spark"
    torch = "torch"
    ray = "ray"


class ModelName(Enum):
    resnet50 = "resnet50"
    null_model = "null_model"  # fixed outputs, no computation: exposes the harness and engine overhead


class Precision(Enum):
    fp32 = "fp32"
    bf16 = "bf16"  # autocast


class Decoder(Enum):
    pil = "pil"
    torchvision = "torchvision"  # torchvision.io (libjpeg-turbo) for JPEGs, Pillow for other formats


class DecodeOn(Enum):
    task = "task"  # the CPU task that preprocesses
    model_device = "model_device"  # the model's device, in the model phase (nvjpeg on CUDA)


class DataSource(Enum):
    synthetic = "synthetic"
    folder = "folder"
    parquet = "parquet"


class ImageFormat(Enum):
    jpeg = "jpeg"
    raw = "raw"


class UdfStyle(Enum):
    scalar_pandas_udf = "scalar_pandas_udf"
    iterator_pandas_udf = "iterator_pandas_udf"
    map_in_pandas = "map_in_pandas"
    map_in_arrow = "map_in_arrow"
    rdd_map_partitions = "rdd_map_partitions"
    predict_batch_udf = "predict_batch_udf"


class Topology(Enum):
    fused = "fused"
    split = "split"
    two_stage = "two_stage"
    stage_level = "stage_level"


class ClusterMode(Enum):
    local = "local"
    local_cluster = "local_cluster"
    standalone = "standalone"
    remote = "remote"


class Sink(Enum):
    noop = "noop"
    parquet = "parquet"


class OnBadImage(Enum):
    skip = "skip"
    fail = "fail"


@dataclass
class DatasetConfig:
    source: DataSource = DataSource.synthetic
    format: ImageFormat = ImageFormat.jpeg
    num_images: Optional[int] = 64
    images_per_file: int = 1000
    seed: int = 0
    folder: Optional[str] = None
    path: Optional[str] = None


@dataclass
class ModelConfig:
    name: ModelName = ModelName.resnet50
    weights: str = "random"
    seed: int = 0
    batch_size: int = 32
    precision: Precision = Precision.fp32
    channels_last: bool = True
    compile: bool = False


@dataclass
class PreprocessConfig:
    decoder: Decoder = Decoder.pil
    decode_on: DecodeOn = DecodeOn.task
    max_pixels: int = 89_478_485  # Pillow's decompression-bomb warning threshold


@dataclass
class EngineConfig:
    name: Engine = Engine.spark
    loader_workers: int = 0


@dataclass
class UdfConfig:
    style: UdfStyle = UdfStyle.map_in_pandas
    rebuild_model_per_batch: bool = False
    prefetch: int = 0


@dataclass
class NodeConfig:
    """Machines billed for a run: `count` x `instance` (a key of `cost.prices`) in a `role`."""

    role: str = "driver"
    instance: str = "this_machine"
    count: int = 1


@dataclass
class ClusterConfig:
    mode: ClusterMode = ClusterMode.local
    cores: Optional[int] = None
    workers: int = 1
    worker_cores: int = 2
    worker_memory: str = "2g"
    executor_memory: str = "1g"
    task_cpus: int = 1
    master: Optional[str] = None
    driver_memory: str = "2g"
    nodes: list[NodeConfig] = field(default_factory=lambda: [NodeConfig()])


@dataclass
class TopologyConfig:
    kind: Topology = Topology.fused
    predict_partitions: Optional[int] = None
    intermediate_path: Optional[str] = None
    # two_stage only: job 1 runs as its own application on this cluster (None: both jobs in one application)
    preprocess_cluster: Optional[ClusterConfig] = None


@dataclass
class PriceConfig:
    usd_per_hour: float = 0.0
    region: str = ""
    source: str = ""
    date: str = ""


@dataclass
class CostConfig:
    name: str = "aws_on_demand"
    prices: dict[str, PriceConfig] = field(default_factory=dict)


@dataclass
class GpuConfig:
    executor_amount: int = 0
    task_amount: float = 0.0
    predict_task_amount: float = 1.0
    emulate: int = 0


@dataclass
class SparkConfig:
    max_records_per_batch: int = 128
    python_worker_reuse: bool = True
    partitions: Optional[int] = None
    task_max_failures: int = 4
    conf: dict[str, str] = field(default_factory=dict)


@dataclass
class Config:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    udf: UdfConfig = field(default_factory=UdfConfig)
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    gpu: GpuConfig = field(default_factory=GpuConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    sink: Sink = Sink.noop
    on_bad_image: OnBadImage = OnBadImage.skip
    repeats: int = 3
    warmup: int = 1
    verify: bool = False
    resume: bool = False
    cache_dir: str = "~/.cache/spark-inference-bench"


def register() -> None:
    """Register the schema (`config.yaml` names it first in its defaults list) and the named sweeps.

    Named sweeps live in the top-level `sweeps` package; registering them as the `sweep` group makes
    `python -m pipeline sweep=NAME` work from any directory, and a misspelt name an error listing them.
    """
    store = ConfigStore.instance()
    store.store(name="schema", node=Config)
    for resource in resources.files("sweeps").iterdir():
        if resource.name.endswith(".yaml"):
            sweep = OmegaConf.create(resource.read_text())
            store.store(group="sweep", name=resource.name.removesuffix(".yaml"), node=sweep, package="_global_")
