"""The cluster of a run: the plan, GPU plan and confs of every mode (pure), the discovery script, stopping process
trees, and a real standalone master + worker (slow, each scenario in its own Python process, so it never
meets the test session's local SparkSession)."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psutil
import pytest

from pipeline.config.schema import ClusterMode, Topology
from pipeline.config.validate import ConfigError, validate
from pipeline.runtime.processes import stop_processes
from pipeline.spark import cluster as cluster_module
from pipeline.spark import plan as plan_module
from pipeline.spark import standalone as standalone_module
from pipeline.spark.cluster import cluster, discovery_script, keep_worker_logs, worker_gpu_conf
from pipeline.spark.evidence import check
from pipeline.spark.plan import ClusterError, GpuPlan, gpu_plan, memory_mb, plan, tasks_per_executor
from pipeline.spark.standalone import java_options
from tests.helpers.config import compose_config
from tests.helpers.processes import cmdline, gone, survivors, tree

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "pipeline" / "spark" / "discover_gpus.sh"


# ------------------------------------------------------------------------------------------ helpers


def discover(env: dict[str, str] | None = None, script: Path = SCRIPT, path: str | None = None) -> dict:
    """Run a discovery script as Spark does and parse what it prints."""
    full_env = {k: v for k, v in os.environ.items() if k != cluster_module.EMULATE_ENV}
    full_env.update(env or {})
    if path is not None:
        full_env["PATH"] = path
    out = subprocess.run([str(script)], env=full_env, capture_output=True, text=True, timeout=30, check=True)
    return json.loads(out.stdout)


def bin_without_nvidia_smi(tmp_path: Path) -> str:
    """A PATH that has bash (the scripts' `#!/usr/bin/env bash`) and no nvidia-smi, even on a GPU machine."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "bash").symlink_to(shutil.which("bash"))
    return str(bin_dir)


def fake_nvidia_smi(bin_dir: Path, gpus: int) -> None:
    tool = bin_dir / "nvidia-smi"
    tool.write_text("#!/bin/sh\n" + "".join(f"echo {i}\n" for i in range(gpus)))
    tool.chmod(0o755)


# ------------------------------------------------------------------------------------------ plan and confs


def test_local_runs_local_n_with_nothing_started(tmp_path):
    with cluster(compose_config("cluster.cores=3"), tmp_path) as c:
        assert (c.master, c.conf, c.slots, c.gpu_slots, c.pids, c.log_dir) == ("local[3]", {}, 3, None, (), None)
        assert c.gpus.kind == "none"
    assert not (tmp_path / "cluster").exists()


def test_local_defaults_to_every_core(tmp_path):
    with cluster(compose_config(), tmp_path) as c:
        assert c.master == f"local[{os.cpu_count()}]"


def test_local_refuses_gpus():
    with pytest.raises(ConfigError, match="local"):
        gpu_plan(compose_config("gpu.emulate=2"))


def test_local_cluster_master_string_and_executor_confs(tmp_path):
    config = compose_config(
        "cluster=local_cluster",
        "cluster.workers=2",
        "cluster.worker_cores=3",
        "cluster.worker_memory=1536m",
        "cluster.executor_memory=1g",
        "cluster.task_cpus=1",
    )
    with cluster(config, tmp_path) as c:
        assert c.master == "local-cluster[2,3,1536]"
        assert c.conf == {"spark.executor.cores": "3", "spark.executor.memory": "1g", "spark.task.cpus": "1"}
        assert (c.slots, c.gpu_slots, c.pids) == (6, None, ())


def test_a_local_cluster_applications_executor_logs_move_from_spark_home_into_the_run_dir(tmp_path, monkeypatch):
    home = tmp_path / "pyspark"
    (home / "work" / "app-1" / "0").mkdir(parents=True)
    (home / "work" / "app-1" / "0" / "stderr").write_text("executor 0\n")
    (home / "work" / "app-2").mkdir()  # another application's: not this run's
    monkeypatch.setattr(cluster_module, "spark_home", lambda: home)
    kept = keep_worker_logs("app-1", tmp_path / "run")
    assert kept == tmp_path / "run" / "cluster" / "work" / "app-1"
    assert (kept / "0" / "stderr").read_text() == "executor 0\n"
    assert sorted(path.name for path in (home / "work").iterdir()) == ["app-2"]
    assert keep_worker_logs("app-3", tmp_path / "run") is None  # no executor ever started: nothing to keep


def test_task_cpus_divide_the_slots(tmp_path):
    with cluster(
        compose_config("cluster=local_cluster", "cluster.worker_cores=4", "cluster.task_cpus=2"), tmp_path
    ) as c:
        assert (c.slots, c.conf["spark.task.cpus"]) == (2, "2")


@pytest.mark.parametrize(
    ("text", "mb"), [("2g", 2048), ("1536m", 1536), ("1G", 1024), ("2048k", 2), ("1t", 2**20), ("3gb", 3072)]
)
def test_memory_strings_parse_to_mib(text, mb):
    assert memory_mb(text) == mb


@pytest.mark.parametrize("text", ["2048", "two", "512k", "1.5g", ""])
def test_memory_without_unit_or_under_a_mib_is_refused(text):
    with pytest.raises(ConfigError, match="cluster.worker_memory"):
        memory_mb(text)


def test_executor_larger_than_its_worker_is_refused(tmp_path):
    config = compose_config("cluster=standalone", "cluster.worker_memory=1g", "cluster.executor_memory=2g")
    with pytest.raises(ConfigError, match="executor_memory"):
        with cluster(config, tmp_path):
            pass
    assert not (tmp_path / "cluster").exists()


def test_emulated_gpus_on_local_cluster_are_application_confs(tmp_path):
    with cluster(compose_config("cluster=local_cluster", "gpu.emulate=2"), tmp_path) as c:
        assert c.gpus == GpuPlan("emulated", 2, 2, 1.0, 1.0)
        assert c.conf["spark.worker.resource.gpu.amount"] == "2"
        assert c.conf["spark.executor.resource.gpu.amount"] == "2"
        assert c.conf["spark.task.resource.gpu.amount"] == "1"
        assert (c.slots, c.gpu_slots) == (4, 2)
        # the script Spark will run reports the emulated addresses without anything in os.environ
        assert cluster_module.EMULATE_ENV not in os.environ
        assert discover(script=Path(c.conf["spark.worker.resource.gpu.discoveryScript"]))["addresses"] == ["0", "1"]


@pytest.mark.parametrize(
    ("gpus", "cores", "task_amount", "gpu_slots"),
    [(2, 4, 0.5, 4), (1, 4, 0.25, 4), (1, 3, 1 / 3, 3), (3, 4, 0.5, 6), (4, 2, 1.0, 4)],
)
def test_stage_level_shares_gpus_so_every_cpu_slot_runs(tmp_path, gpus, cores, task_amount, gpu_slots):
    config = compose_config(
        "cluster=local_cluster", f"gpu.emulate={gpus}", f"cluster.worker_cores={cores}", "topology.kind=stage_level"
    )
    with cluster(config, tmp_path) as c:
        assert c.gpus.task_amount == pytest.approx(task_amount)
        assert c.gpus.predict_task_amount == 1.0
        assert (c.slots, c.gpu_slots) == (cores, gpu_slots)


def test_fractional_task_amounts_count_per_address():
    # Spark lets floor(1/0.4) = 2 tasks share an address: 2 GPUs give 4 tasks, not 2 / 0.4 = 5
    assert tasks_per_executor(2, 0.4) == 4
    assert tasks_per_executor(2, 0.5) == 4
    assert tasks_per_executor(3, 2.0) == 1
    assert tasks_per_executor(1, 1 / 3) == 3


LOCAL_CLUSTER_2X4 = ("cluster=local_cluster", "cluster.workers=2", "cluster.worker_cores=4")
STANDALONE_1X4 = ("cluster=standalone", "cluster.workers=1", "cluster.worker_cores=4")


@pytest.mark.parametrize(
    ("overrides", "slots", "gpu_slots", "model_slots"),
    [
        # fused: the model runs at the task amount; 2 GPUs x floor(1/0.4) = 4 tasks per executor, 2 executors
        ((*LOCAL_CLUSTER_2X4, "gpu.emulate=2", "gpu.task_amount=0.4"), 8, 8, 8),
        ((*LOCAL_CLUSTER_2X4, "gpu.emulate=2", "gpu.task_amount=0.25"), 8, 16, 16),
        ((*LOCAL_CLUSTER_2X4, "gpu.emulate=2", "topology=split"), 8, 4, 4),
        # stage_level: preprocess at the application's amount (4 CPU slots over 2 GPUs: 0.5 each), the model
        # at the predict profile's: 1 GPU -> 2 tasks per executor, 0.5 -> 4, 0.4 -> 2 x floor(2.5) = 4
        ((*LOCAL_CLUSTER_2X4, "gpu.emulate=2", "topology=stage_level"), 8, 8, 4),
        ((*LOCAL_CLUSTER_2X4, "gpu.emulate=2", "topology=stage_level", "gpu.predict_task_amount=0.5"), 8, 8, 8),
        ((*LOCAL_CLUSTER_2X4, "gpu.emulate=2", "topology=stage_level", "gpu.predict_task_amount=0.4"), 8, 8, 8),
        # 1 GPU, 4 CPU slots: preprocess at 0.25 (4 tasks), predict at 1/3 -> 3 tasks per executor
        ((*STANDALONE_1X4, "gpu.emulate=1", "topology=stage_level", "gpu.predict_task_amount=0.3333"), 4, 4, 3),
        # without GPUs the model runs on the CPU slots
        ((*LOCAL_CLUSTER_2X4, "cluster.task_cpus=2"), 4, None, 4),
        (("cluster.cores=3",), 3, None, 3),
    ],
)
def test_plan_counts_slots_gpu_slots_and_model_slots_as_spark_does(overrides, slots, gpu_slots, model_slots):
    planned = plan(compose_config(*overrides))
    assert (planned.slots, planned.gpu_slots, planned.model_slots) == (slots, gpu_slots, model_slots)


def test_plan_names_the_master_memory_and_confs_of_each_mode():
    local = plan(compose_config("cluster.cores=3"))
    assert (local.mode, local.master, local.conf, local.gpus.kind) == (ClusterMode.local, "local[3]", {}, "none")
    assert (local.worker_memory_mb, local.executor_memory_mb) == (None, None)
    pair = plan(compose_config(*LOCAL_CLUSTER_2X4, "cluster.worker_memory=1536m", "cluster.executor_memory=1g"))
    assert (pair.master, pair.worker_memory_mb, pair.executor_memory_mb) == ("local-cluster[2,4,1536]", 1536, 1024)
    standalone = plan(compose_config("cluster=standalone", "cluster.worker_memory=1g", "cluster.executor_memory=512m"))
    assert (standalone.master, standalone.worker_memory_mb, standalone.starts_workers) == (None, 1024, True)
    remote = plan(compose_config("cluster=remote", "cluster.master=spark://127.0.0.1:7077", "cluster.workers=3"))
    assert (remote.master, remote.worker_memory_mb, remote.executor_memory_mb) == ("spark://127.0.0.1:7077", None, 4096)
    assert remote.conf["spark.executor.instances"] == "3" and not remote.starts_workers


def test_a_standalone_master_is_held_to_cluster_workers_executors_by_the_application_s_cores():
    """A standalone master ignores spark.executor.instances (measured: 1 asked, 3 executors on 3 workers); capping
    the application's cores at workers x worker_cores is what limits it to cluster.workers nodes."""
    two = plan(compose_config("cluster=remote", "cluster.master=spark://10.0.0.2:7077", "cluster.workers=2"))
    assert (two.conf["spark.cores.max"], two.conf["spark.executor.cores"]) == ("8", "4")
    yarn = plan(compose_config("cluster=remote", "cluster.master=yarn", "cluster.workers=2"))
    assert "spark.cores.max" not in yarn.conf and yarn.conf["spark.executor.instances"] == "2"


def test_validation_returns_the_plan_the_cluster_then_uses_without_asking_nvidia_smi_again(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(plan_module, "nvidia_gpu_count", lambda: calls.append(1) or 2)
    config = compose_config("cluster=local_cluster", "gpu.task_amount=1")
    planned = validate(config)
    assert planned == plan(config) and len(calls) == 2
    with cluster(config, tmp_path, planned) as c:
        assert c.plan is planned and (c.gpus, c.slots, c.gpu_slots) == (GpuPlan("real", 2, 2, 1.0, 1.0), 4, 2)
        assert c.conf["spark.worker.resource.gpu.amount"] == "2"
    assert len(calls) == 2  # the cluster took the plan as it was: nvidia-smi once per plan
    assert validate(compose_config("engine=torch")) is None


def test_a_preprocess_cluster_gets_a_plan_of_its_own_without_gpus():
    planned = plan(
        compose_config(
            "topology=two_stage",
            "topology.intermediate_path=/tmp/crops",
            "+cluster@topology.preprocess_cluster=local_cluster",
            "topology.preprocess_cluster.workers=3",
            "cluster=local_cluster",
            "gpu.emulate=2",
        )
    )
    assert (planned.gpus.kind, planned.model_slots) == ("emulated", 2)
    pre = planned.preprocess
    assert (pre.master, pre.gpus.kind, pre.gpu_slots, pre.slots, pre.model_slots, pre.preprocess) == (
        "local-cluster[3,4,2048]",
        "none",
        None,
        12,
        12,
        None,
    )
    assert plan(compose_config("cluster=local_cluster")).preprocess is None


def test_the_evidence_checks_the_model_stage_against_the_plans_model_slots():
    planned = plan(compose_config(*LOCAL_CLUSTER_2X4, "gpu.emulate=2", "topology=stage_level"))
    rows = [{"step": "preprocess", "max_concurrent": 8}, {"step": "predict", "max_concurrent": 4}]
    found = {"stages": rows, "model_task_gpus": [{"gpu_addresses": ["0"]}]}
    checks = check(found, planned, Topology.stage_level)
    assert (checks["slots"], checks["gpu_slots"], checks["model_slots"], checks["violation"]) == (8, 8, 4, None)
    assert checks["preprocess_ran_wider_than_predict"] and checks["model_stages_within_gpu_slots"]
    rows[1]["max_concurrent"] = 5
    assert check(found, planned, Topology.stage_level)["violation"] == (
        "a model stage ran 5 tasks at once on 4 GPU slots (1.0 GPU per task)"
    )


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("gpu.task_amount=0.6", "gpu.task_amount"),
        ("gpu.task_amount=1.5", "gpu.task_amount"),
        ("gpu.executor_amount=3", "gpu.executor_amount"),
        ("gpu.task_amount=3", "gpu.task_amount"),
        ("gpu.predict_task_amount=1.25", "gpu.predict_task_amount"),
        ("gpu.task_amount=-0.5", "gpu.task_amount"),
        ("gpu.predict_task_amount=0", "gpu.predict_task_amount"),
    ],
)
def test_gpu_amounts_spark_would_hang_on_are_refused(override, key):
    with pytest.raises(ConfigError, match=key):
        gpu_plan(compose_config("cluster=standalone", "gpu.emulate=2", override))


@pytest.mark.parametrize("amount", [0.6, 0.7, 0.75, 1.0, 2.0])
def test_a_profile_may_ask_any_fraction_up_to_one_or_a_whole_number(amount):
    profile = ("topology=stage_level", f"gpu.predict_task_amount={amount}")
    config = compose_config("cluster=standalone", "gpu.emulate=2", *profile)
    assert gpu_plan(config).predict_task_amount == amount


@pytest.mark.parametrize(
    ("override", "rule"),
    [("gpu.task_amount=0.6", "a fraction <= 0.5"), ("gpu.predict_task_amount=1.5", "a fraction <= 1.0")],
)
def test_a_refused_amount_names_the_key_and_the_rule_spark_4_3_applies(override, rule):
    with pytest.raises(ConfigError, match=f"{override}: Spark 4.3 accepts a whole number of GPUs per task or {rule}"):
        gpu_plan(compose_config("cluster=standalone", "gpu.emulate=2", "topology=stage_level", override))


@pytest.mark.parametrize(("amount", "per_gpu"), [(0.6, 1), (0.75, 1), (0.7, 1), (0.5, 2), (0.3, 3)])
def test_a_fraction_above_one_half_lets_one_task_use_each_gpu(amount, per_gpu):
    assert tasks_per_executor(2, amount) == 2 * per_gpu


def test_real_gpus_are_counted_with_nvidia_smi(tmp_path, monkeypatch):
    path = bin_without_nvidia_smi(tmp_path)
    fake_nvidia_smi(Path(path), 2)
    monkeypatch.setenv("PATH", path)
    assert gpu_plan(compose_config("cluster=standalone", "gpu.task_amount=1")) == GpuPlan("real", 2, 2, 1.0, 1.0)


def test_real_gpus_without_nvidia_smi_fail_with_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", bin_without_nvidia_smi(tmp_path))
    with pytest.raises(ClusterError, match="gpu.emulate"):
        gpu_plan(compose_config("cluster=local_cluster", "gpu.executor_amount=1"))


def test_standalone_gives_worker_gpu_confs_to_the_workers_only(tmp_path):
    config = compose_config("cluster=standalone", "gpu.emulate=2", "gpu.task_amount=0.5")
    planned = plan(config)
    script = discovery_script(tmp_path, planned.gpus)
    conf = planned.conf
    assert not any(key.startswith("spark.worker.") for key in conf)
    assert (conf["spark.executor.resource.gpu.amount"], conf["spark.task.resource.gpu.amount"]) == ("2", "0.5")
    assert worker_gpu_conf(planned.gpus, script) == {
        "spark.worker.resource.gpu.amount": "2",
        "spark.worker.resource.gpu.discoveryScript": str(script),
    }


def test_worker_options_quote_paths_with_spaces():
    opts = java_options(
        {"spark.worker.resource.gpu.amount": "2", "spark.worker.resource.gpu.discoveryScript": "/a b/x.sh"}
    )
    assert opts == '-Dspark.worker.resource.gpu.amount=2 "-Dspark.worker.resource.gpu.discoveryScript=/a b/x.sh"'


def test_remote_passes_the_master_through_and_starts_nothing(tmp_path):
    config = compose_config("cluster=remote", "cluster.master=spark://127.0.0.1:7077", "cluster.workers=3")
    with cluster(config, tmp_path) as c:
        assert (c.master, c.pids, c.log_dir, c.slots) == ("spark://127.0.0.1:7077", (), None, 12)
        assert c.conf == {
            "spark.executor.cores": "4",
            "spark.executor.memory": "4g",
            "spark.executor.instances": "3",
            "spark.cores.max": "12",
            "spark.task.cpus": "1",
        }
    assert list(tmp_path.iterdir()) == []


def test_remote_without_master_is_refused(tmp_path):
    config = compose_config("cluster=remote", "cluster.master=spark://127.0.0.1:7077")
    config = dataclasses.replace(config, cluster=dataclasses.replace(config.cluster, master=None))
    with pytest.raises(ConfigError, match="cluster.master"):
        with cluster(config, tmp_path):
            pass


# ------------------------------------------------------------------------------------------ discovery script


def test_discovery_script_is_shipped_executable():
    assert os.access(SCRIPT, os.X_OK)
    assert SCRIPT.read_text().startswith("#!/usr/bin/env bash\n")


def test_discovery_script_prints_the_emulated_addresses():
    assert discover({cluster_module.EMULATE_ENV: "3"}) == {"name": "gpu", "addresses": ["0", "1", "2"]}


def test_discovery_script_without_gpus_prints_no_addresses(tmp_path):
    assert discover(path=bin_without_nvidia_smi(tmp_path)) == {"name": "gpu", "addresses": []}


def test_discovery_script_reads_nvidia_smi(tmp_path):
    path = bin_without_nvidia_smi(tmp_path)
    fake_nvidia_smi(Path(path), 2)
    assert discover(path=path) == {"name": "gpu", "addresses": ["0", "1"]}


def test_non_executable_packaged_script_is_copied_executable(tmp_path, monkeypatch):
    packaged = tmp_path / "pkg" / "discover_gpus.sh"
    packaged.parent.mkdir()
    shutil.copyfile(SCRIPT, packaged)
    packaged.chmod(0o644)
    monkeypatch.setattr(cluster_module, "DISCOVERY_SCRIPT", packaged)
    run_dir = tmp_path / "run"
    real = discovery_script(run_dir, GpuPlan("real", 1, 1, 1.0, 1.0))
    assert real == run_dir / "cluster" / "discover_gpus.sh" and os.access(real, os.X_OK)
    emulated = discovery_script(run_dir, GpuPlan("emulated", 2, 2, 1.0, 1.0))
    assert discover(script=emulated)["addresses"] == ["0", "1"]


# ------------------------------------------------------------------------------------------ stop_processes


def spawn_tree(shell: str, descendants: int) -> tuple[subprocess.Popen, dict[int, float]]:
    process = subprocess.Popen(["sh", "-c", shell], start_new_session=True)
    deadline = time.monotonic() + 10
    while len(found := tree([process.pid])) < 1 + descendants:
        if time.monotonic() > deadline:
            with suppress(ProcessLookupError):  # its own group, led by our unreaped child: nothing else's
                os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"the test tree did not come up: {found}")
        time.sleep(0.05)
    return process, found


def signals_sent(monkeypatch) -> list[tuple[int, int]]:
    """Every signal this process sends from now on (psutil sends through os.kill), signal 0 probes aside."""
    sent, kill = [], os.kill

    def recording(pid: int, sig: int) -> None:
        if sig:
            sent.append((pid, sig))
        kill(pid, sig)

    monkeypatch.setattr(os, "kill", recording)
    return sent


def waits(monkeypatch) -> list[float]:
    """The timeout of every wait for processes to exit from now on (stop_processes waits through psutil)."""
    asked, wait_procs = [], psutil.wait_procs

    def recording(processes, timeout=None, callback=None):
        asked.append(timeout)
        return wait_procs(processes, timeout=timeout, callback=callback)

    monkeypatch.setattr(psutil, "wait_procs", recording)
    return asked


@contextmanager
def killed_after(found: dict[int, float]) -> Iterator[None]:
    """SIGKILL to whatever of `found` a failing test leaves running."""
    try:
        yield
    finally:
        for pid in survivors(found):
            os.kill(pid, signal.SIGKILL)


def test_stop_processes_stops_the_process_and_its_children():
    process, found = spawn_tree("sleep 300 & sleep 301 & wait", descendants=2)
    with killed_after(found):
        stop_processes([process.pid], timeout=10)
        assert survivors(found) == []


def test_stop_processes_kills_what_ignores_sigterm_orphans_included(monkeypatch):
    # the root dies on SIGTERM; its child ignores SIGTERM and is orphaned: found anyway, then SIGKILLed
    process, found = spawn_tree("(trap '' TERM; exec sleep 300) & exec sleep 301", descendants=1)
    [child] = [pid for pid in found if pid != process.pid]
    sent = signals_sent(monkeypatch)
    with killed_after(found):
        stop_processes([process.pid], timeout=1)
        assert survivors(found) == []
    assert [pid for pid, sig in sent if sig == signal.SIGKILL] == [child]


def test_stop_processes_ignores_processes_already_gone(monkeypatch):
    process = subprocess.Popen(["true"])
    handle = psutil.Process(process.pid)  # taken while it runs or is a zombie, as the launcher takes its own
    process.wait()
    sent, asked = signals_sent(monkeypatch), waits(monkeypatch)
    stop_processes([process.pid, handle], timeout=5)
    assert sent == [] and set(asked) <= {0.0}  # nothing signalled, nothing waited for


def test_stop_processes_reaps_a_zombie_child_without_signalling_it(monkeypatch):
    process = subprocess.Popen(["true"])
    handle = psutil.Process(process.pid)
    deadline = time.monotonic() + 10
    while handle.status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    sent = signals_sent(monkeypatch)
    stop_processes([handle], timeout=5)
    assert sent == []
    with pytest.raises(ChildProcessError):  # reaped: no zombie left behind
        os.waitpid(process.pid, os.WNOHANG)


def test_stop_processes_counts_a_zombie_nobody_reaps_as_gone(monkeypatch):
    # the shell's child exits and becomes a zombie: `exec sleep` replaced the shell, and sleep never reaps
    process = subprocess.Popen(["sh", "-c", "true & exec sleep 300"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not any(child.status() == psutil.STATUS_ZOMBIE for child in psutil.Process(process.pid).children()):
            assert time.monotonic() < deadline, "the zombie did not appear"
            time.sleep(0.05)
        sent = signals_sent(monkeypatch)
        stop_processes([process.pid], timeout=10)
        assert process.poll() is not None
        assert sent == [(process.pid, signal.SIGTERM)]  # the zombie was not waited for until SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_stop_processes_never_signals_a_process_that_took_over_the_pid(monkeypatch):
    bystander = subprocess.Popen(["sleep", "300"])
    try:
        stale = psutil.Process(bystander.pid)
        # psutil knows a process by PID and creation time (its private `_ident`): a handle created 100 s
        # before the process now holding its PID is what a handle looks like after its PID was reused
        pid, created = stale._ident
        stale._ident = (pid, created - 100.0)
        sent, asked = signals_sent(monkeypatch), waits(monkeypatch)
        stop_processes([stale], timeout=5)
        assert sent == [] and set(asked) <= {0.0} and bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


# ------------------------------------------------------------------------------------------ standalone (slow)

SCENARIO = textwrap.dedent(
    """
    import json, logging, os, pickle, sys, time
    from pathlib import Path
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    os.environ["PYSPARK_PYTHON"] = sys.executable
    from pipeline.spark.cluster import cluster
    config_file, scenario, out = sys.argv[1:4]
    config = pickle.loads(Path(config_file).read_bytes())
    run_dir = Path(out).parent / "run"

    def write(record):
        Path(out).write_text(json.dumps(record))

    def session(c):
        from pyspark.sql import SparkSession
        builder = SparkSession.builder.master(c.master)
        for key, value in {**c.conf, "spark.driver.host": "127.0.0.1", "spark.ui.enabled": "false",
                           "spark.ui.showConsoleProgress": "false"}.items():
            builder = builder.config(key, value)
        return builder.getOrCreate()

    def gpu_task(rows):
        from pyspark import TaskContext
        start = time.time()
        time.sleep(0.5)
        yield TaskContext.get().resources()["gpu"].addresses, start, time.time()

    with cluster(config, run_dir) as c:
        record = {"pids": list(c.pids), "log_dir": str(c.log_dir), "master": c.master}
        write(record)
        if scenario == "raise":
            raise RuntimeError("boom in the body")
        if scenario == "sleep":
            print(json.dumps(record), flush=True)
            time.sleep(600)
        spark = session(c)
        record["count"] = spark.range(10).count()
        record["gpu_tasks"] = spark.sparkContext.parallelize(range(8), 8).mapPartitions(gpu_task).collect()
        record["registered"] = json.loads(Path(c.log_dir, "cluster.json").read_text())
        from urllib.request import build_opener, ProxyHandler
        state = build_opener(ProxyHandler({})).open(record["registered"]["master_webui"] + "json/", timeout=5)
        record["master_state"] = json.load(state)
        write(record)
        # leave the context with the application still running: the executors must go with the workers
    record["after"] = json.loads(Path(record["log_dir"], "cluster.json").read_text())
    write(record)
    os._exit(0)  # the driver's master is gone; skip its shutdown
    """
)


def standalone_scenario(tmp_path: Path, scenario: str, *overrides: str) -> tuple[Path, Path, list[str]]:
    config = compose_config(
        "cluster=standalone",
        "cluster.workers=1",
        "cluster.worker_memory=1g",
        "cluster.executor_memory=512m",
        *overrides,
    )
    config_file, script, out = tmp_path / "config.pkl", tmp_path / "scenario.py", tmp_path / "result.json"
    config_file.write_bytes(pickle.dumps(config))
    script.write_text(SCENARIO)
    return script, out, [sys.executable, str(script), str(config_file), scenario, str(out)]


def read(out: Path) -> dict:
    return json.loads(out.read_text()) if out.exists() else {}


def cleanup(out: Path) -> None:
    """Whatever a failed scenario left behind."""
    stop_processes(read(out).get("pids", []), timeout=5)


def max_concurrency(intervals) -> int:
    return max(sum(1 for s, e in intervals if s <= start < e) for start, _ in intervals)


@pytest.fixture(scope="module")
def emulated_standalone_run(tmp_path_factory) -> dict:
    """One standalone run: master + 1 worker of 4 cores with 2 emulated GPUs, a session, two jobs; the
    cluster context is left while the application is still running. The process tree under the cluster's
    PIDs is sampled from /proc while it runs, so the executor and its Python workers are in it."""
    tmp_path = tmp_path_factory.mktemp("standalone")
    _, out, command = standalone_scenario(tmp_path, "job", "cluster.worker_cores=4", "gpu.emulate=2")
    log = tmp_path / "output.log"
    with open(log, "w") as output:  # a file, not a pipe: nobody reads a pipe while the run goes on
        process = subprocess.Popen(command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
    processes: dict[int, int] = {}
    cmdlines: dict[int, str] = {}
    deadline = time.monotonic() + 600
    try:
        while process.poll() is None:
            if time.monotonic() > deadline:
                pytest.fail(f"the standalone scenario did not end in 600 s:\n{log.read_text(errors='replace')[-4000:]}")
            try:
                pids = read(out).get("pids", [])
            except ValueError:  # being written
                pids = []
            for pid, start in tree(pids).items():
                processes[pid] = start
                cmdlines.setdefault(pid, cmdline(pid))
            time.sleep(0.5)
        output = log.read_text(errors="replace")
        assert process.returncode == 0, output[-4000:]
        return {**read(out), "tree": processes, "cmdlines": cmdlines, "output": output}
    finally:
        if process.poll() is None:
            process.kill()
        cleanup(out)


@pytest.mark.slow
def test_standalone_worker_registers_and_a_job_runs(emulated_standalone_run):
    run = emulated_standalone_run
    assert run["master"].startswith("spark://127.0.0.1:") and len(run["pids"]) == 2
    workers = run["master_state"]["workers"]
    assert [(w["state"], w["cores"]) for w in workers] == [("ALIVE", 4)]
    assert workers[0]["resources"]["gpu"]["addresses"] == ["0", "1"]
    assert run["count"] == 10
    timings = run["after"]["timings_s"]
    assert {"master_up", "workers_registered", "stop"} <= set(timings), timings


@pytest.mark.slow
def test_standalone_tasks_get_emulated_gpus_two_at_a_time(emulated_standalone_run):
    tasks = emulated_standalone_run["gpu_tasks"]
    assert len(tasks) == 8
    assert all(len(addresses) == 1 and addresses[0] in ("0", "1") for addresses, _, _ in tasks)
    assert max_concurrency([(start, end) for _, start, end in tasks]) == 2
    # tasks running at the same time hold different addresses
    for addresses, start, end in tasks:
        overlapping = [a for a, s, e in tasks if s <= start < e]
        assert len({a[0] for a in overlapping}) == len(overlapping)


@pytest.mark.slow
def test_standalone_leaves_no_process_behind_executors_included(emulated_standalone_run):
    run = emulated_standalone_run
    assert any("CoarseGrainedExecutorBackend" in line for line in run["cmdlines"].values()), run["cmdlines"]
    assert survivors(run["tree"]) == []


@pytest.mark.slow
def test_standalone_is_stopped_when_the_body_raises(tmp_path):
    _, out, command = standalone_scenario(tmp_path, "raise", "cluster.worker_cores=1")
    try:
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert result.returncode == 1 and "boom in the body" in result.stderr, result.stderr[-4000:]
        record = read(out)
        assert len(record["pids"]) == 2
        assert all(gone(pid) for pid in record["pids"])
        assert "stop" in json.loads(Path(record["log_dir"], "cluster.json").read_text())["timings_s"]
    finally:
        cleanup(out)


@pytest.mark.slow
def test_standalone_is_stopped_when_the_python_process_gets_sigterm(tmp_path):
    _, out, command = standalone_scenario(tmp_path, "sleep", "cluster.worker_cores=1")
    log = tmp_path / "stderr.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        line = process.stdout.readline()  # the scenario prints one line once the cluster is up
        assert line, log.read_text()[-4000:]
        processes = tree(json.loads(line)["pids"])
        assert len(processes) >= 2
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 128 + signal.SIGTERM
        assert survivors(processes) == []
    finally:
        if process.poll() is None:
            process.kill()
        cleanup(out)


def test_standalone_start_timeout_names_the_logs_and_stops_the_master(tmp_path, monkeypatch):
    monkeypatch.setattr(standalone_module, "REGISTER_TIMEOUT", 0.5)
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(ClusterError, match="timed out") as failure:
        with cluster(compose_config("cluster=standalone", "cluster.worker_memory=1g"), tmp_path):
            pass
    assert "master.log" in str(failure.value)
    record = json.loads((tmp_path / "cluster" / "cluster.json").read_text())
    assert list(record["pids"]) == ["master"] and gone(record["pids"]["master"])
    assert signal.getsignal(signal.SIGTERM) is handler  # the cluster's SIGTERM handler is gone again


@pytest.mark.slow
def test_standalone_worker_that_cannot_discover_its_gpus_fails_fast_with_its_log(tmp_path, monkeypatch):
    broken = tmp_path / "broken.sh"
    broken.write_text("echo 'no GPUs here' >&2\nexit 3\n")
    monkeypatch.setattr(cluster_module, "DISCOVERY_SCRIPT", broken)
    config = compose_config("cluster=standalone", "cluster.worker_memory=1g", "cluster.worker_cores=1", "gpu.emulate=1")
    started = time.monotonic()
    with pytest.raises(ClusterError, match="worker-1 exited") as failure:
        with cluster(config, tmp_path / "run"):
            pass
    assert "no GPUs here" in str(failure.value)
    assert time.monotonic() - started < standalone_module.REGISTER_TIMEOUT
    pids = json.loads((tmp_path / "run" / "cluster" / "cluster.json").read_text())["pids"]
    assert all(gone(pid) for pid in pids.values())
