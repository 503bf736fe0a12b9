"""How a run's work is cut into Spark stages and jobs: fused, split, two_stage, stage_level, model_server.

- fused: preprocess and predict in one stage (the original "standard" cluster);
- split: preprocess → repartition → predict (the original "local"): two stages, the predict stage with
  `topology.predict_partitions` tasks (default: the GPU slots, else the task slots);
- two_stage: job 1 preprocesses and writes the crops as Parquet to `topology.intermediate_path` (by default the
  run's area of the storage root, `pipeline.data.storage`, which every executor reaches); job 2 reads
  them with the schema job 1 wrote, one task per file (`pipeline.spark.session.whole_file_splits`), and
  predicts (the original CPU cluster + GPU cluster; with `topology.preprocess_cluster`, each job runs in an
  application of its own, see `pipeline.engines.spark`);
- stage_level: like split, but the predict stage runs under a task ResourceProfile asking
  `gpu.predict_task_amount` GPUs per task, while preprocessing runs at the application's fractional amount.
- model_server: one stage on every slot; each task decodes and preprocesses, and its `served` step sends the
  uint8 crops to the model server (`pipeline.serving`) that the engine started and put in `inference.server`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pyspark.resource import ResourceProfile, ResourceProfileBuilder, TaskResourceRequests
from pyspark.sql import DataFrame, SparkSession

from pipeline.config.schema import Config, Topology
from pipeline.data import storage
from pipeline.data.storage import Storage
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


def intermediate(config: Config, run_storage: Storage) -> Path:
    """Where two_stage's job 1 writes the crops job 2 reads: `topology.intermediate_path`, else the run's area."""
    configured = config.topology.intermediate_path
    return Path(configured).expanduser().resolve() if configured else run_storage.intermediate


def jobs(
    spark: SparkSession,
    config: Config,
    images: DataFrame,
    inference: Inference,
    ledger: TaskLedger,
    predict_slots: int,
    sink: Sink,
    run_storage: Storage,
) -> list[Job]:
    style = UDF_STYLES[config.udf.style]
    options, kind = config.udf, config.topology.kind
    if kind in (Topology.fused, Topology.model_server):
        step = served(inference) if kind is Topology.model_server else fused(inference)
        predictions = style(images, step, ledger, options)
        return [Job("predict", lambda: sink(predictions))]
    crops = style(images, preprocess(inference), ledger, options)
    if kind is Topology.two_stage:
        path = intermediate(config, run_storage)

        def write_crops() -> None:
            crops.write.mode("overwrite").parquet(str(path))

        def predict_written() -> None:
            # the scan's splits are cut when the action runs
            with sql_confs(spark, whole_file_splits(storage.parquet_sizes(path))):
                # the schema job 1 wrote: without it Spark runs a job of its own to read a footer, every pass
                written = spark.read.schema(crops.schema).parquet(str(path))
                sink(style(written, predict_crops(inference), ledger, options))

        return [Job("preprocess", write_crops), Job("predict", predict_written)]
    profile = predict_profile(config) if kind is Topology.stage_level else None
    partitions = config.topology.predict_partitions or predict_slots
    predictions = style(crops.repartition(partitions), predict_crops(inference), ledger, options, profile)
    return [Job("predict", lambda: sink(predictions))]


def intermediate_bytes(config: Config, run_storage: Storage) -> int | None:
    """Size of the crops two_stage wrote between its jobs."""
    if config.topology.kind is not Topology.two_stage:
        return None
    return sum(storage.parquet_sizes(intermediate(config, run_storage)))
