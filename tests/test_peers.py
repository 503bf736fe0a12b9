"""Spark against its peers: every peer preset is a valid run, engine=ray runs the same steps as Spark (and
cleans up after itself), and the report compares only runs that did the same work."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.run import run
from pipeline.schema import ConfigError, Engine
from pipeline.validate import validate
from reports import peers
from reports.aggregate import Job, job_frame
from reports.html import render
from reports.plots import throughput_bars
from tests.helpers.config import compose_config
from tests.helpers.data import corrupt_images

PRESETS = ["torch", "ray", "spark_map_in_pandas", "spark_map_in_arrow", "spark_iterator_prefetch"]
needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="Ray is an extra: pip install -e '.[peers]'"
)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_peer_preset_composes_into_a_valid_run(preset, monkeypatch):
    config = compose_config(f"+peer={preset}", "model=null_model")
    if config.engine.name is Engine.ray:
        monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())  # validated whether or not installed
    validate(config)
    assert config.engine.name.value == preset.split("_")[0]


def test_engine_ray_without_ray_installed_is_refused_naming_the_extra(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "ray" else object())
    with pytest.raises(ConfigError, match=r"\[peers\]"):
        validate(compose_config("engine=ray"))


def ray_processes() -> set[str]:
    """Running Ray processes (zombies, already exited and waiting for their reaper, are not running)."""
    listing = subprocess.run(["ps", "-eo", "pid,stat,args"], capture_output=True, text=True).stdout.splitlines()
    running = [line for line in listing if " Z" not in line and "<defunct>" not in line]
    return {line for line in running if "raylet" in line or "gcs_server" in line or "ray::" in line}


def wait_until_gone(before: set[str], seconds: float = 30.0) -> set[str]:
    """Ray's workers exit on their own once the raylet is gone; what is left after `seconds` survived."""
    deadline = time.monotonic() + seconds
    while (left := ray_processes() - before) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


@pytest.mark.slow
@needs_ray
def test_ray_predicts_what_the_reference_does_lists_bad_images_and_leaves_nothing_running(
    tmp_path, cache_dir, weights_file, bad_dataset
):
    before, sessions = ray_processes(), set(Path("/tmp").glob("sib-ray-*"))
    config = compose_config(
        "engine=ray",
        "dataset=parquet",
        f"dataset.path={bad_dataset.path}",
        f"cache_dir={cache_dir}",
        "gpu.emulate=2",
        "warmup=0",
        "repeats=1",
        "verify=true",
        "model.batch_size=4",
    )
    result = run(config, tmp_path)
    assert result.status == "ok", result.error
    assert result.metrics.top1_agreement == 1.0 and result.metrics.verified_images == bad_dataset.num_images - 3
    assert sorted(bad["id"] for bad in result.bad_images) == sorted(corrupt_images())
    assert result.cluster["gpus"] == {"kind": "emulated", "count": 2} and result.env["gpus"] == "emulated"
    assert result.tasks["max_model_loads_per_worker"] == 1
    assert wait_until_gone(before) == set()
    assert (tmp_path / "ray-logs").is_dir() and set(Path("/tmp").glob("sib-ray-*")) <= sessions


def result(engine: str, throughput: float, model: str = "resnet50", label_udf: str | None = None) -> dict:
    spark = engine == "spark"
    return {
        "status": "ok",
        "variant": {
            "engine": engine,
            "udf": label_udf if spark else None,
            "topology": "fused" if spark else None,
            "cluster": "local" if spark else None,
            "batch_size": 32,
            "dataset_source": "synthetic",
            "image_format": "jpeg",
            "model": model,
        },
        "metrics": {"num_images": 64, "throughput_images_per_s": throughput, "throughput_per_repeat": [throughput]},
        "env": {"hostname": "here"},
    }


@pytest.fixture
def peer_frame(tmp_path):
    records = [
        result("torch", 10.0),
        result("ray", 5.0),
        result("spark", 9.0, label_udf="map_in_pandas"),
        result("spark", 8.0, label_udf="map_in_arrow"),
        result("torch", 40.0, model="null_model"),
        result("spark", 30.0, model="null_model", label_udf="map_in_pandas"),
        result("spark", 99.0, model="null_model", label_udf="map_in_arrow") | {"status": "failed"},
    ]
    jobs = [Job(tmp_path / str(number), record, ()) for number, record in enumerate(records)]
    return jobs, job_frame(jobs)


def test_the_best_spark_run_is_compared_with_the_best_of_each_peer_on_the_same_work(peer_frame):
    _, frame = peer_frame
    rows, headlines = peers.compare(frame)
    by_work = {headline.work.split(" ")[0]: headline for headline in headlines}
    assert by_work["resnet50"].ratios == {"torch": pytest.approx(0.9), "ray": pytest.approx(1.8)}
    assert "map_in_pandas" in by_work["resnet50"].best_spark
    assert by_work["null_model"].ratios == {"torch": pytest.approx(0.75), "ray": None}  # failed runs don't count
    assert len(rows) == 6


def test_runs_of_another_model_or_data_set_are_never_compared(peer_frame, tmp_path):
    jobs, frame = peer_frame
    other = result("torch", 1.0)
    other["metrics"]["num_images"] = 128
    lonely = job_frame([*jobs, Job(tmp_path / "other", other, ())])
    rows, _ = peers.compare(lonely)
    assert all("128" not in row.work for row in rows)  # a work done by one engine only has nothing to compare


def test_the_report_has_a_versus_peers_section_with_the_ratios(peer_frame, tmp_path):
    jobs, frame = peer_frame
    html = render(jobs, frame, tmp_path, [tmp_path])
    section = html.split('<section id="peers">', 1)[1].split("</section>", 1)[0]
    assert "Versus peers" in section and "0.90x" in section and "1.80x" in section and "0.75x" in section


def test_the_summary_a_sweep_prints_gives_each_work_its_ratios(tmp_path):
    for number, record in enumerate([result("torch", 10.0), result("spark", 9.5, label_udf="map_in_arrow")]):
        (tmp_path / str(number)).mkdir()
        (tmp_path / str(number) / "result.json").write_text(json.dumps(record))
    (line,) = peers.summary([tmp_path])
    assert line.startswith("resnet50 · 64 jpeg images") and "map_in_arrow" in line
    assert "0.95x torch" in line and "no ray run" in line


def test_throughput_bars_of_more_than_one_model_use_a_log_scale_and_say_so(peer_frame):
    _, frame = peer_frame
    chart = throughput_bars(frame)
    assert {ax.get_yscale() for ax in chart.figure.axes} == {"log"}
    assert "logarithmic" in chart.caption
    single = throughput_bars(frame[frame["model"] == "resnet50"])
    assert {ax.get_yscale() for ax in single.figure.axes} == {"linear"}
