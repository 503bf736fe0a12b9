"""The oracle of every agreement test, `compare`, fed runs that disagree, miss, repeat or invent predictions."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.verify import compare

REFERENCE = pd.DataFrame({"id": ["a", "b", "c", "d"], "top1": [1, 2, 3, 4], "prob": [0.5, 0.6, 0.7, 0.8]})


def test_identical_predictions_agree_fully():
    agreement = compare(REFERENCE.copy(), REFERENCE)
    assert agreement["top1_agreement"] == 1.0 and agreement["compared"] == 4
    assert agreement["max_abs_prob_diff"] == 0.0
    assert agreement["missing_ids"] == agreement["unexpected_ids"] == [] and agreement["duplicate_ids"] == 0


def test_a_different_class_lowers_the_agreement():
    run = REFERENCE.assign(top1=[1, 2, 3, 99], prob=[0.5, 0.6, 0.7, 0.3])
    agreement = compare(run, REFERENCE)
    assert agreement["top1_agreement"] == 0.75
    assert agreement["max_abs_prob_diff"] == pytest.approx(0.5)


def test_a_missing_prediction_counts_as_disagreement_and_is_named():
    agreement = compare(REFERENCE[REFERENCE["id"] != "c"], REFERENCE)
    assert agreement["top1_agreement"] == 0.75 and agreement["compared"] == 3
    assert agreement["missing_ids"] == ["c"]


def test_duplicated_and_unexpected_predictions_are_counted_not_compared_twice():
    run = pd.concat([REFERENCE, REFERENCE.iloc[[0]], pd.DataFrame({"id": ["z"], "top1": [1], "prob": [0.1]})])
    agreement = compare(run, REFERENCE)
    assert agreement["duplicate_ids"] == 1 and agreement["compared"] == 4
    assert agreement["unexpected_ids"] == ["z"]


def test_a_repeated_prediction_that_disagrees_makes_its_image_disagree():
    run = pd.concat([REFERENCE, pd.DataFrame({"id": ["a"], "top1": [7], "prob": [0.5]})])
    agreement = compare(run, REFERENCE)
    assert agreement["top1_agreement"] == 0.75 and agreement["compared"] == 4


def test_order_does_not_matter():
    assert compare(REFERENCE.iloc[::-1], REFERENCE)["top1_agreement"] == 1.0
