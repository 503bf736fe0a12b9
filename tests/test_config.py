"""Bad configuration fails at compose time (types, keys, options) or in `validate` (values, combinations),
always naming the key — before any data, model or Spark work."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError

from pipeline.config.schema import (
    ClusterMode,
    Config,
    DataSource,
    Engine,
    ImageFormat,
    IteratorPandasUdfConfig,
    MapInPandasConfig,
    Sink,
    StandaloneConfig,
    TorchEngineConfig,
    TwoStageConfig,
    UdfStyle,
    typed,
)
from pipeline.config.validate import HARNESS_CONFS, ConfigError, validate
from pipeline.provenance import config_record
from tests.helpers.config import compose_config

PRE = "+cluster@topology.preprocess_cluster"  # any cluster option, as the preprocess job's cluster
TWO_STAGE = ["topology=two_stage", "topology.intermediate_path=/tmp/crops"]


def test_default_config_is_the_documented_run():
    config = compose_config()
    assert isinstance(config, Config)
    assert (config.engine.name, config.udf.style, config.cluster.mode) == (
        Engine.spark,
        UdfStyle.map_in_pandas,
        ClusterMode.local,
    )
    assert (config.dataset.source, config.dataset.format, config.dataset.num_images) == (
        DataSource.synthetic,
        ImageFormat.jpeg,
        64,
    )
    assert (config.model.weights, config.sink, config.verify) == ("random", Sink.noop, False)
    validate(config)


@pytest.mark.parametrize(
    ("override", "error", "named"),
    [
        ("nope=1", ConfigCompositionException, "nope"),
        ("model.nope=1", ConfigCompositionException, "nope"),
        ("model.batch_size=abc", ConfigCompositionException, "model.batch_size"),
        ("dataset.format=png", ConfigCompositionException, "jpeg, raw"),
        ("sink=kafka", ConfigCompositionException, "noop, parquet"),
        ("udf=nope", ConfigCompositionException, "map_in_pandas"),
        ("topology=nope", ConfigCompositionException, "stage_level"),
        ("cluster=yarn", ConfigCompositionException, "standalone"),
        ("dataset=imagenet", ConfigCompositionException, "original_10g"),
        ("preprocess.max_pixels=lots", ConfigCompositionException, "preprocess.max_pixels"),
        ("resume=maybe", ConfigCompositionException, "resume"),
        ("+cluster@topology.preprocess_cluster=yarn", ConfigCompositionException, "standalone"),
        ("spark.arrow_compression_codec=gzip", ConfigCompositionException, "none, lz4, zstd"),
        ("spark.python_udf_pipelined=maybe", ConfigCompositionException, "spark.python_udf_pipelined"),
        ("spark.python_unix_domain_socket=often", ConfigCompositionException, "spark.python_unix_domain_socket"),
        ("spark.python_udf_arrow=yes_please", ConfigCompositionException, "spark.python_udf_arrow"),
        ("spark.python_udf_pipelined_queue_depth=deep", ConfigCompositionException, "queue_depth"),
    ],
)
def test_compose_rejects(override, error, named):
    with pytest.raises(error) as failure:
        compose_config(override)
    text = str(failure.value) + str(failure.value.__cause__)
    assert named in text


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["model.batch_size=0"], "model.batch_size=0"),
        (["repeats=0"], "repeats=0"),
        (["warmup=-1"], "warmup=-1"),
        (["dataset.num_images=0"], "dataset.num_images=0"),
        (["dataset.images_per_file=0"], "dataset.images_per_file=0"),
        (["spark.max_records_per_batch=0"], "spark.max_records_per_batch=0"),
        (["spark.partitions=0"], "spark.partitions=0"),
        (["cluster.cores=0"], "cluster.cores=0"),
        (["engine=torch", "engine.loader_workers=-1"], "engine.loader_workers=-1"),
        (["dataset=folder"], "dataset.folder is required"),
        (["dataset=parquet"], "dataset.path is required"),
        (["gpu.task_amount=1"], "cluster=local"),
        (["topology=stage_level"], "topology=stage_level with cluster=local"),
        (["topology=stage_level", "cluster=local_cluster"], "set gpu.emulate=N"),
        (
            ["topology=stage_level", "cluster=standalone", "gpu.emulate=2", "udf=scalar_pandas_udf"],
            "only map_in_pandas",
        ),
        (["storage=s3://bucket/root"], "storage='s3://bucket/root': s3:// is not served yet"),
        (
            ["engine=ray", "preprocess.decoder=torchvision", "preprocess.decode_on=model_device"],
            "preprocess.decode_on=model_device with engine=ray",
        ),
        (["cluster=remote"], "cluster.master"),
        (["cluster=local_cluster", "gpu.emulate=2", "gpu.task_amount=0.7"], "gpu.task_amount=0.7"),
        (["cluster=local_cluster", "gpu.emulate=2", "gpu.executor_amount=3"], "gpu.executor_amount=3"),
        (["cluster=standalone", "cluster.executor_memory=4g"], "cluster.executor_memory=4g"),
        (["cluster=standalone", "cluster.task_cpus=8"], "cluster.task_cpus=8"),
        (["cluster.driver_memory=lots"], "cluster.driver_memory='lots': expected a size with a unit"),
        (["cluster=local_cluster", "cluster.driver_memory=512"], "cluster.driver_memory='512': expected a size"),
        (["topology=split", "topology.predict_partitions=0"], "topology.predict_partitions=0"),
        (["cluster.nodes=[{role: driver, instance: x9.nonexistent, count: 1}]"], "x9.nonexistent"),
        (["gpu.executor_amount=1"], "cluster=local"),
        (["gpu.emulate=2"], "cluster=local"),
        (["preprocess.max_pixels=0"], "preprocess.max_pixels=0"),
        (["model=accelerator", "device=null_model"], "needs a device: device=a100_bf16|a10g|h100_bf16"),
        (["preprocess.max_pixels=178956971"], "between 1 and 178956970"),
        (["spark.task_max_failures=0"], "spark.task_max_failures=0"),
        (["+spark.conf={spark.task.maxFailures: '1'}"], "set spark.task_max_failures=... instead"),
        (["+spark.conf={spark.sql.execution.arrow.maxRecordsPerBatch: 7}"], "set spark.max_records_per_batch=..."),
        (["+spark.conf={spark.python.worker.reuse: false}"], "set spark.python_worker_reuse=... instead"),
        (["+spark.conf={spark.driver.memory: 4g}"], "set cluster.driver_memory=... instead"),
        (["+spark.conf={spark.master: 'local[1]'}"], "set cluster=... instead"),
        (["+spark.conf={spark.eventLog.dir: /tmp/x}"], "spark.eventLog.dir: the harness sets it itself"),
        (
            ["spark.python_udf_pipelined=true", "spark.python_udf_pipelined_queue_depth=0"],
            "spark.python_udf_pipelined_queue_depth=0",
        ),
        (["spark.python_udf_pipelined_queue_depth=4"], "only with spark.python_udf_pipelined=true"),
        (["+spark.conf={spark.python.udf.pipelined.enabled: 'true'}"], "spark.python_udf_pipelined=..."),
        ([*TWO_STAGE, f"{PRE}=remote"], "topology.preprocess_cluster.master"),
        ([*TWO_STAGE, f"{PRE}=local", "topology.preprocess_cluster.cores=0"], "preprocess_cluster.cores=0"),
        (
            [*TWO_STAGE, f"{PRE}=standalone", "topology.preprocess_cluster.executor_memory=4g"],
            "topology.preprocess_cluster.executor_memory=4g",
        ),
        (
            [*TWO_STAGE, f"{PRE}=local_cluster", "topology.preprocess_cluster.driver_memory=3g"],
            "topology.preprocess_cluster.driver_memory=3g != cluster.driver_memory=2g",
        ),
        (
            [*TWO_STAGE, f"{PRE}=local", "topology.preprocess_cluster.nodes=[{instance: x9.nonexistent}]"],
            "topology.preprocess_cluster.nodes: instance 'x9.nonexistent'",
        ),
    ],
)
def test_validate_rejects(overrides, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        validate(compose_config(*overrides))


@pytest.mark.parametrize(
    "overrides",
    [
        ("cluster=local_cluster", "gpu.emulate=2", "spark.max_bytes_per_batch=1000"),
        ("cluster=remote", "cluster.master=spark://127.0.0.1:7077", "gpu.executor_amount=1"),
    ],
    ids=str,
)
def test_spark_conf_may_set_no_conf_the_harness_writes_itself(overrides, tmp_path):
    """Every conf the application starts with, but spark.conf's own, is one `spark.conf` is refused."""
    from pipeline.spark.cluster import cluster
    from pipeline.spark.session import spark_conf

    config = compose_config(*overrides, "+spark.conf={spark.executorEnv.ANY: '1'}")
    validate(config)
    with cluster(config, tmp_path) as running:
        written = spark_conf(config, tmp_path, 2**20, running)
    assert set(written) - set(config.spark.conf) <= set(HARNESS_CONFS)


@pytest.mark.parametrize(
    ("overrides", "key", "schema"),
    [
        (["udf=map_in_pandas", "udf.prefetch=2"], "udf.prefetch", "MapInPandasConfig"),
        (["udf.prefetch=2"], "udf.prefetch", "MapInPandasConfig"),
        (["udf=scalar_pandas_udf", "udf.prefetch=2"], "udf.prefetch", "ScalarPandasUdfConfig"),
        (["udf.rebuild_model_per_batch=true"], "udf.rebuild_model_per_batch", "MapInPandasConfig"),
        (["udf=iterator_pandas_udf", "udf.rebuild_model_per_batch=true"], "udf.rebuild_model_per_batch", "Iterator"),
        (["cluster=local", "cluster.master=spark://x:7077"], "cluster.master", "LocalConfig"),
        (["cluster=local", "cluster.workers=2"], "cluster.workers", "LocalConfig"),
        (["cluster=local_cluster", "cluster.cores=2"], "cluster.cores", "LocalClusterConfig"),
        (["cluster=local_cluster", "cluster.master=spark://x:7077"], "cluster.master", "LocalClusterConfig"),
        (["cluster=remote", "cluster.worker_memory=2g"], "cluster.worker_memory", "RemoteConfig"),
        (["engine=spark", "engine.loader_workers=2"], "engine.loader_workers", "SparkEngineConfig"),
        (["engine=ray", "engine.loader_workers=2"], "engine.loader_workers", "RayEngineConfig"),
        (["topology=fused", "topology.intermediate_path=/x"], "topology.intermediate_path", "FusedConfig"),
        (["topology=fused", "topology.predict_partitions=2"], "topology.predict_partitions", "FusedConfig"),
        (["topology=split", "topology.intermediate_path=/x"], "topology.intermediate_path", "SplitConfig"),
        (["+cluster@topology.preprocess_cluster=local"], "topology.preprocess_cluster", "FusedConfig"),
        ([*TWO_STAGE, f"{PRE}=local", "topology.preprocess_cluster.workers=2"], "preprocess_cluster.workers", "Local"),
    ],
)
def test_an_option_takes_only_its_own_keys_at_compose_time(overrides, key, schema):
    """Each option has a schema of its own: another option's key fails at compose time, naming the key."""
    with pytest.raises(ConfigCompositionException) as failure:
        compose_config(*overrides)
    text = str(failure.value) + str(failure.value.__cause__)
    assert key in text and schema in text


@pytest.mark.parametrize(
    ("overrides", "schema"),
    [
        ((), MapInPandasConfig),
        (("udf=iterator_pandas_udf", "udf.prefetch=2", "cluster=remote", "cluster.master=spark://x:7077"), None),
        (("engine=torch", "engine.loader_workers=2"), None),
        (("+original=two_stage", "topology.intermediate_path=/tmp/crops"), None),
        ((*TWO_STAGE, f"{PRE}=local_cluster", "topology.preprocess_cluster.workers=2"), None),
        (("+original=local",), None),
    ],
)
def test_a_resolved_config_is_typed_again_by_its_discriminators(overrides, schema):
    """job.yaml holds the resolved config without its classes: `typed` rebuilds each option's dataclass from
    `udf.style`, `cluster.mode`, `topology.kind`, `engine.name` (and the preprocess cluster's mode)."""
    config = compose_config(*overrides)
    again = typed(OmegaConf.to_container(OmegaConf.structured(config), enum_to_str=True))
    assert again == config
    for group in ("engine", "udf", "topology", "cluster"):
        assert type(getattr(again, group)) is type(getattr(config, group))
    assert schema is None or type(again.udf) is schema
    assert config_record(again) == config_record(config)


def test_typing_a_config_record_again_refuses_another_options_keys():
    record = config_record(compose_config("udf=iterator_pandas_udf", "udf.prefetch=2"))
    record["udf"]["style"] = "map_in_pandas"
    with pytest.raises(ConfigKeyError, match="prefetch"):
        typed(record)


def test_option_schemas_keep_their_own_keys():
    config = compose_config("udf=iterator_pandas_udf", "udf.prefetch=2", "engine=torch", "engine.loader_workers=3")
    assert isinstance(config.udf, IteratorPandasUdfConfig) and config.udf.prefetch == 2
    assert isinstance(config.engine, TorchEngineConfig) and config.engine.loader_workers == 3
    assert isinstance(compose_config("cluster=standalone").cluster, StandaloneConfig)
    assert isinstance(compose_config(*TWO_STAGE).topology, TwoStageConfig)
    assert "prefetch" not in config_record(compose_config())["udf"]


def test_two_stage_runs_in_one_application_unless_given_a_preprocess_cluster():
    assert compose_config(*TWO_STAGE).topology.preprocess_cluster is None


def test_the_original_two_stage_preprocesses_on_a_cpu_cluster_and_predicts_on_a_gpu_cluster():
    from pipeline.engines.spark import preprocess_config
    from pipeline.spark.plan import gpu_plan

    config = compose_config("+original=two_stage", "topology.intermediate_path=/tmp/crops")
    validate(config)
    first = preprocess_config(config)
    assert (first.cluster.mode, config.cluster.mode) == (ClusterMode.local_cluster, ClusterMode.local_cluster)
    assert (gpu_plan(first).kind, gpu_plan(config).kind) == ("none", "emulated")
    assert first.cluster.worker_cores == 8 and first.topology == config.topology and first.udf == config.udf


def test_a_preprocess_cluster_takes_any_cluster_option_and_its_keys():
    config = compose_config(
        *TWO_STAGE, f"{PRE}=standalone", "topology.preprocess_cluster.workers=3", "cluster=local_cluster"
    )
    validate(config)
    assert (config.topology.preprocess_cluster.mode, config.topology.preprocess_cluster.workers) == (
        ClusterMode.standalone,
        3,
    )
    assert config.cluster.mode is ClusterMode.local_cluster
