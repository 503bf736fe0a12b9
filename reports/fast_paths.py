"""The fast paths section: each Spark 4.1–4.3 Python fast path against the baseline run of the same work,
with what the tasks saw, so that an option's effect is read from evidence and not from its name.

A run with a fast-path knob away from its default (`pipeline.spark.fastpaths`) is paired with the runs that
have none and differ from it in nothing else: the same work and variant, from the data to the cluster's shape,
the UDF style, its prefetch and every Arrow knob (`reports.aggregate.comparable`, the fast-path knobs `KNOBS`
compared); the best ok run of each side is compared. Beside the ratio, the last timed pass's evidence
(`evidence.fast_paths`): the tasks whose Python worker ran the pipelined reader or Unix-domain sockets, the
seconds the tasks waited for their later Arrow batches (a reader thread that fetched batch k+1 while batch k
computed shows as waits near zero) and the bytes Spark sent to Python (what a compression codec shrank).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from reports.aggregate import Job, comparable, fastest_ok, find_jobs, job_frame, work_text

KNOBS = (
    "python_udf_pipelined",
    "python_udf_pipelined_queue_depth",
    "arrow_compression_codec",
    "python_unix_domain_socket",
    "python_udf_arrow",
)


@dataclass(frozen=True)
class Evidence:
    """One run's last timed pass, summed over its steps."""

    tasks: int
    pipelined_tasks: int
    unix_domain_tasks: int
    later_wait_s: float | None  # seconds the tasks waited for every Arrow batch after their first
    bytes_to_python: int | None


@dataclass(frozen=True)
class FastPathRow:
    option: str  # e.g. "pipelined, queue depth 8"
    work: str  # e.g. "null_model · 128 jpeg images (synthetic) · pil decoder · on vm"
    baseline_run: str  # the baseline's run label: the variant both runs are but for the option
    baseline: float  # images/s
    with_option: float
    ratio: float  # with_option / baseline
    baseline_evidence: Evidence | None
    option_evidence: Evidence | None
    took_effect: str  # what the evidence says the option did


def _evidence(job: Job) -> Evidence | None:
    found = ((job.decoded.evidence or {}).get("fast_paths") if job.decoded else None) or {}
    steps = (found.get("steps") or {}).values()
    if not steps:
        return None
    waits = [step["later_input_wait_s_total"] for step in steps if step.get("later_input_wait_s_total") is not None]
    return Evidence(
        tasks=sum(step["tasks"] for step in steps),
        pipelined_tasks=sum(step["pipelined_tasks"] for step in steps),
        unix_domain_tasks=sum(step["unix_domain_tasks"] for step in steps),
        later_wait_s=sum(waits) if waits else None,
        bytes_to_python=(found.get("spark_python_metrics") or {}).get("bytes_to_python"),
    )


def option_label(row: dict[str, Any]) -> str | None:
    """The fast paths a run has away from their defaults, in words; None for a baseline run."""
    parts = []
    if row.get("python_udf_pipelined") is True:
        depth = row.get("python_udf_pipelined_queue_depth")
        known = depth is not None and not pd.isna(depth)
        parts.append(f"pipelined, queue depth {int(depth)}" if known else "pipelined")
    codec = row.get("arrow_compression_codec")
    if isinstance(codec, str):
        parts.append(f"Arrow {codec}")
    if row.get("python_unix_domain_socket") is True:
        parts.append("Unix-domain sockets")
    if row.get("python_udf_arrow") is False:
        parts.append("pythonUDF.arrow off")
    return " + ".join(parts) or None


def _took_effect(run: dict[str, Any], option: Evidence | None, baseline: Evidence | None) -> str:
    """What the evidence says each of the run's fast paths (`option_label`'s knobs) did in its tasks."""
    if option is None:
        return "no task evidence"
    said = []
    if run.get("python_udf_pipelined") is True:
        said.append(f"{option.pipelined_tasks} of {option.tasks} tasks in pipelined workers")
    if run.get("python_unix_domain_socket") is True:
        said.append(f"{option.unix_domain_tasks} of {option.tasks} tasks over Unix sockets")
    if isinstance(run.get("arrow_compression_codec"), str) and option.bytes_to_python is not None:
        before = baseline.bytes_to_python if baseline else None
        change = "" if before is None else f" ({option.bytes_to_python - before:+,} against the baseline)"
        said.append(f"{option.bytes_to_python:,} bytes to Python{change}")
    if run.get("python_udf_arrow") is False:
        said.append("acts on plain @udf functions only; this style is not one")
    return "; ".join(said)


def compare(jobs: list[Job], frame: pd.DataFrame) -> list[FastPathRow]:
    """One row per option and baseline run (module docstring) with an ok run with the option and an ok baseline."""
    spark = frame[(frame["engine"] == "spark") & frame["udf"].notna()].copy()
    if spark.empty:
        return []
    spark["_option"] = [option_label(row) for row in spark.to_dict("records")]
    by_index = dict(zip(frame.index, jobs))
    rows = []
    for work, group in comparable(spark, KNOBS):
        baseline = fastest_ok(group[group["_option"].isna()])
        if baseline is None:
            continue
        for label, runs in group[group["_option"].notna()].groupby("_option", sort=True):
            best = fastest_ok(runs)
            if best is None:
                continue
            before, after = _evidence(by_index[baseline.name]), _evidence(by_index[best.name])
            rows.append(
                FastPathRow(
                    option=str(label),
                    work=work_text(work),
                    baseline_run=str(baseline["run_label"]),
                    baseline=float(baseline["throughput_images_per_s"]),
                    with_option=float(best["throughput_images_per_s"]),
                    ratio=float(best["throughput_images_per_s"]) / float(baseline["throughput_images_per_s"]),
                    baseline_evidence=before,
                    option_evidence=after,
                    took_effect=_took_effect(best.to_dict(), after, before),
                )
            )
    return sorted(rows, key=lambda row: (row.option, row.work, row.baseline_run))


def summary(directories: list[Path]) -> list[str]:
    """The lines a sweep prints at its end: each option's ratio to its baseline run, with the work they did."""
    jobs = find_jobs(directories)
    if not jobs:
        return []
    return [
        f"{row.option} vs {row.baseline_run} ({row.work}): {row.ratio:.2f}x the baseline "
        f"({row.with_option:.2f} vs {row.baseline:.2f} img/s); {row.took_effect or 'see evidence.fast_paths'}"
        for row in compare(jobs, job_frame(jobs))
    ]
