"""The regret benchmark's arithmetic (tests/bench/regret.py): which points its sweep runs, and what its table
prints for a pick against the best."""

from __future__ import annotations

from dataclasses import replace

import pytest

from reports.advise import Candidate, Choice
from tests.bench.regret import Measured, Row, confirmed, neighbours, ratio, regret, sweep_points, table

PICK = Candidate("fused", ("map_in_pandas", "map_in_arrow"), 16, 32, None, 0.5, None, False, 1)


def _choices(*candidates: Candidate) -> list[Choice]:
    return [Choice(candidate, None, None) for candidate in candidates]  # the sweep never reads the prediction


def test_a_picks_neighbours_change_one_setting_each_and_keep_its_style() -> None:
    batch, rows = replace(PICK, batch_size=32), replace(PICK, records_per_batch=128)
    prefetch = replace(PICK, styles=("iterator_pandas_udf",), prefetch=True)
    found = [choice.candidate for choice in neighbours(_choices(PICK, batch, rows, prefetch), PICK)]
    assert found == [replace(batch, styles=("map_in_pandas",)), replace(rows, styles=("map_in_pandas",)), prefetch]


def test_a_point_two_settings_or_a_topology_away_is_not_a_neighbour() -> None:
    both = replace(PICK, batch_size=32, partitions=4)
    other = replace(PICK, topology="split")
    assert neighbours(_choices(both, other), PICK) == []


def test_stage_levels_two_gpu_amounts_are_one_setting() -> None:
    pick = replace(PICK, topology="stage_level", task_gpu_amount=0.5, predict_gpu_amount=1.0)
    halves = replace(pick, predict_gpu_amount=0.5)
    assert [choice.candidate.predict_gpu_amount for choice in neighbours(_choices(halves), pick)] == [0.5]


def test_the_sweep_runs_each_point_once_whichever_tied_style_names_it() -> None:
    second = replace(PICK, batch_size=32, styles=("map_in_arrow",))
    ranked = _choices(PICK, replace(PICK, batch_size=32))
    points = sweep_points(ranked, _choices(PICK, second))
    assert [choice.candidate.batch_size for choice in points] == [16, 32]


def test_regret_is_zero_when_the_pick_is_the_best_measured_variant() -> None:
    assert regret(12.0, 12.0) == 0.0


def test_regret_is_the_share_of_the_best_throughput_the_pick_loses() -> None:
    assert regret(9.0, 10.0) == pytest.approx(0.1)


def test_regret_is_unknown_when_the_pick_or_the_best_did_not_run() -> None:
    assert regret(None, 10.0) is None
    assert regret(9.0, None) is None


def test_ratio_is_predicted_over_measured() -> None:
    assert ratio(8.0, 10.0) == pytest.approx(0.8)
    assert ratio(8.0, None) is None


def test_the_table_prints_one_line_a_shape_with_regret_ratio_and_load() -> None:
    row = Row("1x2", "device 10 img/s", "fused b8", 9.0, 8.0, "split b8", 10.0, (2.5, 3.75))
    line = table([row])[-1]
    assert "| 20.0% |" in line
    assert "| 1.12 |" in line
    assert line.endswith("| 2.5-3.8 |")
    assert table([Row("1x2", "d", "p", 9.0, None, "p", None, (1.0, 1.0))])[-1].split("|")[8].strip() == "-"


def test_a_confirmed_point_is_the_median_of_its_runs_that_gave_a_throughput() -> None:
    first = Measured("fused b8", 210.0, 189.0, "ran", (210.0,))
    again = [Measured("fused b8", 190.0, 189.0, "ran", (190.0,)), Measured("fused b8", None, None, "failed")]
    again.append(Measured("fused b8", 196.0, 189.0, "ran", (196.0,)))
    found = confirmed(first, again)
    assert (found.images_per_s, found.runs) == (196.0, (210.0, 190.0, 196.0))
