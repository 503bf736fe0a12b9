"""The original study's own costs: its data layout and UDFs as `tests.bench.original_costs` reproduces them, and
the original's table projected with the figures that benchmark measured, each naming where it came from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.projection.rates import (
    ARROW_CROPS,
    ARROW_LIST,
    FLOAT_CROP_BYTES,
    INT16_BYTES,
    MODEL_BUILD,
    ORIGINAL_MEASURED,
    ORIGINAL_UDFS,
    SCAN_CROPS,
    SCAN_LIST,
    original_costs,
)
from reports import original
from reports.__main__ import main
from tests.bench.original_costs import (
    CROP_VALUES,
    IMAGE_VALUES,
    LOGITS,
    derived,
    original_predict_input,
    original_preprocess,
    write_layout,
)


def test_the_original_layout_reads_back_in_spark_as_int16_arrays(spark, tmp_path: Path) -> None:
    listed, binary, crops = write_layout(tmp_path, images=3, per_file=2)
    frame = spark.read.parquet(str(listed))
    assert frame.schema.simpleString() == "struct<image:array<smallint>>"
    assert sorted(row[0] for row in frame.selectExpr("size(image)").collect()) == [IMAGE_VALUES] * 3
    assert spark.read.parquet(str(binary)).schema.simpleString() == "struct<image:binary>"
    assert len(list(listed.glob("*.parquet"))) == 2
    assert spark.read.parquet(str(crops)).schema.simpleString() == "struct<crop:array<float>>"


def test_the_original_udfs_give_float_crops_then_a_row_of_logits_an_image() -> None:
    rows = pd.Series(list(np.zeros((2, IMAGE_VALUES), dtype=np.int16)))
    crops = original_preprocess(rows)
    assert len(crops) == 2 and crops[0].dtype == np.float32 and crops[0].shape == (CROP_VALUES,)
    logits = original_predict_input(crops)
    assert len(logits) == 2 and logits[0].shape == (LOGITS,)


def test_each_derived_cost_is_its_case_less_the_case_it_is_built_on() -> None:
    cases = {
        "floor": 0.001,
        "scan/list_vectorized": 0.004,
        "scan/list_row_reader": 0.006,
        "scan/binary": 0.002,
        "arrow/list": 0.007,
        "arrow/list_row_reader": 0.011,
        "arrow/binary": 0.003,
        "scan/float_list_row_reader": 0.004,
        "arrow/float_list_row_reader": 0.006,
        "original/fused": 0.017,
        "python/preprocess": 0.009,
        "python/predict_input": 0.001,
    }
    figures = {name: {"cpu_s_per_image": value} for name, value in cases.items()} | {"model_build": {"cpu_s": 0.5}}
    found = derived({"figures": figures})
    assert found[SCAN_LIST] == pytest.approx(0.005)  # less the job's own 0.001
    assert found[ARROW_LIST] == pytest.approx(0.005)  # 0.011 - 0.006
    assert found[ORIGINAL_UDFS] == pytest.approx(0.010)  # 0.017 - 0.007
    assert (found[SCAN_CROPS], found[ARROW_CROPS]) == (pytest.approx(0.003), pytest.approx(0.002))
    assert found["python preprocess alone"] == pytest.approx(0.009)  # in this process: no job to take off
    assert found[MODEL_BUILD] == 0.5


def test_the_original_table_uses_the_costs_measured_here_and_names_their_source() -> None:
    rows, rates = original.table([])
    assert rates.scan_s_per_image == ORIGINAL_MEASURED[SCAN_LIST] > 0
    assert rates.transfer_s_per_byte == pytest.approx(ORIGINAL_MEASURED[ARROW_LIST] / INT16_BYTES)
    assert rates.preprocess_s == ORIGINAL_MEASURED[ORIGINAL_UDFS]
    assert rates.crop_transfer_s_per_byte == pytest.approx(ORIGINAL_MEASURED[ARROW_CROPS] / FLOAT_CROP_BYTES)
    assert rates.read_s_per_byte == pytest.approx(ORIGINAL_MEASURED[SCAN_CROPS] / FLOAT_CROP_BYTES)
    names = ("scan_s_per_image", "transfer_s_per_byte", "crop_transfer_s_per_byte", "preprocess_s", "model_build_s")
    for name in (*names, "read_s_per_byte"):
        assert "tests.bench.original_costs" in rates.sources[name] and "load average" in rates.sources[name]
    assert "assumed" in rates.sources["write_s_per_byte"]  # not the original's: still said to be assumed


def test_a_costs_file_replaces_the_recorded_figures_and_is_named(tmp_path: Path) -> None:
    doubled = {name: 2 * value for name, value in ORIGINAL_MEASURED.items()}
    document = {"started": "2026-12-06T21:00:00+00:00", "load_before": [0.5], "load_after": [0.7], "cpus": 2}
    path = tmp_path / "costs.json"
    path.write_text(json.dumps(document | {"derived": doubled}))
    costs = original_costs(path)
    assert costs["scan_s_per_image"][0] == 2 * ORIGINAL_MEASURED[SCAN_LIST]
    assert str(path) in costs["preprocess_s"][1] and "0.5 before" in costs["preprocess_s"][1]
    recorded, _ = original.table([])
    slower, rates = original.table([], costs=path)
    assert str(path) in rates.sources["scan_s_per_image"]
    standard = [row.name for row in recorded].index("Standard 4 GPU")
    assert slower[standard].original.images_per_s < recorded[standard].original.images_per_s
    assert slower[standard].ours == recorded[standard].ours  # our variant does not pay the original's costs


def test_the_command_line_takes_a_costs_file_only_with_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--original-table", "--original-costs", str(tmp_path / "missing.json")]) == 2
    assert "is not a file" in capsys.readouterr().err
    assert main([str(tmp_path), "--original-costs", str(tmp_path)]) == 2
    assert "only with --original-table" in capsys.readouterr().err
