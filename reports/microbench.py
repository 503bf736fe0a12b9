"""The report's microbenchmark section, from a pytest-benchmark JSON file (`pytest tests/bench --benchmark-only
--benchmark-json=FILE`).

Timings are pytest-benchmark's own statistics over the timed rounds (median, min, max); what each case was —
UDF calls, task slots, images, the expected time of a sleeping UDF — comes from its `extra_info`. The
decomposition subtracts cases from one another, so it is only as good as their medians: on a busy machine a
part can come out negative, and the report shows it as measured rather than hiding it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from reports.plots import Chart

STYLE_GROUPS = {"udf_style_identity": "identity (raw images in and out)", "udf_style_null_model": "null model (JPEGs)"}


@dataclass(frozen=True)
class Case:
    case: str
    group: str
    median_s: float
    min_s: float
    max_s: float
    rounds: int
    info: dict[str, Any]


def load(path: Path) -> list[Case]:
    """Every benchmark of the file that names its case in extra_info; others are not ours and are skipped."""
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    cases = []
    for bench in document.get("benchmarks", []):
        info, stats = bench.get("extra_info") or {}, bench["stats"]
        if "case" in info:
            cases.append(
                Case(info["case"], info["group"], stats["median"], stats["min"], stats["max"], stats["rounds"], info)
            )
    return cases


def _by_case(cases: list[Case]) -> dict[str, Case]:
    return {case.case: case for case in cases}


def expected_rows(cases: list[Case]) -> list[dict[str, Any]]:
    """Expected vs measured, for every case: sleeping cases have an expected time, the others expect ~0 s."""
    rows = []
    for case in cases:
        expected = case.info.get("expected_s")
        rows.append(
            {
                "case": case.case,
                "group": case.group,
                "calls": case.info.get("calls"),
                "slots": case.info["slots"],
                "images": case.info["images"],
                "expected_s": expected,
                "median_s": case.median_s,
                "min_s": case.min_s,
                "max_s": case.max_s,
                "rounds": case.rounds,
                "overhead_s": case.median_s - expected if expected is not None else None,
                "overhead_ratio": case.median_s / expected if expected else None,
            }
        )
    return rows


def decomposition(cases: list[Case]) -> list[dict[str, Any]] | None:
    """The faithful case's median cut into parts measured by the other cases; None without those cases.

    faithful ≈ expected sleeps + sleep slack (sleep_tiny − tiny_no_sleep − expected) + job, tasks and UDF calls
    (tiny_no_sleep) + the image column through Arrow both ways (image_round_trip − tiny_no_sleep); what is
    left is unexplained.
    """
    named = _by_case(cases)
    if not {"faithful", "sleep_tiny", "tiny_no_sleep", "image_round_trip"} <= named.keys():
        return None
    faithful, sleep, tiny, images = (
        named[key] for key in ("faithful", "sleep_tiny", "tiny_no_sleep", "image_round_trip")
    )
    expected = faithful.info["expected_s"]
    parts = [
        ("the sleeps (ceil(calls / slots) x 1 s)", expected),
        (
            "sleeps not packed onto the slots (sleep_tiny − tiny_no_sleep − expected)",
            sleep.median_s - tiny.median_s - expected,
        ),
        ("Spark job, tasks and Python UDF calls (tiny_no_sleep)", tiny.median_s),
        ("image column through Arrow, both ways (image_round_trip − tiny_no_sleep)", images.median_s - tiny.median_s),
    ]
    explained = sum(seconds for _, seconds in parts)
    parts.append(("unexplained (faithful − the parts above)", faithful.median_s - explained))
    return [{"part": part, "seconds": seconds, "share": seconds / faithful.median_s} for part, seconds in parts] + [
        {"part": "faithful, measured (median)", "seconds": faithful.median_s, "share": 1.0}
    ]


def outside_rows(cases: list[Case]) -> list[dict[str, Any]]:
    """Costs the faithful case leaves out by design: the read the original timed, cold Python workers."""
    named = _by_case(cases)
    rows = []
    if "read_parquet" in named:
        read = named["read_parquet"]
        rows.append({"what": "Parquet read of the same images (read_parquet)", "seconds": read.median_s})
    if {"worker_reuse_on", "worker_reuse_off"} <= named.keys():
        on, off = named["worker_reuse_on"], named["worker_reuse_off"]
        tasks = off.info.get("tasks") or 1
        rows.append(
            {
                "what": f"a new Python worker for each of {tasks} tasks (worker_reuse_off − worker_reuse_on)",
                "seconds": off.median_s - on.median_s,
            }
        )
    return rows


def style_frame(cases: list[Case]) -> pd.DataFrame:
    """Wall milliseconds per image per UDF style, for the identity and the null-model cases."""
    rows = [
        {
            "style": case.info["style"],
            "kind": STYLE_GROUPS[case.group],
            "ms_per_image": 1000 * case.median_s / case.info["images"],
            "images_per_s": case.info["images"] / case.median_s,
            "overhead_ms_per_image": (
                1000 * case.median_s / case.info["images"]
                - case.info["preprocess_ms_per_image_in_process"] / case.info["slots"]
                if "preprocess_ms_per_image_in_process" in case.info
                else 1000 * case.median_s / case.info["images"]
            ),
            "rounds": case.rounds,
        }
        for case in cases
        if case.group in STYLE_GROUPS
    ]
    return pd.DataFrame(
        rows, columns=["style", "kind", "ms_per_image", "images_per_s", "overhead_ms_per_image", "rounds"]
    )


def style_chart(frame: pd.DataFrame) -> Chart:
    """Overhead per image per UDF style, identity and null model side by side."""
    figure = Figure(figsize=(9, 4), layout="constrained")
    ax = figure.subplots()
    sns.barplot(data=frame, x="style", y="overhead_ms_per_image", hue="kind", errorbar=None, ax=ax)
    ax.set_xlabel("")
    ax.set_ylabel("overhead, wall ms per image")
    for label in ax.get_xticklabels():
        label.set_rotation(20)
        label.set_horizontalalignment("right")
    rounds = frame["rounds"]
    n = str(rounds.min()) if rounds.min() == rounds.max() else f"{rounds.min()}–{rounds.max()}"
    caption = (
        f"Overhead per image per UDF style; each bar is the median of n={n} timed rounds (no error bar: min and max "
        "are in the table). Identity: the whole wall time per image, the function does nothing. Null model: wall "
        "time per image minus the same preprocessing in one process without Spark, divided by the task slots."
    )
    return Chart(figure, caption)


def section(path: Path) -> dict[str, Any]:
    """What the template's microbenchmark section shows."""
    cases = load(path)
    styles = style_frame(cases)
    return {
        "source": str(path),
        "cases": expected_rows(cases),
        "decomposition": decomposition(cases),
        "outside": outside_rows(cases),
        "styles": styles.to_dict("records"),
        "chart": style_chart(styles) if not styles.empty else None,
    }
