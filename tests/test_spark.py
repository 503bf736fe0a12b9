"""The Spark engine on the test session's one SparkSession: same predictions as the reference, bad images
accounted for, the model built once per Python worker."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import pytest

from pipeline.config.schema import UdfStyle
from pipeline.engines.spark import measure
from pipeline.runtime.errors import describe_error
from pipeline.runtime.process_cpu import DRIVER_JVM, PYTHON_WORKERS
from pipeline.spark.ledger import TaskLedger
from pipeline.verify import compare, reference_predictions
from tests.helpers.config import compose_config
from tests.helpers.data import corrupt_images


def measured(spark, run_dir, dataset, inference, *overrides):
    config = compose_config("warmup=0", "repeats=1", *overrides)
    return measure(spark, config, dataset, inference, run_dir, predict_slots=2)


def test_map_in_pandas_agrees_with_the_reference(spark, tmp_path, tiny_dataset, inference, cache_dir):
    run = measured(spark, tmp_path, tiny_dataset, inference, "verify=true")
    agreement = compare(run.predictions, reference_predictions(tiny_dataset, inference, cache_dir))
    assert agreement["compared"] == tiny_dataset.num_images
    assert agreement["top1_agreement"] == 1.0
    assert agreement["max_abs_prob_diff"] <= 1e-4
    assert agreement["duplicate_ids"] == 0


@pytest.mark.parametrize(("sink", "passes"), [("parquet", 1), ("noop", 2)])
def test_verify_reads_what_the_last_pass_wrote_and_runs_again_only_after_a_noop_sink(
    spark, tmp_path, tiny_dataset, inference, sink, passes, monkeypatch
):
    reported: list[str] = []  # what the ledger holds when the run removes it: the last timed pass's reports,
    remove = TaskLedger.remove  # and a verify pass's if one ran

    def spied(ledger: TaskLedger) -> None:
        reported.extend(path.name for path in ledger.directory.glob("*.task"))
        remove(ledger)

    monkeypatch.setattr(TaskLedger, "remove", spied)
    run = measured(spark, tmp_path, tiny_dataset, inference, "verify=true", f"sink={sink}")
    assert run.predictions["id"].nunique() == len(run.predictions) == tiny_dataset.num_images
    assert len({name.split("-")[1] for name in reported}) == passes
    assert not (tmp_path / "tasks" / "all").exists()  # nothing left of them


def test_every_image_is_counted_once_per_pass(spark, tmp_path, tiny_dataset, null_inference):
    run = measured(spark, tmp_path, tiny_dataset, null_inference, "warmup=1", "repeats=2")
    assert [p.predicted for p in run.warmups + run.timed] == [tiny_dataset.num_images] * 3
    assert all(p.tasks["steps"]["fused"]["rows_in"] == tiny_dataset.num_images for p in run.timed)


def test_a_pass_records_the_cpu_of_the_driver_s_jvm_and_the_python_workers(
    spark, tmp_path, tiny_dataset, null_inference
):
    cpu = measured(spark, tmp_path, tiny_dataset, null_inference).timed[0].cpu
    assert cpu[DRIVER_JVM] > 0 and cpu[PYTHON_WORKERS] > 0  # the workers decoded every image


def test_model_is_built_once_per_python_worker(spark, tmp_path, tiny_dataset, inference):
    link = tmp_path / "once.pt"  # weights no other test loads: this run's model is new to every worker
    link.symlink_to(inference.model.weights_file)
    inference = replace(inference, model=replace(inference.model, weights_file=str(link)))
    run = measured(spark, tmp_path, tiny_dataset, inference, "repeats=2")
    for timed in run.timed:
        assert timed.tasks["steps"]["fused"]["tasks"] >= 2
        assert timed.tasks["max_model_loads_per_worker"] == 1
    # 12 images at batch size 4: every task ran several model batches on its worker's one model
    assert max(record["rows_in"] for record in run.timed[-1].tasks["records"]) > inference.batch_size


def test_tasks_use_their_cpu_share_on_the_cpu(spark, tmp_path, tiny_dataset, null_inference):
    records = measured(spark, tmp_path, tiny_dataset, null_inference).timed[0].tasks["records"]
    assert {(record["cpus"], record["device"], tuple(record["gpu_addresses"])) for record in records} == {
        (1, "cpu", ())
    }


@pytest.mark.parametrize("style", [style.value for style in UdfStyle])
def test_corrupt_images_are_skipped_counted_and_listed(spark, tmp_path, bad_dataset, null_inference, style):
    run = measured(spark, tmp_path, bad_dataset, null_inference, f"udf={style}")
    timed = run.timed[0]
    assert {record.id for record in timed.bad} == set(corrupt_images())
    assert all(record.reason for record in timed.bad)
    assert timed.predicted == bad_dataset.num_images - len(corrupt_images())


def test_on_bad_image_fail_stops_the_run_naming_the_image(spark, tmp_path, bad_dataset, null_inference):
    strict = dataclasses.replace(null_inference, fail_on_bad_image=True)
    with pytest.raises(Exception) as failure:
        measured(spark, tmp_path, bad_dataset, strict)
    error = describe_error(failure.value)
    assert error["type"] == "BadImageError"
    assert "id=bad-" in error["message"] and "on_bad_image=fail" in error["message"]


def test_parquet_sink_writes_every_prediction(spark, tmp_path, tiny_dataset, null_inference):
    measured(spark, tmp_path, tiny_dataset, null_inference, "sink=parquet")
    written = spark.read.parquet(str(tmp_path / "predictions")).toPandas()
    assert sorted(written.columns) == ["id", "label", "prob", "top1", "top5"]
    assert sorted(written["id"]) == [f"{index:09d}" for index in range(tiny_dataset.num_images)]
    assert all(len(top5) == 5 and top5[0] == top1 for top5, top1 in zip(written["top5"], written["top1"]))


def test_a_second_application_in_the_same_process_is_refused(spark, tmp_path):
    from pipeline.spark.cluster import cluster
    from pipeline.spark.session import spark_conf, spark_session

    config = compose_config()
    with pytest.raises(RuntimeError, match="already active"), cluster(config, tmp_path) as local:
        with spark_session(spark_conf(config, tmp_path, 2**20, local)):
            pass
