"""Every batch axis proves it took effect: the tasks report the batches they were handed, and a request that
was cut short says which cap won (a Parquet row group, maxBytesPerBatch), on real Spark batches."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from pipeline.data.datasets import prepare
from pipeline.engines.spark import measure
from pipeline.spark.batching import DEFAULT_MAX_BYTES_PER_BATCH, MAX_BYTES_KEY, batch_sizes, check_batches
from pipeline.spark.session import spark_conf
from tests.helpers.config import compose_config
from tests.helpers.spark import sql_conf


def record(step: str, udf_calls: list[int], model_calls: list[int], row_bytes: int = 100) -> dict:
    return {
        "step": step,
        "stage": 1,
        "rows_in": sum(model_calls or udf_calls),
        "udf_call_rows": udf_calls,
        "udf_call_bytes": [rows * row_bytes for rows in udf_calls],
        "model_call_rows": model_calls,
    }


def checked(records: list[dict], *overrides: str, conf: dict | None = None, row_group_rows: int = 32) -> dict:
    return check_batches(records, compose_config(*overrides), conf or {}, row_group_rows)


def test_batches_that_reached_the_request_took_effect():
    checks = checked([record("fused", [128, 72], [32] * 6 + [8])], "spark.max_records_per_batch=128")
    assert checks["batch_axes_took_effect"] and checks["batch_caps"] == []
    assert checks["batching"]["largest_udf_call_rows"] == {"fused": 128}


def test_a_task_with_fewer_rows_than_asked_had_them_all_in_one_batch_and_took_effect():
    checks = checked([record("fused", [40], [32, 8])], "spark.max_records_per_batch=1000")
    assert checks["batch_axes_took_effect"]


def test_batches_of_one_row_group_name_the_row_group_size():
    checks = checked(
        [record("fused", [32, 32, 32, 32], [32] * 4)], "spark.max_records_per_batch=1000", row_group_rows=32
    )
    assert not checks["batch_axes_took_effect"]
    [cap] = checks["batch_caps"]
    assert "spark.max_records_per_batch=1000" in cap and "dataset.row_group_size" in cap and "32 rows" in cap


def test_batches_at_the_byte_limit_name_max_bytes_per_batch():
    conf = {MAX_BYTES_KEY: str(10 * 1000)}
    checks = checked(
        [record("fused", [100, 100, 56], [256], row_bytes=100)],
        "spark.max_records_per_batch=1000",
        "model.batch_size=256",
        conf=conf,
        row_group_rows=1000,
    )
    [cap] = checks["batch_caps"]
    assert f"{MAX_BYTES_KEY}=10000" in cap and "spark.max_bytes_per_batch" in cap


def test_a_model_batch_cut_short_by_the_arrow_batches_names_them():
    checks = checked(
        [record("fused", [32, 32], [32, 32])],
        "udf=scalar_pandas_udf",
        "spark.max_records_per_batch=32",
        "model.batch_size=64",
    )
    [cap] = checks["batch_caps"]
    assert cap.startswith("model.batch_size=64 did not take effect") and "Arrow batches" in cap


def test_styles_that_hide_their_arrow_batches_are_not_checked_for_max_records_per_batch():
    checks = checked([record("fused", [4, 4, 4], [4, 4, 4])], "udf=predict_batch_udf", "model.batch_size=4")
    assert checks["batch_axes_took_effect"]


def test_the_rdd_style_has_no_arrow_batches_to_check_for_max_records_per_batch():
    checks = checked([record("fused", [4, 4, 4], [4, 4, 4])], "udf=rdd_map_partitions", "model.batch_size=4")
    assert checks["batch_axes_took_effect"]


def test_arrow_batches_cut_short_by_no_cap_measured_say_so():
    checks = checked([record("fused", [50, 50, 20], [32] * 3 + [24])], "spark.max_records_per_batch=1000")
    [cap] = checks["batch_caps"]  # above the 32-row row groups, far below the byte limit
    assert cap.endswith("capped by not named by what was measured: the largest batch had 50 rows")


def test_a_step_that_reads_no_images_never_blames_the_row_groups():
    overrides = ("spark.max_records_per_batch=1000", "model.batch_size=8")
    checks = checked([record("predict", [8, 8, 8], [8, 8, 8])], *overrides, row_group_rows=32)
    [cap] = checks["batch_caps"]
    assert "in the predict step" in cap and "row_group_size" not in cap and "not named by what was measured" in cap


def test_model_calls_cut_short_by_no_arrow_batch_say_so():
    overrides = ("spark.max_records_per_batch=1000", "model.batch_size=32")
    checks = checked([record("fused", [100], [16] * 6 + [4])], *overrides)
    [cap] = checks["batch_caps"]
    assert cap == (
        "model.batch_size=32 did not take effect in the fused step (largest model call 16 rows): capped by not named "
        "by what was measured"
    )


def test_each_step_of_a_two_step_pass_is_checked_on_its_own_batches():
    records = [record("preprocess", [32, 32], []), record("predict", [64], [32, 32])]
    checks = checked(records, "spark.max_records_per_batch=1000", "model.batch_size=32", row_group_rows=32)
    [cap] = checks["batch_caps"]
    assert "in the preprocess step" in cap and "row groups of 32 rows" in cap
    assert checks["batching"]["largest_udf_call_rows"] == {"predict": 64, "preprocess": 32}
    assert checks["batching"]["largest_model_call_rows"] == {"predict": 32}


def test_batch_sizes_spread_each_stage_over_its_tasks():
    [stage] = batch_sizes([record("fused", [32, 8], [32, 8]), record("fused", [16], [16])])
    assert stage["runs_model"] and stage["tasks"] == 2
    assert stage["udf_call_rows"] == {"min": 8, "median": 16, "max": 32, "count": 3}


def test_spark_default_max_bytes_per_batch_is_the_one_assumed(spark):
    assert int(spark.conf.get(MAX_BYTES_KEY).removesuffix("b")) == DEFAULT_MAX_BYTES_PER_BATCH


def test_the_max_bytes_per_batch_axis_becomes_the_conf(tmp_path):
    from pipeline.spark.cluster import cluster

    config = compose_config("spark.max_bytes_per_batch=1048576")
    with cluster(config, tmp_path) as local:
        assert spark_conf(config, tmp_path, 2**20, local)[MAX_BYTES_KEY] == "1048576"


@pytest.fixture(scope="module")
def row_groups_of(cache_dir):
    """48 generated JPEGs in one file, in row groups of the given size."""
    return lambda size: prepare(
        compose_config("dataset.num_images=48", f"dataset.row_group_size={size}").dataset, cache_dir
    )


def run_batches(spark, tmp_path, dataset, inference, *overrides: str, max_bytes: int | None = None) -> dict:
    """One timed pass at 1,000 rows per Arrow batch (the session's confs, as a run would set them) and its
    batch checks."""
    config = compose_config(
        "warmup=0", "repeats=1", "spark.max_records_per_batch=1000", "model.batch_size=4", *overrides
    )
    keys = {"spark.sql.execution.arrow.maxRecordsPerBatch": "1000", "spark.sql.parquet.columnarReaderBatchSize": "1000"}
    if max_bytes is not None:
        keys[MAX_BYTES_KEY] = str(max_bytes)
    with ExitStack() as confs:
        for key, value in keys.items():
            confs.enter_context(sql_conf(spark, key, value))
        records = measure(spark, config, dataset, inference, tmp_path, predict_slots=2).timed[0].tasks["records"]
    conf = {MAX_BYTES_KEY: str(max_bytes)} if max_bytes is not None else {}
    return check_batches(records, config, conf, dataset.row_group_rows) | {"records": records}


def test_a_scalar_udf_over_small_row_groups_says_the_row_group_capped_it(
    spark, tmp_path, row_groups_of, null_inference
):
    checks = run_batches(spark, tmp_path, row_groups_of(8), null_inference, "udf=scalar_pandas_udf")
    assert max(call for r in checks["records"] for call in r["udf_call_rows"]) <= 8
    assert not checks["batch_axes_took_effect"]
    [cap] = [cap for cap in checks["batch_caps"] if cap.startswith("spark.max_records_per_batch=1000")]
    assert "row groups of 8 rows" in cap


def test_row_groups_as_large_as_the_data_give_the_scalar_udf_its_big_calls(
    spark, tmp_path, row_groups_of, null_inference
):
    checks = run_batches(spark, tmp_path, row_groups_of(48), null_inference, "udf=scalar_pandas_udf")
    calls = [call for r in checks["records"] for call in r["udf_call_rows"]]
    assert sum(calls) == 48 and max(calls) == 48  # one row group, one task, one call
    assert checks["batch_axes_took_effect"], checks["batch_caps"]


def test_max_bytes_per_batch_is_named_when_it_wins(spark, tmp_path, row_groups_of, null_inference):
    dataset = row_groups_of(48)
    row_bytes = dataset.size_bytes // dataset.num_images
    checks = run_batches(spark, tmp_path, dataset, null_inference, "udf=map_in_pandas", max_bytes=3 * row_bytes)
    calls = [call for r in checks["records"] for call in r["udf_call_rows"]]
    assert sum(calls) == 48 and max(calls) <= 4
    assert any(MAX_BYTES_KEY in cap for cap in checks["batch_caps"]), checks["batch_caps"]
