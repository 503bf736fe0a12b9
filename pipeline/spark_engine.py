"""engine=spark: read Parquet, run the configured variant, sink, and time whole passes in one application."""

from __future__ import annotations

import time
from pathlib import Path

from pyspark.sql import SparkSession

from pipeline.data import Dataset
from pipeline.engine import Measurement, Pass, run_passes
from pipeline.inference import Inference
from pipeline.schema import Config, Sink
from pipeline.session import spark_conf, spark_session


def run_spark(config: Config, dataset: Dataset, inference: Inference, run_dir: Path) -> Measurement:
    """A fresh Spark application for this run, measured, then stopped."""
    conf = spark_conf(config, run_dir, dataset.size_bytes)
    started = time.perf_counter()
    with spark_session(conf) as spark:
        startup_s = time.perf_counter() - started
        measurement = measure(spark, config, dataset, inference, run_dir)
    measurement.startup_s, measurement.spark_conf = startup_s, conf
    return measurement


def measure(spark: SparkSession, config: Config, dataset: Dataset, inference: Inference, run_dir: Path) -> Measurement:
    """Warm-up and timed passes of the configured variant in a running application."""
    from variants import UDF_STYLES
    from variants.tasks import TaskLedger, summarize

    context = spark.sparkContext
    ledger = TaskLedger(context)
    images = spark.read.parquet(str(dataset.path))
    if config.spark.partitions:
        images = images.repartition(config.spark.partitions)
    predictions = UDF_STYLES[config.udf.style](images, inference, ledger)
    writer = predictions.write.mode("overwrite")
    if config.sink is Sink.parquet:
        target = str((run_dir / "predictions").resolve())
        action = lambda: writer.parquet(target)  # noqa: E731
    else:
        action = lambda: writer.format("noop").save()  # noqa: E731
    number = iter(range(1, 1 + config.warmup + config.repeats))

    def reset() -> None:
        ledger.clear()
        pass_number = next(number)
        kind = "warm-up" if pass_number <= config.warmup else "timed"
        context.setJobDescription(f"pass {pass_number} ({kind}) {config.udf.style.value}")

    def observe(seconds: float) -> Pass:
        records = ledger.records()
        bad = [image for record in records for image in record.bad]
        return Pass(seconds, sum(r.images for r in records) - len(bad), bad, summarize(records))

    warmups, timed_passes = run_passes(config.warmup, config.repeats, action, observe, reset)
    collected = None
    if config.verify:
        context.setJobDescription("verify: collect predictions")
        collected = predictions.select("id", "top1", "prob").toPandas()
    return Measurement(warmups, timed_passes, predictions=collected)
