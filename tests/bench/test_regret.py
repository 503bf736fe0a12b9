"""The regret benchmark's arithmetic (tests/bench/regret.py): what its table prints for a pick against the best."""

from __future__ import annotations

import pytest

from tests.bench.regret import Row, ratio, regret, table


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
