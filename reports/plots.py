"""The report's figures, drawn from the job table and the result records alone (never from Spark).

Every function returns a `Chart`: a matplotlib Figure plus the caption that says what is drawn, over how
many measurements and what a bar or whisker means, so a figure never travels without its reading guide.
Figures are built as `Figure` objects, outside pyplot's global registry, so nothing leaks between calls;
seaborn draws on the Agg backend, chosen before anything imports pyplot. `png_data_uri` turns a figure
into the base64 PNG that the self-contained HTML report embeds.
"""

from __future__ import annotations

import base64
import io
import statistics
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from reports.aggregate import label_fields, variant_label  # noqa: E402
from reports.pareto import best, pareto_front  # noqa: E402

THROUGHPUT = "throughput_images_per_s"
COST = "usd_per_million_images"
STEP_COLOURS = {
    "preprocess": "#4C72B0",
    "predict": "#DD8452",
    "fused": "#55A868",
    "served": "#C44E52",
    "other": "#8C8C8C",
}


@dataclass(frozen=True)
class Chart:
    figure: Figure
    caption: str


def png_data_uri(figure: Figure) -> str:
    """The figure as a `data:` URI, for an <img> that needs no file next to the report."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def successful(frame: pd.DataFrame) -> pd.DataFrame:
    """The runs whose measurements a figure may show: status ok with a throughput."""
    return frame[(frame["status"] == "ok") & frame[THROUGHPUT].notna()]


def _short_label(row: dict[str, Any], fields: list[str]) -> str:
    """The run's label without cluster, topology and batch size, which the throughput plot shows by panel and
    colour; with the run's sweep and job dir where several runs share its label (`run_label`)."""
    return variant_label(row, fields, headline=("udf",)) + row["run_label"].removeprefix(row["label"])


def _run_throughput(rates: pd.Series) -> float:
    """One run's throughput from its passes' images/s: images / median wall = 1 / median(1 / rate), the
    table's figure. (The median rate is not it when the passes are even in number: walls of 4 and 8 s over
    64 images are 10.67 images/s, the median of 16 and 8 images/s is 12.)"""
    return 1.0 / statistics.median(1.0 / rates)


def _facet(row: dict[str, Any]) -> str:
    if row["engine"] != "spark":
        return str(row["engine"])
    return f"{row['cluster']} · {row['topology']}"


def _batch_palette(sizes: list[str]) -> dict[str, Any]:
    return dict(zip(sizes, sns.color_palette("colorblind", len(sizes))))


def _n(counts: pd.Series) -> str:
    low, high = int(counts.min()), int(counts.max())
    return str(low) if low == high else f"{low}–{high}"


def _rotate(ax: Any) -> None:
    for label in ax.get_xticklabels():
        label.set_rotation(30)
        label.set_horizontalalignment("right")


def throughput_bars(frame: pd.DataFrame) -> Chart:
    """Images/s of each run, one bar a run (runs are never pooled: two runs that share a label are told apart by
    their job dirs), faceted by cluster mode · topology, coloured by batch size."""
    runs = successful(frame)
    log_scale = runs["model"].nunique() > 1  # ResNet50 and the null model differ by orders of magnitude
    fields = label_fields(frame)
    passes = pd.DataFrame(
        [
            {
                "facet": _facet(row),
                "variant": _short_label(row, fields),
                "batch size": str(row["batch_size"]),
                "images/s": value,
            }
            for row in runs.to_dict("records")
            for value in row["throughput_per_repeat"]
        ]
    )
    facets = sorted(passes["facet"].unique())
    sizes = sorted(passes["batch size"].unique(), key=int)
    palette = _batch_palette(sizes)
    widths = [
        passes.loc[passes["facet"] == facet, ["variant", "batch size"]].drop_duplicates().shape[0] + 1.0
        for facet in facets
    ]
    figure = Figure(figsize=(max(7.0, 1.1 * sum(widths) + 2), 4.8), layout="constrained")
    axes = figure.subplots(1, len(facets), sharey=True, squeeze=False, width_ratios=widths)[0]
    for ax, facet in zip(axes, facets):
        part = passes[passes["facet"] == facet]
        sns.barplot(
            part,
            x="variant",
            y="images/s",
            hue="batch size",
            hue_order=[size for size in sizes if size in set(part["batch size"])],
            palette=palette,
            estimator=_run_throughput,
            errorbar=("pi", 100),
            capsize=0.2,
            err_kws={"linewidth": 1.2},
            legend=False,
            ax=ax,
        )
        for bars in ax.containers:
            ax.bar_label(bars, fmt="%.1f", label_type="center", fontsize=8, color="white")
        ax.set_title(facet, fontsize=10)
        ax.set_xlabel("")
        if log_scale:
            ax.set_yscale("log")
        _rotate(ax)
    figure.legend(
        handles=[Patch(color=palette[size], label=size) for size in sizes],
        title="batch size",
        loc="outside right upper",
    )
    counts = passes.groupby(["facet", "variant", "batch size"]).size()
    caption = (
        f"Throughput of each successful run, one bar a run ({len(runs)} runs). Bars: the run's throughput, images "
        f"in the data set / its median timed pass (the summary table's figure); whiskers: min–max over its timed "
        f"passes, n = {_n(counts)} per bar. Panels: cluster mode · topology; colour: batch size"
        + ("; logarithmic scale: the runs include more than one model." if log_scale else ".")
    )
    return Chart(figure, caption)


def cost_bars(frame: pd.DataFrame) -> Chart:
    """USD per million images of each run, cheapest first."""
    runs = successful(frame)
    billed = runs[runs[COST].notna()].assign(**{"batch size": lambda rows: rows["batch_size"].astype(str)})
    order = billed.sort_values(COST)["run_label"].tolist()
    sizes = sorted(billed["batch size"].unique(), key=int)
    figure = Figure(figsize=(9.5, 1.2 + 0.45 * len(order)), layout="constrained")
    ax = figure.subplots()
    sns.barplot(
        billed,
        y="run_label",
        x=COST,
        order=order,
        hue="batch size",
        hue_order=sizes,
        palette=_batch_palette(sizes),
        dodge=False,
        errorbar=None,
        ax=ax,
    )
    for bars in ax.containers:
        ax.bar_label(bars, fmt=lambda usd: f"${usd:,.2f}" if usd >= 1 else f"${usd:.3g}", fontsize=8, padding=3)
    ax.set_xlabel("USD per million images (median timed pass)")
    ax.set_ylabel("")
    ax.margins(x=0.15)
    unbilled = runs[runs[COST].isna()]
    note = "".join(f" Not billed: {row['run_label']} ({row['cost_note']})." for row in unbilled.to_dict("records"))
    caption = (
        f"Cost per million images: every billed node of the run (cluster.nodes; two_stage's preprocess job on "
        f"topology.preprocess_cluster.nodes) at its on-demand price for the run's median timed pass (see Prices). "
        f"One bar a run ({len(billed)} runs).{note}"
    )
    return Chart(figure, caption)


def throughput_vs_cost(frame: pd.DataFrame) -> Chart:
    """Each run as a point; the Pareto frontier (faster and cheaper is better) drawn and the best one named."""
    runs = successful(frame)
    points = runs[runs[COST].notna()].reset_index(drop=True)
    points = points.assign(**{field: points[field].fillna(points["engine"]) for field in ("topology", "cluster")})
    front = points[pareto_front(points, THROUGHPUT, COST)].sort_values(COST)
    winner = points.loc[best(points, THROUGHPUT, COST)]
    figure = Figure(figsize=(9.5, 5.5), layout="constrained")
    ax = figure.subplots()
    sns.scatterplot(points, x=COST, y=THROUGHPUT, hue="topology", style="cluster", s=70, ax=ax)
    ax.plot(front[COST], front[THROUGHPUT], linestyle="--", color="0.4", zorder=0, label="Pareto frontier")
    ax.scatter(front[COST], front[THROUGHPUT], s=220, facecolors="none", edgecolors="0.2", label="on the frontier")
    for row in front.drop(index=winner.name).to_dict("records"):
        at = (row[COST], row[THROUGHPUT])
        ax.annotate(row["run_label"], at, xytext=(8, -12), textcoords="offset points", fontsize=7)
    ax.annotate(
        f"best: {winner['run_label']}",
        (winner[COST], winner[THROUGHPUT]),
        xytext=(8, 10),
        textcoords="offset points",
        fontsize=9,
        fontweight="bold",
    )
    ax.set_xlabel("USD per million images (median timed pass)")
    ax.set_ylabel("images/s (median timed pass)")
    ax.margins(x=0.25, y=0.15)
    ax.legend(fontsize=8, loc="best")
    caption = (
        f"Throughput against cost, one point per successful run (n = {len(points)}); up and left is better. "
        f"Ringed and joined: the Pareto frontier, runs that no other run beats on both. Best (the frontier's "
        f"cheapest per image): {winner['run_label']}, {winner[THROUGHPUT]:.2f} images/s at "
        f"${winner[COST]:.4g} per million images."
    )
    return Chart(figure, caption)


def task_timeline(result: dict[str, Any], label: str) -> Chart:
    """A Gantt chart of the last timed pass: one row per executor task slot, tasks coloured by step; on a cluster
    of several nodes the rows are grouped by node (the executor's host), a line between nodes."""
    tasks = pd.DataFrame(result["evidence"]["timeline"])
    tasks["step"] = tasks["step"].where(tasks["step"].isin(list(STEP_COLOURS)), "other")
    hosts = tasks["host"].fillna("") if "host" in tasks else pd.Series([""] * len(tasks), index=tasks.index)
    tasks["host"] = hosts.astype(str)
    by_node = tasks["host"].nunique() > 1
    slots = sorted(
        {
            (host if by_node else "", str(executor), int(slot))
            for host, executor, slot in zip(tasks["host"], tasks["executor_id"], tasks["slot"])
        },
        key=lambda key: (key[0], not key[1].isdigit(), int(key[1]) if key[1].isdigit() else 0, key[1], key[2]),
    )
    row_of = {slot: number for number, slot in enumerate(slots)}
    figure = Figure(figsize=(9.5, 1.3 + 0.38 * len(slots)), layout="constrained")
    ax = figure.subplots()
    for task in tasks.to_dict("records"):
        failed = not task.get("successful", True)
        key = (task["host"] if by_node else "", str(task["executor_id"]), int(task["slot"]))
        ax.broken_barh(
            [(task["start_s"], max(task["end_s"] - task["start_s"], 0.005))],
            (row_of[key] - 0.38, 0.76),
            facecolors=STEP_COLOURS[task["step"]],
            edgecolor="red" if failed else "white",
            hatch="///" if failed else None,
            linewidth=0.8,
        )
    names = [f"{host + ' · ' if host else ''}executor {executor} · slot {slot}" for host, executor, slot in slots]
    ax.set_yticks(range(len(slots)), names)
    for number in range(1, len(slots)):
        if slots[number][0] != slots[number - 1][0]:
            ax.axhline(number - 0.5, color="#444444", linewidth=0.8)
    ax.invert_yaxis()
    ax.set_xlim(left=0)
    ax.set_xlabel("seconds since the pass's first stage was submitted")
    steps = [step for step in STEP_COLOURS if step in set(tasks["step"])]
    handles = [Patch(color=STEP_COLOURS[step], label=step) for step in steps]
    if "successful" in tasks and not tasks["successful"].all():
        handles.append(Patch(facecolor="white", edgecolor="red", hatch="///", label="failed attempt"))
    figure.legend(handles=handles, fontsize=8, loc="outside right upper")
    ax.set_title(label, fontsize=10)
    where = f" on {tasks['host'].nunique()} nodes (grouped by node)" if by_node else ""
    caption = (
        f"Task timeline of the last timed pass of {label}: {len(tasks)} task attempts on {len(slots)} executor "
        f"task slots{where} (from the Spark event log). Colour: the step a task ran "
        f"({', '.join(steps)})."
    )
    return Chart(figure, caption)


def _step_seconds(result: dict[str, Any]) -> tuple[dict[str, float], str]:
    """Seconds per step: event-log stage durations of the last timed pass, else median job_s per job."""
    stages = (result.get("evidence") or {}).get("stages") or []
    seconds: dict[str, float] = {}
    if stages:
        for stage in stages:
            step = stage["step"] if stage["step"] in STEP_COLOURS else "other"
            seconds[step] = seconds.get(step, 0.0) + (stage["duration_s"] or 0.0)
        return seconds, "event log"
    for job, values in ((result.get("metrics") or {}).get("job_s") or {}).items():
        step = job if job in STEP_COLOURS else "other"
        seconds[step] = seconds.get(step, 0.0) + float(pd.Series(values).median())
    return seconds, "job_s"


def stage_breakdown(runs: list[tuple[str, dict[str, Any]]]) -> Chart | None:
    """Where a pass's time goes: a stacked bar of seconds per step for each (label, result) run that recorded
    stage or job times; None when none did."""
    rows = {label: _step_seconds(result) for label, result in runs}
    rows = {label: row for label, row in rows.items() if row[0]}
    if not rows:
        return None
    table = pd.DataFrame({label: seconds for label, (seconds, _) in rows.items()}).T.fillna(0.0)
    table = table[[step for step in STEP_COLOURS if step in table.columns]]
    figure = Figure(figsize=(9.5, 1.3 + 0.45 * len(table)), layout="constrained")
    ax = figure.subplots()
    left = pd.Series(0.0, index=table.index)
    wide_enough = 0.06 * table.sum(axis=1).max()  # room for a label inside a segment
    for step in table.columns:
        bars = ax.barh(table.index, table[step], left=left, color=STEP_COLOURS[step], label=step)
        ax.bar_label(
            bars,
            labels=[f"{value:.1f}" if value >= wide_enough else "" for value in table[step]],
            label_type="center",
            fontsize=8,
            color="white",
        )
        left += table[step]
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    figure.legend(fontsize=8, loc="outside right upper")
    from_jobs = [label for label, (_, source) in rows.items() if source == "job_s"]
    caption = (
        "Seconds per step of a pass, one bar per successful run: Spark stage durations (submitted → completed) "
        "of the last timed pass from the event log, stages of the same step summed; stages between steps "
        "(no task reported a step) are 'other'."
        + (
            f" From the median of metrics.job_s per job instead (no event-log stages): {', '.join(from_jobs)}."
            if from_jobs
            else ""
        )
    )
    return Chart(figure, caption)


TIME_PARTS = {  # evidence.time's parts (pipeline.spark.time_split), in stacking order, with their colours
    "jvm_scan_s": ("JVM scan", "#4C72B0"),
    "rows_to_python_s": ("rows to Python", "#64B5CD"),
    "prepare_s": ("decode + preprocess", "#55A868"),
    "model_s": ("model", "#DD8452"),
    "results_back_s": ("results back + sink", "#C44E52"),
    "other_task_s": ("other task time", "#8172B3"),
    "idle_slot_s": ("idle slots", "#CCCCCC"),
}


def time_split(runs: list[tuple[str, dict[str, Any]]]) -> Chart | None:
    """Where a pass's slot time goes: a stacked bar of evidence.time's parts (summed over the stages of the
    last timed pass) for each (label, result) run that has them; None when none has."""
    table = pd.DataFrame(
        {
            label: {part: sum(row.get(part, 0.0) for row in result["evidence"]["time"]) for part in TIME_PARTS}
            for label, result in runs
            if (result.get("evidence") or {}).get("time")
        }
    ).T
    if table.empty:
        return None
    figure = Figure(figsize=(9.5, 1.3 + 0.45 * len(table)), layout="constrained")
    ax = figure.subplots()
    left = pd.Series(0.0, index=table.index)
    for part, (name, colour) in TIME_PARTS.items():
        ax.barh(table.index, table[part], left=left, color=colour, label=name)
        left += table[part]
    ax.invert_yaxis()
    ax.set_xlabel("slot-seconds (stage wall time x task slots)")
    figure.legend(fontsize=8, loc="outside right upper")
    caption = (
        "Where the slot time of the last timed pass went, one bar per successful Spark run, stages summed: JVM "
        "scan (Spark's scan time), rows to Python (the UDF's wait for its next batch, less the scan), decode + "
        "preprocess and the model (the tasks' own timers), results back (until Spark asked for more: the sink "
        "included), other executor run time (Python worker start, task setup, the UDF harness) and idle slots. "
        "Parts that overlapped (prefetch) are counted in full and other time is then 0."
    )
    return Chart(figure, caption)


def bad_images(frame: pd.DataFrame) -> Chart:
    """Undecodable images per run: a run that skips more images did less work for its throughput."""
    counted = frame[frame["num_bad_images"].notna()]
    figure = Figure(figsize=(9.5, 1.2 + 0.4 * len(counted)), layout="constrained")
    ax = figure.subplots()
    bars = ax.barh(counted["run_label"], counted["num_bad_images"].astype(int), color="#C44E52")
    ax.bar_label(bars, fontsize=8, padding=3)
    ax.invert_yaxis()
    ax.set_xlabel("bad images (last timed pass)")
    ax.set_xlim(0, max(1, int(counted["num_bad_images"].max())) * 1.15)
    caption = (
        f"Images that could not be decoded, per run (n = {len(counted)} runs with a count), as counted in the "
        f"last timed pass; they are skipped (on_bad_image=skip) and listed with their reasons in result.json."
    )
    return Chart(figure, caption)


def scaling_lines(points: list[Any]) -> Chart:
    """Throughput against nodes, a panel per scaling mode (`reports.scaling.Point`s): each series measured (solid),
    its ideal line (dashed: the fewest nodes' throughput times nodes / fewest) and the bottleneck model's prediction
    for each point (dotted)."""
    modes = sorted({point.mode for point in points})
    figure = Figure(figsize=(5.0 * len(modes) + 1.5, 4.4), layout="constrained")
    axes = figure.subplots(1, len(modes), squeeze=False)[0]
    series = sorted({point.series for point in points})
    colours = dict(zip(series, sns.color_palette("colorblind", len(series))))
    for ax, mode in zip(axes, modes):
        for name in series:
            line = [point for point in points if point.mode == mode and point.series == name]
            if not line:
                continue
            nodes = [point.nodes for point in line]
            colour = colours[name]
            ax.plot(nodes, [p.measured for p in line], marker="o", color=colour, label=f"measured: {name}")
            ax.plot(nodes, [p.ideal for p in line], linestyle="--", color=colour, alpha=0.6, label="ideal")
            predicted = [(p.nodes, p.predicted) for p in line if p.predicted is not None]
            if predicted:
                ax.plot(*zip(*predicted), linestyle=":", marker="x", color=colour, label="bottleneck model")
            for point in line:
                ax.annotate(
                    f"{point.measured:.1f}",
                    (point.nodes, point.measured),
                    fontsize=8,
                    xytext=(4, -10),
                    textcoords="offset points",
                )
        ax.set_title(f"{mode} scaling", fontsize=10)
        ax.set_xlabel("nodes (cluster.workers)")
        ax.set_ylabel("images/s")
        ax.set_xticks(sorted({point.nodes for point in points if point.mode == mode}))
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8, loc="upper left")
    machines = sorted({point.machines for point in points})
    loads = [point.load_average for point in points if point.load_average is not None]
    caption = (
        f"Throughput against nodes ({len(points)} runs). Solid: each run's throughput (images / its median timed "
        "pass); dashed: ideal, the fewest nodes' throughput times nodes / fewest; dotted: the bottleneck model's "
        "prediction for the run's shape. Weak: the same images on every node; strong: the same data set. The nodes "
        f"ran on {'/'.join(map(str, machines))} machine(s)"
        + (f"; load average {min(loads):.1f}–{max(loads):.1f} when the runs ended" if loads else "")
        + ". Nodes that share a machine share its cores: their figures are ratios, not speeds."
    )
    return Chart(figure, caption)
