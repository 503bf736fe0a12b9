"""The one-file HTML report: everything inline (figures as base64 PNG, CSS, a few lines of JS), so it opens
from disk, can be mailed or archived, and never reaches the network.

This module turns the job table and the result records into plain rows and strings; the layout lives in
`templates/report.html.j2`. What the report must never hide gets a place of its own: random weights and
emulated GPUs in a banner at the top, failed and unfinished jobs with their reasons, the prices every cost
was computed with, and where each number came from (git sha, versions, machine, GPUs, weights, Spark confs).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from pipeline.results import model_text
from pipeline.runtime.process_cpu import PYTHON_WORKERS
from reports import bottleneck_check, connect, fast_paths, microbench, nodes, peers, plots, scaling, server
from reports.aggregate import Job
from reports.cost import CostUnavailable, run_cost
from reports.projection import Projection

TIMELINES = 4  # at most this many task timelines: the fastest run of each topology
BAD_IMAGE_EXAMPLES = 5
PACKAGES_SHOWN = ("pyspark", "torch", "torchvision", "pyarrow", "pandas", "numpy", "pillow", "hydra-core")
GPU_MEANING = {
    "real": "the model ran on them",
    "emulated": "Spark scheduled tasks onto fake GPU addresses, the model ran on the CPU",
    "none": "CPU only",
}
WEIGHTS_MEANING = {
    "random": "seeded, calibrated random weights; accuracy meaningless",
    "file": "a state_dict file",
    "torchvision": "torchvision's pretrained weights from the local hub cache",
    "factory": "a model.factory's own weights, as its function returns them (called under model.seed)",
}


@dataclass(frozen=True)
class Cell:
    text: str
    sort: str = ""  # the value the table sorts by, when the text is not it (numbers)
    css: str = ""


@dataclass
class Figures:
    id: str
    heading: str
    charts: list[dict[str, str]] = field(default_factory=list)  # {"uri", "caption", "alt"}
    empty: str = ""  # said instead when there is nothing to draw


def _number(value: Any, digits: int = 2) -> Cell:
    if value is None or pd.isna(value):
        return Cell("–", css="num")
    return Cell(f"{value:,.{digits}f}", repr(float(value)), "num")


def _usd(value: Any) -> Cell:
    if value is None or pd.isna(value):
        return Cell("–", css="num")
    return Cell(f"${value:,.2f}" if value >= 1 else f"${value:.3g}", repr(float(value)), "num")


def _slot_use(row: dict[str, Any]) -> Cell:
    """The least busy stage's slot utilization, marked when a stage left a slot idle most of its time."""
    value = row.get("slot_utilization")
    if value is None or pd.isna(value):
        return Cell("–", css="num")
    flagged = row.get("idle_slot_stages")
    idle = isinstance(flagged, str) and bool(flagged)
    return Cell(f"{value:.0%}" + (" (a slot idle)" if idle else ""), repr(float(value)), "num")


def _cpu_per_image(row: dict[str, Any]) -> Cell:
    """The run's CPU core-ms an image, marked "driver only" where its tasks' Python workers were not seen (no
    Spark tasks, or a run on other machines from before their tasks read their executors' CPU): the figure then
    leaves out the work of any tasks."""
    cell = _number(row["cpu_core_ms_per_image"], 1)
    if not cell.sort or PYTHON_WORKERS in row["cpu_kinds"].split("; "):
        return cell
    return Cell(f"{cell.text} (driver only)", cell.sort, cell.css)


def _relative(job_dir: str, out_dir: Path) -> str:
    return os.path.relpath(job_dir, out_dir.resolve())


def _chart(chart: plots.Chart, alt: str) -> dict[str, str]:
    return {"uri": plots.png_data_uri(chart.figure), "caption": chart.caption, "alt": alt}


SUMMARY_COLUMNS = (
    "variant",
    "status",
    "images/s median [min–max]",
    "timed passes",
    "median pass (s)",
    "USD / million images",
    "CPU core-ms / image",
    "bad images",
    "Spark start (s)",
    "cluster start (s)",
    "GPUs",
    "weights",
    "slot use (least busy stage)",
    "job dir",
)


def _banners(frame: pd.DataFrame) -> list[str]:
    """Plain warnings for what makes the numbers mean less than they seem."""
    said = []
    random_runs = int((frame["weights"] == "random").sum())
    if random_runs:
        said.append(
            f"Random weights in {random_runs} of {len(frame)} jobs: predictions are deterministic but accuracy "
            f"is meaningless. These runs measure speed and cost only."
        )
    emulated = int((frame["gpus"] == "emulated").sum())
    if emulated:
        said.append(
            f"Emulated GPUs in {emulated} of {len(frame)} jobs: GPU scheduling was emulated (Spark handed tasks "
            f"fake GPU addresses) and the model ran on the CPU. They test scheduling, not GPU speed or cost."
        )
    idle = frame["idle_slot_stages"].dropna() if "idle_slot_stages" in frame else []
    idle = [text for text in idle if text]
    if idle:
        said.append(
            f"A task slot sat idle most of a stage in {len(idle)} of {len(frame)} jobs (a skewed split: fewer "
            f"or uneven tasks for the slots), so their throughput understates the machine; results.csv's "
            f"idle_slot_stages says which stage and the rows per task. First: {idle[0]}"
        )
    capped = [row for row in frame.to_dict("records") if isinstance(row.get("batch_caps"), str) and row["batch_caps"]]
    if capped:
        said.append(
            f"Batch axes that did not take effect in {len(capped)} of {len(frame)} jobs (evidence.checks.batch_caps): "
            + " | ".join(f"{row['label']}: {row['batch_caps']}" for row in capped)
        )
    simulated = int(frame["device"].notna().sum())
    if simulated:
        said.append(
            f"Simulated devices in {simulated} of {len(frame)} jobs (model=accelerator): no GPU ran. Each model "
            f"call slept as long as the named device would take at its stated rate; their throughputs are what "
            f"this harness does around such a device, not GPU measurements."
        )
    return said


def _summary_rows(frame: pd.DataFrame, out_dir: Path) -> list[list[Cell]]:
    """One row per job for the sortable summary table."""
    rows = []
    for row in frame.to_dict("records"):
        spread = (
            f" [{row['throughput_min']:.2f}–{row['throughput_max']:.2f}]" if pd.notna(row["throughput_min"]) else ""
        )
        throughput = _number(row["throughput_images_per_s"])
        rows.append(
            [
                Cell(row["label"]),
                Cell(row["status"], css=f"status-{row['status']}"),
                Cell(throughput.text + spread, throughput.sort, "num"),
                _number(row["repeats"] or None, 0),
                _number(row["wall_s"]),
                _usd(row["usd_per_million_images"]),
                _cpu_per_image(row),
                _number(row["num_bad_images"], 0),
                _number(row["startup_s"], 1),
                _number(row["cluster_start_s"], 1),
                Cell(str(row["gpus"] or "–")),
                Cell(str(row["weights"] or "–")),
                _slot_use(row),
                Cell(_relative(row["job_dir"], out_dir)),
            ]
        )
    return rows


def _timeline_runs(jobs: list[Job], frame: pd.DataFrame) -> list[tuple[Job, str]]:
    """The fastest successful run of each topology that has a task timeline, at most TIMELINES of them."""
    chosen: dict[Any, tuple[float, Job, str]] = {}
    for job, row in zip(jobs, frame.to_dict("records")):
        timeline = job.decoded.evidence.get("timeline") if job.decoded else None
        if row["status"] != "ok" or not timeline or pd.isna(row["throughput_images_per_s"]):
            continue
        key = (row["engine"], row["topology"])
        if key not in chosen or row["throughput_images_per_s"] > chosen[key][0]:
            chosen[key] = (row["throughput_images_per_s"], job, row["run_label"])
    ranked = sorted(chosen.values(), key=lambda item: -item[0])[:TIMELINES]
    return [(job, label) for _, job, label in ranked]


def _figures(jobs: list[Job], frame: pd.DataFrame) -> list[Figures]:
    """Every figure section, each with its captions, or the reason it is empty."""
    ok = plots.successful(frame)
    billed = ok[ok[plots.COST].notna()]
    no_runs = "No successful run to draw."
    sections = [
        Figures("throughput", "Throughput", empty=no_runs),
        Figures("cost", "Cost per million images", empty="No successful run could be billed."),
        Figures("pareto", "Throughput vs cost", empty="No successful run could be billed."),
        Figures("timelines", "Task timelines", empty="No successful run recorded a task timeline."),
        Figures("stages", "Stage times", empty="No successful run recorded stage or job times."),
    ]
    if not ok.empty:
        sections[0].charts.append(_chart(plots.throughput_bars(frame), "throughput per variant"))
        shown = set(ok["job_dir"])
        runs = [
            (row["run_label"], job.result)
            for job, row in zip(jobs, frame.to_dict("records"))
            if row["job_dir"] in shown
        ]
        for chart, alt in (
            (plots.stage_breakdown(runs), "seconds per step"),
            (plots.time_split(runs), "where the slot time goes"),
        ):
            if chart is not None:
                sections[4].charts.append(_chart(chart, alt))
    if not billed.empty:
        sections[1].charts.append(_chart(plots.cost_bars(frame), "cost per million images per variant"))
        sections[2].charts.append(_chart(plots.throughput_vs_cost(frame), "throughput against cost"))
    for job, label in _timeline_runs(jobs, frame):
        sections[3].charts.append(_chart(plots.task_timeline(job.result, label), f"task timeline of {label}"))
    if frame["device"].notna().any():  # every figure of a simulated run says so beside it
        for chart in (chart for section in sections for chart in section.charts):
            chart["caption"] += (
                " Runs labelled 'simulated <device>' ran no GPU: their model calls slept as long as that device "
                "would take at its stated rate; not GPU measurements."
            )
    return sections


def _failed_rows(jobs: list[Job], frame: pd.DataFrame, out_dir: Path) -> list[dict[str, str]]:
    """Every job that is not ok: its variant, status, reason, job dir and traceback. Variants Spark Connect
    refused (status `unavailable`) are not failures: the Classic vs Connect section lists them."""
    return [
        {
            "label": row["label"],
            "status": row["status"],
            "reason": row["reason"],
            "job_dir": _relative(row["job_dir"], out_dir),
            "detail": ((job.decoded and job.decoded.error) or {}).get("detail", ""),
        }
        for job, row in zip(jobs, frame.to_dict("records"))
        if row["status"] not in ("ok", "unavailable")
    ]


def _bad_image_rows(jobs: list[Job], frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Bad-image count per run that counted, with the first few ids and reasons."""
    rows = []
    for job, row in zip(jobs, frame.to_dict("records")):
        if pd.isna(row["num_bad_images"]):
            continue
        listed = job.decoded.bad_images if job.decoded else []
        rows.append(
            {
                "label": row["run_label"],
                "count": int(row["num_bad_images"]),
                "examples": [f"{bad['id']}: {bad['reason']}" for bad in listed[:BAD_IMAGE_EXAMPLES]],
                "more": max(0, len(listed) - BAD_IMAGE_EXAMPLES),
            }
        )
    return rows


def _price_rows(jobs: list[Job]) -> list[dict[str, Any]]:
    """Each distinct price a cost was computed with, and how many runs were billed at it."""
    used: Counter[tuple[Any, ...]] = Counter()
    for job in jobs:
        if job.result is None:
            continue
        try:
            cost = run_cost(job.result)
        except CostUnavailable:
            continue
        for instance, price in cost.prices.items():
            used[(cost.table, instance, price.usd_per_hour, price.region, price.source, price.date)] += 1
    keys = ("table", "instance", "usd_per_hour", "region", "source", "date")
    return [dict(zip(keys, price), runs=runs) for price, runs in sorted(used.items())]


def _tally(values: list[Any]) -> list[tuple[Any, int]]:
    return sorted(Counter(values).items(), key=lambda item: (-item[1], str(item[0])))


def _provenance(jobs: list[Job], frame: pd.DataFrame, out_dir: Path) -> dict[str, Any]:
    """Where the numbers came from: code, software, machines, GPUs, weights and each run's Spark confs."""
    envs = [job.decoded.env for job in jobs if job.result]
    versions = {
        package: _tally([env.get("versions", {}).get(package) for env in envs if env.get("versions")])
        for package in PACKAGES_SHOWN
    }
    machines = _tally(
        [
            f"{env.get('hostname')} · {env.get('platform')} · {env.get('cpu_model')} × {env.get('cpu_count')} CPUs"
            f" · GPU: {env.get('gpu_name') or 'none'}"
            for env in envs
            if env
        ]
    )
    return {
        "git": _tally([env.get("git_sha") for env in envs if env]),
        "python": _tally([env.get("python") for env in envs if env]),
        "versions": versions,
        "machines": machines,
        "gpus": [
            (f"{kind}: {GPU_MEANING.get(kind, kind)}", runs) for kind, runs in _tally(list(frame["gpus"].dropna()))
        ],
        "weights": [
            (f"{kind}: {WEIGHTS_MEANING.get(kind, kind)}", runs)
            for kind, runs in _tally(list(frame["weights"].dropna()))
        ],
        "models": _tally([model_text(env["model"]) for env in envs if env.get("model")]),
        "devices": _tally([_device_text(env["device"]) for env in envs if env.get("device")]),
        "spark_confs": [
            {
                "label": row["run_label"],
                "job_dir": _relative(row["job_dir"], out_dir),
                "conf": sorted(job.decoded.spark_conf.items()),
            }
            for job, row in zip(jobs, frame.to_dict("records"))
            if job.result
        ],
    }


def _device_text(device: dict[str, Any]) -> str:
    """A simulated device as the provenance block names it: label, figure, kind, source, and overrides."""
    overridden = ", ".join(
        f"{key} {change['profile']} -> {change['run']}" for key, change in (device.get("overridden") or {}).items()
    )
    return (
        f"{device['label']}: {device['kind']} figure {device['images_per_s']:g} img/s at batch "
        f"{device['batch_size']} ({device['precision']}; {device['source']}; {device['date']})"
        + (f"; overridden: {overridden}" if overridden else "")
    )


def _ratio(value: float | None) -> Cell:
    return Cell("–", css="num") if value is None else Cell(f"{value:.2f}x", repr(value), "num")


def _peers(frame: pd.DataFrame) -> dict[str, Any]:
    """The versus-peers tables: per work, the best Spark run against each peer; then every run."""
    rows, headlines = peers.compare(frame)
    return {
        "baselines": list(peers.BASELINES),
        "headlines": [
            [
                Cell(h.work),
                Cell(h.best_spark),
                *map(_ratio, h.ratios.values()),
                *map(_ratio, (h.cold_ratios or {}).values()),
            ]
            for h in headlines
        ],
        "rows": [
            [
                Cell(r.work),
                Cell(r.label),
                Cell(r.engine),
                _number(r.throughput),
                *map(_ratio, r.vs.values()),
                _number(r.cold),
                *map(_ratio, (r.cold_vs or {}).values()),
            ]
            for r in rows
        ],
    }


def _connect(frame: pd.DataFrame) -> list[list[Cell]]:
    """The Classic vs Connect table: per work and UDF style, both throughputs and Connect's ratios, or why
    Connect does not run the style."""
    return [
        [Cell(r.work), Cell(r.udf), Cell(r.unavailable), Cell(""), Cell(""), Cell("")]
        if r.unavailable
        else [Cell(r.work), Cell(r.udf), _number(r.classic), _number(r.connect), _ratio(r.ratio), _ratio(r.cold_ratio)]
        for r in connect.compare(frame)
    ]


def _wait_ms(evidence: fast_paths.Evidence | None) -> str:
    return "–" if evidence is None or evidence.later_wait_s is None else f"{1000 * evidence.later_wait_s:.1f}"


def _fast_paths(jobs: list[Job], frame: pd.DataFrame) -> list[list[Cell]]:
    """The fast paths table: per option and baseline run, the work, the baseline's and the option's throughput,
    their ratio, the later batches' input waits of each and what the option did in the tasks."""
    return [
        [
            Cell(r.option),
            Cell(r.work),
            Cell(r.baseline_run),
            _number(r.baseline),
            _number(r.with_option),
            _ratio(r.ratio),
            Cell(f"{_wait_ms(r.baseline_evidence)} → {_wait_ms(r.option_evidence)}"),
            Cell(r.took_effect or "–"),
        ]
        for r in fast_paths.compare(jobs, frame)
    ]


def _bottleneck_check(sources: list[Path]) -> dict[str, Any] | None:
    """The predicted/measured table of the simulated-device runs under `sources`, and its spread; None when
    there are none."""
    found = bottleneck_check.checks(sources)
    if not found:
        return None
    header, *rows = bottleneck_check.table(found)
    return {"header": header, "rows": rows, "spread": bottleneck_check.spread(found), "target": bottleneck_check.TARGET}


def _scaling(sources: list[Path]) -> dict[str, Any] | None:
    """The scaling section: throughput against nodes (figure and table) and the targets; None without scaling runs."""
    found = scaling.points(sources)
    if not found:
        return None
    header, *rows = scaling.table(found)
    return {
        "chart": _chart(plots.scaling_lines(found), "throughput against nodes: measured, ideal and predicted"),
        "header": header,
        "rows": rows,
        "targets": scaling.targets(found),
    }


def _microbenchmark(path: Path | None) -> dict[str, Any] | None:
    """The microbenchmark section's tables and figure, when a pytest-benchmark JSON was given."""
    if path is None:
        return None
    shown = microbench.section(path)
    if shown["chart"] is not None:
        shown["chart"] = _chart(shown["chart"], "overhead per image per UDF style")
    return shown


def advice_section(sources: list[Path], jobs: list[Job]) -> dict[str, str] | None:
    """The report's "Advice": the ranked picks for the cluster whose rates file (sweep=calibrate's rates.json) or
    calibrate runs are under `sources`; read from disk, nothing composed or run (`reports.advise`)."""
    from pipeline.projection.calibrate import RATES_FILE, RatesFileError, calibration, load
    from reports.advise import advise, lines, picks

    files = [path for source in sources for path in sorted(Path(source).rglob(RATES_FILE))]
    try:
        if files:
            found, origin = load(files[0]), str(files[0])
        elif any(override.startswith("+calibrate=") for job in jobs for override in job.overrides):
            found, origin = calibration(sources), "the calibrate runs here"
        else:
            return None
        where, ranked = advise(found)
    except (RatesFileError, ValueError) as error:
        return {"source": "", "text": f"no advice: {error}"}
    chosen = picks(found, ranked, 3, check=False)
    return {"source": origin, "text": "\n".join(lines(found, where, ranked, chosen, 1_000_000, "throughput", origin))}


def render(
    jobs: list[Job],
    frame: pd.DataFrame,
    out_dir: Path,
    sources: list[Path],
    microbenchmark: Path | None = None,
    projection: Projection | None = None,
) -> str:
    """The report's HTML text; `out_dir` is where it will live (job dirs are shown relative to it)."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("reports", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    counts = Counter(frame["status"])
    return environment.get_template("report.html.j2").render(
        generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        sources=[str(source) for source in sources],
        counts=sorted(counts.items()),
        jobs=len(frame),
        banners=_banners(frame),
        columns=SUMMARY_COLUMNS,
        summary=_summary_rows(frame, out_dir),
        figures=_figures(jobs, frame),
        failed=_failed_rows(jobs, frame, out_dir),
        bad_images=_bad_image_rows(jobs, frame),
        bad_images_chart=_chart(plots.bad_images(frame), "bad images per run")
        if frame["num_bad_images"].fillna(0).gt(0).any()
        else None,
        runs_counted=int(frame["num_bad_images"].notna().sum()),
        prices=_price_rows(jobs),
        unbilled=[
            (row["run_label"], row["cost_note"])
            for row in frame.to_dict("records")
            if row["status"] == "ok" and row["cost_note"]
        ],
        provenance=_provenance(jobs, frame, out_dir),
        peers=_peers(peers.with_cold(frame, jobs)),
        connect=_connect(peers.with_cold(frame, jobs)),
        fast_paths=_fast_paths(jobs, frame),
        microbenchmark=_microbenchmark(microbenchmark),
        projection=projection,
        bottleneck_check=_bottleneck_check(sources),
        scaling=_scaling(sources),
        server={"rows": server.server_rows(jobs, frame), "ratios": server.ratios(frame)},
        nodes=nodes.node_rows(jobs, frame),
        advice=advice_section(sources, jobs),
    )
