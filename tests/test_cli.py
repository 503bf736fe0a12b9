"""`python -m pipeline` as a user runs it, in a subprocess, from a directory that is not the repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def cli(cwd: Path, *overrides: str, env: dict[str, str] | None = None, timeout: int = 600):
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.slow
def test_default_size_run_verifies_against_the_reference(tmp_path, cache_dir, weights_file):
    run_dir = tmp_path / "run"
    done = cli(tmp_path, "dataset.num_images=64", "verify=true", f"hydra.run.dir={run_dir}", f"cache_dir={cache_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "ok"
    assert result["metrics"]["num_images"] == 64
    assert result["metrics"]["top1_agreement"] == 1.0
    assert result["metrics"]["max_abs_prob_diff"] <= 1e-4
    assert result["spark_conf"]["spark.master"].startswith("local[")
    assert "throughput:" in done.stdout


@pytest.mark.parametrize(
    ("override", "named"),
    [("nope=1", "Key 'nope' not in 'Config'"), ("udf=nope", "Available options in 'udf'"), ("model.batch_size=x", "model.batch_size")],
)
def test_compose_errors_exit_non_zero_naming_the_key(tmp_path, override, named):
    done = cli(tmp_path, override, f"hydra.run.dir={tmp_path}", timeout=120)
    assert done.returncode != 0
    assert named in done.stderr + done.stdout


@pytest.mark.parametrize(
    ("overrides", "named"),
    [(["model.batch_size=0"], "model.batch_size=0"), (["gpu.task_amount=1"], "cluster=local")],
)
def test_invalid_values_fail_before_spark_starts(tmp_path, overrides, named):
    done = cli(tmp_path, *overrides, f"hydra.run.dir={tmp_path}", timeout=120)
    assert done.returncode == 1
    assert named in done.stdout
    assert json.loads((tmp_path / "result.json").read_text())["error"]["type"] == "ConfigError"
    assert not (tmp_path / "eventlog").exists()  # no Spark application was started


def test_missing_java_fails_at_start_with_the_fix(tmp_path):
    done = cli(tmp_path, f"hydra.run.dir={tmp_path}", env={"JAVA_HOME": str(tmp_path)}, timeout=120)
    assert done.returncode == 1
    assert "JavaMissing" in done.stdout and "Java 17" in done.stdout
    assert not (tmp_path / "eventlog").exists()
