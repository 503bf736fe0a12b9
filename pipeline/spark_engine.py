"""engine=spark: read Parquet, run the configured variant, sink, and time whole passes in one application."""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from pipeline.cluster import cluster
from pipeline.data import Dataset
from pipeline.engine import Measurement, Pass, run_passes
from pipeline.evidence import check, collect, faults
from pipeline.inference import Inference
from pipeline.schema import Config, Sink, Topology
from pipeline.session import spark_conf, spark_session


def run_spark(config: Config, dataset: Dataset, inference: Inference, run_dir: Path) -> Measurement:
    """A fresh Spark application (and, for standalone, a fresh cluster) for this run, measured, then stopped."""
    started = time.perf_counter()
    with cluster(config, run_dir) as running:
        cluster_s = time.perf_counter() - started
        conf = spark_conf(config, run_dir, dataset.size_bytes, running)
        started = time.perf_counter()
        with spark_session(conf) as spark:
            startup_s = time.perf_counter() - started
            model_slots = running.model_slots(config.topology.kind is Topology.stage_level)
            measurement = measure(spark, config, dataset, inference, run_dir, model_slots)
            application = {
                "app_id": spark.sparkContext.applicationId,
                "driver_pid": os.getpid(),
                "driver_jvm_max_memory_mb": spark.sparkContext._jvm.java.lang.Runtime.getRuntime().maxMemory() // 2**20,
            }
    measurement.startup_s, measurement.spark_conf = startup_s, conf
    found = collect(
        run_dir / "eventlog", measurement.timed[-1], pass_description(config.warmup + config.repeats, config)
    )
    measurement.extra.update(
        cluster_start_s=cluster_s,
        cluster={
            "master": running.master,
            "slots": running.slots,
            "gpu_slots": running.gpu_slots,
            "model_slots": model_slots,
            "gpus": asdict(running.gpus),
            "pids": list(running.pids),
            "log_dir": str(running.log_dir) if running.log_dir else None,
            **application,
        },
        evidence=found,
        faults=faults(run_dir / "eventlog"),
        checks=check(found, running, config.topology.kind),
    )
    return measurement


def pass_description(number: int, config: Config) -> str:
    """The job description of pass `number`; the event log maps stages to passes by it."""
    return f"pass {number} ({'warm-up' if number <= config.warmup else 'timed'})"


def measure(
    spark: SparkSession, config: Config, dataset: Dataset, inference: Inference, run_dir: Path, predict_slots: int
) -> Measurement:
    """Warm-up and timed passes of the configured variant in a running application."""
    from variants.tasks import TaskLedger, summarize
    from variants.topology import intermediate_bytes, jobs

    context = spark.sparkContext
    ledger = TaskLedger(context)
    images = spark.read.parquet(str(dataset.path))
    if config.spark.partitions:
        images = images.repartition(config.spark.partitions)
    collected: dict[str, DataFrame] = {}

    def sink(predictions: DataFrame) -> None:
        collected["predictions"] = predictions
        writer = predictions.write.mode("overwrite")
        if config.sink is Sink.parquet:
            writer.parquet(str((run_dir / "predictions").resolve()))
        else:
            writer.format("noop").save()

    plan = jobs(spark, config, images, inference, ledger, predict_slots, sink)
    number = iter(range(1, 1 + config.warmup + config.repeats))

    def reset() -> None:
        ledger.clear()
        context.setJobDescription(pass_description(next(number), config))

    def observe(times: dict[str, float]) -> Pass:
        records = ledger.records()
        first = [r for r in records if r.step in ("fused", "preprocess")]
        last = [r for r in records if r.step in ("fused", "predict")]
        bad = [image for record in first for image in record.bad]
        read, predicted = sum(r.rows_in for r in first), sum(r.rows_out for r in last)
        return Pass(times, read, predicted, bad, summarize(records))

    warmups, timed_passes = run_passes(
        config.warmup, config.repeats, [(job.name, job.action) for job in plan], observe, reset
    )
    measurement = Measurement(warmups, timed_passes, extra={"intermediate_bytes": intermediate_bytes(config)})
    if config.verify:
        context.setJobDescription("verify: collect predictions")
        measurement.predictions = collected["predictions"].select("id", "top1", "prob").toPandas()
    return measurement
