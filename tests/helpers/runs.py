"""Whole runs in processes of their own, and what their tasks' records show about the GPUs they held."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.helpers.cli import result_of

ROOT = Path(__file__).parent.parent.parent
RUN = (
    "import sys\n"
    "from pathlib import Path\n"
    "from tests.helpers.config import compose_config\n"
    "from pipeline.run import run\n"
    "run(compose_config(*sys.argv[2:]), Path(sys.argv[1]))\n"
)


def run_apart(run_dir: Path, *overrides: str, timeout: int = 600) -> dict[str, Any]:
    """The result of `pipeline.run.run` of `overrides` into `run_dir`, run in a Python process of its own: a run
    starts a Spark application, and a driver JVM keeps its first settings for every later one in its process."""
    subprocess.run([sys.executable, "-c", RUN, str(run_dir), *overrides], check=True, timeout=timeout, cwd=ROOT)
    return result_of(run_dir)


def gpus_shared(records: list[dict[str, Any]], step: str) -> list[tuple[int, int, str]]:
    """(partition, partition, address) of every two `step` task records that ran at once holding the same GPU
    address (their own timers' spans, inside the tasks' slots): none where a task holds its GPU alone."""
    mine = [record for record in records if record["step"] == step]
    return [
        (first["partition"], second["partition"], address)
        for number, first in enumerate(mine)
        for second in mine[number + 1 :]
        if first["start"] < second["end"] and second["start"] < first["end"]
        for address in set(first["gpu_addresses"]) & set(second["gpu_addresses"])
    ]
