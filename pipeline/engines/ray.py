"""engine=ray: the same data, preprocessing and model through Ray Data, run as its users run batch inference.

read_parquet → map_batches(preprocess) as CPU tasks → map_batches(predict) on a fixed pool of actors,
`compute=ActorPoolStrategy(size=N)`, one per GPU (real, or `gpu.emulate` GPUs declared to Ray) or one
without GPUs; the steps are the ones every Spark variant runs, so predictions compare exactly. Bad images
travel as rows with a reason and no crop, so none vanishes.

Warm passes: Ray Data has none across executions. Its actor pool operator starts its actors when an
execution starts and kills them when it ends (`ActorPoolMapOperator.shutdown`, Ray 2.60); a pool that
outlives an execution is an open request (ray-project/ray#46479, "Persistent Actors"). What its batch
inference guide recommends is one streaming execution over all the data, the model loaded once per
actor in `__init__`. So every pass here, warm-up and timed, is one execution and starts its actors and
loads the model (counted in `tasks.model_builds`): what each Ray Data batch job costs. A pass's Ray task
workers may be warm from the pass before; its actors never are. Slicing one execution into passes was
tried and rejected: with nothing holding pass k+1 back, Ray computes it while pass k waits for its
actors (32 images: cold pass 38 s, the "warm" ones 0.01 s, a harness artifact); holding each pass's
rows behind a gate left the execution hung. The report sets each engine's cold pass (the first, warm-up
included) beside its warm passes (the median timed pass), so this cost stays visible rather than
hidden in one ratio.

Clean-up by PID: every process Ray starts under this one (gcs_server, raylet, its workers and actors) is
noted while Ray is up, and after `ray.shutdown()` whatever is still alive is stopped with everything it
spawned (`pipeline.runtime.processes.stop_processes`: SIGTERM, then SIGKILL). Ray is an optional dependency:
`pip install -e '.[peers]'`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config.schema import Config, Sink
from pipeline.data.datasets import Dataset
from pipeline.engines.base import Measurement, Pass, run_passes
from pipeline.inference.model import load_model, model_builds, use_threads
from pipeline.inference.steps import (
    CROP_SCHEMA,
    IMAGE_COLUMNS,
    PREDICTION_SCHEMA,
    BadImageRecord,
    Inference,
    Output,
    Step,
    predict_crops,
    preprocess,
    to_arrow,
)
from pipeline.rundir import RunDir, staged
from pipeline.runtime.processes import descendants, stop_processes

log = logging.getLogger(__name__)
REASON = pa.field("bad_reason", pa.string())
PIDS = pa.field("worker_pid", pa.int64())
LOADS = pa.field("model_loads", pa.int64())


def _with_bad_rows(output: Output, schema: pa.Schema, extra: dict[pa.Field, Any] | None = None) -> pa.Table:
    """The step's good rows in `schema`, plus one row per bad image with its reason and nulls elsewhere."""
    good = pa.Table.from_batches([to_arrow(output.columns, schema)])
    good = good.append_column(REASON, pa.nulls(len(good), pa.string()))
    bad = {name: pa.nulls(len(output.bad), good.schema.field(name).type) for name in schema.names}
    bad["id"] = pa.array([record.id for record in output.bad], pa.string())
    bad[REASON.name] = pa.array([record.reason for record in output.bad], pa.string())
    table = pa.concat_tables([good, pa.table(bad, schema=good.schema)])
    for field, value in (extra or {}).items():
        table = table.append_column(field, pa.array([value] * len(table), field.type))
    return table


def preprocess_batch(batch: pa.Table, step: Step) -> pa.Table:
    """A Ray Data task (not an actor, so Ray spreads them over its CPUs): decode and crop, one thread."""
    use_threads(1)
    columns = {name: batch.column(name).to_pylist() for name in IMAGE_COLUMNS}
    return _with_bad_rows(step(columns, "cpu"), CROP_SCHEMA)


def _split(table: pa.Table) -> tuple[pa.Table, list[BadImageRecord]]:
    """The good rows of a table that carries bad images as rows with a reason, and those bad images."""
    reasons = table.column(REASON.name)
    bad = table.filter(reasons.is_valid())
    records = [BadImageRecord(i, r) for i, r in zip(bad["id"].to_pylist(), bad[REASON.name].to_pylist())]
    return table.filter(reasons.is_null()), records


class Predict:
    """A Ray Data actor: builds the model once, predicts the crops, passes bad rows through."""

    def __init__(self, step: Step, threads: int) -> None:
        import ray

        self.step = step
        # ray.get_gpu_ids() names the actor's GPU as the node numbers it, but Ray sets CUDA_VISIBLE_DEVICES in the
        # actor to its own GPUs, so torch numbers them from cuda:0: `Inference.device` maps the one to the other
        self.device = step.inference.device([str(gpu) for gpu in ray.get_gpu_ids()])
        use_threads(threads)  # the actor's process keeps it for every batch
        load_model(step.inference.model, self.device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        good, bad = _split(batch)
        output = self.step({name: good.column(name).to_pylist() for name in CROP_SCHEMA.names}, self.device)
        output = Output(output.columns, output.positions, output.bad + bad)
        loads = model_builds(self.step.inference.model)
        return _with_bad_rows(output, PREDICTION_SCHEMA, {PIDS: os.getpid(), LOADS: loads})


def gpus_of(config: Config) -> tuple[int, str]:
    """How many GPUs Ray is told of, and whether they are real or emulated (declared, the model on the CPU). As
    for Spark (`pipeline.spark.plan.gpu_plan`), `gpu.emulate=N` is asked for: it wins over the real GPUs."""
    import torch

    if config.gpu.emulate:
        return config.gpu.emulate, "emulated"
    count = torch.cuda.device_count()
    return count, "real" if count else "none"


STOP_TIMEOUT_S = 5.0  # what Ray's processes get after ray.shutdown() and SIGTERM before SIGKILL


def run(config: Config, dataset: Dataset, inference: Inference, run_dir: Path, plan: None) -> Measurement:
    import ray
    import ray.data

    cpus = getattr(config.cluster, "cores", None) or os.cpu_count() or 1  # cluster=local only
    gpus, kind = gpus_of(config)
    inference = dataclasses.replace(inference, gpus=kind)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # Ray's session dir holds its sockets, whose paths must stay short: a fresh one under /tmp, its logs
    # kept in the run dir when Ray stops
    session_dir = Path(tempfile.mkdtemp(prefix="sib-ray-"))
    before = descendants()
    started_processes: set[psutil.Process] = set()
    started = time.perf_counter()
    try:
        ray.init(
            num_cpus=cpus,
            num_gpus=gpus,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            _temp_dir=str(session_dir),
        )
        startup_s = time.perf_counter() - started
        started_processes |= descendants() - before
        measurement = _measure(config, dataset, inference, run_dir, cpus, gpus, kind)
        measurement.startup_s = startup_s
    finally:
        started_processes |= descendants() - before  # the workers and actors too, also when a pass failed
        ray.shutdown()
        stop_processes(started_processes, timeout=STOP_TIMEOUT_S)
        for logs in session_dir.glob("session_*/logs"):
            shutil.copytree(logs, RunDir(run_dir).ray_logs, dirs_exist_ok=True)
        shutil.rmtree(session_dir, ignore_errors=True)
    return measurement


def _measure(
    config: Config, dataset: Dataset, inference: Inference, run_dir: Path, cpus: int, gpus: int, kind: str
) -> Measurement:
    """Every pass one execution of the Ray Data pipeline, each with its own actor pool (none outlives one)."""
    import ray
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    batch_size = config.model.batch_size
    actors = max(gpus, 1)
    sink_dir = RunDir(run_dir).predictions if config.sink is Sink.parquet else None
    outcome: dict[str, Any] = {}

    def action() -> None:
        crops = ray.data.read_parquet(str(dataset.path)).map_batches(
            preprocess_batch,
            fn_kwargs={"step": preprocess(inference)},
            batch_format="pyarrow",
            batch_size=batch_size,
            num_cpus=1,
        )
        predictions = crops.map_batches(
            Predict,
            fn_constructor_args=(predict_crops(inference), cpus),
            batch_format="pyarrow",
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_gpus=1 if gpus else 0,
            num_cpus=0,  # the actor's threads share the cores with the preprocess tasks, as in every engine
        )
        table = pa.concat_tables(predictions.iter_batches(batch_format="pyarrow", batch_size=None))
        good, bad = _split(table)
        if sink_dir is not None:  # the sink is part of the job, timed as Spark's and torch's are; staged as torch's
            with staged(sink_dir / "part-00000.parquet") as staging:
                pq.write_table(good.select(PREDICTION_SCHEMA.names), staging)
        outcome.update(table=table, good=good, bad=bad)

    def observe(times: dict[str, float]) -> Pass:
        table, good, bad = outcome["table"], outcome["good"], outcome["bad"]
        loads = good.group_by(PIDS.name).aggregate([(LOADS.name, "max")])
        per_actor = loads[f"{LOADS.name}_max"].to_pylist()
        tasks = {
            "worker_pids": sorted(loads[PIDS.name].to_pylist()),
            "max_model_loads_per_worker": max(per_actor, default=0),
            "model_builds": sum(per_actor),  # each execution's actors are new: all their loads are this pass's
        }
        outcome["predictions"] = good.select(PREDICTION_SCHEMA.names)
        return Pass(times, len(table), len(good), bad, tasks)

    warmups, timed_passes = run_passes(config.warmup, config.repeats, [("predict", action)], observe, outcome.clear)
    predictions = outcome["predictions"]
    cluster = {
        "master": f"ray (local, {cpus} CPUs, {gpus} GPUs)",
        "ray": ray.__version__,
        "predict_actors": actors,
        "actor_pool": "one per execution: every pass starts its actors and loads the model",
        "gpus": {"kind": kind, "count": gpus},
    }
    return Measurement(warmups, timed_passes, predictions=predictions.to_pandas(), cluster=cluster)
