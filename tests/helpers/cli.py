"""`python -m pipeline` as a user runs it: in a subprocess, from a directory that is not the repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipeline.rundir import RunDir


def cli(cwd: Path, *overrides: str, env: dict[str, str] | None = None, timeout: int = 600):
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


CHECKOUT = Path(__file__).resolve().parents[2]


def checkout_env() -> dict[str, str]:
    """PYTHONPATH with this checkout first, for `cli`: the run's processes (its Spark Python workers inherit it)
    import this checkout's code and the tests' helpers, such as the factory `tests.helpers.models:tiny`."""
    return {"PYTHONPATH": os.pathsep.join(part for part in (str(CHECKOUT), os.environ.get("PYTHONPATH")) if part)}


def result_of(run_dir: Path) -> dict[str, Any]:
    """The result.json a run left in `run_dir`, as the reports read it."""
    return json.loads(RunDir(run_dir).result.read_text())
