"""GPU fractions as Spark 4.3 schedules them, measured on local-cluster workers with emulated GPUs.

pyspark 4.3.0 keeps two rules: the application's `spark.task.resource.gpu.amount` must be a whole number
or <= 0.5 (SparkContext refuses 0.6 and 0.75: "must be either <= 0.5, or a whole number"; validation refuses
them first, see test_cluster), while a stage-level profile's task request may be any fraction <= 1.0
(SPARK-45527). Here: a predict profile of 0.6 GPU runs, one predict task per GPU at a time. One fraction above
one half stands for all of them: each is accepted by the same check (`plan._check_amount`), counted as one task per
address by the same floor (`plan.tasks_per_executor`: floor(1/0.6) = floor(1/0.75) = 1) and asked for by the same
`TaskResourceRequests` (`variants.topology.predict_profile`); 0.75 ran the same path again (a run of its own).
"""

from __future__ import annotations

import pytest

from tests.helpers.runs import gpus_shared, run_apart

AMOUNTS = (0.6,)


@pytest.fixture(scope="module")
def fraction_runs(tmp_path_factory, cache_dir) -> dict[float, dict]:
    """One stage_level run per predict amount on local-cluster[1,4] with 2 emulated GPUs and 8 predict
    partitions, each in a process of its own."""
    root = tmp_path_factory.mktemp("gpu-fractions")
    base = [
        "cluster=local_cluster",
        "cluster.worker_cores=4",
        "gpu.emulate=2",
        "topology=stage_level",
        "topology.predict_partitions=8",
        "model=null_model",
        "dataset.num_images=16",
        "warmup=0",
        "repeats=1",
        f"cache_dir={cache_dir}",
    ]
    return {amount: run_apart(root / str(amount), *base, f"gpu.predict_task_amount={amount}") for amount in AMOUNTS}


@pytest.mark.slow
@pytest.mark.parametrize("amount", AMOUNTS)
def test_a_profile_fraction_above_one_half_runs_one_predict_task_per_gpu(fraction_runs, amount):
    result = fraction_runs[amount]
    assert result["status"] == "ok", result["error"]
    checks = result["evidence"]["checks"]
    print(f"predict profile {amount} GPU: {checks['model_stage_max_concurrent']} predict tasks at once on 2 GPUs")
    assert checks["model_slots"] == 2 and checks["model_stages_within_gpu_slots"]
    predict = [stage for stage in result["evidence"]["stages"] if stage["step"] == "predict"]
    assert predict and all(stage["task_resources"].get("gpu") == amount for stage in predict)
    records = [record for record in result["tasks"]["records"] if record["step"] == "predict"]
    assert len(records) == 8 and all(len(r["gpu_addresses"]) == 1 and r["gpu_addresses"][0] in "01" for r in records)
    assert gpus_shared(records, "predict") == []  # tasks running at the same time hold different GPUs
