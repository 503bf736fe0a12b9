"""Shared fixtures: one cache of data and weights, one SparkSession and one namespace cluster with the tool on its
nodes, per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.data import synthetic, weights
from pipeline.data.datasets import Dataset, prepare
from pipeline.inference.model import ModelSpec
from pipeline.inference.preprocess import Preprocessing
from pipeline.inference.steps import Inference
from tests.helpers.benchmarks import benchmarks_timed
from tests.helpers.config import compose_config
from tests.helpers.data import corrupt_images, write_images
from tests.helpers.nscluster import NamespaceCluster, namespace_cluster, unavailable


def pytest_configure(config: pytest.Config) -> None:
    """`python -m pytest` (and CI) runs the microbenchmarks once each, as tests, on a dozen images.

    Timing them takes minutes; it happens only when asked for (`pytest tests/bench --benchmark-only
    --benchmark-json=FILE`). pytest-benchmark refuses `--benchmark-disable` next to `--benchmark-only`, so the
    default cannot live in addopts; this hook runs before the plugin reads its options (the plugin's own
    `pytest_configure` is `trylast`).
    """
    if not benchmarks_timed(config):
        config.option.benchmark_disable = True


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def weights_file(cache_dir: Path) -> Path:
    return weights.resolve("random", 0, cache_dir)


@pytest.fixture(scope="session")
def tiny_dataset(cache_dir: Path) -> Dataset:
    """12 generated JPEGs in two files."""
    return prepare(compose_config("dataset.num_images=12", "dataset.images_per_file=8").dataset, cache_dir)


@pytest.fixture(scope="session")
def bad_dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """6 good JPEGs and the three corrupt images of `corrupt_images`, interleaved."""
    good = [(f"good-{i}", synthetic.synth_label(3, i), synthetic.synth_jpeg(3, i)) for i in range(6)]
    bad = [(image_id, 0, data) for image_id, data in corrupt_images().items()]
    return write_images(tmp_path_factory.mktemp("bad-data"), good[:2] + bad[:1] + good[2:4] + bad[1:] + good[4:])


@pytest.fixture(scope="session")
def inference(weights_file: Path) -> Inference:
    return Inference(preprocessing=Preprocessing(), model=ModelSpec(weights_file=str(weights_file)), batch_size=4)


@pytest.fixture(scope="session")
def null_inference() -> Inference:
    """Real decoding and preprocessing, the null model: for tests of what the harness counts, not what a network
    predicts (a ResNet50 on the CPU was most of their time)."""
    return Inference(preprocessing=Preprocessing(), model=ModelSpec(name="null_model"), batch_size=4)


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory):
    """The test session's one SparkSession (local[2]), built from the same conf builder as a run. Its driver JVM
    is stopped with it, as a job stops its own: left to die with pytest's process, it outlived the suite by a
    moment, long enough for CI's check for surviving Spark processes to find it."""
    from pipeline.spark.cluster import cluster
    from pipeline.spark.driver_jvm import stop_driver_jvm
    from pipeline.spark.session import spark_conf, spark_session

    run_dir, config = tmp_path_factory.mktemp("spark"), compose_config()
    with cluster(config, run_dir) as local, spark_session(spark_conf(config, run_dir, 2**20, local)) as session:
        yield session
    stop_driver_jvm()


@pytest.fixture(scope="session")
def tool_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NamespaceCluster]:
    """A namespace cluster (tests/helpers/nscluster.py) of a master and two workers of 1 core and 1 emulated GPU
    each, the tool installed on them (cluster.ship's default), and a storage directory every node and this machine
    share: one a session, for the modules whose runs leave it as they found it (test_remote_cluster.py,
    test_scaling.py); a cluster start is seconds of two shared cores. Tests that kill a node, or need nodes without
    the tool or with a Connect server, start their own."""
    reason = unavailable()
    if reason:
        pytest.skip(f"namespace clusters cannot be made here: {reason}")
    directory = tmp_path_factory.mktemp("tool-nodes")
    storage = directory / "storage"
    storage.mkdir()
    with namespace_cluster(
        directory / "cluster", workers=2, storage=storage, tool_on_nodes=True, gpus_per_worker=1
    ) as cluster:
        print(f"namespace cluster up: {cluster.timings}")
        yield cluster
