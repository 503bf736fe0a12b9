"""Spark against its peers on the same work: each run's throughput as a ratio of the single-machine ceiling
(engine=torch) and of Ray Data, among runs of the same model on the same data.

Only runs that did the same work are compared: the same model (ResNet50 or the null model), the same data
set (source, format, image count) and the same machine (hostname). Within such a group the baseline of an
engine is its best successful run; a group without a torch or a ray run says so instead of a ratio.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from reports.aggregate import find_jobs, job_frame

WORK = ("model", "dataset_source", "image_format", "num_images", "hostname")
BASELINES = ("torch", "ray")


@dataclass(frozen=True)
class PeerRow:
    work: str  # what was done, e.g. "resnet50 · 64 jpeg images (synthetic)"
    label: str
    engine: str
    throughput: float
    vs: dict[str, float | None]  # engine → this run's throughput / that engine's best, None without one


@dataclass(frozen=True)
class Headline:
    work: str
    best_spark: str
    ratios: dict[str, float | None]  # engine → best Spark / best of that engine


def _work(row: dict) -> str:
    return f"{row['model']} · {row['num_images']} {row['image_format']} images ({row['dataset_source']})"


def compare(frame: pd.DataFrame) -> tuple[list[PeerRow], list[Headline]]:
    """Every successful run with its ratios to each baseline engine, and per work the best Spark run's ratios.
    Groups where only one engine ran are left out: there is nothing to compare."""
    done = frame[(frame["status"] == "ok") & frame["throughput_images_per_s"].notna() & frame["engine"].notna()]
    rows: list[PeerRow] = []
    headlines: list[Headline] = []
    for _, group in done.groupby(list(WORK), dropna=False, sort=True):
        if group["engine"].nunique() < 2:
            continue
        best = group.groupby("engine")["throughput_images_per_s"].max()
        baselines = {engine: best.get(engine) for engine in BASELINES}
        work = _work(group.iloc[0].to_dict())
        for row in group.sort_values("throughput_images_per_s", ascending=False).to_dict("records"):
            throughput = row["throughput_images_per_s"]
            vs = {engine: (throughput / base if base else None) for engine, base in baselines.items()}
            rows.append(PeerRow(work, row["label"], row["engine"], throughput, vs))
        spark = group[group["engine"] == "spark"]
        if len(spark):
            top = spark.loc[spark["throughput_images_per_s"].idxmax()]
            ratios = {e: (top["throughput_images_per_s"] / b if b else None) for e, b in baselines.items()}
            headlines.append(Headline(work, top["label"], ratios))
    return rows, headlines


def summary(directories: list[Path]) -> list[str]:
    """One line per work that more than one engine did: the best Spark run against each peer's best."""
    _, headlines = compare(job_frame(find_jobs(directories)))
    return [
        f"{h.work}: best Spark ({h.best_spark}) "
        + ", ".join(f"{ratio:.2f}x {engine}" if ratio else f"no {engine} run" for engine, ratio in h.ratios.items())
        for h in headlines
    ]
