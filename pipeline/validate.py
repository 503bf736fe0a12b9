"""Checks the schema's types cannot express, run before any data, model or Spark work starts."""

from __future__ import annotations

from pipeline.schema import ClusterMode, Config, DataSource


class ConfigError(ValueError):
    """An invalid value or combination, named by its config key."""


def _at_least(key: str, value: int | None, minimum: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value is None or value < minimum:
        raise ConfigError(f"{key}={value}: must be an integer >= {minimum}")


def validate(config: Config) -> None:
    """Raise ConfigError for the first invalid value or combination in `config`."""
    _at_least("model.batch_size", config.model.batch_size, 1)
    _at_least("repeats", config.repeats, 1)
    _at_least("warmup", config.warmup, 0)
    _at_least("dataset.images_per_file", config.dataset.images_per_file, 1)
    _at_least("spark.max_records_per_batch", config.spark.max_records_per_batch, 1)
    _at_least("spark.partitions", config.spark.partitions, 1, optional=True)
    _at_least("cluster.cores", config.cluster.cores, 1, optional=True)
    _at_least("engine.loader_workers", config.engine.loader_workers, 0)
    dataset = config.dataset
    required = {DataSource.synthetic: "num_images", DataSource.folder: "folder", DataSource.parquet: "path"}
    key = required[dataset.source]
    if getattr(dataset, key) is None:
        raise ConfigError(f"dataset.{key} is required with dataset.source={dataset.source.value}")
    _at_least("dataset.num_images", dataset.num_images, 1, optional=dataset.source is not DataSource.synthetic)
    gpu = config.gpu
    asks_gpus = gpu.executor_amount or gpu.task_amount or gpu.emulate
    if asks_gpus and config.cluster.mode is ClusterMode.local:
        raise ConfigError(
            f"gpu.executor_amount={gpu.executor_amount}, gpu.task_amount={gpu.task_amount}, gpu.emulate={gpu.emulate} "
            "with cluster=local: Spark's local[N] mode does not schedule GPUs (every job hangs with no task "
            "started). Set the gpu amounts to 0, or use a cluster manager that schedules GPUs."
        )
