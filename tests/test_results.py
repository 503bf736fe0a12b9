"""The result contract (`pipeline.results`): light to import, one list of variant fields for the producer
and the reports, and a decoder that reads every record on disk, old, partial or lost."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import MISSING, asdict, fields
from pathlib import Path

import pytest

from pipeline.provenance import variant_of
from pipeline.results import VARIANT_FIELDS, Metrics, Result, Variant, as_record, as_result, read_result, write_result
from pipeline.rundir import RunDir, atomic_write
from reports.aggregate import HEADLINE_FIELDS, SHORT_NAMES
from tests.helpers.config import compose_config

FIXTURE = Path(__file__).parent / "fixtures" / "results" / "sweep" / "0" / "result.json"


@pytest.mark.parametrize("module", ["pipeline.results", "reports.aggregate", "reports.build"])
def test_the_contract_and_the_reports_import_no_torch_or_spark(module: str) -> None:
    heavy = ("torch", "torchvision", "pyspark")
    code = f"import sys, {module}; print([name for name in {heavy!r} if name in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("overrides", [(), ("engine=torch",), ("model=null_model", "udf=map_in_arrow")])
def test_variant_fields_are_the_fields_the_producer_fills(overrides: tuple[str, ...]) -> None:
    assert all(known.default is MISSING and known.default_factory is MISSING for known in fields(Variant))
    variant = variant_of(compose_config(*overrides))
    assert tuple(asdict(variant)) == VARIANT_FIELDS
    record = as_record(Result("ok", variant, {}, {}, "run", "now"))
    assert tuple(record["variant"]) == VARIANT_FIELDS


def test_spark_knobs_are_recorded_for_spark_runs_only() -> None:
    variant = variant_of(
        compose_config("engine=torch", "udf=iterator_pandas_udf", "udf.prefetch=4", "spark.max_records_per_batch=7")
    )
    assert (variant.engine, variant.udf, variant.prefetch, variant.max_records_per_batch) == ("torch", None, None, None)
    spark = variant_of(compose_config("udf=iterator_pandas_udf", "udf.prefetch=4", "spark.max_records_per_batch=7"))
    assert (spark.udf, spark.prefetch, spark.max_records_per_batch) == ("iterator_pandas_udf", 4, 7)


def test_model_knobs_are_recorded_for_the_model_that_has_them() -> None:
    knobs = ("model.precision=bf16", "model.channels_last=false", "model.compile=true")
    null = variant_of(compose_config("model=null_model", *knobs))
    assert (null.precision, null.channels_last, null.compile) == (None, None, None)
    resnet = variant_of(compose_config("model=resnet50", *knobs))
    assert (resnet.precision, resnet.channels_last, resnet.compile) == ("bf16", False, True)


def test_every_variant_field_can_be_labelled() -> None:
    assert set(VARIANT_FIELDS) <= set(HEADLINE_FIELDS) | set(SHORT_NAMES)


def test_a_written_result_has_the_keys_of_the_records_on_disk() -> None:
    on_disk = read_result(FIXTURE)
    record = as_record(as_result(on_disk))
    assert set(record) == set(on_disk)
    assert set(on_disk["metrics"]) <= set(record["metrics"])
    assert {key: record["variant"][key] for key in on_disk["variant"]} == on_disk["variant"]


def test_a_result_round_trips_through_its_file(tmp_path: Path) -> None:
    result = as_result(read_result(FIXTURE))
    write_result(tmp_path, result)
    assert as_result(read_result(RunDir(tmp_path).result)) == result
    assert [path.name for path in tmp_path.iterdir()] == ["result.json"]


def test_the_decoder_keeps_a_partial_records_known_fields() -> None:
    record = {
        "status": "ok",
        "variant": {"engine": "torch", "batch_size": 8, "retired_knob": 1},
        "metrics": {"num_images": 5, "wall_s": [1.0, 2.0], "retired_metric": 3, "warmup_s": None},
        "env": {"gpus": "none"},
        "tasks": None,
    }
    result = as_result(record)
    assert result.status == "ok" and result.env == {"gpus": "none"}
    assert (result.variant.engine, result.variant.batch_size, result.variant.udf) == ("torch", 8, None)
    assert (result.metrics.num_images, result.metrics.wall_s, result.metrics.warmup_s) == (5, [1.0, 2.0], [])
    assert result.metrics.throughput_images_per_s is None and result.tasks == {}
    assert result.run_dir is None and result.started_at is None and result.error is None


def test_a_lost_job_has_no_variant_and_writes_an_empty_one(tmp_path: Path) -> None:
    lost = Result("failed", None, {}, {}, str(tmp_path), "now", error={"type": "JobProcessDied", "message": "-9"})
    write_result(tmp_path, lost)
    on_disk = json.loads(RunDir(tmp_path).result.read_text())
    assert on_disk["variant"] == {} and on_disk["schema_version"] == 1
    assert as_result(on_disk) == lost


def test_an_unreadable_stand_in_decodes_to_its_status_and_error() -> None:
    result = as_result({"status": "unreadable", "error": {"type": "JSONDecodeError", "message": "not JSON"}})
    assert (result.status, result.error["type"], result.variant, result.metrics) == (
        "unreadable",
        "JSONDecodeError",
        None,
        Metrics(),
    )


def test_atomic_write_leaves_the_whole_file_as_utf8_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "deeper" / "report.html"
    atomic_write(target, "bs=32 · 1.0–2.0 ×")
    atomic_write(target, "bs=64 · 1.0–2.0 ×")
    assert target.read_bytes().decode("utf-8") == "bs=64 · 1.0–2.0 ×"
    assert [path.name for path in target.parent.iterdir()] == ["report.html"]
