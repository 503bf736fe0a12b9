"""Spark against its peers on the same work: each run's throughput as a ratio of the single-machine ceiling
(engine=torch) and of Ray Data, among runs of the same model on the same data.

Only runs that did the same work are compared (`reports.aggregate.comparable`): the same data (source,
format, image count, row groups), model, simulated device, weights and precision, JPEG decoder, sink and
machine (`WORK`). Everything else is how an engine did that work and is what is compared (`COMPARED`): the
engine, Spark's UDF style, topology, cluster and its shape, Arrow and fast-path knobs, torch's loader workers,
and the knobs either engine may tune (model batch size, channels_last, compile, decode_on). Within such a group
the baseline of an engine is its best successful run; a group without a torch or a ray run says so instead of
a ratio.

Each comparison comes twice: warm, the median timed pass (the run's throughput), and cold, the run's first
pass (its first warm-up pass, or its first timed pass without warm-up), which pays for starting workers or
actors and loading the model, never for the engine's own start (SparkSession, ray.init). Engines differ
most there: Spark's later passes reuse its Python workers, while every Ray Data pass is an execution of its
own with a fresh actor pool, so Ray's warm passes are nearly as cold as its first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from reports.aggregate import SAME_RUN, Job, comparable, fastest_ok, find_jobs, job_frame, work_text

WORK = (
    "dataset_source",
    "image_format",
    "num_images",
    "row_group_size",
    "model",
    "device",
    "weights",
    "precision",
    "decoder",
    "sink",
    "hostname",
)
COMPARED = tuple(field for field in SAME_RUN if field not in WORK)
BASELINES = ("torch", "ray")
COLD = "cold_images_per_s"  # images / seconds of the run's first pass


@dataclass(frozen=True)
class PeerRow:
    work: str  # what was done, e.g. "null_model · 64 jpeg images (synthetic) · pil decoder · on vm"
    label: str
    engine: str
    throughput: float
    vs: dict[str, float | None]  # engine → this run's throughput / that engine's best, None without one
    cold: float | None = None  # images/s of this run's first pass
    cold_vs: dict[str, float | None] | None = None  # engine → this run's first pass / that best run's first pass


@dataclass(frozen=True)
class Headline:
    work: str
    best_spark: str
    ratios: dict[str, float | None]  # engine → best Spark / best of that engine (warm: median timed pass)
    cold_ratios: dict[str, float | None] | None = None  # the same two runs' first passes


def first_pass(job: Job) -> float | None:
    """Images/s of a run's first pass: its first warm-up pass, or its first timed pass without warm-up."""
    metrics = job.decoded.metrics if job.decoded else None
    if metrics is None or not metrics.num_images:
        return None
    first = (metrics.warmup_s or metrics.wall_s or [None])[0]
    return metrics.num_images / first if first else None


def with_cold(frame: pd.DataFrame, jobs: list[Job]) -> pd.DataFrame:
    """`frame` with each run's first-pass throughput (COLD), found by job dir."""
    cold = {str(job.dir): first_pass(job) for job in jobs}
    return frame.assign(**{COLD: [cold.get(job_dir) for job_dir in frame["job_dir"]]})


def _ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base and not pd.isna(value) and not pd.isna(base) else None


def compare(frame: pd.DataFrame) -> tuple[list[PeerRow], list[Headline]]:
    """Every successful run with its ratios to each baseline engine, and per work the best Spark run's ratios;
    warm from the throughput, cold from the COLD column (see `with_cold`; ratios None without it).
    Groups where only one engine ran are left out: there is nothing to compare."""
    done = frame[(frame["status"] == "ok") & frame["throughput_images_per_s"].notna() & frame["engine"].notna()]
    if COLD not in done:
        done = done.assign(**{COLD: None})
    rows: list[PeerRow] = []
    headlines: list[Headline] = []
    for shared, group in comparable(done, COMPARED):
        if group["engine"].nunique() < 2:
            continue
        best_runs = {engine: fastest_ok(runs) for engine, runs in group.groupby("engine")}
        warm = {
            engine: (best_runs[engine]["throughput_images_per_s"] if engine in best_runs else None)
            for engine in BASELINES
        }
        cold = {engine: (best_runs[engine][COLD] if engine in best_runs else None) for engine in BASELINES}
        work = work_text(shared)
        for row in group.sort_values("throughput_images_per_s", ascending=False).to_dict("records"):
            throughput, first = row["throughput_images_per_s"], row[COLD]
            first = None if first is None or pd.isna(first) else first
            vs = {engine: _ratio(throughput, base) for engine, base in warm.items()}
            cold_vs = {engine: _ratio(first, base) for engine, base in cold.items()}
            rows.append(PeerRow(work, row["run_label"], row["engine"], throughput, vs, first, cold_vs))
        if "spark" in best_runs:
            top = best_runs["spark"]
            ratios = {engine: _ratio(top["throughput_images_per_s"], base) for engine, base in warm.items()}
            cold_ratios = {engine: _ratio(top[COLD], base) for engine, base in cold.items()}
            headlines.append(Headline(work, top["run_label"], ratios, cold_ratios))
    return rows, headlines


def _ratios(ratios: dict[str, float | None], missing: str = "no {} run") -> str:
    return ", ".join(f"{ratio:.2f}x {engine}" if ratio else missing.format(engine) for engine, ratio in ratios.items())


def summary(directories: list[Path]) -> list[str]:
    """One line per work that more than one engine did: the best Spark run against each peer's best, warm
    (median timed pass) and cold (first pass)."""
    jobs = find_jobs(directories)
    _, headlines = compare(with_cold(job_frame(jobs), jobs))
    lines = []
    for h in headlines:
        cold = _ratios(h.cold_ratios or {}, "no {} first pass")
        lines.append(f"{h.work}: best Spark ({h.best_spark}) warm {_ratios(h.ratios)}; cold {cold}")
    return lines
