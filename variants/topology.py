"""How a run's work is cut into Spark stages and jobs: fused, split, two_stage, stage_level, model_server.

- fused: preprocess and predict in one stage (the original "standard" cluster);
- split: preprocess → repartition → predict (the original "local"): two stages, the predict stage with
  `topology.predict_partitions` tasks (default: the GPU slots, else the task slots);
- two_stage: job 1 preprocesses and writes the crops as Parquet to `topology.intermediate_path`; job 2 reads
  them with the schema job 1 wrote, one task per file (`pipeline.spark.session.whole_file_splits`), and
  predicts (the original CPU cluster + GPU cluster; with `topology.preprocess_cluster`, each job runs in an
  application of its own, see `pipeline.engines.spark`);
- stage_level: like split, but the predict stage runs under a task ResourceProfile asking
  `gpu.predict_task_amount` GPUs per task, while preprocessing runs at the application's fractional amount.
- model_server: one stage on every slot; each task decodes and preprocesses, and its `served` step sends the
  uint8 crops to the model server (`pipeline.serving`) that the engine started and put in `inference.server`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pyspark.resource import ResourceProfile, ResourceProfileBuilder, TaskResourceRequests
from pyspark.sql import DataFrame, SparkSession

from pipeline.config.schema import Config, Topology
from pipeline.inference.steps import Inference, fused, predict_crops, preprocess, served
from pipeline.spark.ledger import TaskLedger
from pipeline.spark.session import sql_confs, whole_file_splits
from variants import UDF_STYLES

Sink = Callable[[DataFrame], None]


@dataclass(frozen=True)
class Job:
    """One Spark action of a pass; a pass is its jobs in order, each timed on its own."""

    name: str
    action: Callable[[], None]


def predict_profile(config: Config) -> ResourceProfile:
    requests = TaskResourceRequests().cpus(config.cluster.task_cpus).resource("gpu", config.gpu.predict_task_amount)
    return ResourceProfileBuilder().require(requests).build


def jobs(
    spark: SparkSession,
    config: Config,
    images: DataFrame,
    inference: Inference,
    ledger: TaskLedger,
    predict_slots: int,
    sink: Sink,
) -> list[Job]:
    style = UDF_STYLES[config.udf.style]
    options, kind = config.udf, config.topology.kind
    if kind in (Topology.fused, Topology.model_server):
        step = served(inference) if kind is Topology.model_server else fused(inference)
        predictions = style(images, step, ledger, options)
        return [Job("predict", lambda: sink(predictions))]
    crops = style(images, preprocess(inference), ledger, options)
    if kind is Topology.two_stage:
        path = Path(config.topology.intermediate_path).expanduser().resolve()

        def write_crops() -> None:
            shutil.rmtree(path, ignore_errors=True)
            crops.write.parquet(str(path))

        def predict_written() -> None:
            with sql_confs(spark, whole_file_splits(path)):  # the scan's splits are cut when the action runs
                # the schema job 1 wrote: without it Spark runs a job of its own to read a footer, every pass
                written = spark.read.schema(crops.schema).parquet(str(path))
                sink(style(written, predict_crops(inference), ledger, options))

        return [Job("preprocess", write_crops), Job("predict", predict_written)]
    profile = predict_profile(config) if kind is Topology.stage_level else None
    partitions = config.topology.predict_partitions or predict_slots
    predictions = style(crops.repartition(partitions), predict_crops(inference), ledger, options, profile)
    return [Job("predict", lambda: sink(predictions))]


def intermediate_bytes(config: Config) -> int | None:
    """Size of the crops two_stage wrote between its jobs."""
    if config.topology.kind is not Topology.two_stage:
        return None
    path = Path(config.topology.intermediate_path).expanduser()
    return sum(file.stat().st_size for file in path.rglob("*.parquet"))
