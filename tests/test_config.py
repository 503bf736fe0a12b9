"""Bad configuration fails at compose time (types, keys, options) or in `validate` (values, combinations),
always naming the key — before any data, model or Spark work."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException

from pipeline.schema import ClusterMode, Config, DataSource, Engine, ImageFormat, Sink, UdfStyle
from pipeline.validate import ConfigError, validate
from tests.conftest import compose_config


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
        (["topology=two_stage", "topology.intermediate_path=null"], "topology.intermediate_path"),
        (["cluster=remote"], "cluster.master"),
        (["cluster=local_cluster", "gpu.emulate=2", "gpu.task_amount=0.7"], "gpu.task_amount=0.7"),
        (["cluster=local_cluster", "gpu.emulate=2", "gpu.executor_amount=3"], "gpu.executor_amount=3"),
        (["cluster=standalone", "cluster.executor_memory=4g"], "cluster.executor_memory=4g"),
        (["cluster=standalone", "cluster.task_cpus=8"], "cluster.task_cpus=8"),
        (["udf.prefetch=2"], "udf.prefetch=2"),
        (["udf.rebuild_model_per_batch=true"], "udf.rebuild_model_per_batch"),
        (["topology.predict_partitions=0"], "topology.predict_partitions=0"),
        (["cluster.nodes=[{role: driver, instance: p5.48xlarge, count: 1}]"], "p5.48xlarge"),
        (["gpu.executor_amount=1"], "cluster=local"),
        (["gpu.emulate=2"], "cluster=local"),
        (["preprocess.max_pixels=0"], "preprocess.max_pixels=0"),
        (["preprocess.max_pixels=178956971"], "between 1 and 178956970"),
        (["spark.task_max_failures=0"], "spark.task_max_failures=0"),
        (["+spark.conf={spark.task.maxFailures: '1'}"], "spark.task_max_failures=N"),
    ],
)
def test_validate_rejects(overrides, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        validate(compose_config(*overrides))
