"""Named sweeps resolve from any directory, a sweep reports progress, and every job — failed ones included —
ends up in results.csv and report.html, which `python -m reports DIR` rebuilds from disk."""

from __future__ import annotations

import csv
import json
import shlex
import subprocess
import sys
from importlib import resources

import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from pipeline.__main__ import done_before
from pipeline.callbacks import count_jobs
from pipeline.config.schema import Config, ConfigError, register
from pipeline.config.schema import typed as retyped
from pipeline.config.validate import validate
from pipeline.provenance import new_result
from pipeline.results import write_result
from pipeline.spark import plan as planning
from tests.helpers.cli import cli
from tests.helpers.config import compose_config

ORIGINAL = ["local", "standard_1gpu", "standard_4gpu", "iterator", "iterator_prefetch", "two_stage", "stage_level"]
NAMED = {
    "smoke",
    "udf_matrix",
    "batch_size",
    "partitions",
    "gpu_amounts",
    "cluster_modes",
    "original_10g",
    "original_300g",
    "peers",
    "spark_fast_paths",
    "scaling",
}


@pytest.fixture(autouse=True)
def hydra_config_restored():
    """HydraConfig is a process-wide singleton: what a test of this module sets there is undone after it."""
    before = HydraConfig.instance().cfg
    yield
    HydraConfig.instance().cfg = before


def hydra_config(*overrides: str):
    register()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("name", sorted(NAMED))
def test_every_named_sweep_is_a_multirun(name):
    config = hydra_config(f"sweep={name}")
    assert config.hydra.mode.name == "MULTIRUN"
    assert count_jobs(config) >= 2


def test_a_misspelt_sweep_lists_the_named_ones():
    with pytest.raises(ConfigCompositionException, match="original_10g"):
        hydra_config("sweep=smok")


def test_job_count_is_the_product_of_the_sweeps():
    assert count_jobs(hydra_config("sweep=smoke")) == 4
    assert count_jobs(hydra_config("sweep=original_10g")) == 7
    assert count_jobs(hydra_config("sweep=udf_matrix")) == 7 * 3  # every UDF style x fused, split, two_stage
    assert count_jobs(hydra_config("sweep=cluster_modes")) == 4
    assert count_jobs(hydra_config("sweep=smoke", "udf=map_in_arrow")) == 2
    assert count_jobs(hydra_config("sweep=spark_fast_paths")) == 7 * 5 * 2  # options x UDF styles x models


# a key another option's schema lacks fails the whole sweep at compose time (udf.rebuild_model_per_batch with
# map_in_pandas), so the failing job is an invalid combination `validate` refuses when the job starts
FAILING_SWEEP = (
    "sweep=smoke",
    "udf=map_in_pandas,scalar_pandas_udf",
    "topology=stage_level",  # refused for scalar_pandas_udf, which takes no ResourceProfile: that job fails
    "cluster=local_cluster",
    "cluster.worker_cores=2",
    "gpu.emulate=1",
    "model.batch_size=4",
    "model.arch=resnet18",  # the jobs' outcomes and their report are what this proves, not the network
    "dataset.num_images=8",
    "warmup=0",
    "repeats=1",
)
OK_UDF, FAILED_UDF, REASON = "map_in_pandas", "scalar_pandas_udf", "ResourceProfile"


@pytest.fixture(scope="module")
def failing_sweep(tmp_path_factory, cache_dir):
    """A two-job sweep whose scalar_pandas_udf job fails: (the sweep directory, its overrides)."""
    tmp_path = tmp_path_factory.mktemp("failing-sweep")
    overrides = (*FAILING_SWEEP, f"hydra.sweep.dir={tmp_path / 'sweep'}", f"cache_dir={cache_dir}")
    done = cli(tmp_path, *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[sweep] job 2 of 2" in done.stdout
    return tmp_path / "sweep", overrides


@pytest.mark.slow
def test_a_sweep_with_a_failing_job_reports_every_job(failing_sweep):
    sweep, _ = failing_sweep
    with open(sweep / "results.csv") as handle:
        rows = {row["udf"]: row for row in csv.DictReader(handle)}
    assert rows[OK_UDF]["status"] == "ok" and float(rows[OK_UDF]["throughput_images_per_s"]) > 0
    assert float(rows[OK_UDF]["usd_per_million_images"]) > 0
    assert rows[FAILED_UDF]["status"] == "failed"
    assert REASON in rows[FAILED_UDF]["reason"]
    report = (sweep / "report.html").read_text()
    assert REASON in report and "Random weights" in report
    before = (sweep / "results.csv").read_text()
    (sweep / "results.csv").unlink()
    (sweep / "report.html").unlink()
    rebuilt = subprocess.run([sys.executable, "-m", "reports", str(sweep)], capture_output=True, text=True, timeout=300)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert (sweep / "results.csv").read_text() == before and (sweep / "report.html").is_file()


@pytest.mark.slow
def test_resume_reruns_only_the_failed_job(failing_sweep, tmp_path):
    sweep, overrides = failing_sweep
    jobs = {json.loads((sweep / job / "result.json").read_text())["variant"]["udf"]: sweep / job for job in "01"}
    ok, failed = jobs[OK_UDF], jobs[FAILED_UDF]
    kept, replaced = (ok / "result.json").read_text(), (failed / "result.json").read_text()
    done = cli(tmp_path, *overrides, "resume=true")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("not run again") == 1
    assert (ok / "result.json").read_text() == kept and "resume: false" in (ok / "job.yaml").read_text()
    again = json.loads((failed / "result.json").read_text())
    assert "resume: true" in (failed / "job.yaml").read_text() and (failed / "result.json").read_text() != replaced
    assert again["status"] == "failed" and REASON in again["error"]["message"]
    with open(sweep / "results.csv") as handle:
        assert sorted(row["status"] for row in csv.DictReader(handle)) == ["failed", "ok"]


def write_ok_result(run_dir, config) -> None:
    result = new_result(config, run_dir)
    result.status = "ok"
    write_result(run_dir, result)


@pytest.mark.parametrize(
    ("earlier", "status", "skipped"),
    [((), "ok", True), (("resume=true",), "ok", True), ((), "failed", False), (("model.batch_size=8",), "ok", False)],
)
def test_resume_skips_only_an_ok_result_of_the_same_config(tmp_path, earlier, status, skipped):
    write_ok_result(tmp_path, compose_config(*earlier))
    if status != "ok":
        record = json.loads((tmp_path / "result.json").read_text())
        (tmp_path / "result.json").write_text(json.dumps({**record, "status": status}))
    found = done_before(tmp_path, OmegaConf.structured(compose_config("resume=true")))
    assert (found is not None) == skipped
    assert found is None or found.status == "ok"


def test_resume_without_a_result_runs_the_job(tmp_path):
    assert done_before(tmp_path, OmegaConf.structured(compose_config("resume=true"))) is None


def job_config(*overrides: str) -> Config:
    """One job's config as its process types RUN_DIR/job.yaml, ${hydra:runtime.output_dir} resolved."""
    config = hydra_config(*overrides)
    OmegaConf.set_readonly(config.hydra, False)
    config.hydra.runtime.output_dir = "/tmp/original-preset"
    HydraConfig.instance().set_config(config)
    job = OmegaConf.masked_copy(config, [key for key in config if key != "hydra"])
    return retyped(OmegaConf.to_container(job, resolve=True))


@pytest.mark.parametrize("preset", ORIGINAL)
def test_every_original_configuration_composes_into_a_valid_run(preset):
    typed = job_config(f"+original={preset}")
    validate(typed)
    assert typed.dataset.format.value == "jpeg"  # the preset changes only how Spark runs, not the data


def header_command(name: str) -> list[str]:
    """The overrides of the first `python -m pipeline sweep=NAME ...` command in the header of sweeps/NAME.yaml."""
    lines = (resources.files("sweeps") / f"{name}.yaml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"#   python -m pipeline sweep={name} "))
    text = ""
    for line in lines[start:]:
        text += line.lstrip("#").strip().removesuffix("\\") + " "
        if not line.endswith("\\"):
            break
    return shlex.split(text)[3:]


@pytest.mark.parametrize(
    ("sweep", "preset"), [("original_10g", preset) for preset in ORIGINAL] + [("original_300g", "standard_4gpu")]
)
def test_a_sweeps_full_size_command_makes_every_job_valid_and_bills_its_workers(sweep, preset, monkeypatch):
    """On cluster=remote the header's command counts the workers' GPUs itself: this machine has none here."""
    monkeypatch.setattr(planning, "nvidia_gpu_count", lambda: 0)
    config = job_config(f"sweep={sweep}", *header_command(sweep), f"+original={preset}")
    planned = validate(config)
    assert planned.gpus.kind == "real" and planned.gpus.executor_amount == 4
    assert sum(node.count for node in config.cluster.nodes if node.role == "worker") == config.cluster.workers


@pytest.mark.parametrize("mode", ["local", "local_cluster", "standalone", "connect"])
def test_every_cluster_mode_of_its_sweep_gets_the_same_task_slots(mode):
    config = job_config("sweep=cluster_modes", f"+same_slots={mode}")
    assert (config.cluster.mode.value, validate(config).slots) == (mode, 4)


@pytest.mark.parametrize(
    ("workers", "mode", "images"), [(1, "weak", 64), (3, "weak", 192), (1, "strong", 192), (3, "strong", 192)]
)
def test_the_scaling_sweep_holds_each_node_s_images_or_the_total_and_every_job_is_valid(workers, mode, images):
    header = [override for override in header_command("scaling") if not override.startswith("storage=")]
    config = job_config("sweep=scaling", *header, f"cluster.workers={workers}", f"+scaling={mode}")
    planned = validate(config)
    assert (config.scaling.mode.value, config.dataset.num_images) == (mode, images)
    assert planned.conf["spark.cores.max"] == str(workers)  # one core a node, held to `workers` nodes
    assert (planned.gpus.per_worker, config.device.images_per_s) == (1, 10.0)


def test_a_scaling_run_needs_a_cluster_of_nodes():
    with pytest.raises(ConfigError, match=r"\+scaling=weak .* cluster.workers nodes"):
        validate(compose_config("+scaling=weak"))
