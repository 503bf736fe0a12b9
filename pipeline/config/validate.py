"""Checks the schema's types cannot express, run before any data, model or Spark work starts.

Which keys an option takes is the schema's: each option has a dataclass of its own (`pipeline.config.schema`), so
`udf.prefetch` with `udf=map_in_pandas` or `cluster.master` with `cluster=local` fail at compose time.
"""

from __future__ import annotations

import importlib.util

from pipeline.config.schema import (
    ClusterMode,
    Config,
    ConfigError,
    DataSource,
    DecodeOn,
    Decoder,
    Engine,
    IteratorPandasUdfConfig,
    ModelName,
    ModelServerConfig,
    Topology,
    TorchEngineConfig,
    UdfStyle,
)
from pipeline.data import storage
from pipeline.data.weights import FACTORY_WEIGHTS
from pipeline.inference.networks import DEFAULT_ARCH, FactoryError, check_arch, load_factory
from pipeline.inference.preprocess import PILLOW_PIXEL_LIMIT
from pipeline.projection.instances import device_profiles
from pipeline.spark.fastpaths import FAST_PATH_KEYS
from pipeline.spark.plan import Plan, plan

__all__ = [
    "ConfigError",
    "ConnectUnavailable",
    "validate",
    "PROFILE_STYLES",
    "CONNECT_UNAVAILABLE",
    "connect_unavailable",
]

# the styles whose Spark API takes a ResourceProfile: mapInPandas/mapInArrow(profile=), rdd.withResources
PROFILE_STYLES = (UdfStyle.map_in_pandas, UdfStyle.map_in_arrow, UdfStyle.rdd_map_partitions)


# The Spark confs the harness sets itself (`pipeline.spark.session.spark_conf`, the plan's cluster confs, two_stage's
# job 2), each with the config key that sets it, None where the harness needs its own value (loopback, the event log
# the evidence is read from, the splits it sizes): through `spark.conf` a result would record a knob that did not run.
# tests/test_config.py checks that every conf `spark_conf` writes is here.
HARNESS_CONFS: dict[str, str | None] = {
    "spark.master": "cluster",  # cluster.master with cluster=remote
    "spark.app.name": None,
    "spark.driver.host": None,
    "spark.driver.bindAddress": None,
    "spark.driver.memory": "cluster.driver_memory",
    "spark.ui.enabled": None,
    "spark.ui.showConsoleProgress": None,
    "spark.sql.execution.arrow.maxRecordsPerBatch": "spark.max_records_per_batch",
    "spark.sql.parquet.columnarReaderBatchSize": "spark.max_records_per_batch",
    "spark.sql.execution.arrow.maxBytesPerBatch": "spark.max_bytes_per_batch",
    "spark.python.worker.reuse": "spark.python_worker_reuse",
    "spark.sql.shuffle.partitions": "spark.partitions",
    "spark.task.maxFailures": "spark.task_max_failures",
    "spark.sql.adaptive.enabled": None,
    "spark.sql.files.maxPartitionBytes": None,
    "spark.sql.files.openCostInBytes": None,
    "spark.eventLog.enabled": None,
    "spark.eventLog.dir": None,
    "spark.eventLog.compress": None,
    "spark.eventLog.rolling.enabled": None,
    "spark.executor.cores": "cluster.worker_cores",
    "spark.executor.memory": "cluster.executor_memory",
    "spark.executor.instances": "cluster.workers",
    "spark.cores.max": "cluster.workers",  # x cluster.worker_cores, for a standalone master (cluster=remote)
    "spark.task.cpus": "cluster.task_cpus",
    "spark.executor.resource.gpu.amount": "gpu.executor_amount",
    "spark.task.resource.gpu.amount": "gpu.task_amount",
    "spark.worker.resource.gpu.amount": "gpu.emulate",
    "spark.worker.resource.gpu.discoveryScript": None,
    "spark.archives": "cluster.ship",  # cluster.ship=env: the virtualenv's archive
    "spark.pyspark.python": "cluster.ship",  # ... and the Python in it the workers run
    **FAST_PATH_KEYS,
}


# what Spark Connect cannot run, and why: no SparkContext on the client, so no RDD API, broadcast or accumulators
CONNECT_UNAVAILABLE = {
    UdfStyle.rdd_map_partitions: "rdd_map_partitions: needs the RDD API, which Spark Connect does not offer",
}
CONNECT_UNAVAILABLE_PREFIX = "not available under Spark Connect: "


class ConnectUnavailable(ConfigError):
    """A variant Spark Connect cannot run: refused before any work, recorded with status `unavailable` (a
    fact about Connect, not a failure of the run)."""


def connect_unavailable(config: Config) -> str | None:
    """Why `config` cannot run under Spark Connect (its style or topology), or None when it can. The reason is
    what a sweep records as "not available under Connect", apart from failures."""
    if config.udf.style in CONNECT_UNAVAILABLE:
        return CONNECT_UNAVAILABLE[config.udf.style]
    if getattr(config.topology, "preprocess_cluster", None) is not None:
        return (
            "topology.preprocess_cluster: two applications in one driver process, which a Spark Connect "
            "client does not have (run two_stage in one application)"
        )
    return None


def _at_least(key: str, value: int | None, minimum: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value is None or value < minimum:
        raise ConfigError(f"{key}={value}: must be an integer >= {minimum}")


def _spark(config: Config) -> Plan:
    mode, kind = config.cluster.mode, config.topology.kind
    planned = plan(config)  # the cluster, two_stage's preprocess cluster and the GPUs
    gpus = planned.gpus
    if planned.connect and (reason := connect_unavailable(config)):
        raise ConnectUnavailable(f"{CONNECT_UNAVAILABLE_PREFIX}{reason}")
    if planned.connect:
        mode = planned.mode  # cluster=connect is checked as its backend (cluster=remote stays remote)
    if kind is Topology.stage_level:
        if mode is ClusterMode.local:
            raise ConfigError(
                "topology=stage_level with cluster=local: Spark supports task ResourceProfiles only on "
                "standalone, YARN and Kubernetes; use cluster=local_cluster or cluster=standalone"
            )
        if gpus.kind == "none":
            raise ConfigError(
                "topology=stage_level schedules the predict stage by GPUs: set gpu.emulate=N or GPU amounts"
            )
        if config.udf.style not in PROFILE_STYLES:
            names = ", ".join(style.value for style in PROFILE_STYLES)
            raise ConfigError(
                f"topology=stage_level with udf={config.udf.style.value}: only {names} can run a stage under a "
                "ResourceProfile"
            )
    if isinstance(config.topology, ModelServerConfig):
        _model_server(config)
    _at_least("spark.task_max_failures", config.spark.task_max_failures, 1)
    _spark_conf(config)
    _fast_paths(config)
    return planned


def _spark_conf(config: Config) -> None:
    """`spark.conf` adds any Spark conf but those the harness sets itself (`HARNESS_CONFS`)."""
    for key in config.spark.conf:
        if key in HARNESS_CONFS:
            knob = HARNESS_CONFS[key]
            fix = f"set {knob}=... instead" if knob else "the harness sets it itself, and its results rely on it"
            raise ConfigError(f"spark.conf sets {key}: {fix} (spark.conf adds any Spark conf but the harness's own)")


def _fast_paths(config: Config) -> None:
    """The fast-path knobs: a queue depth Spark would refuse, and one that would change nothing."""
    _at_least("spark.python_udf_pipelined_queue_depth", config.spark.python_udf_pipelined_queue_depth, 1)
    if not config.spark.python_udf_pipelined and config.spark.python_udf_pipelined_queue_depth != 2:
        raise ConfigError(
            f"spark.python_udf_pipelined_queue_depth={config.spark.python_udf_pipelined_queue_depth} takes effect "
            "only with spark.python_udf_pipelined=true"
        )


def _model_server(config: Config) -> None:
    """topology=model_server: sane batching, a free port, the client extra (a wrong key is named whatever is
    installed); on a cluster of other machines (cluster=remote, one server per node, `pipeline.serving.nodes`),
    the storage root its nodes' servers keep their records, logs and status in."""
    topology = config.topology
    remote = config.cluster.mode is ClusterMode.remote
    if remote and config.storage is None:
        raise ConfigError(
            "topology=model_server with cluster=remote needs storage=DIR, a directory every node and this machine "
            "share at the same path: each node's server keeps its record, log and status there, and its environment "
            "is made there (unless topology.server_env names another such path)"
        )
    _at_least("topology.instances", topology.instances, 1, optional=True)
    _at_least("topology.threads", topology.threads, 1, optional=True)
    _at_least("topology.max_queue_delay_us", topology.max_queue_delay_us, 0)
    if topology.max_batch_size < config.model.batch_size:
        raise ConfigError(
            f"topology.max_batch_size={topology.max_batch_size} < model.batch_size={config.model.batch_size}: the "
            "server would refuse every request"
        )
    for key in ("request_timeout_s", "start_timeout_s"):
        if getattr(topology, key) <= 0:
            raise ConfigError(f"topology.{key}={getattr(topology, key)}: must be > 0")
    port = topology.grpc_port
    if port is not None:
        from pipeline.serving.launcher import port_in_use

        if not 1 <= port <= 65535:
            raise ConfigError(f"topology.grpc_port={port}: must be a port number 1..65535 (or null for a free one)")
        if not remote and port_in_use(port):  # a node's port is for its own server to find free
            raise ConfigError(
                f"topology.grpc_port={port}: 127.0.0.1:{port} is already in use; choose another port or "
                "topology.grpc_port=null for a free one"
            )
    if any(importlib.util.find_spec(name) is None for name in ("tritonclient", "grpc")):
        raise ConfigError(
            "topology=model_server needs the model server's client, an optional dependency: pip install -e '.[server]'"
        )


def _model(config: Config) -> None:
    """The network: a torchvision architecture torchvision has, or a factory this process can import (so it fails
    here, not in the first task), never both; neither with a model that runs no network; sizes a crop can have."""
    model = config.model
    preprocess = config.preprocess
    _at_least("preprocess.crop_size", preprocess.crop_size, 1)
    _at_least("preprocess.resize_size", preprocess.resize_size, 1)
    if preprocess.crop_size > preprocess.resize_size:
        raise ConfigError(
            f"preprocess.crop_size={preprocess.crop_size} > preprocess.resize_size={preprocess.resize_size}: the "
            "centre crop would pad the resized image"
        )
    chosen = []  # the keys that name a network other than the default
    if model.arch != DEFAULT_ARCH:
        chosen.append(f"model.arch={model.arch}")
    if model.factory is not None:
        chosen.append(f"model.factory={model.factory}")
    if model.name is not ModelName.resnet50:
        if chosen:
            why = {
                ModelName.null_model: "the null model runs no network",
                ModelName.accelerator: "a simulated device's profiles (conf/device/) are ResNet50 figures",
            }[model.name]
            raise ConfigError(f"{chosen[0]} with model={model.name.value}: {why}; use model=resnet50 {chosen[0]}")
        return
    if len(chosen) == 2:
        raise ConfigError(f"{chosen[1]} and {chosen[0]}: the factory builds the network, leave model.arch unset")
    if model.factory is None:
        try:
            check_arch(model.arch)
        except ValueError as error:
            raise ConfigError(str(error)) from error
        if model.weights == FACTORY_WEIGHTS:
            raise ConfigError(f"model.weights={FACTORY_WEIGHTS} (the factory's own weights) needs model.factory")
        return
    try:
        load_factory(model.factory)
    except FactoryError as error:
        raise ConfigError(str(error)) from error


def _device(config: Config) -> None:
    """A simulated device goes with model=accelerator and only with it, at a rate and costs it can hold."""
    device, accelerator = config.device, config.model.name is ModelName.accelerator
    if device is not None and not accelerator:
        raise ConfigError(
            f"device={device.name} simulates a device for model=accelerator only; model={config.model.name.value} "
            "runs on the CPU or a real GPU"
        )
    if device is None:
        if accelerator:
            raise ConfigError(f"model=accelerator needs a device: device={'|'.join(device_profiles())}")
        return
    if not device.images_per_s > 0:
        raise ConfigError(f"device.images_per_s={device.images_per_s}: must be > 0")
    for key in ("latency_s", "host_s_per_image"):
        if getattr(device, key) < 0:
            raise ConfigError(f"device.{key}={getattr(device, key)}: must be >= 0")
    _at_least("device.batch_size", device.batch_size, 1)
    if config.preprocess.decode_on is DecodeOn.model_device:
        raise ConfigError(
            "preprocess.decode_on=model_device with model=accelerator: a simulated device decodes nothing"
        )


def _scaling(config: Config) -> None:
    """A scaling run (`+scaling=`) counts nodes by cluster.workers: one machine's local[N] has no nodes to count."""
    if config.scaling is None:
        return
    _at_least("scaling.images_per_node", config.scaling.images_per_node, 1)
    _at_least("scaling.images", config.scaling.images, 1)
    if config.cluster.mode in (ClusterMode.local, ClusterMode.connect) or config.engine.name is not Engine.spark:
        raise ConfigError(
            f"+scaling={config.scaling.mode.value} measures throughput against cluster.workers nodes: use engine=spark "
            "with cluster=remote (a cluster of machines), standalone or local_cluster"
        )


def validate(config: Config) -> Plan | None:
    """Raise ConfigError for the first invalid value or combination in `config`; for engine=spark, return
    the plan of its applications (`pipeline.spark.plan`), which the run then starts, else None."""
    _at_least("model.batch_size", config.model.batch_size, 1)
    _at_least("repeats", config.repeats, 1)
    _at_least("warmup", config.warmup, 0)
    _at_least("dataset.images_per_file", config.dataset.images_per_file, 1)
    _at_least("dataset.row_group_size", config.dataset.row_group_size, 1)
    _at_least("spark.max_records_per_batch", config.spark.max_records_per_batch, 1)
    _at_least("spark.partitions", config.spark.partitions, 1, optional=True)
    _at_least("spark.max_bytes_per_batch", config.spark.max_bytes_per_batch, 1, optional=True)
    _at_least("topology.predict_partitions", getattr(config.topology, "predict_partitions", None), 1, optional=True)
    if isinstance(config.engine, TorchEngineConfig):
        _at_least("engine.loader_workers", config.engine.loader_workers, 0)
    if isinstance(config.udf, IteratorPandasUdfConfig):
        _at_least("udf.prefetch", config.udf.prefetch, 0)
    max_pixels = config.preprocess.max_pixels
    if not 1 <= max_pixels <= PILLOW_PIXEL_LIMIT:
        raise ConfigError(
            f"preprocess.max_pixels={max_pixels}: must be between 1 and {PILLOW_PIXEL_LIMIT} (Pillow refuses "
            "to decode larger images)"
        )
    dataset = config.dataset
    required = {DataSource.synthetic: "num_images", DataSource.folder: "folder", DataSource.parquet: "path"}
    key = required[dataset.source]
    if getattr(dataset, key) is None:
        raise ConfigError(f"dataset.{key} is required with dataset.source={dataset.source.value}")
    _at_least("dataset.num_images", dataset.num_images, 1, optional=dataset.source is not DataSource.synthetic)
    nodes = [("cluster.nodes", node) for node in config.cluster.nodes]
    preprocess_cluster = getattr(config.topology, "preprocess_cluster", None)
    if preprocess_cluster is not None:
        nodes += [("topology.preprocess_cluster.nodes", node) for node in preprocess_cluster.nodes]
    for key, node in nodes:
        if node.instance not in config.cost.prices:
            raise ConfigError(
                f"{key}: instance {node.instance!r} has no price in cost={config.cost.name}; "
                f"priced: {', '.join(sorted(config.cost.prices))}"
            )
        _at_least(f"{key}[{node.instance}].count", node.count, 1)
    if config.preprocess.decoder is Decoder.torchcodec and importlib.util.find_spec("torchcodec") is None:
        raise ConfigError(
            "preprocess.decoder=torchcodec needs TorchCodec, an optional dependency: pip install -e '.[torchcodec]'"
        )
    if config.preprocess.decode_on is DecodeOn.model_device:
        if config.preprocess.decoder is not Decoder.torchvision:
            raise ConfigError(
                "preprocess.decode_on=model_device decodes with torchvision.io: set preprocess.decoder=torchvision"
            )
        if config.engine.name is Engine.ray:
            raise ConfigError(
                "preprocess.decode_on=model_device with engine=ray: Ray decodes in its CPU tasks, before the model's "
                "actors; use preprocess.decode_on=task (model_device: engine=torch, or engine=spark topology=fused)"
            )
        if config.engine.name is Engine.spark and config.topology.kind is not Topology.fused:
            raise ConfigError(
                f"preprocess.decode_on=model_device with topology={config.topology.kind.value}: only topology=fused "
                "decodes in the model's task (the others make crops in a stage of their own)"
            )
    _model(config)
    _device(config)
    _scaling(config)
    if config.storage is not None:
        storage.check(config.storage)
    if config.engine.name is Engine.ray and importlib.util.find_spec("ray") is None:
        raise ConfigError("engine=ray needs Ray Data, an optional dependency: pip install -e '.[peers]'")
    if config.engine.name is Engine.spark:
        return _spark(config)
    return None
