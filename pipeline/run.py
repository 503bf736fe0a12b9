"""One run, start to finish: data → weights → (reference) → engine → result.json, also when it fails."""

from __future__ import annotations

import logging
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

from pipeline.config.schema import Config, ModelName, OnBadImage
from pipeline.config.validate import ConnectUnavailable, validate
from pipeline.data import weights
from pipeline.data.datasets import dataset_summary, prepare
from pipeline.data.storage import Storage
from pipeline.engines import engine
from pipeline.engines.base import Measurement
from pipeline.inference.accelerator import device_locks
from pipeline.inference.model import ModelSpec, SimulatedDevice, check_model
from pipeline.inference.preprocess import Preprocessing
from pipeline.inference.steps import Inference
from pipeline.projection.simulated import device_usage
from pipeline.provenance import load_average, new_result
from pipeline.results import Result, now, write_result
from pipeline.rundir import StorageError, WriteRoot, as_storage_error, explain_storage
from pipeline.runtime.errors import describe_error
from pipeline.spark.evidence import enforce
from pipeline.spark.generation import generator
from pipeline.spark.session import java_version
from pipeline.verify import compare, reference_predictions

log = logging.getLogger(__name__)


class AccountingError(RuntimeError):
    """A pass did not account for every input image exactly once."""


def build_inference(
    config: Config, weights_file: Path | None, lock_dir: str | None = None, gpus: str = "none"
) -> Inference:
    """What every task gets; `lock_dir` holds the GPU locks of `model=accelerator`'s simulated device, `gpus` is
    the kind of GPUs the run's scheduler hands its tasks (a Spark plan's `gpus.kind`)."""
    model = config.model
    device = config.device
    simulated = (
        SimulatedDevice(device.name, device.images_per_s, device.latency_s, device.host_s_per_image, lock_dir)
        if device is not None and lock_dir is not None
        else None
    )
    network = model.name is ModelName.resnet50
    kind = weights.weights_kind(model.weights, model.arch, model.factory) if network else None
    return Inference(
        preprocessing=preprocessing_of(config),
        model=ModelSpec(
            name=model.name.value,
            arch=model.arch,
            factory=model.factory,
            seed=model.seed,
            pretrained=model.weights if kind == "torchvision" else None,
            weights_file=str(weights_file) if weights_file else None,
            precision=model.precision.value,
            channels_last=model.channels_last,
            compile=model.compile,
            device=simulated,
        ),
        batch_size=model.batch_size,
        fail_on_bad_image=config.on_bad_image is OnBadImage.fail,
        gpus=gpus,
    )


def preprocessing_of(config: Config) -> Preprocessing:
    """The preprocessing every path of the run applies (tasks, the model server, the weights' calibration)."""
    preprocess = config.preprocess
    return Preprocessing(
        image_format=config.dataset.format.value,
        max_pixels=preprocess.max_pixels,
        decoder=preprocess.decoder.value,
        decode_on=preprocess.decode_on.value,
        resize_size=preprocess.resize_size,
        crop_size=preprocess.crop_size,
    )


def _record(result: Result, measurement: Measurement, num_images: int) -> None:
    for number, passed in enumerate(measurement.warmups + measurement.timed, start=1):
        if not passed.read == passed.predicted + len(passed.bad) == num_images:
            raise AccountingError(
                f"pass {number}: {passed.read} read, {passed.predicted} predicted + {len(passed.bad)} bad, "
                f"but the data set has {num_images} images"
            )
    metrics = result.metrics
    last = measurement.timed[-1]
    metrics.wall_s = [p.seconds for p in measurement.timed]
    metrics.warmup_s = [p.seconds for p in measurement.warmups]
    metrics.throughput_per_repeat = [num_images / s for s in metrics.wall_s]
    metrics.throughput_images_per_s = num_images / statistics.median(metrics.wall_s)
    metrics.startup_s = measurement.startup_s
    metrics.num_predicted = last.predicted
    bad = {record.id: record.reason for record in last.bad}
    metrics.num_bad_images = len(bad)
    result.bad_images = [{"id": image_id, "reason": reason} for image_id, reason in sorted(bad.items())]
    result.tasks = dict(last.tasks)
    metrics.max_model_loads_per_worker = last.tasks.get("max_model_loads_per_worker")
    metrics.job_s = {name: [p.jobs[name] for p in measurement.timed] for name in last.jobs}
    kinds = sorted({kind for p in measurement.timed for kind in p.cpu})
    metrics.process_cpu_s = {kind: [p.cpu.get(kind, 0.0) for p in measurement.timed] for kind in kinds}
    result.spark_conf = measurement.spark_conf
    metrics.intermediate_bytes = measurement.intermediate_bytes
    metrics.cluster_start_s = measurement.cluster_start_s
    result.cluster = measurement.cluster
    result.evidence = {**measurement.evidence, "checks": measurement.checks}
    if measurement.faults is not None:
        found = result.evidence["faults"] = measurement.faults
        metrics.failed_tasks, metrics.task_retries = len(found["failed_tasks"]), found["task_retries"]
        metrics.executors_lost = len(found["executors_lost"])
    if result.cluster:
        result.env["gpus"] = result.cluster["gpus"]["kind"]


def execute(config: Config, run_dir: Path, result: Result) -> None:
    plan = validate(config)
    if plan is not None and plan.starts_jvm:
        java_version()
    cache = config.cache_dir
    dataset = prepare(
        config.dataset,
        Storage.of(config.storage, run_dir, cache).dataset_cache,
        config.preprocess.max_pixels,
        generator(config, plan),  # the run's cluster, when it is other machines sharing a storage root
    )
    result.dataset = dataset_summary(dataset)
    result.metrics.num_images = dataset.num_images
    result.metrics.data_prepare_s = dataset.prepare_s
    result.metrics.data_generated = dataset.generated
    log.info(
        "data: %d images in %s (%s, %.1f s)",
        dataset.num_images,
        dataset.path,
        "generated" if dataset.generated else "cached",
        dataset.prepare_s,
    )
    started = time.perf_counter()
    model = config.model
    network = model.name is ModelName.resnet50
    preprocessing = preprocessing_of(config)
    weights_file = (
        weights.resolve(model.weights, model.seed, cache, model.arch, model.factory, preprocessing) if network else None
    )
    with device_locks() if config.device is not None else nullcontext() as lock_dir:
        inference = build_inference(config, weights_file, lock_dir, plan.gpus.kind if plan else "none")
        if network:  # the network as every task will build it, once here: what does not fit fails before any task
            facts = check_model(inference.model, preprocessing.crop_size)
            result.env["model"].update(classes=facts.classes, parameters=facts.parameters)
        result.metrics.weights_prepare_s = time.perf_counter() - started
        reference = None
        if config.verify:
            started = time.perf_counter()
            reference = reference_predictions(dataset, inference, cache)
            result.metrics.reference_s = time.perf_counter() - started
        measurement = engine(config.engine.name)(config, dataset, inference, run_dir, plan)
    _record(result, measurement, dataset.num_images)
    if config.device is not None:
        server = result.evidence.get("server")
        result.evidence["simulated_device"] = device_usage(config, plan, measurement.timed[-1], server)
    if reference is not None:
        agreement = compare(measurement.predictions, reference)
        result.verification.update(agreement)
        result.metrics.top1_agreement = agreement["top1_agreement"]
        result.metrics.max_abs_prob_diff = agreement["max_abs_prob_diff"]
        result.metrics.verified_images = agreement["compared"]
    enforce(result.evidence.get("checks", {}))


def storage_roots(config: Config, run_dir: Path) -> list[WriteRoot]:
    """Where a run writes, for the advice in a storage error: the run dir (which a single run and a sweep choose
    by different settings), the cache dir, and the storage root where one is given (`pipeline.data.storage`)."""
    roots = [
        WriteRoot("run dir", Path(run_dir), "hydra.run.dir (hydra.sweep.dir for a sweep)"),
        WriteRoot("cache dir", Path(config.cache_dir), "cache_dir"),
    ]
    shared = Storage.of(config.storage, run_dir, config.cache_dir).root
    return roots + ([WriteRoot("storage root", shared, "storage")] if shared is not None else [])


def run(config: Config, run_dir: Path) -> Result:
    """Run one configured benchmark; result.json is written however it ends. A write that fails (a full or
    read-only run dir or cache dir) fails the run with one line naming the file and its root; when even
    result.json cannot be written, that is logged in one line and the StorageError raised (`pipeline.job`)."""
    result = new_result(config, run_dir)
    roots = storage_roots(config, run_dir)
    try:
        execute(config, run_dir, result)
        result.status = "ok"
    except (KeyboardInterrupt, SystemExit) as stop:  # Ctrl-C, or SIGTERM (processes.Terminated)
        result.status, result.error = "interrupted", {"type": type(stop).__name__, "message": "interrupted"}
        raise
    except ConnectUnavailable as error:  # refused at validation: what Connect cannot do, not a failure
        result.status, result.error = "unavailable", describe_error(error)
    except Exception as error:
        result.status, result.error = "failed", describe_error(as_storage_error(error))
        if result.error["type"] == StorageError.__name__:  # raised here or in a Spark task
            result.error["message"] = explain_storage(result.error["message"], roots)
    finally:
        result.finished_at = now()
        result.env["load_average_end"] = load_average()
        try:
            write_result(run_dir, result)
        except StorageError as error:
            why = f": {result.error['type']}: {result.error['message']}" if result.error else ""
            log.error("run %s%s; and its result not written: %s", result.status, why, error)
            raise
    return result
