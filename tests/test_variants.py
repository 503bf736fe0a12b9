"""Every UDF style and topology runs the same inference: each agrees with the reference, and each variant
proves in its result what it claims (GPU slots respected, stage-level profiles honoured)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from pipeline.config.schema import Topology, UdfStyle
from pipeline.data.storage import Storage, parquet_sizes
from pipeline.engines.spark import measure
from pipeline.spark.session import sql_confs, whole_file_splits
from pipeline.spark.standalone import spark_home
from pipeline.verify import compare, reference_predictions
from tests.helpers.cli import cli
from tests.helpers.config import compose_config
from tests.helpers.processes import processes_of
from tests.helpers.runs import gpus_shared, run_apart
from tests.helpers.spark import sql_conf
from variants.topology import intermediate_bytes

STYLES = [style.value for style in UdfStyle]
# in one shared session: stage_level needs executors with GPUs, model_server a server the job starts (both have
# their own tests: the cluster cases below, tests/test_model_server.py)
LOCAL_TOPOLOGIES = [kind.value for kind in Topology if kind not in (Topology.stage_level, Topology.model_server)]


@pytest.mark.parametrize("topology", LOCAL_TOPOLOGIES)
@pytest.mark.parametrize("style", STYLES)
def test_every_style_and_topology_agrees_with_the_reference(
    spark, tmp_path, tiny_dataset, inference, cache_dir, style, topology
):
    config = compose_config(
        f"udf={style}",
        f"topology={topology}",
        *([f"topology.intermediate_path={tmp_path / 'crops'}"] if topology == "two_stage" else []),  # its key only
        "warmup=0",
        "repeats=1",
        "verify=true",
    )
    run = measure(spark, config, tiny_dataset, inference, tmp_path, predict_slots=2)
    timed = run.timed[0]
    assert (timed.read, timed.predicted, timed.bad) == (tiny_dataset.num_images, tiny_dataset.num_images, [])
    agreement = compare(run.predictions, reference_predictions(tiny_dataset, inference, cache_dir))
    assert agreement["top1_agreement"] == 1.0 and agreement["duplicate_ids"] == 0
    assert agreement["max_abs_prob_diff"] <= 1e-4
    expected_steps = {"fused"} if topology == "fused" else {"preprocess", "predict"}
    assert set(timed.tasks["steps"]) == expected_steps
    assert list(timed.jobs) == (["preprocess", "predict"] if topology == "two_stage" else ["predict"])


@pytest.mark.parametrize("where", ["topology.intermediate_path", "storage"])
def test_two_stage_reports_the_intermediate_bytes(spark, tmp_path, tiny_dataset, null_inference, where):
    config = compose_config("topology=two_stage", f"{where}={tmp_path / 'crops'}", "warmup=0", "repeats=1")
    measure(spark, config, tiny_dataset, null_inference, tmp_path, predict_slots=2)
    crop_bytes = tiny_dataset.num_images * 3 * 224 * 224
    written = intermediate_bytes(config, Storage.of(config.storage, tmp_path, config.cache_dir))
    assert written >= crop_bytes * 0.5  # uint8 crops, compressed a little by Parquet
    assert list((tmp_path / "crops").rglob("*.parquet"))  # where the key put them


def test_two_stage_reads_each_file_job_1_wrote_in_a_task_of_its_own(spark, tmp_path):
    # 2 files of 8 rows (512 KiB, one row group each), as job 1 writes crops larger than the JPEGs' split size
    path = tmp_path / "crops"
    rows = pd.DataFrame({"id": range(16), "crop": [os.urandom(64 * 1024) for _ in range(16)]})
    spark.createDataFrame(rows).repartition(2).write.parquet(str(path))

    def rows_per_task() -> list[int]:
        return spark.read.parquet(str(path)).rdd.glom().map(len).collect()

    with sql_conf(spark, "spark.sql.files.maxPartitionBytes", str(200 * 1024)):
        assert sorted(rows_per_task()) == [0, 0, 0, 0, 8, 8]  # the application's split cuts each file in 3
        with sql_confs(spark, whole_file_splits(parquet_sizes(path))):
            assert rows_per_task() == [8, 8]


@pytest.fixture
def arrow_batches_of_two(spark):
    keys = ("spark.sql.execution.arrow.maxRecordsPerBatch", "spark.sql.parquet.columnarReaderBatchSize")
    with sql_confs(spark, dict.fromkeys(keys, "2")):
        yield


def test_the_rebuild_option_builds_the_model_for_every_udf_call(
    spark, tmp_path, tiny_dataset, inference, arrow_batches_of_two
):
    config = compose_config("udf=scalar_pandas_udf", "udf.rebuild_model_per_batch=true", "warmup=0", "repeats=1")
    rebuilt = measure(spark, config, tiny_dataset, inference, tmp_path, predict_slots=2).timed[0].tasks
    assert rebuilt["model_builds"] == 6  # 12 images in Arrow batches of 2: six calls, six builds
    config = compose_config("udf=scalar_pandas_udf", "warmup=1", "repeats=1")
    cached = measure(spark, config, tiny_dataset, inference, tmp_path, predict_slots=2).timed[0].tasks
    assert cached["model_builds"] == 0


CLUSTER_CASES = {
    "stage_level_map_in_pandas": ["topology=stage_level", "udf=map_in_pandas"],
    "stage_level_map_in_arrow": ["topology=stage_level", "udf=map_in_arrow"],
    "stage_level_rdd": ["topology=stage_level", "udf=rdd_map_partitions"],
    "fused_one_gpu_per_task": ["topology=fused", "gpu.task_amount=1"],
}


@pytest.fixture(scope="module")
def local_cluster_runs(tmp_path_factory, cache_dir, weights_file) -> dict[str, dict]:
    """The cluster cases as real runs on local-cluster[1,4] with 2 emulated GPUs, each in a process of its own."""
    root = tmp_path_factory.mktemp("local-cluster")
    base = ["cluster=local_cluster", "gpu.emulate=2", "dataset.num_images=16", "dataset.images_per_file=4"]
    base += ["model.batch_size=4", "warmup=0", "repeats=1", "verify=true", f"cache_dir={cache_dir}"]
    base += ["model.arch=resnet18"]  # the scheduling is what these prove, not the network: shorter passes
    return {name: run_apart(root / name, *base, *overrides) for name, overrides in CLUSTER_CASES.items()}


@pytest.mark.slow
@pytest.mark.parametrize("case", [name for name in CLUSTER_CASES if name.startswith("stage_level")])
def test_stage_level_predicts_within_the_gpu_slots_while_preprocessing_runs_wider(local_cluster_runs, case):
    result = local_cluster_runs[case]
    assert result["status"] == "ok", result["error"]
    checks = result["evidence"]["checks"]
    assert checks["gpus"] == "emulated" and checks["model_slots"] == 2
    assert checks["model_stage_max_concurrent"] <= 2 < checks["preprocess_stage_max_concurrent"]
    assert checks["preprocess_ran_wider_than_predict"] and checks["model_stages_within_gpu_slots"]
    predict_stages = [stage for stage in result["evidence"]["stages"] if stage["step"] == "predict"]
    assert predict_stages and all(stage["task_resources"].get("gpu") == 1.0 for stage in predict_stages)
    assert result["metrics"]["top1_agreement"] == 1.0


@pytest.mark.slow
def test_fused_with_one_gpu_per_task_runs_at_most_two_tasks_each_with_its_gpu(local_cluster_runs):
    result = local_cluster_runs["fused_one_gpu_per_task"]
    assert result["status"] == "ok", result["error"]
    assert result["evidence"]["checks"]["model_stage_max_concurrent"] <= 2
    addresses = [task["gpu_addresses"] for task in result["evidence"]["model_task_gpus"]]
    assert addresses and all(len(a) == 1 and a[0] in ("0", "1") for a in addresses)
    assert gpus_shared(result["tasks"]["records"], "fused") == []  # tasks running at the same time: different GPUs
    assert result["env"]["gpus"] == "emulated"


@pytest.mark.slow
def test_a_local_cluster_runs_executor_logs_are_in_its_run_dir_not_in_the_python_environment(local_cluster_runs):
    result = local_cluster_runs["fused_one_gpu_per_task"]
    app_id = result["cluster"]["app_id"]
    kept = Path(result["run_dir"]) / "cluster" / "work" / app_id
    assert any(kept.glob("*/stderr")), f"no executor's stderr in {kept}"
    assert not (spark_home() / "work" / app_id).exists()
    assert result["cluster"]["log_dir"] == str(Path(result["run_dir"]) / "cluster")


@pytest.mark.parametrize("style", STYLES)
def test_every_pass_accounts_for_every_image_when_workers_are_reused(
    spark, tmp_path, tiny_dataset, null_inference, style
):
    # more tasks than slots and a warm-up pass: a worker runs several tasks, and functions a style keeps per
    # worker (predict_batch_udf's predict function) outlive the task that built them
    config = compose_config(f"udf={style}", "spark.partitions=4", "warmup=1", "repeats=1")
    run = measure(spark, config, tiny_dataset, null_inference, tmp_path, predict_slots=2)
    for measured in run.warmups + run.timed:
        assert (measured.read, measured.predicted) == (tiny_dataset.num_images, tiny_dataset.num_images)


@pytest.mark.slow
def test_two_stage_with_a_preprocess_cluster_runs_each_job_in_its_own_application(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    done = cli(
        tmp_path,
        "topology=two_stage",
        "+cluster@topology.preprocess_cluster=local",
        "topology.preprocess_cluster.cores=1",
        "cluster.cores=2",
        "dataset.num_images=16",
        "model.batch_size=4",
        "model.arch=resnet18",  # the two applications and the crops between them are what this proves, not the network
        "warmup=0",
        "repeats=1",
        "verify=true",
        f"hydra.run.dir={run_dir}",
        f"cache_dir={cache_dir}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    predict, preprocess = result["cluster"], result["cluster"]["preprocess"]
    assert (preprocess["master"], predict["master"]) == ("local[1]", "local[2]")
    assert preprocess["app_id"] != predict["app_id"]
    assert (run_dir / "preprocess" / "eventlog" / preprocess["app_id"]).is_file()
    assert (run_dir / "eventlog" / predict["app_id"]).is_file()
    metrics = result["metrics"]
    assert metrics["wall_s"] == [pytest.approx(metrics["job_s"]["preprocess"][0] + metrics["job_s"]["predict"][0])]
    assert metrics["intermediate_bytes"] >= 16 * 3 * 224 * 224 * 0.5
    assert (metrics["num_predicted"], metrics["top1_agreement"]) == (16, 1.0)
    steps = result["tasks"]["steps"]
    assert steps["preprocess"]["rows_in"] == steps["predict"]["rows_out"] == 16
    app_of = {stage["step"]: stage["app_id"] for stage in result["evidence"]["stages"] if stage["step"]}
    assert app_of == {"preprocess": preprocess["app_id"], "predict": predict["app_id"]}
    checks = result["evidence"]["checks"]
    assert checks["preprocess_stage_max_concurrent"] == 1 and checks["preprocess_slots"] == 1
    assert not Path(f"/proc/{predict['driver_pid']}").exists()  # the job process, and the JVM it ran, are gone
    assert processes_of({"cluster": predict}) == processes_of({"cluster": preprocess}) == []


def test_prefetch_does_not_change_the_predictions(spark, tmp_path, tiny_dataset, inference, cache_dir):
    config = compose_config("udf=iterator_pandas_udf", "udf.prefetch=2", "warmup=0", "repeats=1", "verify=true")
    run = measure(spark, config, tiny_dataset, inference, tmp_path, predict_slots=2)  # 12 images, batches of 4
    agreement = compare(run.predictions, reference_predictions(tiny_dataset, inference, cache_dir))
    assert agreement["top1_agreement"] == 1.0 and agreement["compared"] == tiny_dataset.num_images
