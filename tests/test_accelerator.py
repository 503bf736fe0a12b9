"""The simulated accelerator (`model=accelerator`): it holds a GPU slot by the law latency + n / rate, two tasks
on one emulated GPU queue, it spends its host CPU for real, every UDF style and topology accounts for every
image as the null model does, and every result and report calls it simulated."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pipeline.config.schema import UdfStyle
from pipeline.engines.spark import measure
from pipeline.inference import accelerator
from pipeline.inference.accelerator import device_locks, hold, simulated_predictions
from pipeline.inference.model import ModelSpec, SimulatedDevice, load_model, pick_device
from pipeline.inference.preprocess import Preprocessing
from pipeline.inference.steps import Inference
from pipeline.projection.simulated import overrides
from pipeline.provenance import environment, variant_of
from pipeline.results import as_result, summary
from tests.helpers.config import compose_config

STYLES = [style.value for style in UdfStyle]
CROPS = torch.zeros((8, 3, 224, 224), dtype=torch.uint8)


@pytest.fixture
def lock_dir():
    with device_locks() as path:
        yield path
    assert not Path(path).exists()  # removed after the run


def _device(lock_dir: str, rate: float = 40.0, latency: float = 0.05, host: float = 0.0) -> SimulatedDevice:
    return SimulatedDevice("test", rate, latency, host, lock_dir)


def held_sleeps(monkeypatch, meet: threading.Barrier | None = None) -> list[tuple[float, float, float]]:
    """(asked, start, end) of every sleep of the simulated device from now on: its holds. With `meet`, each
    sleep first waits there (at most 30 s) for the other calls to be inside their holds too. Only the device
    module's `time` is replaced: other threads of the process (py4j's) sleep as before."""
    sleeps, sleep = [], time.sleep

    def recording(seconds: float) -> None:
        if meet is not None:
            meet.wait(timeout=30)
        start = time.perf_counter()
        sleep(seconds)
        sleeps.append((seconds, start, time.perf_counter()))

    clock = SimpleNamespace(**{name: getattr(time, name) for name in dir(time) if not name.startswith("_")})
    clock.sleep = recording
    monkeypatch.setattr(accelerator, "time", clock)
    return sleeps


def test_on_a_machine_without_the_runs_lock_directory_the_locks_are_in_the_working_directory(tmp_path, monkeypatch):
    """An executor on another machine sees nothing of the driver's temporary directory: its GPUs are its own."""
    monkeypatch.chdir(tmp_path)
    accelerator.hold(_device(str(tmp_path / "the-drivers-lock-dir"), latency=0.0), CROPS[:1], ["0"])
    assert [path.name for path in tmp_path.iterdir()] == [accelerator.lock_path(_device("x"), ["0"]).name]


def test_a_call_holds_the_device_for_latency_plus_images_over_rate(lock_dir, monkeypatch):
    device = _device(lock_dir)  # 0.05 + 8 / 40 = 0.25 s
    sleeps = held_sleeps(monkeypatch)
    before = accelerator.usage()
    hold(device, CROPS, ["0"])
    after = accelerator.usage()
    [(asked, _, _)] = sleeps
    assert asked == pytest.approx(device.call_seconds(8))
    assert after.calls - before.calls == 1
    assert after.busy_s - before.busy_s >= device.call_seconds(8)  # a sleep never ends early


def test_the_host_cost_is_spent_on_this_threads_cpu(lock_dir):
    device = _device(lock_dir, rate=1e6, latency=0.0, host=0.02)  # 8 x 20 ms of CPU, a negligible device
    started = time.thread_time()
    hold(device, CROPS, ["0"])
    assert time.thread_time() - started >= 8 * 0.02


def _both_held(device: SimulatedDevice, addresses: list[str]) -> None:
    """Two concurrent calls on `addresses`' GPUs. Two threads stand for two tasks: each call opens the lock
    file anew, and flock excludes open file descriptions, even in one process."""
    with ThreadPoolExecutor(len(addresses)) as pool:
        for call in [pool.submit(hold, device, CROPS, [address]) for address in addresses]:
            call.result(timeout=60)


def test_two_tasks_on_one_gpu_queue(lock_dir, monkeypatch):
    sleeps = held_sleeps(monkeypatch)
    _both_held(_device(lock_dir, rate=40.0, latency=0.0), ["0", "0"])
    (_, _, first_end), (_, second_start, _) = sorted(sleeps, key=lambda sleep: sleep[1])
    assert second_start >= first_end  # one held the GPU only once the other let go


def test_two_tasks_on_two_gpus_hold_them_at_once(lock_dir, monkeypatch):
    meet = threading.Barrier(2)  # broken (and the calls failed) unless both are inside their holds at once
    sleeps = held_sleeps(monkeypatch, meet)
    _both_held(_device(lock_dir, rate=40.0, latency=0.0), ["0", "1"])
    assert len(sleeps) == 2 and not meet.broken


def test_predictions_are_the_null_models_and_the_task_device_names_its_gpu(lock_dir):
    spec = ModelSpec(name="accelerator", device=_device(lock_dir, rate=1e6, latency=0.0))
    predicted = simulated_predictions(spec, CROPS, pick_device("emulated", ["1"], simulated=True))
    assert (predicted.top1 == 0).all() and (predicted.prob == 1.0).all() and predicted.top1.shape == (8,)
    assert pick_device("emulated", ["1"], simulated=True) == "simulated:1"
    assert pick_device("emulated", [], simulated=True) == "simulated"
    assert [path.name.rsplit("-", 1)[-1] for path in Path(lock_dir).iterdir()] == ["1.lock"]


def test_the_original_s_model_built_per_batch_on_a_simulated_device_is_built_on_the_cpu(lock_dir):
    """+original=standard_4gpu model=accelerator: the scalar UDF rebuilds the model on the task's device string."""
    spec = ModelSpec(name="accelerator", device=_device(lock_dir, rate=1e6, latency=0.0))
    model = load_model(spec, pick_device("emulated", ["1"], simulated=True), rebuild=True)
    assert next(model.buffers()).device.type == "cpu"


def _inference(lock_dir: str, rate: float = 400.0) -> Inference:
    spec = ModelSpec(name="accelerator", device=SimulatedDevice("test", rate, 0.0, 0.0, lock_dir))
    return Inference(preprocessing=Preprocessing(), model=spec, batch_size=4)


CASES = [(style, "fused") for style in STYLES] + [("map_in_pandas", "split"), ("map_in_pandas", "two_stage")]


@pytest.mark.parametrize(("style", "topology"), CASES)
def test_every_style_and_topology_accounts_for_every_image_as_the_null_model_does(
    spark, tmp_path, tiny_dataset, lock_dir, style, topology
):
    overrides_ = [f"udf={style}", f"topology={topology}", "warmup=0", "repeats=1", "verify=true"]
    if topology == "two_stage":
        overrides_.append(f"topology.intermediate_path={tmp_path / 'crops'}")
    simulated_inference = _inference(lock_dir)
    null_inference = replace(simulated_inference, model=ModelSpec(name="null_model"))
    config = compose_config(*overrides_)
    simulated = measure(spark, config, tiny_dataset, simulated_inference, tmp_path, predict_slots=2)
    null = measure(spark, config, tiny_dataset, null_inference, tmp_path, predict_slots=2)
    ran, baseline = simulated.timed[0], null.timed[0]
    assert (ran.read, ran.predicted, ran.bad) == (baseline.read, baseline.predicted, baseline.bad)
    assert (ran.read, ran.predicted) == (tiny_dataset.num_images, tiny_dataset.num_images)
    assert ran.tasks["steps"] == baseline.tasks["steps"]
    got = simulated.predictions.sort_values("id").reset_index(drop=True)
    expected = null.predictions.sort_values("id").reset_index(drop=True)
    assert got.equals(expected)
    model_tasks = [r for r in ran.tasks["records"] if r["step"] in ("fused", "predict")]
    assert all(r["device"] == "simulated" for r in model_tasks)  # local[2]: no GPU addresses, one device
    calls = sum(r["device_calls"] for r in model_tasks)
    held = sum(r["device_busy_s"] for r in model_tasks)
    assert calls >= tiny_dataset.num_images // 4  # batches of at most 4
    assert held >= tiny_dataset.num_images / 400.0  # the law's lower bound: every image on the device


def test_a_result_names_the_device_simulated_and_records_the_override(tmp_path):
    config = compose_config("model=accelerator", "device=h100_bf16", "device.images_per_s=200")
    assert overrides(config.device) == {"images_per_s": {"profile": 12422.0, "run": 200.0}}
    variant = variant_of(config)
    assert (variant.model, variant.device, variant.weights) == ("accelerator", "simulated h100_bf16 200 img/s", "none")
    env = environment(config)
    assert env["device"]["simulated"] and env["device"]["kind"] == "ours"
    record = {"status": "ok", "variant": variant.__dict__, "env": env, "run_dir": str(tmp_path), "config": {}}
    shown = summary(as_result(record))
    assert "device=simulated h100_bf16 200 img/s" in shown and "no GPU ran" in shown
    assert "overridden: images_per_s" in shown


def test_a_profile_run_as_written_records_no_override():
    assert overrides(compose_config("model=accelerator", "device=l4").device) == {}


@pytest.mark.slow
def test_a_run_and_its_report_say_simulated_everywhere(tmp_path, cache_dir):
    from reports.build import build
    from tests.helpers.cli import cli

    run_dir = tmp_path / "run"
    done = cli(
        tmp_path,
        "model=accelerator",
        "device=t4_fp32",
        "cluster=local_cluster",
        "cluster.worker_cores=2",
        "gpu.emulate=2",
        "dataset.num_images=16",
        "model.batch_size=4",
        "warmup=0",
        "repeats=1",
        f"hydra.run.dir={run_dir}",
        f"cache_dir={cache_dir}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "device=simulated t4_fp32 380 img/s" in done.stdout
    result = json.loads((run_dir / "result.json").read_text())
    usage = result["evidence"]["simulated_device"]
    assert usage["devices"] == 2 and usage["images"] == 16 and usage["law_ratio"] >= 1.0
    addresses = {r["device"] for r in result["tasks"]["records"] if r["step"] == "fused"}
    assert addresses <= {"simulated:0", "simulated:1"}
    _, html = build([run_dir], tmp_path)
    text = Path(html).read_text()
    assert "Simulated devices in 1 of 1 jobs" in text and "simulated t4_fp32 380 img/s" in text


def _simulated_result(run_dir: Path, throughput: float, *overrides_: str, served: dict | None = None) -> None:
    """A result.json of an ok simulated-device run as the job writes it, with a measured throughput; `served`:
    a model server's last pass (`evidence.server.last_pass`), its tasks waiting 0.2 s for it."""
    from pipeline.provenance import config_record, new_result
    from pipeline.results import write_result

    config = compose_config("model=accelerator", "cluster=local_cluster", "gpu.emulate=2", *overrides_)
    result = new_result(config, run_dir)
    result.status, result.metrics.throughput_images_per_s = "ok", throughput
    result.config, result.env["cpu_count"] = config_record(config), 2
    result.evidence["simulated_device"] = {"busy_fraction": 0.9}
    if served:
        result.evidence["server"] = {"last_pass": served}
        result.tasks = {"records": [{"step": "served", "finish_s": 0.2}]}
    run_dir.mkdir(parents=True)
    write_result(run_dir, result)


def test_the_check_sets_each_simulated_run_against_the_bottleneck_models_prediction(tmp_path):
    from pipeline.projection.bottleneck import device_of, predict, shape_of
    from pipeline.projection.rates import measured_rates
    from pipeline.provenance import config_record
    from reports import bottleneck_check

    _simulated_result(tmp_path / "0", 10.0, "device.images_per_s=20")  # GPU-bound: 2 devices at 20 img/s
    _simulated_result(tmp_path / "1", 1.0, "device.images_per_s=2000", "topology=split")
    (tmp_path / "2").mkdir()  # a job without a result is no check
    _simulated_result(tmp_path / "3", 5.0, "topology=model_server")
    found = bottleneck_check.checks([tmp_path])
    assert [(check.topology, check.images_per_s, check.gpus) for check in found] == [
        ("fused", 20.0, 2),
        ("split", 2000.0, 2),
        ("model_server", 3000.0, 2),
    ]
    config = config_record(
        compose_config("model=accelerator", "cluster=local_cluster", "gpu.emulate=2", "device.images_per_s=20")
    )
    topology, shape, workload = shape_of(config, 2)
    expected = predict(topology, measured_rates([tmp_path]), device_of(config), shape, workload).images_per_s
    assert found[0].predicted == pytest.approx(expected) and found[0].ratio == pytest.approx(expected / 10.0)
    assert found[0].measured_busy == 0.9 and found[0].predicted_bound == "gpu"
    lines = bottleneck_check.summary([tmp_path])
    assert "simulated t4_fp16 20 img/s" in "\n".join(lines) and lines[-1].startswith(
        f"{bottleneck_check.spread(found)['hits']} of 3 runs"
    )
    assert bottleneck_check.summary([tmp_path / "2"]) == []


def test_with_a_rates_file_every_run_is_predicted_from_its_rates_not_the_checked_runs(tmp_path):
    from pipeline.projection.bottleneck import device_of, predict, shape_of
    from pipeline.projection.calibrate import load, write
    from reports import bottleneck_check
    from tests.helpers.advice import CALIBRATE_RUNS

    rates_file = write([CALIBRATE_RUNS], tmp_path / "rates.json")
    _simulated_result(tmp_path / "runs" / "0", 10.0, "device.images_per_s=20")
    _simulated_result(tmp_path / "runs" / "1", 5.0, "topology=model_server")
    found = bottleneck_check.checks([tmp_path / "runs"], load(rates_file))
    for check in found:
        config = json.loads((Path(check.job_dir) / "result.json").read_text())["config"]
        topology, shape, workload = shape_of(config, 2)
        expected = predict(topology, load(rates_file).rates, device_of(config), shape, workload).images_per_s
        assert check.predicted == pytest.approx(expected) and check.fitted_on_checked == 0
    assert found[0].predicted != pytest.approx(bottleneck_check.checks([tmp_path / "runs"])[0].predicted)


def test_a_calibrations_own_runs_are_checked_from_the_rates_file_it_wrote(tmp_path):
    from pipeline.projection.calibrate import RATES_FILE, write
    from reports import bottleneck_check
    from tests.helpers.advice import CALIBRATE_RUNS

    _simulated_result(tmp_path / "0", 10.0, "device.images_per_s=20")
    write([CALIBRATE_RUNS], tmp_path / RATES_FILE)
    lines = bottleneck_check.summary([tmp_path])
    assert f"rates from {tmp_path / RATES_FILE}" in lines[0]
    assert lines == bottleneck_check.summary([tmp_path], tmp_path / RATES_FILE)


def test_the_findings_page_checks_the_kept_runs_again_from_a_kept_rates_file_naming_each_rates_source(tmp_path):
    from pipeline.projection.calibrate import RATES_FILE, write
    from reports import findings
    from tests.helpers.advice import CALIBRATE_RUNS

    _simulated_result(tmp_path / "0", 10.0, "device.images_per_s=20")
    alone = findings.bottleneck_table([], None, [tmp_path])
    write([CALIBRATE_RUNS], tmp_path / RATES_FILE)
    both = "\n".join(findings.bottleneck_table([], None, [tmp_path]))
    assert both.startswith("\n".join(alone)) and both.count("| fused | simulated t4_fp16 20 img/s |") == 2
    assert f"Rates from the kept `{RATES_FILE}` of a `sweep=calibrate`" in both
    assert "- preprocess_s = " in both and "measured: no-model fused runs" in both


def test_a_rates_file_of_another_decoder_is_refused_naming_both(tmp_path):
    from pipeline.projection.calibrate import RatesFileError
    from reports import bottleneck_check
    from tests.helpers.advice import calibrated

    _simulated_result(tmp_path / "runs" / "0", 10.0, "preprocess.decoder=torchvision")
    with pytest.raises(RatesFileError, match="decoded by pil, but .*ran jpeg decoded by torchvision"):
        bottleneck_check.checks([tmp_path / "runs"], calibrated())


def test_the_check_command_prints_the_table_or_names_a_bad_rates_file(tmp_path, capsys):
    from reports import bottleneck_check

    _simulated_result(tmp_path / "0", 10.0, "device.images_per_s=20")
    assert bottleneck_check.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (
        "simulated t4_fp16 20 img/s" in out
        and "rates from the other checked runs" in out
        and " of 1 runs within" in out
    )
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SystemExit) as exited:
        bottleneck_check.main([str(tmp_path), "--rates", str(tmp_path / "bad.json")])
    assert exited.value.code == 2 and "key 'format' must be" in capsys.readouterr().err


def test_a_simulated_run_without_gpus_is_left_out_of_the_check(tmp_path):
    from reports import bottleneck_check

    _simulated_result(tmp_path / "0", 10.0, "device.images_per_s=20")
    _simulated_result(tmp_path / "1", 50.0, "topology=model_server", "gpu.emulate=0", "cluster=local")
    assert [check.job_dir for check in bottleneck_check.checks([tmp_path])] == [str(tmp_path / "0")]


def test_a_model_server_run_is_checked_against_rates_fitted_on_the_other_runs_only(tmp_path):
    from pipeline.projection.bottleneck import device_of, predict, shape_of
    from pipeline.projection.rates import measured_rates
    from reports import bottleneck_check

    for number, cpu_s in enumerate((0.05, 0.5)):  # server CPU per image 0.8 ms and 7.8 ms
        served = {"requests": 4, "images": 64, "cpu_s": cpu_s, "queue_ms": 4.0, "device_wait_s": 0.0}
        _simulated_result(tmp_path / str(number), 5.0, "topology=model_server", served=served)
    _simulated_result(tmp_path / "2", 10.0)  # fused: no server rates in its prediction
    found = bottleneck_check.checks([tmp_path])
    config = json.loads((tmp_path / "0" / "result.json").read_text())["config"]
    topology, shape, workload = shape_of(config, 2)
    alone = measured_rates([tmp_path], leave_out=[tmp_path / "0"])
    assert alone.serve_cpu_s_per_image != measured_rates([tmp_path]).serve_cpu_s_per_image
    expected = predict(topology, alone, device_of(config), shape, workload).images_per_s
    assert found[0].predicted == pytest.approx(expected)
    rows = bottleneck_check.table(found)
    assert [row[-1] for row in rows[1:]] == ["request_s, serve_cpu_s_per_image (1)"] * 2 + ["–"]


def test_a_served_runs_device_time_is_read_from_the_server_not_the_tasks():
    from pipeline.engines.base import Pass
    from pipeline.projection.simulated import device_usage
    from pipeline.spark.plan import plan

    config = compose_config("model=accelerator", "topology=model_server", "cluster=local_cluster", "gpu.emulate=2")
    served_tasks = {"records": [{"step": "served", "rows_out": 64, "device_calls": 0, "start": 0.0, "end": 1.0}]}
    last = Pass({"predict": 2.0}, 64, 64, [], served_tasks)
    held = {"device_busy_s": 0.8, "device_wait_s": 0.1, "device_calls": 4}
    server = {"last_pass": {"compute_ms": 1200.0, "queue_ms": 150.0, "batches": 4, "images": 64, **held}}
    usage = device_usage(config, plan(config), last, server)
    assert (usage["busy_s"], usage["wait_s"], usage["images"], usage["model_calls"]) == (0.8, 0.1, 64, 4)
    assert usage["busy_fraction"] == pytest.approx(0.8 / (2.0 * 2)) and "model server" in usage["measured_in"]
    in_tasks = device_usage(config, plan(config), last)
    assert in_tasks["images"] == 0 and in_tasks["measured_in"] == "the tasks' model calls"
