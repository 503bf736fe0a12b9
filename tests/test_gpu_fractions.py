"""GPU fractions as Spark 4.3 schedules them: any amount <= 1.0 or a whole number (SPARK-45527), each GPU
address shared by floor(1/amount) tasks. Measured on local-cluster workers with emulated GPUs: 0.6 and 0.75
GPU per task start (Spark 3 refused both) and run one task per GPU at a time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

AMOUNTS = (0.6, 0.75)


@pytest.fixture(scope="module")
def fraction_runs(tmp_path_factory, cache_dir) -> dict[float, dict]:
    """One run per amount on local-cluster[1,4] with 2 emulated GPUs and 8 input partitions, in a child
    process (a run starts its own application)."""
    root = tmp_path_factory.mktemp("gpu-fractions")
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from tests.helpers.config import compose_config\n"
        "from pipeline.run import run\n"
        "for amount in sys.argv[1:]:\n"
        "    run(compose_config('cluster=local_cluster', 'cluster.worker_cores=4', 'gpu.emulate=2',\n"
        "                       f'gpu.task_amount={amount}', 'model=null_model', 'dataset.num_images=16',\n"
        "                       'spark.partitions=8', 'warmup=0', 'repeats=1',\n"
        f"                       'cache_dir={cache_dir}'), Path('{root}') / amount)\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, *map(str, AMOUNTS)], check=True, timeout=900, cwd=Path(__file__).parent.parent
    )
    return {amount: json.loads((root / str(amount) / "result.json").read_text()) for amount in AMOUNTS}


@pytest.mark.slow
@pytest.mark.parametrize("amount", AMOUNTS)
def test_a_fraction_above_one_half_runs_one_task_per_gpu(fraction_runs, amount):
    result = fraction_runs[amount]
    assert result["status"] == "ok", result["error"]
    assert result["spark_conf"]["spark.task.resource.gpu.amount"] == str(amount)
    checks = result["evidence"]["checks"]
    print(f"gpu.task_amount={amount}: {checks['model_stage_max_concurrent']} tasks at once on 2 GPUs, 4 cores")
    assert checks["model_slots"] == 2 and checks["model_stages_within_gpu_slots"]
    assert 1 <= checks["model_stage_max_concurrent"] <= 2
    addresses = [task["gpu_addresses"] for task in result["evidence"]["model_task_gpus"]]
    assert len(addresses) == 8 and all(len(a) == 1 and a[0] in ("0", "1") for a in addresses)
