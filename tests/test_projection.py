"""Projections onto real instances, the instance catalogue and the original study's table on paper: each figure
is the bottleneck model's, computed from the rates given (never hard-coded), and labelled a projection."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.config.schema import ConfigError
from pipeline.projection import instances
from pipeline.projection.bottleneck import JPEG_BYTES, RAW_BYTES, Rates, Shape, Workload, predict
from pipeline.projection.rates import measured_rates
from reports import original
from reports.__main__ import main
from reports.projection import LABEL, project, project_dirs, scaled, shape_on, usd_per_million, workload_of
from tests.helpers.results import write

SWEEP = Path(__file__).parent / "fixtures" / "results" / "sweep"
RATES = Rates(preprocess_s=0.006, job_s=0.3, task_s=0.01, batch_s=0.001, transfer_s_per_byte=1e-8)


def test_every_catalogue_instance_loads_with_its_price_and_device() -> None:
    for name in instances.names():
        instance = instances.load(name)
        assert instance.price.usd_per_hour > 0 and instance.price.source
        assert (instance.device is None) == (instance.config.gpus == 0)
        assert instance.config.vcpu_speed_source
    with pytest.raises(ConfigError, match="instance=nope: no such option; choose one of .*g4dn_12xlarge"):
        instances.load("nope")
    with pytest.raises(ConfigError, match="no GPU for device=t4_fp32"):
        instances.load("m6gd_12xlarge", device="t4_fp32")


def test_a_projection_is_the_model_on_the_instance_scaled_to_its_vcpus() -> None:
    # g4dn.12xlarge: 48 vCPUs at 0.6 of a core here, 4 T4s; fused at 1 GPU a task, stage_level at 4/48
    instance = instances.load("g4dn_12xlarge")
    workload = Workload(num_images=100_000, partitions=100)
    projection = project(RATES, instance, 4, workload)
    fused = next(row for row in projection.rows if (row.topology, row.nodes) == ("fused", 4))
    expected = predict("fused", scaled(RATES, 0.6), instance.device, Shape(4, 48, 4, 1.0, 1.0), workload)
    assert fused.images_per_s == pytest.approx(expected.images_per_s)
    assert scaled(RATES, 0.6).preprocess_s == pytest.approx(0.01)
    assert scaled(RATES, 0.6).job_s == RATES.job_s  # fixed costs are not scaled
    assert shape_on(instance, 1, "stage_level").task_gpu_amount == pytest.approx(1 / 12)
    # 4 nodes at $3.912/h for the time a million images take
    assert fused.usd_per_million == pytest.approx(4 * 3.912 * 1e6 / fused.images_per_s / 3600)
    assert usd_per_million(instance, 1, 3600.0) == pytest.approx(3.912 * (1e6 / 3600) / 3600)
    assert {row.nodes for row in projection.rows} == {1, 4}
    assumptions = dict(projection.assumptions)
    assert assumptions["label"] == LABEL
    assert "0.6 x one core here" in assumptions["core speed, theirs"]
    assert "not measured here" in assumptions["device"]


def test_the_original_table_is_computed_from_the_model() -> None:
    rows, rates = original.table([])
    names = [row.name for row in rows]
    assert names == [config.name for config in original.CONFIGURATIONS]
    assert {row.published for row in rows} >= {117.658, 30.29, 147.848, 113.353, 159.862, 108.768, 689.084, None}
    standard = rows[names.index("Standard 4 GPU")]
    instance = instances.load("g4dn_12xlarge", "t4_fp32")
    workload = Workload(
        16_232, 1000, 1000, 32, None, original.INT16_BYTES, original.FLOAT_CROP_BYTES, rebuild_model_per_batch=True
    )
    ours_rates = scaled(original._original_rates(rates), 0.6)
    expected = predict("fused", ours_rates, instance.device, Shape(1, 48, 4, 1.0, 1.0), workload)
    assert standard.original.images_per_s == pytest.approx(expected.images_per_s)
    assert standard.ratio == pytest.approx(expected.images_per_s / 147.848)
    # other rates, other table: nothing in it is a constant
    slower = original.row(original.CONFIGURATIONS[2], replace(rates, task_s=rates.task_s * 2))
    assert slower.original.images_per_s < standard.original.images_per_s


def test_the_workload_projected_has_the_knobs_of_the_fastest_ok_run(tmp_path: Path) -> None:
    write(tmp_path / "0", 10.0, batch_size=16, max_records_per_batch=64, image_format="raw")
    write(tmp_path / "1", 5.0, batch_size=8, decoder="torchvision")
    write(tmp_path / "2", 99.0, batch_size=4, status="failed")
    workload, image_format, decoder = workload_of([tmp_path], num_images=5000)
    assert (workload.batch_size, workload.records_per_batch, workload.partitions) == (16, 64, 5)
    assert (image_format, decoder, workload.input_bytes_per_image) == ("raw", "pil", RAW_BYTES)
    empty = tmp_path / "empty"
    empty.mkdir()
    defaults = Workload(5000, batch_size=32, records_per_batch=128, partitions=5, input_bytes_per_image=JPEG_BYTES)
    assert workload_of([empty], num_images=5000) == (defaults, "jpeg", "pil")


def test_a_projection_over_runs_of_another_network_says_its_device_rates_are_resnet50_s(tmp_path: Path) -> None:
    write(tmp_path / "0", 10.0, model="resnet18")
    write(tmp_path / "1", 10.0, model="null_model")
    said = dict(project_dirs([tmp_path], "g6_xlarge").assumptions)
    assert "the runs here include resnet18" in said["model"] and "ResNet50's" in said["model"]
    write(tmp_path / "0", 10.0, model="resnet50")
    assert "model" not in dict(project_dirs([tmp_path], "g6_xlarge").assumptions)


def test_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--original-table"]) == 0
    printed = capsys.readouterr().out
    assert "PROJECTION" in printed and "| Standard 4 GPU |" in printed and "cheapest" in printed
    shutil.copytree(SWEEP, tmp_path, dirs_exist_ok=True)
    record = json.loads((SWEEP / "0" / "result.json").read_text())
    record["variant"] |= {"engine": "torch", "model": "null_model", "image_format": "jpeg", "loader_workers": None}
    record["metrics"] |= {"wall_s": [0.5], "num_images": 100, "throughput_images_per_s": 200.0}
    (tmp_path / "9").mkdir()
    (tmp_path / "9" / "result.json").write_text(json.dumps(record))
    assert measured_rates([tmp_path]).preprocess_s == pytest.approx(0.005)
    assert main([str(tmp_path), "--project", "instance=g6_12xlarge", "--nodes", "2"]) == 0
    printed = capsys.readouterr().out
    assert "Projected to real instances: g6_12xlarge" in printed and "core speed, ours: 200 images/s" in printed
    html = (tmp_path / "report.html").read_text()
    assert "Projected to real instances" in html and "not a measurement" in html
    assert main([str(tmp_path), "--project", "instance=nope"]) == 2
    assert main([str(tmp_path), "--project", "g6"]) == 2
    assert main([str(tmp_path), "--project", "instance=g6_xlarge", "--nodes", "0"]) == 2
