"""The experiment's structured-config schema.

Every axis of the matrix is a Hydra config group whose YAML options are merged into these dataclasses, so a
misspelt key, a wrong type or an unknown enum value fails at compose time with the key and the choices.
The groups whose options take different knobs (engine, udf, cluster, topology) have a dataclass per option,
so a key of another option fails there too; `typed` rebuilds them from a resolved config.
What a type cannot say (ranges, combinations) is checked by `pipeline.config.validate` before anything starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """An invalid value or combination, named by its config key; raised before anything starts."""


class Engine(Enum):
    spark = "spark"
    torch = "torch"
    ray = "ray"


class ModelName(Enum):
    resnet50 = "resnet50"  # a network: torchvision's ResNet50, another architecture (`arch`) or a factory's
    null_model = "null_model"  # fixed outputs, no computation: exposes the harness and engine overhead
    accelerator = "accelerator"  # a simulated device (`device=`): holds a GPU slot as long as the device would


class Precision(Enum):
    fp32 = "fp32"
    bf16 = "bf16"  # autocast


class Decoder(Enum):
    pil = "pil"
    torchvision = "torchvision"  # torchvision.io (libjpeg-turbo) for JPEGs, Pillow for other formats
    torchcodec = "torchcodec"  # TorchCodec's decode_jpeg (torchvision.io's successor) for JPEGs, Pillow for others


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
    arrow_udf = "arrow_udf"  # pyspark.sql.functions.arrow_udf, iterator form (Spark 4.1+)


class ArrowCodec(Enum):
    """`spark.sql.execution.arrow.compression.codec` (Spark 4.1+): Arrow IPC batches the JVM sends to Python."""

    none = "none"
    lz4 = "lz4"
    zstd = "zstd"


class Topology(Enum):
    fused = "fused"
    split = "split"
    two_stage = "two_stage"
    stage_level = "stage_level"
    model_server = "model_server"  # every slot preprocesses; one inference server per node predicts


class ClusterMode(Enum):
    local = "local"
    local_cluster = "local_cluster"
    standalone = "standalone"
    remote = "remote"
    connect = "connect"  # a Spark Connect server started by the harness in front of a backend


class Ship(Enum):
    """What cluster=remote sends its executors before any pass (`pipeline.spark.shipping`)."""

    installed = "installed"  # nothing: the nodes have the tool and its environment
    code = "code"  # the tool's packages as a zip; the nodes have its dependencies
    env = "env"  # this machine's virtualenv, packed, and the code zip; the nodes have its base interpreter


class Sink(Enum):
    noop = "noop"
    parquet = "parquet"


class OnBadImage(Enum):
    skip = "skip"
    fail = "fail"


@dataclass
class DatasetConfig:
    source: DataSource = DataSource.synthetic  # generated images, your folder of images, or your Parquet
    format: ImageFormat = ImageFormat.jpeg  # JPEG bytes, or decoded 256x256x3 uint8 arrays (raw)
    num_images: Optional[int] = 64  # images generated or imported (None: every image of the folder or Parquet)
    images_per_file: int = 1000  # images per Parquet file of a generated or imported data set
    row_group_size: int = 32  # images per Parquet row group of a generated or imported data set
    seed: int = 0  # the generated data set's seed
    folder: Optional[str] = None  # source=folder: your images, one subfolder per class (the ImageNet layout)
    path: Optional[str] = None  # source=parquet: a directory of Parquet with columns id, label, image


@dataclass
class ModelConfig:
    name: ModelName = ModelName.resnet50
    arch: str = "resnet50"  # any torchvision classification model; model=resnet50 only (pipeline.inference.networks)
    factory: Optional[str] = None  # "package.module:function" returning a torch.nn.Module; model=resnet50, no arch
    weights: str = "random"
    seed: int = 0
    batch_size: int = 32
    precision: Precision = Precision.fp32
    channels_last: bool = True
    compile: bool = False


class DeviceKind(Enum):
    published = "published"  # a vendor's or MLPerf's figure (or one derived from it, said so in its YAML)
    ours = "ours"  # measured by this project (../shared/reference/facts.md)


@dataclass
class DeviceConfig:
    """One accelerator's ResNet50 inference figures, which `model=accelerator` simulates (never presented as a
    GPU figure). `images_per_s` is one device's rate at `batch_size`; every model call, whatever its size n
    (`model.batch_size`), holds its GPU slot for `latency_s + n / images_per_s` seconds and spends
    `host_s_per_image` of host CPU per image (the uint8 copy to pinned memory). `batch_size` is what the figure
    was measured or assumed at, which reports state beside it; the simulation has no rule for other sizes.
    `source` and `date` say where the figure comes from; overriding a field (`device.images_per_s=200`) is
    recorded in the result as an override of the profile."""

    name: str = "t4_fp16"  # the profile's name, as reports label it ("simulated t4_fp16 3000 img/s")
    images_per_s: float = 1.0  # one device's ResNet50 images/s at batch_size
    batch_size: int = 32  # the batch size the figure was measured or assumed at
    latency_s: float = 0.0  # seconds every model call holds the device beyond its images
    host_s_per_image: float = 0.0  # host CPU seconds spent per image (the copy to pinned memory)
    precision: str = "fp16"  # the precision the figure is for
    source: str = ""  # where the figure comes from (a published result, ours, or how it was derived)
    date: str = ""  # when the figure was measured or recorded
    kind: DeviceKind = DeviceKind.published  # published (a vendor's or MLPerf's, or derived from one) or ours


@dataclass
class PreprocessConfig:
    decoder: Decoder = Decoder.pil
    decode_on: DecodeOn = DecodeOn.task
    max_pixels: int = 89_478_485  # Pillow's decompression-bomb warning threshold
    resize_size: int = 256  # the shorter side is resized to it, then
    crop_size: int = 224  # the centre crop of this side is the model's input


# ------------------------------------------------------------------------------------ per-option schemas
#
# A group whose options take different knobs has one base dataclass, holding the discriminator (the field
# that names the option) and the knobs every option shares, and one subclass per option with only its own
# knobs. Each option's YAML names its schema first in its defaults list (`/schema/GROUP@_here_: OPTION`),
# so Hydra merges the option into that subclass: `udf=map_in_pandas udf.prefetch=2` fails at compose time
# with "Key 'prefetch' not in 'MapInPandasConfig'". `typed` picks the subclass again by the discriminator.


@dataclass
class EngineConfig:
    name: Engine = Engine.spark


@dataclass
class SparkEngineConfig(EngineConfig):
    name: Engine = Engine.spark


@dataclass
class TorchEngineConfig(EngineConfig):
    name: Engine = Engine.torch
    loader_workers: int = 0  # DataLoader processes preprocessing while the main process predicts


@dataclass
class RayEngineConfig(EngineConfig):
    name: Engine = Engine.ray


@dataclass
class UdfConfig:
    style: UdfStyle = UdfStyle.map_in_pandas


@dataclass
class ScalarPandasUdfConfig(UdfConfig):
    style: UdfStyle = UdfStyle.scalar_pandas_udf
    rebuild_model_per_batch: bool = False  # the original study's confound: a model built for every call


@dataclass
class IteratorPandasUdfConfig(UdfConfig):
    style: UdfStyle = UdfStyle.iterator_pandas_udf
    prefetch: int = 0  # batches prepared ahead in a background thread


@dataclass
class MapInPandasConfig(UdfConfig):
    style: UdfStyle = UdfStyle.map_in_pandas


@dataclass
class MapInArrowConfig(UdfConfig):
    style: UdfStyle = UdfStyle.map_in_arrow


@dataclass
class RddMapPartitionsConfig(UdfConfig):
    style: UdfStyle = UdfStyle.rdd_map_partitions


@dataclass
class PredictBatchUdfConfig(UdfConfig):
    style: UdfStyle = UdfStyle.predict_batch_udf


@dataclass
class ArrowUdfConfig(UdfConfig):
    style: UdfStyle = UdfStyle.arrow_udf


@dataclass
class NodeConfig:
    """Machines billed for a run: `count` x `instance` (a key of `cost.prices`) in a `role`."""

    role: str = "driver"  # what the machines do (driver, worker, ...), as the report's cost lists them
    instance: str = "this_machine"  # a key of cost.prices
    count: int = 1  # how many such machines


@dataclass
class ClusterConfig:
    """What every cluster mode has: the driver's memory and the billed machines."""

    mode: ClusterMode = ClusterMode.local
    driver_memory: str = "2g"  # the driver JVM's heap (spark.driver.memory)
    nodes: list[NodeConfig] = field(default_factory=lambda: [NodeConfig()])  # the machines the report bills


@dataclass
class LocalConfig(ClusterConfig):
    """`local[N]`: tasks in the driver JVM."""

    mode: ClusterMode = ClusterMode.local
    cores: Optional[int] = None  # None: every CPU core


@dataclass
class ExecutorsConfig(ClusterConfig):
    """The modes with executors: `workers` executors of `worker_cores` cores, `task_cpus` cores a task."""

    workers: int = 1  # executors (one per worker)
    worker_cores: int = 2  # task slots of each executor (spark.executor.cores)
    executor_memory: str = "1g"  # each executor JVM's heap (Python workers are outside it)
    task_cpus: int = 1  # cores a task takes (spark.task.cpus), and torch threads per task


@dataclass
class LocalClusterConfig(ExecutorsConfig):
    """`local-cluster[W,C,M]`: worker JVMs started by the driver."""

    mode: ClusterMode = ClusterMode.local_cluster
    worker_memory: str = "2g"  # memory a worker offers its executor


@dataclass
class StandaloneConfig(ExecutorsConfig):
    """A standalone master and workers started by the harness on 127.0.0.1."""

    mode: ClusterMode = ClusterMode.standalone
    worker_memory: str = "2g"  # memory a worker offers its executor


@dataclass
class RemoteConfig(ExecutorsConfig):
    """An existing cluster at `master`; `workers` is `spark.executor.instances`."""

    mode: ClusterMode = ClusterMode.remote
    master: Optional[str] = None  # the cluster's master URL: spark://HOST:7077, yarn, k8s://..., sc://HOST:15002
    # the address the executors reach the driver at, which it also binds (None: this machine's address on the
    # route to the master); the modes the harness starts here keep the driver on 127.0.0.1
    driver_host: Optional[str] = None
    # seconds the driver waits for `workers` executors to register before the run fails saying why
    register_timeout_s: float = 120.0
    # the master's web UI, read only to say why executors did not register (None: http://MASTER_HOST:8080)
    master_webui: Optional[str] = None
    # an sc:// server's spark.eventLog.dir, when this machine can read it: the evidence is read from its
    # application's log there (a spark:// master's driver is the job's own and logs to the run dir)
    event_log_dir: Optional[str] = None
    # what the executors get before any pass: nothing (the nodes have the tool), the tool's code, or this
    # machine's whole Python environment with it (`pipeline.spark.shipping`)
    ship: Ship = Ship.installed
    # seconds the check that every executor can run the tool (one task per slot, before any pass) may take; an
    # environment shipped is unpacked by the first task on each executor, inside this bound
    preflight_timeout_s: float = 600.0


@dataclass
class ConnectConfig(ExecutorsConfig):
    """A Spark Connect server started by the harness on 127.0.0.1 in front of `backend` (local: `local[C]` with
    C = `worker_cores`; local_cluster and standalone as those modes, with these keys); the job's session is
    `sc://`. Its own schema rather than a nested cluster: one level of keys, as every other mode has."""

    mode: ClusterMode = ClusterMode.connect
    backend: ClusterMode = ClusterMode.local  # what the server runs on: local, local_cluster or standalone
    worker_memory: str = "2g"  # memory a worker offers its executor


@dataclass
class TopologyConfig:
    kind: Topology = Topology.fused


@dataclass
class FusedConfig(TopologyConfig):
    kind: Topology = Topology.fused


@dataclass
class SplitConfig(TopologyConfig):
    kind: Topology = Topology.split
    predict_partitions: Optional[int] = None  # None: the GPU slots, else the task slots


@dataclass
class TwoStageConfig(TopologyConfig):
    kind: Topology = Topology.two_stage
    intermediate_path: Optional[str] = None  # None: the run's area of the storage root (pipeline.data.storage)
    # job 1 runs as its own application on this cluster (None: both jobs in one application)
    preprocess_cluster: Optional[ClusterConfig] = None


@dataclass
class StageLevelConfig(TopologyConfig):
    kind: Topology = Topology.stage_level
    predict_partitions: Optional[int] = None  # None: the GPU slots


@dataclass
class ModelServerConfig(TopologyConfig):
    """Tasks decode and preprocess on every slot and send uint8 crops to a model server (PyTriton) per node."""

    kind: Topology = Topology.model_server
    instances: Optional[int] = None  # model instances; None: one per GPU of a worker (real or emulated), else 1
    threads: Optional[int] = None  # the server's torch threads; None: every core of the machine
    max_batch_size: int = 128  # the largest batch Triton's dynamic batcher forms
    max_queue_delay_us: int = 2000  # how long a request may wait for others to join its batch
    grpc_port: Optional[int] = None  # None: a free port (on 127.0.0.1; on each node with cluster=remote)
    request_timeout_s: float = 120.0  # a task's deadline for one batch
    start_timeout_s: float = 300.0  # the server's start, model loads included
    # PyTriton + NumPy < 2 (pipeline.serving.environment.root); None: the driver's cache, or <storage>/server-env
    # for cluster=remote, whose nodes run it
    server_env: Optional[str] = None


# group -> (discriminator, {option: schema}); conf/GROUP/OPTION.yaml names /schema/GROUP/OPTION
OPTION_SCHEMAS: dict[str, tuple[str, dict[str, type]]] = {
    "engine": ("name", {"spark": SparkEngineConfig, "torch": TorchEngineConfig, "ray": RayEngineConfig}),
    "udf": (
        "style",
        {
            "scalar_pandas_udf": ScalarPandasUdfConfig,
            "iterator_pandas_udf": IteratorPandasUdfConfig,
            "map_in_pandas": MapInPandasConfig,
            "map_in_arrow": MapInArrowConfig,
            "rdd_map_partitions": RddMapPartitionsConfig,
            "predict_batch_udf": PredictBatchUdfConfig,
            "arrow_udf": ArrowUdfConfig,
        },
    ),
    "cluster": (
        "mode",
        {
            "local": LocalConfig,
            "local_cluster": LocalClusterConfig,
            "standalone": StandaloneConfig,
            "remote": RemoteConfig,
            "connect": ConnectConfig,
        },
    ),
    "topology": (
        "kind",
        {
            "fused": FusedConfig,
            "split": SplitConfig,
            "two_stage": TwoStageConfig,
            "stage_level": StageLevelConfig,
            "model_server": ModelServerConfig,
        },
    ),
}


@dataclass
class PriceConfig:
    usd_per_hour: float = 0.0  # on-demand price of one machine
    region: str = ""  # the region the price is for
    source: str = ""  # where the price comes from
    date: str = ""  # when it was read


@dataclass
class CostConfig:
    name: str = "aws_on_demand"  # the price table's name, as the report cites it
    prices: dict[str, PriceConfig] = field(default_factory=dict)  # instance -> its price (cluster.nodes' instances)


@dataclass
class InstanceConfig:
    """A machine of the instance catalogue (conf/instance/, `pipeline.projection.instances`), which reports project
    results onto. `price` names its entry in the cost table (one place for a price); `device` a profile of
    conf/device/ (None: no GPU); `vcpu_speed` is one vCPU's preprocessing rate with all busy relative to one core
    here, and `vcpu_speed_source` says whether it is measured or assumed."""

    name: str = ""  # the catalogue entry's name (conf/instance/NAME.yaml)
    price: str = ""  # its key in the cost table's prices
    vcpus: int = 0  # vCPUs (hyperthreads on x86)
    gpus: int = 0  # GPUs of the instance
    device: Optional[str] = None  # a profile of conf/device/ for its GPUs (None: no GPU)
    memory_gib: float = 0.0  # memory, GiB
    vcpu_speed: float = 1.0  # one vCPU's preprocessing rate with all busy, relative to one core of this machine
    vcpu_speed_source: str = ""  # whether vcpu_speed is measured or assumed, and from what


@dataclass
class GpuConfig:
    executor_amount: int = 0
    task_amount: float = 0.0
    predict_task_amount: float = 1.0  # GPUs per task of stage_level's predict stage (its ResourceProfile)
    emulate: int = 0


@dataclass
class SparkConfig:
    max_records_per_batch: int = 128
    max_bytes_per_batch: Optional[int] = None  # spark.sql.execution.arrow.maxBytesPerBatch; None: Spark's 64 MiB
    python_worker_reuse: bool = True
    partitions: Optional[int] = None
    task_max_failures: int = 4
    conf: dict[str, str] = field(default_factory=dict)
    # Spark 4.1-4.3's Python fast paths (pipeline/spark/session.py sets them, every one explicitly)
    python_udf_pipelined: bool = False  # spark.python.udf.pipelined.enabled (4.3.0): a reader thread prefetches
    python_udf_pipelined_queue_depth: int = 2  # spark.python.udf.pipelined.queueDepth: batches read ahead
    arrow_compression_codec: ArrowCodec = ArrowCodec.none  # spark.sql.execution.arrow.compression.codec
    python_unix_domain_socket: bool = False  # spark.python.unix.domain.socket.enabled: JVM <-> Python over AF_UNIX
    python_udf_arrow: bool = True  # spark.sql.execution.pythonUDF.arrow.enabled (4.3.0's default, set explicitly)


class ScalingMode(Enum):
    weak = "weak"  # the same images on every node: the data set grows with cluster.workers
    strong = "strong"  # the same data set whatever the number of nodes


@dataclass
class ScalingConfig:
    """A run of the scaling sweep (`+scaling=weak|strong`, sweeps/scaling.yaml): its data set's size follows
    `cluster.workers` (weak: `images_per_node` each) or stays `images` (strong); the report plots throughput
    against nodes from these runs (reports/scaling.py)."""

    mode: ScalingMode = ScalingMode.weak
    images_per_node: int = 64
    images: int = 192


@dataclass
class CalibrateConfig:
    """A run of the calibrate sweep (`+calibrate=NAME`, sweeps/calibrate.yaml), which owns the model keys its runs
    fix: the no-model runs' null model, the server run's simulated device, the model runs' batch sizes. Hydra applies
    a command-line `model.arch=...` or `device.images_per_s=...` after every option it composes, so no option can
    keep it off a run; `pipeline.config.calibrate_run.apply` puts these in place after composition instead, and the
    user's model keys reach the model runs only (and the rates file's overrides, which the advice's runs repeat)."""

    run: str = ""  # which calibrate run (the option's name), for the reader of job.yaml
    model: Optional[ModelConfig] = None  # the run's own model, in place of the config's (None: the config's model)
    device: Optional[DeviceConfig] = None  # with `model`: the run's own device, in place of the config's (None: none)
    batch_size: Optional[int] = None  # the config's model at this model.batch_size, whatever the command line says


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
    device: Optional[DeviceConfig] = None  # set by model=accelerator (conf/model/accelerator.yaml), else None
    scaling: Optional[ScalingConfig] = None  # set by +scaling=weak|strong (conf/scaling/), else None
    calibrate: Optional[CalibrateConfig] = None  # set by +calibrate=NAME (conf/calibrate/, sweep=calibrate), else None
    sink: Sink = Sink.noop
    on_bad_image: OnBadImage = OnBadImage.skip
    repeats: int = 3
    warmup: int = 1
    verify: bool = False
    resume: bool = False
    cache_dir: str = "~/.cache/spark-inference-bench"
    storage: Optional[str] = None  # what tasks read or write, for every node (None: cache_dir and the run dir)


def typed(container: Any) -> Config:
    """A resolved config (as RUN_DIR/job.yaml holds it, or a result's config record), typed by the schema again.

    Each group with per-option schemas is typed by the subclass its discriminator names (`udf.style`,
    `cluster.mode`, `topology.kind`, `engine.name`; two_stage's `topology.preprocess_cluster.mode`), so an
    option's own keys come back and another option's keys are refused, naming the key.
    """
    data = OmegaConf.create(container) if not isinstance(container, DictConfig) else container
    schema = OmegaConf.structured(Config)
    for group, (key, options) in OPTION_SCHEMAS.items():
        option = _option(OmegaConf.select(data, f"{group}.{key}", default=None))
        if option in options:
            schema[group] = OmegaConf.structured(options[option])
    if isinstance(OmegaConf.select(data, "topology.preprocess_cluster", default=None), DictConfig):
        option = _option(OmegaConf.select(data, "topology.preprocess_cluster.mode", default=None))
        if option in OPTION_SCHEMAS["cluster"][1] and "preprocess_cluster" in schema.topology:
            schema.topology.preprocess_cluster = OmegaConf.structured(OPTION_SCHEMAS["cluster"][1][option])
    return OmegaConf.to_object(OmegaConf.merge(schema, data))


def _option(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def register() -> None:
    """Register the schema (`config.yaml` names it first in its defaults list), each option's schema (group
    `schema/GROUP`, named first in conf/GROUP/OPTION.yaml) and the named sweeps.

    Named sweeps live in the top-level `sweeps` package; registering them as the `sweep` group makes
    `python -m pipeline sweep=NAME` work from any directory, and a misspelt name an error listing them.
    """
    # `${product:A,B}`: conf/scaling/weak.yaml's data set of images_per_node x cluster.workers
    OmegaConf.register_new_resolver("product", lambda *factors: math.prod(int(f) for f in factors), replace=True)
    store = ConfigStore.instance()
    store.store(name="schema", node=Config)
    for group, (_, options) in OPTION_SCHEMAS.items():
        for option, schema in options.items():
            store.store(group=f"schema/{group}", name=option, node=schema)
    for resource in resources.files("sweeps").iterdir():
        if resource.name.endswith(".yaml"):
            sweep = OmegaConf.create(resource.read_text())
            store.store(group="sweep", name=resource.name.removesuffix(".yaml"), node=sweep, package="_global_")
