"""Per UDF style: the cost of the style alone (identity), and the harness's ceiling (the pipeline, no model).

Identity cases move the original study's raw images (192 KiB each) through each style and back; their whole
time is overhead. Null-model cases run the variants' real `apply` on the JPEGs — decode, resize, crop and
normalize in the Python workers, every task reported through the ledger — with a constant prediction instead
of ResNet50. Their overhead per image is the wall time per image beyond what the same preprocessing costs in
one process without Spark, spread over the task slots.
"""

from __future__ import annotations

import pytest

from pipeline.config.schema import UdfStyle
from pipeline.inference.model import ModelSpec
from pipeline.inference.preprocess import Preprocessing
from pipeline.inference.steps import Inference, fused
from pipeline.spark.ledger import TaskLedger, summarize
from tests.bench.harness import BenchData, CallLog, measure, record
from tests.bench.styles import IDENTITY
from tests.helpers.config import compose_config
from variants import UDF_STYLES

STYLES = [style.value for style in UdfStyle]
MODEL_BATCH = 32  # the default model.batch_size


@pytest.mark.parametrize("style", STYLES)
def test_identity(benchmark, spark, bench: BenchData, style: str) -> None:
    log = CallLog(spark.sparkContext)
    case = f"identity:{style}"
    measured = measure(benchmark, spark, case, lambda: IDENTITY[UdfStyle(style)](bench.raw.frame, log), log)
    info = record(benchmark, case, "udf_style_identity", measured, bench.images, bench.slots, style=style)
    assert info["rows_seen"] == bench.images


@pytest.mark.parametrize("style", STYLES)
def test_null_model(benchmark, spark, bench: BenchData, style: str, tmp_path) -> None:
    ledger = TaskLedger(tmp_path / "tasks")
    inference = Inference(preprocessing=Preprocessing(), model=ModelSpec(name="null_model"), batch_size=MODEL_BATCH)
    options = compose_config(f"udf={style}").udf
    case = f"null_model:{style}"
    build = lambda: UDF_STYLES[UdfStyle(style)](bench.jpeg.frame, fused(inference), ledger, options)  # noqa: E731
    measured = measure(benchmark, spark, case, build, reset=ledger.clear)
    in_process_ms = bench.preprocess_ms_per_image / bench.slots
    ms_per_image = 1000 * measured.median_s / bench.images
    record(
        benchmark,
        case,
        "udf_style_null_model",
        measured,
        bench.images,
        bench.slots,
        style=style,
        preprocess_ms_per_image_in_process=bench.preprocess_ms_per_image,
        overhead_ms_per_image=ms_per_image - in_process_ms,
    )
    steps = summarize(ledger.records())["steps"]
    assert steps["fused"]["rows_in"] == steps["fused"]["rows_out"] == bench.images
