"""Named sweeps resolve from any directory, a sweep reports progress, and every job — failed ones included —
ends up in results.csv and report.html, which `python -m reports DIR` rebuilds from disk."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from pipeline.callbacks import count_jobs
from pipeline.schema import Config, register
from pipeline.validate import validate
from tests.test_cli import cli

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
}


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
    assert count_jobs(hydra_config("sweep=smoke", "udf=map_in_arrow")) == 2


@pytest.mark.slow
def test_a_sweep_with_a_failing_job_reports_every_job(tmp_path, cache_dir, weights_file):
    sweep = tmp_path / "sweep"
    done = cli(
        tmp_path,
        "sweep=smoke",
        "udf=map_in_pandas,scalar_pandas_udf",
        "udf.rebuild_model_per_batch=true",
        "model.batch_size=4",
        "dataset.num_images=8",
        "repeats=1",
        f"hydra.sweep.dir={sweep}",
        f"cache_dir={cache_dir}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[sweep] job 2 of 2" in done.stdout
    with open(sweep / "results.csv") as handle:
        rows = {row["udf"]: row for row in csv.DictReader(handle)}
    assert (
        rows["scalar_pandas_udf"]["status"] == "ok" and float(rows["scalar_pandas_udf"]["throughput_images_per_s"]) > 0
    )
    assert float(rows["scalar_pandas_udf"]["usd_per_million_images"]) > 0
    assert rows["map_in_pandas"]["status"] == "failed"
    assert "rebuild_model_per_batch" in rows["map_in_pandas"]["reason"]
    report = (sweep / "report.html").read_text()
    assert "rebuild_model_per_batch" in report and "Random weights" in report
    before = (sweep / "results.csv").read_text()
    (sweep / "results.csv").unlink()
    (sweep / "report.html").unlink()
    rebuilt = subprocess.run([sys.executable, "-m", "reports", str(sweep)], capture_output=True, text=True, timeout=300)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert (sweep / "results.csv").read_text() == before and (sweep / "report.html").is_file()


@pytest.mark.parametrize("preset", ORIGINAL)
def test_every_original_configuration_composes_into_a_valid_run(preset):
    config = hydra_config(f"+original={preset}")
    OmegaConf.set_readonly(config.hydra, False)
    config.hydra.runtime.output_dir = "/tmp/original-preset"
    HydraConfig.instance().set_config(config)  # resolves ${hydra:runtime.output_dir} as in a real job
    job = OmegaConf.masked_copy(config, [key for key in config if key != "hydra"])
    typed = OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.to_container(job, resolve=True))
    )
    validate(typed)
    assert typed.dataset.format.value == "jpeg"  # the preset changes only how Spark runs, not the data
