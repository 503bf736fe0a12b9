"""One run end to end in this process (engine=torch, no Spark): the result schema, written atomically,
also when the run fails."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest

from pipeline.results import Metrics, Result, read_result, summary, write_result
from pipeline.run import run
from pipeline.rundir import RESULT_FILE
from pipeline.runtime.errors import describe_error
from pipeline.spark.session import JavaMissing, java_version, split_bytes
from tests.helpers.config import compose_config
from tests.helpers.data import corrupt_images

METRICS = {"num_images", "num_bad_images", "wall_s", "throughput_images_per_s", "startup_s", "data_prepare_s"}


def run_torch(tmp_path, cache_dir, *overrides):
    config = compose_config("engine=torch", f"cache_dir={cache_dir}", "warmup=0", "repeats=2", *overrides)
    return run(config, tmp_path)


def test_result_says_what_was_measured_and_on_what(tmp_path, cache_dir, weights_file):
    run_torch(tmp_path, cache_dir, "dataset.num_images=12", "dataset.images_per_file=8")
    result = read_result(tmp_path / RESULT_FILE)
    assert result["status"] == "ok" and result["error"] is None
    assert METRICS <= set(result["metrics"])
    metrics = result["metrics"]
    assert metrics["num_images"] == 12 and metrics["num_bad_images"] == 0 and len(metrics["wall_s"]) == 2
    assert metrics["throughput_images_per_s"] == pytest.approx(12 / statistics.median(metrics["wall_s"]))
    assert result["variant"]["engine"] == "torch" and result["variant"]["weights"] == "random"
    env = result["env"]
    assert {"python", "versions", "cpu_count", "gpu_name", "gpus", "weights", "git_sha"} <= set(env)
    assert {"pyspark", "torch", "torchvision"} <= set(env["versions"])
    assert "meaningless" in env["weights_note"]
    assert result["config"]["model"]["batch_size"] == 32


def test_verify_compares_with_the_reference(tmp_path, cache_dir, weights_file):
    result = run_torch(tmp_path, cache_dir, "dataset.num_images=12", "dataset.images_per_file=8", "verify=true")
    assert result.metrics.top1_agreement == 1.0
    assert result.metrics.max_abs_prob_diff <= 1e-4
    assert result.metrics.verified_images == 12


def test_bad_images_are_listed_in_the_result(tmp_path, cache_dir, weights_file, bad_dataset):
    result = run_torch(tmp_path, cache_dir, "dataset=parquet", f"dataset.path={bad_dataset.path}")
    assert result.status == "ok"
    assert result.metrics.num_bad_images == len(corrupt_images())
    assert {bad["id"] for bad in result.bad_images} == set(corrupt_images())
    assert result.metrics.num_predicted == bad_dataset.num_images - len(corrupt_images())


def test_a_config_error_is_recorded_as_a_failed_result(tmp_path, cache_dir):
    result = run_torch(tmp_path, cache_dir, "model.batch_size=0")
    written = read_result(tmp_path / RESULT_FILE)
    assert result.status == written["status"] == "failed"
    assert written["error"]["type"] == "ConfigError"
    assert "model.batch_size=0" in written["error"]["message"]


def test_a_missing_data_set_is_a_clear_failure(tmp_path, cache_dir):
    result = run_torch(tmp_path, cache_dir, "dataset=parquet", f"dataset.path={tmp_path / 'nowhere'}")
    assert (result.error["type"], result.status) == ("DatasetError", "failed")
    assert "nowhere" in result.error["message"]


def test_result_is_written_atomically(tmp_path):
    result = Result(status="ok", variant={}, config={}, env={}, run_dir=str(tmp_path), started_at="now")
    write_result(tmp_path, result)
    write_result(tmp_path, result)
    assert [path.name for path in tmp_path.iterdir()] == [RESULT_FILE]
    assert json.loads((tmp_path / RESULT_FILE).read_text())["schema_version"] == 1


def test_summary_fits_one_screen(tmp_path, cache_dir, weights_file):
    result = run_torch(tmp_path, cache_dir, "dataset.num_images=12", "dataset.images_per_file=8")
    text = summary(result)
    assert "throughput:" in text and "images/s" in text and str(tmp_path) in text
    assert len(text.splitlines()) <= 24


def test_summary_names_every_untimed_preparation_with_its_seconds():
    metrics = Metrics(
        num_images=8,
        wall_s=[1.0],
        throughput_images_per_s=8.0,
        data_prepare_s=1.25,
        weights_prepare_s=8.75,
        reference_s=2.5,
        startup_s=4.5,
        warmup_s=[3.0],
    )
    env = {"weights": "random"}
    result = Result(status="ok", variant=None, config={}, env=env, run_dir="run", started_at="now", metrics=metrics)
    [line] = [line for line in summary(result).splitlines() if line.startswith("not timed:")]
    assert line == "not timed: data 1.2 s (cached), weights 8.8 s, reference 2.5 s, startup 4.5 s, warm-up 3.0 s"


def test_a_spark_worker_error_is_reported_as_the_workers_own():
    worker_text = (
        "An exception was thrown from the Python worker.\nTraceback (most recent call last):\n"
        '  File "inference.py", line 70, in prepare\n'
        "pipeline.inference.steps.BadImageError: bad image id=7: cannot decode (on_bad_image=fail)\n"
    )
    error = describe_error(RuntimeError(worker_text))
    assert error["type"] == "BadImageError"
    assert error["message"] == "bad image id=7: cannot decode (on_bad_image=fail)"


def test_missing_java_says_how_to_fix_it(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(JavaMissing, match="Java 17"):
        java_version()


def test_input_splits_give_every_task_slot_work():
    assert split_bytes(5_000_000, 2) == 2_500_000
    assert split_bytes(10**12, 2) == 128 * 2**20
    assert split_bytes(1000, 8) == 2**20


@pytest.mark.parametrize(
    ("largest", "split"),
    [
        (60_100_000, 60_100_000),  # a file a little over its slot's share stays whole (no sliver of a task)
        (85_000_000, 85_000_000),  # under one and a half shares: whole
        (100_000_000, 50_000_000),  # two shares: two equal pieces
    ],
)
def test_input_splits_cut_the_largest_file_into_equal_pieces_near_a_slots_share(largest, split):
    assert split_bytes(120_000_000, 2, largest) == split


def test_a_runs_log_keeps_its_own_info_lines_and_only_py4js_warnings(tmp_path):
    script = (
        "import logging, sys\n"
        "from pathlib import Path\n"
        "from pipeline.job import configure_logging\n"
        "configure_logging(Path(sys.argv[1]))\n"
        "logging.getLogger('pipeline.run').info('ours')\n"
        "logging.getLogger('py4j.clientserver').info('Closing down clientserver connection')\n"
        "logging.getLogger('py4j.clientserver').warning('a warning')\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, capture_output=True, timeout=120)
    log = (tmp_path / "pipeline.log").read_text()
    assert "ours" in log and "a warning" in log
    assert "Closing down" not in log
