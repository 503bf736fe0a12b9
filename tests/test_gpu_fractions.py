"""GPU fractions as Spark 4.3 schedules them, measured on local-cluster workers with emulated GPUs.

pyspark 4.3.0 keeps two rules: the application's `spark.task.resource.gpu.amount` must be a whole number
or <= 0.5 (SparkContext refuses 0.6 and 0.75: "must be either <= 0.5, or a whole number"; validation refuses
them first, see test_cluster), while a stage-level profile's task request may be any fraction <= 1.0
(SPARK-45527). Here: predict profiles of 0.6 and 0.75 GPU run, one predict task per GPU at a time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

AMOUNTS = (0.6, 0.75)


@pytest.fixture(scope="module")
def fraction_runs(tmp_path_factory, cache_dir) -> dict[float, dict]:
    """One stage_level run per predict amount on local-cluster[1,4] with 2 emulated GPUs and 8 predict
    partitions, in a child process (a run starts its own application)."""
    root = tmp_path_factory.mktemp("gpu-fractions")
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from tests.helpers.config import compose_config\n"
        "from pipeline.run import run\n"
        "for amount in sys.argv[1:]:\n"
        "    run(compose_config('cluster=local_cluster', 'cluster.worker_cores=4', 'gpu.emulate=2',\n"
        "                       'topology=stage_level', f'gpu.predict_task_amount={amount}',\n"
        "                       'topology.predict_partitions=8', 'model=null_model', 'dataset.num_images=16',\n"
        "                       'warmup=0', 'repeats=1',\n"
        f"                       'cache_dir={cache_dir}'), Path('{root}') / amount)\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, *map(str, AMOUNTS)], check=True, timeout=900, cwd=Path(__file__).parent.parent
    )
    return {amount: json.loads((root / str(amount) / "result.json").read_text()) for amount in AMOUNTS}


@pytest.mark.slow
@pytest.mark.parametrize("amount", AMOUNTS)
def test_a_profile_fraction_above_one_half_runs_one_predict_task_per_gpu(fraction_runs, amount):
    result = fraction_runs[amount]
    assert result["status"] == "ok", result["error"]
    checks = result["evidence"]["checks"]
    print(f"predict profile {amount} GPU: {checks['model_stage_max_concurrent']} predict tasks at once on 2 GPUs")
    assert checks["model_slots"] == 2 and checks["model_stages_within_gpu_slots"]
    assert 1 <= checks["model_stage_max_concurrent"] <= 2
    predict = [stage for stage in result["evidence"]["stages"] if stage["step"] == "predict"]
    assert predict and all(stage["task_resources"].get("gpu") == amount for stage in predict)
    addresses = [task["gpu_addresses"] for task in result["evidence"]["model_task_gpus"]]
    assert len(addresses) == 8 and all(len(a) == 1 and a[0] in ("0", "1") for a in addresses)
