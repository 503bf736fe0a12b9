"""engine=spark: read Parquet, run the configured variant, sink, and time whole passes.

Every job of a pass runs in one application, except `topology=two_stage` with `topology.preprocess_cluster`
set (the original CPU cluster + GPU cluster): then job 1 (preprocess, write the crops) runs all its passes
in an application on that cluster, which is stopped before job 2 (read the crops, predict) runs all its
passes in an application on `cluster`. Pass i is job 1 of pass i plus job 2 of pass i, so each pass still
accounts for every image (read and bad from job 1, predicted from job 2) and keeps both jobs' times. The
preprocess application never schedules GPUs (`gpu.*` configures the predict cluster); its event log, and
for standalone its master and worker logs, are in `run_dir/preprocess/`.

`topology=model_server` starts its model server (`pipeline.serving.launcher`) before the application and
stops it after; on a cluster of other machines (cluster=remote) the application starts one server per worker
node once it runs and stops them before it ends (`pipeline.serving.nodes`). The tasks find their server through
`inference.server`. A Spark failure while a server was gone is reported as `ServerDied`, naming the server (and
its node); the servers' statistics go into `evidence.server`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from pipeline.config.schema import ClusterMode, Config, GpuConfig, Sink, Topology
from pipeline.data.datasets import Dataset
from pipeline.data.storage import Storage
from pipeline.engines.base import Measurement, Pass, run_passes
from pipeline.inference.steps import STEPS, Inference
from pipeline.rundir import RunDir
from pipeline.runtime import process_cpu
from pipeline.runtime.progress import PassProgress
from pipeline.spark import driver_jvm
from pipeline.spark.batching import check_batches
from pipeline.spark.cluster import Cluster, cluster, keep_worker_logs
from pipeline.spark.connect import ConnectServer, ConnectServerDied, connect_server, connect_session, is_connect
from pipeline.spark.evidence import check, collect, collect_tasks, faults, join, join_faults
from pipeline.spark.executors import master_webui, wait_for_executors
from pipeline.spark.ledger import TaskLedger, merge
from pipeline.spark.plan import Plan
from pipeline.spark.preflight import MODULES, first_tasks, preflight
from pipeline.spark.session import runtime_conf, spark_conf, spark_session
from pipeline.spark.shipping import Shipment, ship_weights, shipment
from pipeline.spark.time_split import split
from variants.topology import intermediate_bytes, jobs


class TasksUnheard(RuntimeError):
    """A pass ran, but no task's record reached the driver."""


@dataclass
class Application:
    """A running Spark application, the cluster under it, and how long each took to start."""

    spark: SparkSession
    running: Cluster
    conf: dict[str, str]
    cluster_s: float
    startup_s: float
    server: ConnectServer | None = None  # the Spark Connect server the harness started (cluster=connect)
    executors_wait_s: float | None = None  # cluster=remote: until its executors registered (in startup_s)

    def record(self, model_slots: int) -> dict[str, Any]:
        """What the result keeps about the application; read while it runs (the app id is the JVM's). Under
        Spark Connect the driver is the server: its PID (when the harness started it) and no JVM heap here."""
        connect = is_connect(self.spark)
        record = {
            "master": self.running.master,
            "slots": self.running.slots,
            "gpu_slots": self.running.gpu_slots,
            "model_slots": model_slots,
            "gpus": asdict(self.running.gpus),
            "pids": list(self.running.pids) + ([self.server.pid] if self.server else []),
            "log_dir": str(self.running.log_dir) if self.running.log_dir else None,
            "app_id": self.spark.conf.get("spark.app.id"),
            "driver_pid": (self.server.pid if self.server else None) if connect else os.getpid(),
            "executors_wait_s": self.executors_wait_s,
            "driver_jvm_max_memory_mb": None
            if connect
            else self.spark.sparkContext._jvm.java.lang.Runtime.getRuntime().maxMemory() // 2**20,
            # the driver JVM's launch, where it ran beside the job's imports and data (not in startup_s)
            "driver_jvm_ahead_s": None if connect else driver_jvm.ahead_s(),
        }
        if connect:
            record["connect"] = {
                "url": self.server.url if self.server else self.running.master,
                "server_started_by_harness": self.server is not None,
                "server_log": str(self.server.log) if self.server else None,
            }
        return record


@contextmanager
def application(
    config: Config, run_dir: Path, dataset: Dataset, plan: Plan, shipped: Shipment | None = None
) -> Iterator[Application]:
    """A fresh Spark application (and, for standalone, a fresh cluster) for the block, then stopped; a classic
    one starts with what `shipped` needs at the start (a virtualenv's archive)."""
    started = time.perf_counter()
    with cluster(config, run_dir, plan) as running:
        cluster_s = time.perf_counter() - started
        startup = shipped.startup_conf(plan.connect) if shipped else {}
        conf = spark_conf(config, run_dir, dataset.size_bytes, running, dataset.largest_file_bytes, startup)
        started = time.perf_counter()
        if plan.connect_server:  # every conf on the server's command line; the server is the driver
            with (
                _worker_logs_kept(plan, run_dir) as app_ids,
                connect_server(conf, run_dir) as server,
                connect_session(server.url, {}) as spark,
            ):
                app_ids.append(spark.conf.get("spark.app.id"))
                yield Application(spark, running, conf, cluster_s, time.perf_counter() - started, server)
        elif plan.connect:  # a server the tool did not start: only runtime SQL confs can be set from here
            runtime = runtime_conf(conf)
            with connect_session(running.master, runtime) as spark:
                yield Application(spark, running, runtime, cluster_s, time.perf_counter() - started)
        else:
            with _worker_logs_kept(plan, run_dir) as app_ids, spark_session(conf) as spark:
                app_ids.append(spark.conf.get("spark.app.id"))
                waited = None
                if plan.mode is ClusterMode.remote:  # a cluster the harness did not start: its executors may never come
                    cl = config.cluster
                    webui = master_webui(running.master, cl.master_webui)
                    waited = wait_for_executors(spark, plan.workers, cl.register_timeout_s, webui)
                yield Application(spark, running, conf, cluster_s, time.perf_counter() - started, None, waited)


@contextmanager
def _worker_logs_kept(plan: Plan, run_dir: Path) -> Iterator[list[str]]:
    """local-cluster's executor logs into the run dir (`keep_worker_logs`) for each application id the block
    appends, once the block has ended: the application entered inside it has stopped, and its executors with it."""
    app_ids: list[str] = []
    try:
        yield app_ids
    finally:
        if plan.mode is ClusterMode.local_cluster:
            for app_id in app_ids:
                keep_worker_logs(app_id, run_dir)


@dataclass(frozen=True)
class ApplicationSpec:
    """One Spark application of a run: the config it starts with, its plan (validated once), where its event
    log and cluster logs go, and the one job of each pass it runs (None: all of them)."""

    config: Config
    plan: Plan
    run_dir: RunDir
    job: str | None = None


@dataclass
class ApplicationRun:
    """What one application measured and proved, read after it stopped."""

    spec: ApplicationSpec
    app: Application
    measurement: Measurement
    record: dict[str, Any]
    evidence: dict[str, Any]
    faults: dict[str, Any]


def preprocess_config(config: Config) -> Config:
    """The config of two_stage's preprocess application: `topology.preprocess_cluster` as its cluster, and no
    GPUs (job 1 is the CPU cluster's: `gpu.*` describes the predict cluster); the rest as configured."""
    return dataclasses.replace(config, cluster=config.topology.preprocess_cluster, gpu=GpuConfig())


def applications(config: Config, plan: Plan, run_dir: RunDir) -> list[ApplicationSpec]:
    """The applications a run needs, in order: one, or two_stage's two on clusters of their own."""
    if plan.preprocess is None:
        return [ApplicationSpec(config, plan, run_dir)]
    return [
        ApplicationSpec(preprocess_config(config), plan.preprocess, run_dir.preprocess, "preprocess"),
        ApplicationSpec(config, plan, run_dir, "predict"),
    ]


def run(config: Config, dataset: Dataset, inference: Inference, run_dir: Path, plan: Plan | None) -> Measurement:
    """Each application's passes, joined into the run's; see the module docstring. `plan` is validation's."""
    assert plan is not None, "engine=spark runs the plan pipeline.config.validate made"
    specs = applications(config, plan, RunDir(run_dir))
    runs = [_run_application(spec, dataset, inference, Path(run_dir)) for spec in specs]
    return _joined_runs(config, runs, dataset.row_group_rows)


def _model_server(config: Config, plan: Plan, run_dir: Path, inference: Inference) -> Any:
    """The model server of topology=model_server on this machine, started before the application (else nothing;
    a cluster of other machines has one per node, `_node_servers`)."""
    if config.topology.kind is not Topology.model_server or plan.mode is ClusterMode.remote:
        return nullcontext(None)
    from pipeline.serving.launcher import model_server

    return model_server(config, plan, run_dir, inference)


def _node_servers(spark: SparkSession, config: Config, plan: Plan, run_dir: Path, inference: Inference) -> Any:
    """topology=model_server on a cluster of other machines: a server on each worker node, started by the running
    application (else nothing); their records, logs and status files in the run's area of the storage root."""
    if config.topology.kind is not Topology.model_server or plan.mode is not ClusterMode.remote:
        return nullcontext(None)
    from pipeline.serving.nodes import node_servers

    directory = Storage.of(config.storage, run_dir, config.cache_dir).run_area.server
    logs = RunDir(run_dir).server
    return node_servers(spark, config, plan, inference, directory, logs, lambda text: describe(spark, text))


def _run_application(spec: ApplicationSpec, dataset: Dataset, inference: Inference, run_dir: Path) -> ApplicationRun:
    config = spec.config
    slots = spec.plan.slots if spec.job == "preprocess" else spec.plan.model_slots
    with _model_server(config, spec.plan, spec.run_dir.path, inference) as local:
        if local is not None:
            inference = dataclasses.replace(inference, server=local.address)
        remote = spec.plan.mode is ClusterMode.remote  # executors that may see nothing of this machine's disk
        made = shipment(config, remote)  # the tool's code or environment (cluster.ship), before the application
        with application(config, spec.run_dir.path, dataset, spec.plan, made) as app:
            shipped: dict[str, Any] = {}
            if remote:  # all of it before any pass, none of it timed
                inference, shipped = ship_weights(app.spark, inference)
                shipped.update(made.ship(app.spark))
                cl = config.cluster
                modules = (*MODULES, config.model.factory.split(":")[0]) if config.model.factory else MODULES
                shipped["preflight"] = preflight(app.spark, spec.plan.slots, made.mode, cl.preflight_timeout_s, modules)
            with _node_servers(app.spark, config, spec.plan, run_dir, inference) as nodes:
                server = local or nodes
                if nodes is not None:
                    inference = dataclasses.replace(inference, server=nodes.address)
                try:
                    measured = measure(
                        app.spark, config, dataset, inference, run_dir, slots, only=spec.job, server=server
                    )
                except Exception as error:
                    if server is not None:  # a model server that died mid-run is the reason
                        server.check_alive(error)
                    if app.server is not None:  # so is a Connect server: not the client's gRPC error
                        try:
                            app.server.check_alive("during the run")
                        except ConnectServerDied as died:
                            raise died from error
                    raise
            record = {**app.record(slots), "shipped": shipped}
    records = measured.timed[-1].tasks.get("records", [])
    served = {"server": server.evidence(config.warmup)} if server is not None else {}
    if server is not None:
        record["server_start_s"] = server.start_s
    if spec.plan.connect and not spec.plan.connect_server:  # an sc:// server the tool did not start
        unavailable = remote_event_log(config, record["app_id"], spec.run_dir.eventlog)
        if unavailable:
            evidence = {**collect_tasks(records), **served, "unavailable": unavailable}
            return ApplicationRun(spec, app, measured, record, evidence, None)
    if "preflight" in shipped:  # where each executor fetched and unpacked what was shipped
        shipped["preflight"]["executor_ready_s"] = first_tasks(spec.run_dir.eventlog)
    evidence = collect(spec.run_dir.eventlog, records, last_pass(config), spec.plan.slots, spec.plan.model_slots)
    widths = {True: spec.plan.model_slots, False: spec.plan.slots}
    evidence["time"] = split(spec.run_dir.eventlog, evidence["stages"], records, widths)
    return ApplicationRun(spec, app, measured, record, {**evidence, **served}, faults(spec.run_dir.eventlog))


def remote_event_log(config: Config, app_id: str, event_log: Path) -> str | None:
    """Copy the event log of the sc:// server's application `app_id` from `cluster.event_log_dir` into the run
    dir's (the server's application lives on: its log is `.inprogress`, flushed at every job end); or say
    why there is none. A server's application serves every session, so its log may hold others' jobs: the
    stages are chosen by this run's pass descriptions, and its faults are the whole application's."""
    directory = getattr(config.cluster, "event_log_dir", None)
    if not directory:
        return "the event log of an sc:// server the tool did not start: set cluster.event_log_dir to read it"
    found = [path for path in Path(directory).expanduser().glob(f"{app_id}*") if path.is_file()]
    if not found:
        return f"no event log of application {app_id} in cluster.event_log_dir={directory}"
    for path in found:
        shutil.copyfile(path, event_log / path.name)
    return None


def _joined_runs(config: Config, runs: list[ApplicationRun], row_group_rows: int) -> Measurement:
    """The run's measurement from its applications' (the last one predicts): pass i is every application's
    pass i, startup and cluster start times add up, and the evidence of two applications is joined. The
    batch axes are checked on the last timed pass against the data set's `row_group_rows`."""
    first, last = runs[0], runs[-1]
    record = {**last.record, "cluster_start_s": last.app.cluster_s, "startup_s": last.app.startup_s}
    evidence, found_faults = last.evidence, last.faults
    if len(runs) == 2:
        record[first.spec.job] = {
            **first.record,
            "cluster_start_s": first.app.cluster_s,
            "startup_s": first.app.startup_s,
            "spark_conf": first.app.conf,
        }
        evidence = join(first.evidence, last.evidence, (first.record["app_id"], last.record["app_id"]))
        found_faults = join_faults(first.faults, last.faults)
    checks = check(evidence, last.spec.plan, config.topology.kind)
    if "server" in evidence and "last_pass" in evidence["server"]:
        served = evidence["server"]["last_pass"]["images"]
        checks["server_images_last_pass"] = served
        checks["server_answered_every_image"] = served == last.measurement.timed[-1].predicted
    if len(runs) == 2:
        checks["preprocess_slots"] = first.spec.plan.slots
    timed = [_joined(halves) for halves in zip(*(run.measurement.timed for run in runs))]
    checks.update(check_batches(timed[-1].tasks.get("records", []), config, last.app.conf, row_group_rows))
    return Measurement(
        warmups=[_joined(halves) for halves in zip(*(run.measurement.warmups for run in runs))],
        timed=timed,
        startup_s=sum(run.app.startup_s for run in runs),
        predictions=last.measurement.predictions,
        cluster=record,
        cluster_start_s=sum(run.app.cluster_s for run in runs),
        spark_conf=last.app.conf,
        intermediate_bytes=intermediate_bytes(
            config, Storage.of(config.storage, last.spec.run_dir.path, config.cache_dir)
        ),
        evidence=evidence,
        checks=checks,
        faults=found_faults,
    )


def _joined(halves: tuple[Pass, ...]) -> Pass:
    """One pass from the applications that ran its jobs: images read and bad in the first, predicted in the last."""
    if len(halves) == 1:
        return halves[0]
    preprocessed, predicted = halves
    return Pass(
        {**preprocessed.jobs, **predicted.jobs},
        preprocessed.read,
        predicted.predicted,
        preprocessed.bad,
        merge(preprocessed.tasks, predicted.tasks),
        {
            kind: preprocessed.cpu.get(kind, 0.0) + predicted.cpu.get(kind, 0.0)
            for kind in {**preprocessed.cpu, **predicted.cpu}
        },
    )


def pass_description(number: int, config: Config) -> str:
    """The job description of pass `number`; the event log maps stages to passes by it."""
    return f"pass {number} ({'warm-up' if number <= config.warmup else 'timed'})"


def describe(spark: SparkSession, description: str) -> None:
    """Name the next jobs (the event log maps stages to passes by it): a SparkContext's job description, or,
    under Spark Connect, the session conf the server copies into each job's properties (measured: the same
    `spark.job.description` in the event log)."""
    if is_connect(spark):
        spark.conf.set("spark.job.description", description)
    else:
        spark.sparkContext.setJobDescription(description)


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
    server: Any = None,
) -> Measurement:
    """Warm-up and timed passes of the configured variant in a running application; `only` names the one
    job of each pass this application runs (two_stage on two clusters), None runs them all. A model `server`
    (topology=model_server) has its statistics read before each pass and after the last."""
    run_storage = Storage.of(config.storage, run_dir, config.cache_dir)
    # executors on other machines: their tasks read their CPU, which this process's tree does not reach
    ledger = TaskLedger(
        run_storage.tasks / (only or "all"), reads_executor_cpu=config.cluster.mode is ClusterMode.remote
    )
    # the pass bars poll a SparkContext's status tracker; under Connect there is none (the bar shows no tasks)
    context = None if is_connect(spark) else spark.sparkContext
    images = spark.read.parquet(str(dataset.path))
    if config.spark.partitions:
        images = images.repartition(config.spark.partitions)
    collected: dict[str, DataFrame] = {}

    def sink(predictions: DataFrame) -> None:
        collected["predictions"] = predictions
        writer = predictions.write.mode("overwrite")
        if config.sink is Sink.parquet:
            writer.parquet(str(run_storage.predictions))
        else:
            writer.format("noop").save()

    plan = [
        job
        for job in jobs(spark, config, images, inference, ledger, predict_slots, sink, run_storage)
        if only in (None, job.name)
    ]
    number = iter(range(1, 1 + config.warmup + config.repeats))
    shown: list[PassProgress] = []  # the running pass's bar: its polling thread starts before the timer
    marks: list[process_cpu.CpuMark] = []  # the processes' CPU just before the pass's timer

    def reset() -> None:
        ledger.clear()
        if server is not None:
            server.mark()
        description = pass_description(next(number), config)
        describe(spark, description)
        shown.append(PassProgress(context, description + (f" {only}" if only else ""), dataset.num_images))
        shown[-1].__enter__()
        marks.append(process_cpu.mark())

    def observe(times: dict[str, float]) -> Pass:
        cpu = process_cpu.used(marks.pop(), process_cpu.mark())
        progress = shown.pop()
        progress.__exit__()  # after the timer stopped
        records = ledger.records()
        if not records:
            fix = (
                f"is storage={run_storage.root} the same shared directory on every node and here?"
                if run_storage.shared
                else "executors on other machines see nothing of its run dir: set storage=DIR to a directory every "
                "node and this machine share at the same path"
            )
            raise TasksUnheard(
                f"the pass's tasks finished, but none of their records reached {ledger.directory}: the executors "
                f"wrote them where this machine cannot read; {fix}"
            )
        first = [r for r in records if STEPS[r.step].reads_images]
        last = [r for r in records if STEPS[r.step].runs_model]
        bad = [image for record in first for image in record.bad]
        read, predicted = sum(r.rows_in for r in first), sum(r.rows_out for r in last)
        tasks = {**ledger.summary(records), "progress_thread": progress.cost()}
        for per_kind in tasks.get("executor_cpu", {}).values():
            for kind, seconds in per_kind.items():
                cpu[kind] = round(cpu.get(kind, 0.0) + seconds, 4)
        return Pass(times, read, predicted, bad, tasks, cpu)

    try:
        try:
            warmups, timed_passes = run_passes(
                config.warmup, config.repeats, [(job.name, job.action) for job in plan], observe, reset
            )
        finally:
            for failed in shown:  # a pass that raised: stop its thread, leave its bar where it stood
                failed.__exit__(RuntimeError)
        if server is not None:
            server.mark()
        measurement = Measurement(warmups, timed_passes)
        if config.verify and "predictions" in collected:
            describe(spark, "verify: collect predictions")
            # sink=parquet: what the last timed pass wrote; a noop sink keeps nothing, so the pass runs once more,
            # untimed, for its predictions
            written = config.sink is Sink.parquet
            source = spark.read.parquet(str(run_storage.predictions)) if written else collected["predictions"]
            measurement.predictions = source.select("id", "top1", "prob").toPandas()
        return measurement
    finally:
        ledger.remove()  # the passes' records are in the result: none is left on the storage root
