"""The microbenchmarks' data: read and cached once, before any case is timed.

With timings asked for (`--benchmark-only`, `--benchmark-enable` or `--benchmark-json`), BENCH_IMAGES images
generated into the same cache as `python -m pipeline` (paid once, never timed); as part of the normal suite,
where each case runs once as a test, a dozen images in the test session's own cache.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipeline.data.datasets import Dataset, prepare
from pipeline.inference.preprocess import Preprocessing
from pipeline.spark.session import split_bytes
from tests.bench.harness import BenchData, Cached
from tests.helpers.benchmarks import benchmarks_timed
from tests.helpers.config import compose_config
from tests.helpers.spark import sql_conf

BENCH_IMAGES = 256
TEST_IMAGES = 12


def _cache(spark: SparkSession, dataset: Dataset, slots: int) -> Cached:
    """Read with the pipeline's split size (every slot gets a share), cache, and materialize with a count."""
    with sql_conf(
        spark,
        "spark.sql.files.maxPartitionBytes",
        str(split_bytes(dataset.size_bytes, slots, dataset.largest_file_bytes)),
    ):
        frame = spark.read.parquet(str(dataset.path)).cache()
        assert frame.count() == dataset.num_images
    rows = frame.groupBy(F.spark_partition_id().alias("partition")).count().orderBy("partition").collect()
    return Cached(dataset, frame, [row["count"] for row in rows])


def _preprocess_ms_per_image(dataset: Dataset) -> float:
    import torch

    images = [image for file in sorted(Path(dataset.path).glob("*.parquet")) for image in pq.read_table(file)["image"]]
    preprocessing, threads = Preprocessing(), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        preprocessing.normalize(preprocessing.crops([images[0].as_py()])[0])  # warm-up
        started = time.perf_counter()
        preprocessing.normalize(preprocessing.crops([image.as_py() for image in images])[0])
        return 1000 * (time.perf_counter() - started) / len(images)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def bench(request: pytest.FixtureRequest, spark: SparkSession, cache_dir: Path) -> Iterator[BenchData]:
    timed = benchmarks_timed(request.config)
    images = BENCH_IMAGES if timed else TEST_IMAGES
    slots = spark.sparkContext.defaultParallelism
    overrides = (f"dataset.num_images={images}", f"dataset.images_per_file={-(-images // slots)}")
    cache = compose_config().cache_dir if timed else cache_dir
    raw = prepare(compose_config(*overrides, "dataset.format=raw").dataset, cache)
    jpeg = prepare(compose_config(*overrides).dataset, cache)
    data = BenchData(
        _cache(spark, raw, slots), _cache(spark, jpeg, slots), images, slots, _preprocess_ms_per_image(jpeg)
    )
    yield data
    data.raw.frame.unpersist()
    data.jpeg.frame.unpersist()
