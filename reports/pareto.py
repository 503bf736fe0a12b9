"""Which variants are worth considering at all: those no other variant beats on both throughput and cost.

A variant is on the Pareto frontier when no other one has at least its throughput at no more than its
cost per image, and is strictly better on one of the two. The best variant, for a report that has to name
one, is the frontier's cheapest per image (ties: the faster); the frontier is what a reader trades along.
"""

from __future__ import annotations

from collections.abc import Hashable

import pandas as pd


def pareto_front(points: pd.DataFrame, faster: str, cheaper: str) -> pd.Series:
    """A boolean mask of the rows on the frontier: higher `faster` and lower `cheaper` are better.

    Rows missing either value are never on it.
    """
    known = points[[faster, cheaper]].dropna()
    on_front = pd.Series(False, index=points.index)
    for index, (speed, price) in known.iterrows():
        at_least_as_good = (known[faster] >= speed) & (known[cheaper] <= price)
        strictly_better = (known[faster] > speed) | (known[cheaper] < price)
        on_front[index] = not (at_least_as_good & strictly_better).any()
    return on_front


def best(points: pd.DataFrame, faster: str, cheaper: str) -> Hashable | None:
    """The index of the cheapest row on the frontier (the faster one on a tie); None without any."""
    front = points[pareto_front(points, faster, cheaper)]
    if front.empty:
        return None
    return front.sort_values([cheaper, faster], ascending=[True, False]).index[0]
