"""Classic Spark against Spark Connect on the same work: per UDF style, the Connect run's throughput as a
ratio of the classic run's, and the styles Connect cannot run with the reason it refused them.

A Connect run (`cluster=connect`, or `cluster=remote` at an sc:// server: the job table's `connect`) is paired
with the classic runs that differ from it in the cluster mode and Connect only (`COMPARED`): the same work,
cluster shape, topology, UDF style and knobs (`reports.aggregate.comparable`); the best successful run of each
side is compared, warm (median timed pass) and cold (first pass). A ratio below 1 is what Connect costs here.
A variant refused at validation has status `unavailable`: it is listed with the reason it recorded ("not
available under Spark Connect: ..."), never as a failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from reports.aggregate import comparable, fastest_ok, find_jobs, job_frame, work_text
from reports.peers import COLD, with_cold

COMPARED = ("cluster", "connect")  # cluster=connect's classic twin runs its backend's mode


@dataclass(frozen=True)
class ConnectRow:
    work: str  # e.g. "resnet50 · 64 jpeg images (synthetic) · pil decoder · on vm · fused"
    udf: str
    classic: float | None  # images/s, warm
    connect: float | None
    ratio: float | None  # connect / classic, warm
    cold_ratio: float | None  # connect / classic, first passes
    unavailable: str | None = None  # the reason Connect refused this style, as the run recorded it


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or pd.isna(value) or pd.isna(base) or not base:
        return None
    return float(value) / float(base)


def compare(frame: pd.DataFrame) -> list[ConnectRow]:
    """One row per (work, UDF style) with an ok Connect run, then one per (model, topology, style) Connect
    refused; see the module docstring. A refused run has no image count (it stopped before the data), so it is
    matched by model, topology and style only."""
    spark = frame[(frame["engine"] == "spark") & frame["udf"].notna()]
    under_connect = spark["connect"].fillna(False).astype(bool)
    rows: list[ConnectRow] = []
    for first, group in comparable(spark, COMPARED):
        best_connect = fastest_ok(group[under_connect[group.index]])
        if best_connect is None:
            continue  # no ok Connect run: refused ones are below, failed ones in the failed jobs section
        best_classic = fastest_ok(group[~under_connect[group.index]])
        warm = lambda best: None if best is None else float(best["throughput_images_per_s"])  # noqa: E731
        cold = lambda best: None if best is None else best.get(COLD)  # noqa: E731
        rows.append(
            ConnectRow(
                work=f"{work_text(first)} · {first['topology']}",
                udf=str(first["udf"]),
                classic=warm(best_classic),
                connect=warm(best_connect),
                ratio=_ratio(warm(best_connect), warm(best_classic)),
                cold_ratio=_ratio(cold(best_connect), cold(best_classic)),
            )
        )
    refused = spark[under_connect & (spark["status"] == "unavailable")]
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
            lines.append(f"{row.work} · {row.udf}: {row.unavailable}")
        elif row.classic is None:
            lines.append(f"{row.work} · {row.udf}: Connect {row.connect:.2f} img/s, no classic run to compare")
        else:
            lines.append(
                f"{row.work} · {row.udf}: Connect / classic = {_times(row.ratio)} warm "
                f"({row.connect:.2f} vs {row.classic:.2f} img/s), {_times(row.cold_ratio)} cold"
            )
    return lines
