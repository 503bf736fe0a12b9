"""Spark against its peers: every peer preset is a valid run, engine=ray runs the same steps as Spark (and
cleans up after itself), and the report compares only runs that did the same work."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from pipeline.config.schema import ConfigError, Engine
from pipeline.config.validate import validate
from pipeline.results import as_record
from pipeline.run import run
from pipeline.runtime.processes import descendants, stop_processes
from reports import peers
from reports.aggregate import Job, job_frame
from reports.html import render
from reports.plots import throughput_bars
from tests.helpers.config import compose_config
from tests.helpers.data import corrupt_images
from tests.helpers.results import result as made
from tests.helpers.results import write

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


STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(60)"


def test_the_processes_an_engine_started_are_stopped_by_pid_and_older_ones_spared():
    older = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        before = descendants()
        polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        stubborn = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE)
        stubborn.stdout.readline()  # its SIGTERM handler is set
        started = descendants() - before
        assert {p.pid for p in started} == {polite.pid, stubborn.pid}  # older ones are not noted
        stop_processes(started, timeout=0.5)
        assert not psutil.pid_exists(polite.pid) and not psutil.pid_exists(stubborn.pid)  # reaped: no zombie left
        assert older.poll() is None  # running before: not ours to stop
    finally:
        older.kill()
        older.wait()


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
    assert ray_processes() - before == set()  # stopped by PID before run() returned, not left to exit later
    assert (tmp_path / "ray-logs").is_dir() and set(Path("/tmp").glob("sib-ray-*")) <= sessions


def result(
    engine: str, throughput: float, model: str = "resnet50", label_udf: str | None = None, first: float | None = None
) -> dict:
    """A hand-made record of 64 images; `first` is its warm-up pass's images/s (none without)."""
    return as_record(made(throughput, first=first, engine=engine, model=model, udf=label_udf))


@pytest.fixture
def peer_frame(tmp_path):
    records = [
        result("torch", 10.0, first=4.0),
        result("ray", 5.0, first=4.0),
        result("spark", 9.0, label_udf="map_in_pandas", first=2.0),
        result("spark", 8.0, label_udf="map_in_arrow", first=3.0),
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


@pytest.mark.parametrize(
    "work",
    [
        {"decoder": "torchvision"},
        {"num_images": 128},
        {"hostname": "elsewhere"},
        {"image_format": "raw"},
        {"precision": "bf16"},
        {"weights": "file"},
        {"sink": "parquet"},
        {"row_group_size": 16},
    ],
    ids=lambda work: next(iter(work)),
)
def test_a_spark_run_is_never_set_against_a_peer_that_did_other_work(tmp_path, work):
    records = [made(10.0, engine="torch", model="resnet50", **work), made(9.0, model="resnet50")]
    frame = job_frame([Job(tmp_path / str(number), as_record(record), ()) for number, record in enumerate(records)])
    assert peers.compare(frame) == ([], [])


def test_the_engine_and_how_it_ran_are_what_a_peer_comparison_compares(tmp_path):
    torch = made(10.0, engine="torch", loader_workers=2, batch_size=64, compile=True)
    spark = made(9.0, udf="iterator_pandas_udf", prefetch=2, batch_size=16, max_records_per_batch=16)
    frame = job_frame([Job(tmp_path / "0", as_record(torch), ()), Job(tmp_path / "1", as_record(spark), ())])
    _, (headline,) = peers.compare(frame)
    assert headline.ratios == {"torch": pytest.approx(0.9), "ray": None}


def test_the_null_model_is_set_against_torch_per_decoder(tmp_path):
    for number, (engine, decoder, images_s) in enumerate(
        [("torch", "pil", 10.0), ("torch", "torchvision", 20.0), ("spark", "pil", 5.0), ("spark", "torchvision", 4.0)]
    ):
        write(tmp_path / str(number), images_s, engine=engine, decoder=decoder)
    lines = peers.summary([tmp_path])
    assert [line.split(": best Spark")[0] for line in lines] == [
        "null_model · 64 jpeg images (synthetic) · pil decoder · on here",
        "null_model · 64 jpeg images (synthetic) · torchvision decoder · on here",
    ]
    assert "warm 0.50x torch" in lines[0] and "warm 0.20x torch" in lines[1]


def test_the_report_has_a_versus_peers_section_with_the_ratios(peer_frame, tmp_path):
    jobs, frame = peer_frame
    html = render(jobs, frame, tmp_path, [tmp_path])
    section = html.split('<section id="peers">', 1)[1].split("</section>", 1)[0]
    assert "Versus peers" in section and "0.90x" in section and "1.80x" in section and "0.75x" in section
    assert "cold vs ray" in section and "0.50x" in section  # the best Spark run's first pass vs torch's and ray's


def test_cold_ratios_compare_the_same_best_runs_first_passes_and_warm_ratios_their_median_passes(peer_frame):
    jobs, frame = peer_frame
    rows, headlines = peers.compare(peers.with_cold(frame, jobs))
    by_work = {headline.work.split(" ")[0]: headline for headline in headlines}
    resnet = by_work["resnet50"]
    assert resnet.ratios == {"torch": pytest.approx(0.9), "ray": pytest.approx(1.8)}
    # the best Spark run by warm throughput (map_in_pandas, first pass 2 img/s), not the best first pass
    assert resnet.cold_ratios == {"torch": pytest.approx(0.5), "ray": pytest.approx(0.5)}
    ray_row = next(row for row in rows if row.engine == "ray")
    assert ray_row.cold == pytest.approx(4.0) and ray_row.cold_vs == {"torch": pytest.approx(1.0), "ray": 1.0}
    # a run without warm-up: its first timed pass is its cold pass; no baseline run: no ratio
    null = by_work["null_model"]
    assert null.cold_ratios == {"torch": pytest.approx(0.75), "ray": None}  # 30 vs 40 img/s, first timed passes


def test_without_first_passes_the_cold_ratios_are_missing_not_made_up(peer_frame):
    _, frame = peer_frame
    _, headlines = peers.compare(frame)  # a frame without the cold column
    assert all(set(h.cold_ratios.values()) == {None} for h in headlines)


def test_the_summary_a_sweep_prints_gives_each_work_its_ratios(tmp_path):
    write(tmp_path / "0", 10.0, first=5.0, engine="torch", model="resnet50")
    write(tmp_path / "1", 9.5, first=2.0, model="resnet50", udf="map_in_arrow")
    (line,) = peers.summary([tmp_path])
    assert line.startswith("resnet50 · 64 jpeg images") and "map_in_arrow" in line
    assert "warm 0.95x torch, no ray run" in line and "cold 0.40x torch, no ray first pass" in line


def test_throughput_bars_of_more_than_one_model_use_a_log_scale_and_say_so(peer_frame):
    _, frame = peer_frame
    chart = throughput_bars(frame)
    assert {ax.get_yscale() for ax in chart.figure.axes} == {"log"}
    assert "logarithmic" in chart.caption
    single = throughput_bars(frame[frame["model"] == "resnet50"])
    assert {ax.get_yscale() for ax in single.figure.axes} == {"linear"}
