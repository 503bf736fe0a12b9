"""engine=spark: read Parquet, run the configured variant, sink, and time whole passes.

Every job of a pass runs in one application, except `topology=two_stage` with `topology.preprocess_cluster`
set (the original CPU cluster + GPU cluster): then job 1 (preprocess, write the crops) runs all its passes
in an application on that cluster, which is stopped before job 2 (read the crops, predict) runs all its
passes in an application on `cluster`. Pass i is job 1 of pass i plus job 2 of pass i, so each pass still
accounts for every image (read and bad from job 1, predicted from job 2) and keeps both jobs' times. The
preprocess application never schedules GPUs (`gpu.*` configures the predict cluster); its event log, and
for standalone its master and worker logs, are in `run_dir/preprocess/`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from pipeline.spark.cluster import Cluster, cluster
from pipeline.data.datasets import Dataset
from pipeline.engines.base import Measurement, Pass, run_passes
from pipeline.spark.evidence import check, collect, faults, join, join_faults
from pipeline.inference.steps import Inference
from pipeline.schema import Config, GpuConfig, Sink
from pipeline.spark.plan import Plan
from pipeline.spark.session import spark_conf, spark_session

PREPROCESS_DIR = "preprocess"


@dataclass
class Application:
    """A running Spark application, the cluster under it, and how long each took to start."""

    spark: SparkSession
    running: Cluster
    conf: dict[str, str]
    cluster_s: float
    startup_s: float

    def record(self, model_slots: int) -> dict[str, Any]:
        """What the result keeps about the application; read while it runs (the app id is the JVM's)."""
        context = self.spark.sparkContext
        return {
            "master": self.running.master,
            "slots": self.running.slots,
            "gpu_slots": self.running.gpu_slots,
            "model_slots": model_slots,
            "gpus": asdict(self.running.gpus),
            "pids": list(self.running.pids),
            "log_dir": str(self.running.log_dir) if self.running.log_dir else None,
            "app_id": context.applicationId,
            "driver_pid": os.getpid(),
            "driver_jvm_max_memory_mb": context._jvm.java.lang.Runtime.getRuntime().maxMemory() // 2**20,
        }


@contextmanager
def application(config: Config, run_dir: Path, input_bytes: int, plan: Plan) -> Iterator[Application]:
    """A fresh Spark application (and, for standalone, a fresh cluster) for the block, then stopped."""
    started = time.perf_counter()
    with cluster(config, run_dir, plan) as running:
        cluster_s = time.perf_counter() - started
        conf = spark_conf(config, run_dir, input_bytes, running)
        started = time.perf_counter()
        with spark_session(conf) as spark:
            yield Application(spark, running, conf, cluster_s, time.perf_counter() - started)


def run_spark(config: Config, dataset: Dataset, inference: Inference, run_dir: Path, plan: Plan) -> Measurement:
    """The run's passes in one application, or two_stage's jobs in one application each; see the module doc."""
    if config.topology.preprocess_cluster is not None:
        return _two_applications(config, dataset, inference, run_dir, plan)
    with application(config, run_dir, dataset.size_bytes, plan) as app:
        model_slots = plan.model_slots
        measurement = measure(app.spark, config, dataset, inference, run_dir, model_slots)
        record = app.record(model_slots)
    found = collect(run_dir / "eventlog", measurement.timed[-1], last_pass(config))
    measurement.startup_s, measurement.spark_conf = app.startup_s, app.conf
    measurement.extra.update(
        cluster_start_s=app.cluster_s,
        cluster=record,
        evidence=found,
        faults=faults(run_dir / "eventlog"),
        checks=check(found, plan, config.topology.kind),
    )
    return measurement


def preprocess_config(config: Config) -> Config:
    """The config of two_stage's preprocess application: `topology.preprocess_cluster` as its cluster, and no
    GPUs (job 1 is the CPU cluster's: `gpu.*` describes the predict cluster); the rest as configured."""
    return dataclasses.replace(config, cluster=config.topology.preprocess_cluster, gpu=GpuConfig())


def _two_applications(config: Config, dataset: Dataset, inference: Inference, run_dir: Path, plan: Plan) -> Measurement:
    first_config = preprocess_config(config)
    first_dir = run_dir / PREPROCESS_DIR
    with application(first_config, first_dir, dataset.size_bytes, plan.preprocess) as first_app:
        slots = first_app.running.slots
        first = measure(first_app.spark, first_config, dataset, inference, run_dir, slots, only="preprocess")
        first_record = first_app.record(slots)
    with application(config, run_dir, dataset.size_bytes, plan) as app:
        model_slots = plan.model_slots
        second = measure(app.spark, config, dataset, inference, run_dir, model_slots, only="predict")
        record = app.record(model_slots)
    found = join(
        collect(first_dir / "eventlog", first.timed[-1], last_pass(config)),
        collect(run_dir / "eventlog", second.timed[-1], last_pass(config)),
        (first_record["app_id"], record["app_id"]),
    )
    checks = check(found, plan, config.topology.kind)
    checks["preprocess_slots"] = first_app.running.slots
    record[PREPROCESS_DIR] = {
        **first_record,
        "cluster_start_s": first_app.cluster_s,
        "startup_s": first_app.startup_s,
        "spark_conf": first_app.conf,
    }
    record.update(cluster_start_s=app.cluster_s, startup_s=app.startup_s)
    return Measurement(
        warmups=[_joined(a, b) for a, b in zip(first.warmups, second.warmups)],
        timed=[_joined(a, b) for a, b in zip(first.timed, second.timed)],
        startup_s=first_app.startup_s + app.startup_s,
        predictions=second.predictions,
        spark_conf=app.conf,
        extra={
            **second.extra,
            "cluster_start_s": first_app.cluster_s + app.cluster_s,
            "cluster": record,
            "evidence": found,
            "faults": join_faults(faults(first_dir / "eventlog"), faults(run_dir / "eventlog")),
            "checks": checks,
        },
    )


def _joined(preprocessed: Pass, predicted: Pass) -> Pass:
    """One pass of two_stage from its two applications' halves: images read and bad in job 1, predicted in 2."""
    from pipeline.spark.ledger import merge

    return Pass(
        {**preprocessed.jobs, **predicted.jobs},
        preprocessed.read,
        predicted.predicted,
        preprocessed.bad,
        merge(preprocessed.tasks, predicted.tasks),
    )


def pass_description(number: int, config: Config) -> str:
    """The job description of pass `number`; the event log maps stages to passes by it."""
    return f"pass {number} ({'warm-up' if number <= config.warmup else 'timed'})"


def last_pass(config: Config) -> str:
    return pass_description(config.warmup + config.repeats, config)


def measure(
    spark: SparkSession,
    config: Config,
    dataset: Dataset,
    inference: Inference,
    run_dir: Path,
    predict_slots: int,
    only: str | None = None,
) -> Measurement:
    """Warm-up and timed passes of the configured variant in a running application; `only` names the one
    job of each pass this application runs (two_stage on two clusters), None runs them all."""
    from pipeline.spark.ledger import TaskLedger, summarize
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

    plan = [
        job for job in jobs(spark, config, images, inference, ledger, predict_slots, sink) if only in (None, job.name)
    ]
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
    if config.verify and "predictions" in collected:
        context.setJobDescription("verify: collect predictions")
        measurement.predictions = collected["predictions"].select("id", "top1", "prob").toPandas()
    return measurement
