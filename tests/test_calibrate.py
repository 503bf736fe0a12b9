"""sweep=calibrate and its rates file (pipeline.projection.calibrate): every figure measured on the cluster the
runs ran on says which runs gave it; one no run could give says why it is assumed."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest

from pipeline.config.schema import ConfigError
from pipeline.config.validate import validate
from pipeline.projection.bottleneck import JPEG_BYTES
from pipeline.projection.calibrate import FORMAT, RatesFileError, _overrides, calibration, load, write
from pipeline.projection.rates import main as rates_main
from pipeline.runtime.process_cpu import DRIVER, DRIVER_JVM, PYTHON_WORKERS
from tests.helpers.advice import CALIBRATE_RUNS, calibrated
from tests.helpers.cli import checkout_env, cli
from tests.helpers.config import compose_config, with_server_client

OPTIONS = ("spark", "small_batches", "repartition", "model_small", "model_large", "split", "two_stage", "server")


@pytest.mark.parametrize("option", OPTIONS)
def test_every_calibrate_run_is_a_config_validate_accepts(option, monkeypatch):
    with_server_client(monkeypatch)  # the server run's client is an extra the default suite runs without
    validate(compose_config("sweep=calibrate", f"+calibrate={option}"))


def test_the_no_model_runs_stay_no_model_runs_whatever_model_the_sweep_calibrates():
    config = compose_config("sweep=calibrate", "+calibrate=spark", "model=accelerator")
    assert config.model.name.value == "null_model" and config.device is None


def test_the_model_runs_run_the_config_s_model_at_two_batch_sizes():
    sizes = {
        compose_config("sweep=calibrate", f"+calibrate={o}").model.batch_size for o in ("model_small", "model_large")
    }
    assert len(sizes) == 2


NO_MODEL = ("spark", "small_batches", "repartition", "split", "two_stage")
MODEL = ("model_small", "model_large")


def _run(option, *overrides, monkeypatch):
    """The config `python -m pipeline sweep=calibrate OVERRIDES` runs as calibrate run `option`, validated."""
    with_server_client(monkeypatch)
    config = compose_config("sweep=calibrate", f"+calibrate={option}", *overrides)
    validate(config)
    return config


@pytest.mark.parametrize("option", NO_MODEL)
def test_the_no_model_runs_leave_out_the_command_line_s_network(option, monkeypatch):
    config = _run(option, "model.arch=resnet18", monkeypatch=monkeypatch)
    assert (config.model.name.value, config.model.arch, config.device) == ("null_model", "resnet50", None)


@pytest.mark.parametrize("option", MODEL)
def test_the_model_runs_run_the_command_line_s_network(option, monkeypatch):
    config = _run(option, "model.arch=resnet18", monkeypatch=monkeypatch)
    assert (config.model.name.value, config.model.arch) == ("resnet50", "resnet18")


def test_the_model_runs_keep_their_two_batch_sizes_whatever_model_batch_size_says(monkeypatch):
    sizes = [_run(o, "model.batch_size=16", monkeypatch=monkeypatch).model.batch_size for o in MODEL]
    assert sizes == [8, 32]


@pytest.mark.parametrize("option", NO_MODEL)
def test_the_no_model_runs_leave_out_the_command_line_s_device(option, monkeypatch):
    config = _run(option, "model=accelerator", "device.images_per_s=50", monkeypatch=monkeypatch)
    assert (config.model.name.value, config.device) == ("null_model", None)


@pytest.mark.parametrize("option", MODEL)
def test_the_model_runs_simulate_the_command_line_s_device(option, monkeypatch):
    config = _run(option, "model=accelerator", "device.images_per_s=50", monkeypatch=monkeypatch)
    assert (config.model.name.value, config.device.images_per_s) == ("accelerator", 50.0)


@pytest.mark.parametrize("overrides", [("model.arch=resnet18",), ("model=accelerator", "device.images_per_s=50")])
def test_the_server_run_keeps_its_own_fast_simulated_device(overrides, monkeypatch):
    config = _run("server", *overrides, monkeypatch=monkeypatch)
    assert (config.model.name.value, config.model.arch, config.model.batch_size) == ("accelerator", "resnet50", 16)
    assert config.device.images_per_s == 2000.0 and config.device.latency_s == 0.001  # t4_fp16's profile, faster


@pytest.mark.parametrize("option", OPTIONS)
def test_a_factory_model_reaches_the_model_runs_only(option, monkeypatch):
    config = _run(option, "model.factory=tests.helpers.models:tiny", monkeypatch=monkeypatch)
    assert (config.model.factory is not None) == (option in MODEL)


def test_an_ordinary_run_still_refuses_a_network_with_the_null_model():
    with pytest.raises(ConfigError, match="model.arch=resnet18 with model=null_model"):
        validate(compose_config("model=null_model", "model.arch=resnet18"))


def test_an_ordinary_run_still_refuses_a_device_without_the_simulated_model():
    with pytest.raises(ConfigError, match="model=accelerator only"):
        validate(compose_config("device=l4"))


def test_the_rates_file_keeps_where_and_what_the_calibration_ran_so_verify_runs_there(tmp_path):
    run = tmp_path / "0"
    (run / ".hydra").mkdir(parents=True)
    where = [
        "cluster=remote",
        "cluster.master=spark://10.0.0.2:7077",
        "cluster.workers=2",
        "storage=/mnt/shared",
        "gpu.emulate=1",
        "model=accelerator",
        "device.images_per_s=50",
        "model.batch_size=16",
    ]
    (run / ".hydra" / "overrides.yaml").write_text(json.dumps(["+calibrate=spark", "sweep=calibrate", *where]))
    assert _overrides(run) == tuple(where[:-1])


def test_figures_the_runs_measured_name_the_runs_they_came_from():
    sources = calibrated().rates.sources
    for name in ("preprocess_s", "task_s", "job_s", "batch_s", "transfer_s_per_byte", "write_s_per_byte"):
        assert sources[name].startswith("measured:") and str(CALIBRATE_RUNS) in sources[name], name


def test_a_figure_whose_run_failed_is_assumed_with_the_run_s_error():
    source = calibrated().rates.sources["request_s"]
    assert source.startswith("assumed:") and "ended failed" in source and "model server" in source


def test_a_figure_with_no_run_says_no_such_run():
    assert "no such run" in calibrated().rates.sources["shuffle_s_per_byte"]


def _with_process_cpu(directory, per_pass: float, workers: bool = True, last_pass: tuple[float, float] | None = None):
    """The kept calibrate runs, copied to `directory`, their no-model fused passes having used `per_pass` CPU
    seconds over the run's processes (Python workers among them, or not seen); `last_pass`: their last pass's stage
    and the job's time outside it, in seconds, instead of the runs' own."""
    shutil.copytree(CALIBRATE_RUNS, directory)
    for path in directory.glob("*/result.json"):
        result = json.loads(path.read_text())
        if (result["variant"]["model"], result["variant"]["topology"]) == ("null_model", "fused"):
            passes = len(result["metrics"]["wall_s"])
            seen = {
                DRIVER_JVM: [per_pass / 2] * passes,
                (PYTHON_WORKERS if workers else DRIVER): [per_pass / 2] * passes,
            }
            result["metrics"]["process_cpu_s"] = seen
            if last_pass is not None:
                result["metrics"]["wall_s"][-1] = sum(last_pass)
                for row in result["evidence"]["time"]:
                    row["wall_s"] = last_pass[0] if row["step"] == "fused" else row["wall_s"]
            path.write_text(json.dumps(result))
    return calibration([directory])


def _stretched(directory, factor: float):
    """The kept calibrate runs, copied to `directory`, their no-model tasks' decode phase having used 1 / `factor`
    of its wall time in CPU (the runs' own records are from before the CPU was recorded)."""
    shutil.copytree(CALIBRATE_RUNS, directory)
    for path in directory.glob("*/result.json"):
        result = json.loads(path.read_text())
        if result["variant"]["model"] == "null_model":
            for record in result["tasks"]["records"]:
                record["prepare_cpu_s"] = record["prepare_s"] / factor
            path.write_text(json.dumps(result))
    return calibration([directory])


TASK_COSTS = ("preprocess_s", "task_s", "batch_s", "transfer_s_per_byte", "write_s_per_byte", "read_s_per_byte")


def test_costs_measured_on_busy_cores_are_the_tasks_costs_on_a_core_of_their_own(tmp_path):
    # tasks whose decoding took twice its CPU time waited for a core half the time: so did the rest of their work
    measured, busy = calibrated().rates, _stretched(tmp_path / "runs", 2.0).rates
    for name in TASK_COSTS:
        assert getattr(measured, name) > 0, name
        assert getattr(busy, name) == pytest.approx(getattr(measured, name) / 2), name
    assert busy.job_s == measured.job_s  # the job's wall time outside its stages is no task's work
    assert "over its stretch" in busy.sources["preprocess_s"]


def test_a_decode_phase_that_used_more_cpu_than_its_wall_time_stretches_nothing(tmp_path):
    # threads beside the decoding (prefetch, loader threads) count in its process's CPU: not a faster core
    measured, threaded = calibrated().rates, _stretched(tmp_path / "runs", 0.5).rates
    assert [getattr(threaded, name) for name in TASK_COSTS] == [getattr(measured, name) for name in TASK_COSTS]


def test_the_jvms_cpu_around_a_stage_is_what_the_runs_processes_used_beyond_what_the_model_counts(tmp_path):
    low, high = _with_process_cpu(tmp_path / "low", 20.0), _with_process_cpu(tmp_path / "high", 20.5)
    assert high.rates.job_cpu_s - low.rates.job_cpu_s == pytest.approx(0.5)
    assert low.rates.sources["job_cpu_s"].startswith("measured:")


def test_cpu_the_stages_time_on_every_core_had_no_room_for_was_spent_outside_the_stage(tmp_path):
    # a stage of 9 s on 2 cores, room for 18 core-s (more than the model counts for its tasks), then 1 s outside it
    # with one core busy or both: the JVMs' work within the stage is the same
    one = _with_process_cpu(tmp_path / "one", 18.0 + 1.0, last_pass=(9.0, 1.0))
    both = _with_process_cpu(tmp_path / "both", 18.0 + 2.0, last_pass=(9.0, 1.0))
    assert one.rates.job_cpu_s > 0
    assert both.rates.job_cpu_s == pytest.approx(one.rates.job_cpu_s)


def test_processes_that_used_less_than_the_model_counts_leave_no_negative_figure(tmp_path):
    assert _with_process_cpu(tmp_path / "runs", 0.0).rates.job_cpu_s == 0.0


def test_the_jvms_cpu_is_assumed_where_no_run_saw_its_python_workers(tmp_path):
    found = _with_process_cpu(tmp_path / "runs", 20.0, workers=False)
    assert found.rates.job_cpu_s == 0.0
    assert (
        found.rates.sources["job_cpu_s"].startswith("assumed:") and "Python workers" in found.rates.sources["job_cpu_s"]
    )
    assert calibrated().rates.sources["job_cpu_s"].startswith("assumed:")  # runs from before it was recorded


def test_the_model_on_a_core_is_fitted_from_its_two_batch_sizes():
    model = calibrated().model
    assert model is not None and not model.on_device and "[8, 32]" in model.source
    assert math.isinf(model.device(8).images_per_s) and model.device(8).host_s_per_image > 0


def test_the_shape_is_the_cluster_the_runs_ran_on():
    shape = calibrated().shape
    assert (shape.nodes, shape.cores_per_node, shape.gpus_per_node) == (1, 2, 0)


def _with_repartitioned(directory, map_stage_s: float):
    """The kept calibrate runs, copied to `directory`, and beside them the no-model fused run again with its input
    repartitioned into 2 (`spark.partitions`): its last pass's map stage of 2 tasks on 2 slots took `map_stage_s`."""
    shutil.copytree(CALIBRATE_RUNS, directory)
    result = json.loads((directory / "0" / "result.json").read_text())
    result["config"]["spark"]["partitions"] = 2
    fused = result["evidence"]["stages"]
    result["evidence"]["stages"] = [{"step": None, "num_tasks": 2, "slots": 2, "duration_s": map_stage_s}, *fused]
    (directory / "6").mkdir()
    (directory / "6" / "result.json").write_text(json.dumps(result))
    return calibration([directory])


def test_a_repartitions_task_is_its_map_stage_per_wave_less_its_scan_and_shuffle_write(tmp_path):
    rates = _with_repartitioned(tmp_path / "runs", 0.35).rates
    write = 32 * rates.shuffle_s_per_byte * JPEG_BYTES / 2  # 64 images in 2 tasks, no scan cost beyond the task's
    assert rates.repartition_task_s == pytest.approx(0.35 - write)
    source = rates.sources["repartition_task_s"]
    assert source.startswith("measured:") and "runs/6" in source


def test_a_repartitioned_run_gives_no_other_figure(tmp_path):
    # its job's time outside the fused stage holds the map stage: not a one-stage job's cost
    rates, kept = _with_repartitioned(tmp_path / "runs", 0.35).rates, calibrated().rates
    assert replace(rates, repartition_task_s=0.0, sources={}) == replace(kept, repartition_task_s=0.0, sources={})


def test_without_a_repartitioned_run_a_repartition_is_priced_at_its_scan_and_write_alone():
    rates = calibrated().rates
    assert rates.repartition_task_s == 0.0 and "no such run" in rates.sources["repartition_task_s"]


def test_the_file_reads_back_as_written(tmp_path):
    path = write([CALIBRATE_RUNS], tmp_path / "rates.json")
    found = load(path)
    assert found.rates == calibrated().rates and found.model == calibrated().model


def test_a_file_written_before_the_jvms_cpu_was_charged_per_job_reads_its_figure_as_the_job_s(tmp_path):
    document = json.loads(write([CALIBRATE_RUNS], tmp_path / "rates.json").read_text())
    document["rates"]["stage_cpu_s"] = document["rates"].pop("job_cpu_s")
    (tmp_path / "old.json").write_text(json.dumps(document))
    assert load(tmp_path / "old.json").rates == calibrated().rates


def test_a_file_written_before_a_repartition_was_priced_reads_it_as_free(tmp_path):
    document = json.loads(write([CALIBRATE_RUNS], tmp_path / "rates.json").read_text())
    del document["rates"]["repartition_task_s"]
    (tmp_path / "old.json").write_text(json.dumps(document))
    rates = load(tmp_path / "old.json").rates
    assert rates.repartition_task_s == 0.0 and "not in this rates file" in rates.sources["repartition_task_s"]


def test_the_rates_command_writes_the_file(tmp_path, capsys):
    assert rates_main([str(CALIBRATE_RUNS), "--write", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["format"] == FORMAT


def test_the_rates_command_refuses_a_directory_without_runs(tmp_path, capsys):
    assert rates_main([str(tmp_path), "--write", str(tmp_path / "r.json")]) == 2
    assert "no ok Spark run" in capsys.readouterr().err


def test_a_file_of_another_format_names_the_key(tmp_path):
    (tmp_path / "r.json").write_text('{"format": "other"}')
    with pytest.raises(RatesFileError, match="'format'"):
        load(tmp_path / "r.json")


def test_a_missing_file_says_how_to_write_one(tmp_path):
    with pytest.raises(RatesFileError, match="sweep=calibrate"):
        load(tmp_path / "none.json")


@pytest.mark.slow
def test_calibrate_then_advise_from_the_command_line(tmp_path):
    """Two of the calibrate runs (a reduced sweep: the command line replaces the sweep's list), their rates file at
    the sweep's end, and the advice printed from it."""
    sweep = tmp_path / "calibrate"
    done = cli(
        tmp_path,
        "sweep=calibrate",
        "+calibrate=spark,two_stage",
        "dataset.num_images=32",
        f"hydra.sweep.dir={sweep}",
        env=checkout_env(),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rates = json.loads((sweep / "rates.json").read_text())["rates"]
    assert rates["task_s"]["source"].startswith("measured:") and rates["read_s_per_byte"]["source"].startswith(
        "measured:"
    )
    assert rates["request_s"]["source"].startswith("assumed:")
    advice = subprocess.run(
        [sys.executable, "-m", "reports", "advise", "--rates", str(sweep / "rates.json"), "--top", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **checkout_env()},
    )
    assert advice.returncode == 0, advice.stderr[-3000:]
    assert "#1 " in advice.stdout and "run here: python -m pipeline" in advice.stdout
