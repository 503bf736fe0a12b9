"""topology=model_server: its config and validation, the server's instances, statistics and decoupling check
(fast, no server), and whole runs against a real PyTriton server (slow: they need the `[server]` extra, and
the server's own environment, made once on first use)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import site
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError

from pipeline.config.schema import ModelServerConfig, Topology
from pipeline.config.validate import ConfigError, validate
from pipeline.run import build_inference
from pipeline.runtime.processes import tree_cpu_s
from pipeline.serving import environment, launcher
from pipeline.serving.launcher import Instance, delta, instances
from pipeline.spark.evidence import check
from pipeline.spark.plan import plan
from tests.helpers.cli import cli, result_of
from tests.helpers.config import compose_config
from tests.helpers.locking import ports_taken
from tests.helpers.processes import tree, wait_until_gone
from tests.helpers.results import write

SERVER = "topology=model_server"
HAS_CLIENT = all(importlib.util.find_spec(name) is not None for name in ("tritonclient", "grpc"))
needs_server = pytest.mark.skipif(not HAS_CLIENT, reason="needs the [server] extra: pip install -e '.[server]'")


# ------------------------------------------------------------------------------------------ config (fast)


def test_model_server_composes_with_its_own_schema():
    config = compose_config(SERVER)
    assert isinstance(config.topology, ModelServerConfig)
    assert config.topology.kind is Topology.model_server
    assert config.topology.grpc_port is None and config.topology.max_batch_size >= config.model.batch_size


@pytest.mark.parametrize("overrides", [[SERVER, "topology.predict_partitions=2"], ["topology.max_batch_size=64"]])
def test_keys_of_another_topology_fail_at_compose_time(overrides):
    with pytest.raises((ConfigCompositionException, ConfigKeyError)):
        compose_config(*overrides)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["model.batch_size=64", "topology.max_batch_size=32"], "topology.max_batch_size=32"),
        (["topology.instances=0"], "topology.instances=0"),
        (["topology.request_timeout_s=0"], "topology.request_timeout_s=0"),
        (["topology.grpc_port=70000"], "topology.grpc_port=70000"),
        (["preprocess.decoder=torchvision", "preprocess.decode_on=model_device"], "topology=model_server"),
    ],
)
def test_validate_rejects(overrides, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        validate(compose_config(SERVER, *overrides))


def test_a_port_in_use_fails_before_spark_starts():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port} is already in use"):
            validate(compose_config(SERVER, f"topology.grpc_port={port}"))


def test_a_missing_extra_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tritonclient" else real(name))
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[server\]'"):
        validate(compose_config(SERVER))


def test_a_server_environment_made_from_another_venv_is_not_reused(monkeypatch):
    """Its `.pth` names that venv's site-packages, gone with a deleted CI clone: its server would not import."""
    here = environment.name()
    monkeypatch.setattr(site, "getsitepackages", lambda: ["/elsewhere/.venv/lib/python3.11/site-packages"])
    assert environment.name() != here


def test_the_server_imports_no_pyarrow_which_its_numpy_would_refuse():
    """The server's environment has NumPy < 2 (`pipeline.serving.environment`), under which pyarrow will not import."""
    script = (
        "import sys, pipeline.serving.server; print(sorted(m for m in sys.modules if m.split('.')[0] == 'pyarrow'))"
    )
    finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert finished.stdout.strip() == "[]"


def test_a_server_killed_is_said_to_be_killed_even_when_asked_at_once():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    process.send_signal(signal.SIGKILL)
    assert launcher._exit_of(process)["reason"] == "killed by signal 9"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], [Instance(0, "cpu", None)]),
        (
            ["cluster=local_cluster", "gpu.emulate=2", "cluster.worker_cores=4"],
            [Instance(0, "cpu", "emulated 0"), Instance(1, "cpu", "emulated 1")],
        ),
        (["topology.instances=2"], [Instance(0, "cpu", None), Instance(1, "cpu", None)]),
    ],
)
def test_one_instance_per_gpu_else_one(overrides, expected):
    config = compose_config(SERVER, *overrides)
    assert instances(config, plan(config)) == expected


def test_every_cpu_slot_runs_a_task_beside_the_gpus():
    # 2 emulated GPUs, 4 slots: fused would run 2 tasks at once (1 GPU each); the server's tasks share them
    config = compose_config(SERVER, "cluster=local_cluster", "gpu.emulate=2", "cluster.worker_cores=4")
    planned = plan(config)
    assert planned.gpus.task_amount == 0.5
    assert (planned.slots, planned.gpu_slots, planned.model_slots) == (4, 4, 4)
    fused = plan(compose_config("cluster=local_cluster", "gpu.emulate=2", "cluster.worker_cores=4"))
    assert fused.model_slots == 2


# ------------------------------------------------------------------------------------------ evidence (fast)


def stats(requests: int, images: int, sizes: dict[int, int], queue_ns: int, infer_ns: int) -> dict:
    """Triton's statistics JSON for the model, as the gRPC API returns it (numbers as strings)."""
    return {
        "inference_count": str(images),
        "execution_count": str(sum(sizes.values())),
        "inference_stats": {
            "success": {"count": str(requests)},
            "queue": {"count": str(requests), "ns": str(queue_ns)},
            "compute_infer": {"count": str(sum(sizes.values())), "ns": str(infer_ns)},
        },
        "batch_stats": [{"batch_size": str(s), "compute_infer": {"count": str(n)}} for s, n in sizes.items()],
    }


def test_delta_reports_the_batches_the_dynamic_batcher_formed():
    held = {"device_busy_s": 1.0, "device_wait_s": 0.0, "device_calls": 2}
    before = {**launcher._flat(stats(2, 64, {32: 2}, 1_000_000, 50_000_000)), "cpu_s": 3.0, **held}
    held = {"device_busy_s": 1.5, "device_wait_s": 0.25, "device_calls": 4}
    after = {**launcher._flat(stats(6, 192, {32: 2, 64: 2}, 9_000_000, 250_000_000)), "cpu_s": 3.64, **held}
    found = delta(before, after)
    assert (found["requests"], found["images"], found["batches"]) == (4, 128, 2)
    assert found["batch_sizes"] == {"64": 2} and found["mean_batch_size"] == 64
    assert found["queue_ms"] == pytest.approx(8.0) and found["queue_ms_per_request"] == pytest.approx(2.0)
    assert found["compute_ms_per_batch"] == pytest.approx(100.0)
    assert found["cpu_s"] == pytest.approx(0.64) and found["cpu_ms_per_image"] == pytest.approx(5.0)
    assert (found["device_busy_s"], found["device_wait_s"], found["device_calls"]) == (0.5, 0.25, 2)


def test_the_server_publishes_its_simulated_devices_totals(tmp_path):
    from pipeline.inference import accelerator
    from pipeline.serving.server import publish_usage

    publish_usage(tmp_path / "usage.json")
    usage = accelerator.usage()
    assert json.loads((tmp_path / "usage.json").read_text()) == {
        "busy_s": usage.busy_s,
        "wait_s": usage.wait_s,
        "calls": usage.calls,
    }


def test_the_server_cpu_counts_every_process_of_its_tree_and_skips_one_gone():
    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\ntime.sleep(60)"
    busy, gone = psutil.Popen([sys.executable, "-c", spin]), psutil.Popen(["true"])
    try:
        gone.wait()
        deadline = time.monotonic() + 20
        while sum(busy.cpu_times()[:2]) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tree_cpu_s([busy]) >= 0.3
        assert tree_cpu_s([busy, gone]) == pytest.approx(tree_cpu_s([busy]), abs=0.02)
    finally:
        busy.kill()
        busy.wait()


def served_stage(width: int, tasks: int = 8) -> dict:
    return {"stages": [{"step": "served", "max_concurrent": width, "num_tasks": tasks}], "model_task_gpus": []}


def test_a_run_that_did_not_decouple_fails_its_check():
    planned = plan(compose_config(SERVER, "cluster=local_cluster", "gpu.emulate=2", "cluster.worker_cores=4"))
    ok = check(served_stage(4), planned, Topology.model_server)
    assert ok["preprocessing_on_every_slot"] and ok["violation"] is None
    broken = check(served_stage(2), planned, Topology.model_server)
    assert not broken["preprocessing_on_every_slot"]
    assert "ran 2 tasks at once on 4 task slots" in broken["violation"]


def test_a_decoding_stage_of_fewer_tasks_than_slots_passes_when_it_ran_them_all_at_once():
    planned = plan(compose_config(SERVER, "cluster=local_cluster", "gpu.emulate=2", "cluster.worker_cores=4"))
    ok = check(served_stage(3, tasks=3), planned, Topology.model_server)
    assert ok["preprocessing_on_every_slot"] and ok["violation"] is None
    broken = check(served_stage(2, tasks=3), planned, Topology.model_server)
    assert "ran 2 tasks at once on 4 task slots (3 wanted)" in broken["violation"]


# ------------------------------------------------------------------------------------------ real server (slow)

SMALL = ["dataset.num_images=16", "dataset.images_per_file=8", "warmup=1", "repeats=1", "cluster.cores=2"]


def left_running(result: dict) -> list[int]:
    server = result["evidence"]["server"]
    return wait_until_gone(tree([server["pid"]]), 10)


@pytest.mark.slow
@needs_server
@pytest.mark.parametrize("udf", ["map_in_pandas", "predict_batch_udf"])
def test_model_server_run_agrees_with_the_reference_and_leaves_nothing(tmp_path, cache_dir, udf):
    run_dir = tmp_path / "run"
    # sink=parquet: verify reads back what the served pass wrote instead of serving it again. ResNet18: the served
    # path (a client per style, the server's batching and statistics) is what this proves, not the network
    overrides = [SERVER, f"udf={udf}", "model.arch=resnet18", "verify=true", "sink=parquet", *SMALL]
    overrides += [f"cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"]
    done = cli(tmp_path, *overrides)
    result = result_of(run_dir)
    assert result["status"] == "ok", (result.get("error"), done.stderr[-3000:])
    assert result["metrics"]["top1_agreement"] == 1.0 and result["metrics"]["num_predicted"] == 16
    server = result["evidence"]["server"]
    assert server["instances"] == [{"index": 0, "device": "cpu", "gpu": None}]
    assert server["last_pass"]["images"] == 16 and server["last_pass"]["batches"] >= 1
    checks = result["evidence"]["checks"]
    assert checks["preprocessing_on_every_slot"] and checks["server_answered_every_image"]
    assert result["tasks"]["steps"]["served"]["rows_out"] == 16
    assert (run_dir / "server" / "server.log").exists()
    assert not left_running(result)


@pytest.mark.slow
@needs_server
def test_a_served_simulated_device_reports_its_time_the_servers_cpu_and_the_round_trips(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    shape = ["cluster=local_cluster", "cluster.worker_cores=2", "gpu.emulate=1", "model=accelerator"]
    overrides = [SERVER, *shape, "device.images_per_s=400", *SMALL[:-1], f"cache_dir={cache_dir}"]
    done = cli(tmp_path, *overrides, f"hydra.run.dir={run_dir}")
    result = result_of(run_dir)
    assert result["status"] == "ok", (result.get("error"), done.stderr[-3000:])
    served = result["evidence"]["server"]["last_pass"]
    usage = result["evidence"]["simulated_device"]
    assert usage["measured_in"].startswith("the model server") and usage["images"] == 16
    # the instances held the device at least as long as its law says: 16 images at 400 img/s
    assert usage["model_calls"] == served["batches"] and usage["busy_s"] >= 16 / 400
    assert served["cpu_s"] > 0
    records = [record for record in result["tasks"]["records"] if record["step"] == "served"]
    assert sum(record["finish_s"] for record in records) >= usage["busy_s"]  # the tasks waited for the device
    assert all(record["prepare_s"] > 0 for record in records if record["rows_in"])


@pytest.mark.slow
@needs_server
def test_a_server_killed_mid_run_fails_the_run_naming_the_server(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    ready = run_dir / "server" / "ready.json"
    killed: dict[str, int] = {}

    def kill_when_ready() -> None:
        deadline = time.monotonic() + 600
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        pid = json.loads(ready.read_text())["pid"]
        killed.update(tree([pid]))
        killed["root"] = pid
        os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_ready, daemon=True)
    killer.start()
    cli(tmp_path, SERVER, *SMALL, f"cache_dir={cache_dir}", f"hydra.run.dir={run_dir}", timeout=900)
    killer.join(5)
    result = result_of(run_dir)
    assert result["status"] == "failed"
    assert result["error"]["type"] == "ServerDied", result["error"]
    assert f"the model server (pid {killed['root']}" in result["error"]["message"]
    assert "killed by signal 9" in result["error"]["message"]
    root = killed.pop("root")
    assert not wait_until_gone(killed, 20), f"left running after the server {root} was killed"


PYTRITON_STARTUP_TIMEOUT_S = 120  # how long PyTriton's process waits for a Triton that already exited on a taken port


@pytest.mark.slow
@needs_server
def test_a_server_whose_probed_port_was_taken_is_started_again_on_other_ports(tmp_path, monkeypatch):
    config = compose_config(SERVER, "model=null_model", "cluster.cores=1")
    probe = launcher.free_port
    with ports_taken(1) as taken:
        handed = iter(taken)  # the first probe (the gRPC port) returns a port another process then bound
        monkeypatch.setattr(launcher, "free_port", lambda: next(handed, None) or probe())
        with launcher.model_server(config, plan(config), tmp_path, build_inference(config, None)) as server:
            running = tree([server.process.pid])
            (first,) = server.retried
            assert (
                first["why"]
                == f"the GRPC port 127.0.0.1:{taken[0]} was taken by another process after it was probed free"
            )
            assert first["log"] == str(tmp_path / "server" / "server.log")
            assert f"Socket '127.0.0.1:{taken[0]}' already in use" in Path(first["log"]).read_text()
            assert server.log_file == tmp_path / "server" / "server.2.log"
            assert first["failed_s"] < PYTRITON_STARTUP_TIMEOUT_S  # stopped when Triton said so, not waited out
            assert not set(server.ready["ports"].values()) & set(taken)
            server.mark()  # it answers on the ports it bound
    assert not psutil.pid_exists(first["pid"]), "the first attempt's server was left running"
    assert not wait_until_gone(running, 20), "left running after the block"


def _served_frame(tmp_path: Path, *runs: tuple[str, float, dict]) -> pd.DataFrame:
    """The job table of ok simulated-device runs, each (topology, images/s, other fields)."""
    from reports.aggregate import find_jobs, job_frame

    for number, (topology, rate, other) in enumerate(runs):
        write(tmp_path / str(number), rate, model="accelerator", topology=topology, **other)
    return job_frame(find_jobs([tmp_path]))


def test_the_report_sets_the_best_server_run_against_the_best_in_process_one(tmp_path):
    from reports.server import ratios

    frame = _served_frame(
        tmp_path,
        ("fused", 10.0, {}),
        ("stage_level", 12.0, {}),
        ("two_stage", 8.0, {}),
        ("model_server", 24.0, {}),
        ("model_server", 99.0, {"status": "failed"}),
    )
    [row] = ratios(frame)
    assert (row["server"], row["in_process"], row["ratio"]) == (frame.loc[3, "run_label"], frame.loc[1, "label"], 2.0)
    assert row["work"] == "accelerator · 64 jpeg images (synthetic) · pil decoder · on here"


@pytest.mark.parametrize("other", [{"hostname": "else"}, {"image_format": "raw"}, {"udf": "map_in_arrow"}], ids=str)
def test_a_server_run_is_never_set_against_an_in_process_run_of_other_work_or_variant(tmp_path, other):
    from reports.server import ratios

    assert ratios(_served_frame(tmp_path, ("fused", 10.0, other), ("model_server", 24.0, {}))) == []
