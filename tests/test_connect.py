"""Spark Connect and a cluster the tool did not start: what Connect refuses (before any work), the plan of
cluster=connect, the side-file ledger's attempt rules, an unreachable sc:// URL; and (slow) whole runs under
cluster=connect, a server killed mid-run, and a user's standalone cluster reached by spark:// and through a
Connect server in front of it."""

from __future__ import annotations

import json
import pickle
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from pipeline.config.schema import ClusterMode
from pipeline.config.validate import ConfigError, ConnectUnavailable, validate
from pipeline.inference.steps import BadImageRecord
from pipeline.run import run
from pipeline.rundir import RunDir
from pipeline.runtime.process_cpu import DAEMON, EXECUTOR_JVMS, JVM, PYTHON_WORKERS, WORKER
from pipeline.spark.connect import probe
from pipeline.spark.ledger import SUFFIX, TaskLedger, TaskRecord, executor_cpu
from pipeline.spark.plan import ClusterError, plan
from pipeline.spark.standalone import _free_ports
from reports.aggregate import find_jobs, job_frame
from reports.connect import compare, summary
from tests.helpers.cli import cli, result_of
from tests.helpers.config import compose_config
from tests.helpers.processes import gone, processes_of
from tests.helpers.remote import user_cluster, user_connect_server
from tests.helpers.results import write

RDD_REASON = "rdd_map_partitions: needs the RDD API, which Spark Connect does not offer"


# ------------------------------------------------------------------------------------------ validation, plan


@pytest.mark.parametrize(
    "cluster", [("cluster=connect",), ("cluster=remote", "cluster.master=sc://127.0.0.1:15002")], ids=str
)
def test_the_rdd_style_is_refused_under_connect_with_the_reason(cluster):
    with pytest.raises(ConnectUnavailable, match=RDD_REASON):
        validate(compose_config(*cluster, "udf=rdd_map_partitions"))


def test_a_preprocess_cluster_is_refused_under_connect():
    config = compose_config(
        "cluster=connect",
        "topology=two_stage",
        "topology.intermediate_path=/tmp/x",
        "+cluster@topology.preprocess_cluster=local",
    )
    with pytest.raises(ConnectUnavailable, match="topology.preprocess_cluster"):
        validate(config)


def test_a_refused_variant_is_recorded_unavailable_before_any_data_or_spark_work(tmp_path):
    config = compose_config("cluster=connect", "udf=rdd_map_partitions", f"cache_dir={tmp_path / 'cache'}")
    result = run(config, tmp_path / "run")
    assert result.status == "unavailable"
    assert result.error["type"] == "ConnectUnavailable" and RDD_REASON in result.error["message"]
    assert not (tmp_path / "cache").exists()  # no data set generated, no weights made
    assert not (tmp_path / "run" / "connect").exists() and not (tmp_path / "run" / "eventlog").exists()


@pytest.mark.parametrize(
    "backend, master, starts_workers",
    [("local", "local[3]", False), ("local_cluster", "local-cluster[1,3,2048]", True), ("standalone", None, True)],
)
def test_cluster_connect_is_planned_as_its_backend(backend, master, starts_workers):
    planned = plan(compose_config("cluster=connect", f"cluster.backend={backend}", "cluster.worker_cores=3"))
    assert (planned.mode, planned.master, planned.slots) == (ClusterMode(backend), master, 3)
    assert (planned.connect, planned.connect_server, planned.starts_workers) == (True, True, starts_workers)


def test_an_sc_master_is_a_connect_session_to_a_server_the_tool_does_not_start():
    planned = plan(compose_config("cluster=remote", "cluster.master=sc://127.0.0.1:15002"))
    assert (planned.mode, planned.connect, planned.connect_server) == (ClusterMode.remote, True, False)
    assert not plan(compose_config("cluster=remote", "cluster.master=spark://127.0.0.1:7077")).connect


@pytest.mark.parametrize(
    "cluster, starts_jvm",
    [
        (("cluster=local",), True),
        (("cluster=connect",), True),  # the server the harness starts is a JVM
        (("cluster=remote", "cluster.master=spark://127.0.0.1:7077"), True),  # the job's own driver
        (("cluster=remote", "cluster.master=sc://127.0.0.1:15002"), False),
    ],
    ids=str,
)
def test_only_a_connect_client_of_a_server_the_tool_did_not_start_runs_no_jvm(cluster, starts_jvm):
    assert plan(compose_config(*cluster)).starts_jvm is starts_jvm


def test_a_connect_client_of_a_server_the_tool_did_not_start_needs_no_java(tmp_path, monkeypatch):
    """Without Java here the run still gets as far as the server, which is unreachable here."""
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))  # no bin/java there
    (port,) = _free_ports(1)
    config = compose_config(
        "cluster=remote",
        f"cluster.master=sc://127.0.0.1:{port}",
        "model=null_model",
        "dataset.num_images=4",
        "repeats=1",
        "warmup=0",
        f"cache_dir={tmp_path / 'cache'}",
    )
    result = run(config, tmp_path / "run")
    assert result.error["type"] == "ClusterError", result.error
    assert "cannot reach the Spark Connect server" in result.error["message"]


@pytest.mark.parametrize(
    "overrides, named",
    [(("cluster.backend=remote",), "cluster.backend=remote"), (("cluster.workers=2",), "cluster.workers=2")],
)
def test_cluster_connect_refuses_a_backend_it_cannot_start(overrides, named):
    with pytest.raises(ConfigError, match=named):
        validate(compose_config("cluster=connect", *overrides))


# ------------------------------------------------------------------------------------------ the ledger


def _report(ledger: TaskLedger, partition: int, attempt_id: int, part: int, rows: int, bad: int = 0) -> None:
    """A side file as a task attempt writes it (`TaskLedger.task`), without Spark."""
    record = TaskRecord("fused", 3, partition, 0, 1, 1, "cpu", [], 0.0, 1.0, rows + bad, rows)
    record.bad = [BadImageRecord(f"bad-{i}", "empty image bytes") for i in range(bad)]
    key = ("fused", 3, partition, attempt_id, part)
    (ledger.directory / f"p{partition}-t{attempt_id}-{part}{SUFFIX}").write_bytes(pickle.dumps((key, record)))


def test_the_ledger_keeps_only_the_latest_attempt_of_each_partition(tmp_path):
    ledger = TaskLedger(tmp_path / "tasks")
    _report(ledger, 0, attempt_id=5, part=0, rows=4)  # a failed attempt's first batch...
    _report(ledger, 0, attempt_id=5, part=1, rows=4)  # ...and its second
    _report(ledger, 0, attempt_id=9, part=0, rows=4)  # the retry: three batches, one with a bad image
    _report(ledger, 0, attempt_id=9, part=1, rows=4, bad=1)
    _report(ledger, 0, attempt_id=9, part=2, rows=2)
    _report(ledger, 1, attempt_id=6, part=0, rows=7)
    (ledger.directory / f".half-written{SUFFIX}.123.tmp").write_bytes(b"not a pickle")  # never read
    records = {record.partition: record for record in ledger.records()}
    assert (records[0].rows_in, records[0].rows_out, len(records[0].bad)) == (11, 10, 1)
    assert (records[1].rows_in, records[1].rows_out) == (7, 7)
    ledger.clear()
    assert ledger.records() == [] and not any(ledger.directory.iterdir())


def test_the_ledger_travels_as_its_directory_and_whether_tasks_read_their_executors_cpu(tmp_path):
    ledger = TaskLedger(tmp_path / "tasks", reads_executor_cpu=True)
    ledger._builds[1] = 3
    copy = pickle.loads(pickle.dumps(ledger))
    assert copy.directory == ledger.directory and copy.reads_executor_cpu and not copy._builds


def _on(executor: str, pid: int, start: float, end: float, cpu_start: float, cpu_end: float) -> TaskRecord:
    """A task record whose executor's JVM and daemon, and its worker, used `cpu_end - cpu_start` s over it."""
    record = TaskRecord("fused", 3, 0, 0, pid, 1, "cpu", [], start, end, host="node", executor=executor)
    record.executor_cpu_start = {JVM: cpu_start, DAEMON: cpu_start, WORKER: cpu_start}
    record.executor_cpu_end = {JVM: cpu_end, DAEMON: cpu_end, WORKER: cpu_end}
    return record


def test_an_executors_cpu_runs_from_its_first_tasks_start_to_its_last_tasks_end_each_worker_over_its_own_tasks():
    # executor 1: two workers (pids 7, 8): JVM and daemon 9 -> 13, worker 7 9 -> 12, worker 8 10 -> 13
    records = [_on("1", 7, 1.0, 4.0, 9.0, 12.0), _on("1", 8, 2.0, 5.0, 10.0, 13.0), _on("2", 7, 1.0, 2.0, 1.0, 1.5)]
    records.append(TaskRecord("fused", 3, 1, 0, 9, 1, "cpu", [], 0.0, 9.0, host="node", executor="3"))  # unread
    assert executor_cpu(records) == {
        "node/1": {EXECUTOR_JVMS: 4.0, PYTHON_WORKERS: 4.0 + 3.0 + 3.0},
        "node/2": {EXECUTOR_JVMS: 0.5, PYTHON_WORKERS: 1.0},
    }


def test_a_tasks_parts_keep_its_executors_cpu_at_the_first_parts_start_and_the_last_parts_end():
    merged = _on("1", 7, 1.0, 2.0, 5.0, 6.0).merge(_on("1", 7, 2.5, 3.0, 6.5, 7.0))
    assert (merged.executor_cpu_start[JVM], merged.executor_cpu_end[JVM]) == (5.0, 7.0)


# ------------------------------------------------------------------------------------------ the report


def _result(
    job_dir: Path, cluster: str, udf: str, status: str = "ok", images_s: float | None = None, **other: Any
) -> None:
    error = None
    if status == "unavailable":
        error = {"type": "ConnectUnavailable", "message": f"not available under Spark Connect: {RDD_REASON}"}
    rates = {"images_per_s": images_s, "first": images_s / 4} if images_s else {}
    write(job_dir, **rates, status=status, num_images=32, error=error, cluster=cluster, udf=udf, **other)


def test_the_sweep_summary_gives_connects_ratio_per_style_and_what_it_cannot_run(tmp_path):
    _result(tmp_path / "0", "local", "map_in_pandas", images_s=40.0)
    _result(tmp_path / "1", "connect", "map_in_pandas", images_s=30.0)
    _result(tmp_path / "2", "local", "rdd_map_partitions", images_s=20.0)
    _result(tmp_path / "3", "connect", "rdd_map_partitions", status="unavailable")
    lines = summary([tmp_path])
    assert any(
        "map_in_pandas: Connect / classic = 0.75x warm (30.00 vs 40.00 img/s), 0.75x cold" in line for line in lines
    )
    assert any(line.endswith(f"rdd_map_partitions: not available under Spark Connect: {RDD_REASON}") for line in lines)


SC_SERVER = {"config": {"cluster": {"mode": "remote", "master": "sc://127.0.0.1:15002"}}}


def test_a_run_at_an_sc_server_is_a_connect_run_not_the_classic_baseline(tmp_path):
    _result(tmp_path / "0", "local", "map_in_pandas", images_s=40.0)
    _result(tmp_path / "1", "remote", "map_in_pandas", images_s=30.0, **SC_SERVER, cluster_record={"connect": {}})
    _result(tmp_path / "2", "remote", "rdd_map_partitions", status="unavailable", **SC_SERVER)
    (compared, refused) = compare(job_frame(find_jobs([tmp_path])))
    assert (compared.classic, compared.connect, compared.ratio) == (40.0, 30.0, 0.75)
    assert refused.unavailable == f"not available under Spark Connect: {RDD_REASON}"


@pytest.mark.parametrize("other", [{"hostname": "elsewhere"}, {"decoder": "torchvision"}, {"prefetch": 2}], ids=str)
def test_connect_is_never_set_against_a_classic_run_of_other_work_or_variant(tmp_path, other):
    _result(tmp_path / "0", "local", "iterator_pandas_udf", images_s=40.0, **other)
    _result(tmp_path / "1", "connect", "iterator_pandas_udf", images_s=30.0)
    (row,) = compare(job_frame(find_jobs([tmp_path])))
    assert (row.classic, row.connect, row.ratio) == (None, 30.0, None)


# ------------------------------------------------------------------------------------------ bad input


def test_the_probe_names_an_sc_url_nothing_listens_at():
    (port,) = _free_ports(1)
    url = f"sc://127.0.0.1:{port}"
    with pytest.raises(ClusterError, match=re.escape(f"cannot reach the Spark Connect server at {url}")):
        probe(url, timeout=5)


@pytest.mark.slow  # the CLI's whole job in a subprocess
def test_an_unreachable_sc_url_fails_the_run_by_itself_naming_it(tmp_path):
    (port,) = _free_ports(1)  # nothing listens there
    url = f"sc://127.0.0.1:{port}"
    done = cli(  # returns only once the CLI exited by itself: its timeout would raise
        tmp_path,
        "cluster=remote",
        f"cluster.master={url}",
        "model=null_model",
        "dataset.num_images=4",
        "repeats=1",
        "warmup=0",
        f"cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        timeout=300,
    )
    result = result_of(tmp_path / "run")
    assert done.returncode == 1 and result["status"] == "failed", done.stderr[-2000:]
    assert f"cannot reach the Spark Connect server at {url}" in result["error"]["message"]


@pytest.mark.slow
def test_a_server_that_accepts_and_says_nothing_fails_the_run_by_itself(tmp_path):
    """A port that accepts TCP but is no Spark Connect server: the bounded retry policy gives up, naming it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    url = f"sc://127.0.0.1:{listener.getsockname()[1]}"
    accepted: list[socket.socket] = []

    def accept() -> None:
        try:
            while True:
                accepted.append(listener.accept()[0])
        except OSError:  # the listener closed: the test is over
            pass

    threading.Thread(target=accept, daemon=True).start()
    try:
        done = cli(  # returns only once the CLI exited by itself: its timeout would raise
            tmp_path,
            "cluster=remote",
            f"cluster.master={url}",
            "model=null_model",
            "dataset.num_images=4",
            "repeats=1",
            "warmup=0",
            f"cache_dir={tmp_path / 'cache'}",
            f"hydra.run.dir={tmp_path / 'run'}",
            timeout=400,
        )
    finally:
        listener.close()
        for connection in accepted:
            connection.close()
    result = result_of(tmp_path / "run")
    assert done.returncode == 1 and result["status"] == "failed" and url in result["error"]["message"]


# ------------------------------------------------------------------------------------------ whole runs (slow)


def _no_process_left(result: dict) -> None:
    assert processes_of(result) == []
    assert all(gone(pid) for pid in result["cluster"]["pids"])


@pytest.mark.slow
def test_cluster_connect_verify_agrees_with_the_reference_with_evidence_and_leaves_nothing(tmp_path):
    run_dir = tmp_path / "run"
    done = cli(
        tmp_path,
        "cluster=connect",
        "verify=true",
        "model=null_model",
        "dataset.num_images=16",
        "warmup=0",
        "repeats=1",
        f"cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run_dir}",
        timeout=900,
    )
    result = result_of(run_dir)
    assert result["status"] == "ok", (result["error"], done.stderr[-3000:])
    assert result["metrics"]["top1_agreement"] == 1.0 and result["metrics"]["verified_images"] == 16
    assert result["cluster"]["connect"]["server_started_by_harness"] is True
    assert result["cluster"]["driver_pid"] == result["cluster"]["pids"][-1]
    stages = result["evidence"]["stages"]
    assert [stage["step"] for stage in stages] == ["fused"] and sum(s["tasks"] for s in stages) == 2
    assert result["evidence"]["checks"]["model_stage_max_concurrent"] <= 2
    assert (run_dir / "connect" / "server.log").is_file()
    assert json.loads((run_dir / "connect" / "server.json").read_text())["timings_s"]["stop"] >= 0
    _no_process_left(result)


@pytest.mark.slow
def test_a_connect_server_killed_mid_run_fails_the_run_with_the_reason(tmp_path):
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "cluster=connect",
        "model=null_model",
        "dataset.num_images=16",
        "warmup=2",
        "repeats=3",
        f"cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run_dir}",
    ]
    job = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 600
        tasks = RunDir(run_dir).tasks / "all"
        while not (tasks.is_dir() and any(tasks.glob(f"*{SUFFIX}"))):  # the first warm-up pass reported a task
            assert job.poll() is None and time.monotonic() < deadline, job.stdout.read() if job.poll() else "timeout"
            time.sleep(0.2)
        server = json.loads((run_dir / "connect" / "server.json").read_text())["pid"]
        psutil.Process(server).send_signal(signal.SIGKILL)
        job.wait(timeout=300)
    finally:
        if job.poll() is None:
            job.send_signal(signal.SIGINT)
            job.wait(timeout=120)
    result = result_of(run_dir)
    assert result["status"] == "failed"
    assert result["error"]["type"] == "ConnectServerDied", result["error"]
    assert f"(pid {server}) exited with status -9 during the run" in result["error"]["message"]
    assert gone(server)
    assert any((run_dir / "connect" / "tmp").glob("blockmgr-*")), "the killed server's scratch is not in its run dir"


@pytest.mark.slow
@pytest.mark.timeout(2400)  # four applications and a Connect server; 15 min were not enough on 2 busy cores
def test_a_users_cluster_by_spark_url_and_through_a_connect_server_in_front_of_it(tmp_path):
    """The tool runs on a cluster it did not start, by spark:// and by sc://, agrees with the reference both
    ways, reads the evidence, and leaves the cluster (and the user's Connect server) running."""
    common = [
        "model=null_model",
        "dataset.num_images=16",
        "warmup=0",
        "repeats=1",
        "verify=true",
        "cluster.worker_cores=2",
        "cluster.executor_memory=1g",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    with user_cluster(tmp_path / "user-cluster") as (master, cluster_processes):
        done = cli(
            tmp_path,
            "cluster=remote",
            f"cluster.master={master}",
            *common,
            f"hydra.run.dir={tmp_path / 'spark'}",
            timeout=900,
        )
        classic = result_of(tmp_path / "spark")
        assert classic["status"] == "ok", (classic["error"], done.stderr[-3000:])
        assert classic["metrics"]["top1_agreement"] == 1.0
        assert {e for s in classic["evidence"]["stages"] for e in s["executors"]} - {"driver"}  # ran on executors
        events = tmp_path / "server-events"
        with user_connect_server(tmp_path / "user-connect", master, events) as (url, server):
            done = cli(
                tmp_path,
                "cluster=remote",
                f"cluster.master={url}",
                f"cluster.event_log_dir={events}",
                *common,
                f"hydra.run.dir={tmp_path / 'connect'}",
                timeout=900,
            )
            connect = result_of(tmp_path / "connect")
            assert connect["status"] == "ok", (connect["error"], done.stderr[-3000:])
            assert connect["metrics"]["top1_agreement"] == 1.0
            assert connect["cluster"]["connect"] == {"url": url, "server_started_by_harness": False, "server_log": None}
            assert [stage["step"] for stage in connect["evidence"]["stages"]] == ["fused"]
            assert "unavailable" not in connect["evidence"]
            assert server.is_running()  # the tool never stops a server it did not start
        assert all(process.is_running() for process in cluster_processes)  # nor a cluster


def test_the_report_shows_what_connect_cannot_run_apart_from_failures(tmp_path):
    from reports.build import build

    _result(tmp_path / "0", "local", "map_in_pandas", images_s=40.0)
    _result(tmp_path / "1", "connect", "map_in_pandas", images_s=30.0)
    _result(tmp_path / "2", "connect", "rdd_map_partitions", status="unavailable")
    _, html = build([tmp_path], tmp_path)
    text = html.read_text()
    section = text[text.index('<section id="connect">') : text.index('<section id="connect">') + 4000]
    assert f"<td>not available under Spark Connect: {RDD_REASON}</td>" in section  # the reason once, as recorded
    assert 'data-value="0.75">0.75x' in section
    assert "Every job finished and succeeded." in text  # the unavailable variant is not listed as failed
