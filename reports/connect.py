"""Classic Spark against Spark Connect on the same work: per UDF style, the Connect run's throughput as a
ratio of the classic run's, and the styles Connect cannot run with the reason it refused them.

A Connect run (`cluster=connect`) is paired with the classic runs (any other Spark cluster mode but an sc://
server, whose result records `cluster.connect`) of the same model, data set, machine, topology, UDF style and
batch size; the best successful run of each side is compared, warm (median timed pass) and cold (first pass).
A ratio below 1 is what Connect costs here. A variant refused at validation has status `unavailable`: it is
listed as "not available under Connect", never as a failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from reports.aggregate import fastest_ok, find_jobs, job_frame
from reports.peers import COLD, with_cold

PAIR = ("model", "dataset_source", "image_format", "num_images", "hostname", "topology", "udf", "batch_size")
CONNECT_MODES = ("connect",)


@dataclass(frozen=True)
class ConnectRow:
    work: str  # e.g. "resnet50 · 64 jpeg images (synthetic) · fused"
    udf: str
    classic: float | None  # images/s, warm
    connect: float | None
    ratio: float | None  # connect / classic, warm
    cold_ratio: float | None  # connect / classic, first passes
    unavailable: str | None = None  # why Connect refused this style, when it did


def _work(row: dict) -> str:
    return (
        f"{row['model']} · {row['num_images']} {row['image_format']} images ({row['dataset_source']}) · "
        f"{row['topology']}"
    )


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or pd.isna(value) or pd.isna(base) or not base:
        return None
    return float(value) / float(base)


def compare(frame: pd.DataFrame) -> list[ConnectRow]:
    """One row per (work, UDF style) with an ok Connect run, then one per (model, topology, style) Connect
    refused; see the module docstring. A refused run has no image count (it stopped before the data), so it is
    matched by model, topology and style only."""
    spark = frame[(frame["engine"] == "spark") & frame["udf"].notna()]
    rows: list[ConnectRow] = []
    for key, group in spark.groupby(list(PAIR), dropna=False, sort=True):
        best_connect = fastest_ok(group[group["cluster"].isin(CONNECT_MODES)])
        if best_connect is None:
            continue  # no ok Connect run: refused ones are below, failed ones in the failed jobs section
        best_classic = fastest_ok(group[~group["cluster"].isin(CONNECT_MODES)])
        first = dict(zip(PAIR, key))
        warm = lambda best: None if best is None else float(best["throughput_images_per_s"])  # noqa: E731
        cold = lambda best: None if best is None else best.get(COLD)  # noqa: E731
        rows.append(
            ConnectRow(
                work=_work(first),
                udf=str(first["udf"]),
                classic=warm(best_classic),
                connect=warm(best_connect),
                ratio=_ratio(warm(best_connect), warm(best_classic)),
                cold_ratio=_ratio(cold(best_connect), cold(best_classic)),
            )
        )
    refused = spark[spark["cluster"].isin(CONNECT_MODES) & (spark["status"] == "unavailable")]
    for (model, topology, udf), group in refused.groupby(["model", "topology", "udf"], dropna=False, sort=True):
        work = f"{model} · {topology}"
        rows.append(ConnectRow(work, str(udf), None, None, None, None, str(group.iloc[0]["error_message"])))
    return rows


def _times(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x"


def summary(directories: list[Path]) -> list[str]:
    """The lines a sweep prints at its end: per work and style, Connect's ratio to classic, or why it is not
    available; nothing when the sweep has no Connect run."""
    jobs = find_jobs(directories)
    rows = compare(with_cold(job_frame(jobs), jobs)) if jobs else []
    lines = []
    for row in rows:
        if row.unavailable:
            lines.append(f"{row.work} · {row.udf}: not available under Connect ({row.unavailable})")
        elif row.classic is None:
            lines.append(f"{row.work} · {row.udf}: Connect {row.connect:.2f} img/s, no classic run to compare")
        else:
            lines.append(
                f"{row.work} · {row.udf}: Connect / classic = {_times(row.ratio)} warm "
                f"({row.connect:.2f} vs {row.classic:.2f} img/s), {_times(row.cold_ratio)} cold"
            )
    return lines
