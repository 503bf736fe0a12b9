"""The findings page (docs/findings.md), written from the results kept in the repository, so that every figure
on it can be traced to a run and regenerated; a test fails when the page differs from what this writes.

    python -m reports.findings                          # rewrite docs/findings.md from docs/results/
    python -m reports.findings --check                  # exit 1, with a diff, when the page is out of date
    python -m reports.findings keep NAME DIR [DIR ...]  # keep the runs under DIR as finding NAME's

Kept results: `docs/results/NAME/RUN/result.json`, one per run, as the job wrote it less its bulky records no
table reads (`TRIMMED`: the per-task records and the task timelines), plus a `kept` record: the command that
made the run and its own overrides. Everything else stays: the date (`started_at`), the machine (`env`:
hostname, cores, CPU), its load (`env.load_average` at the start, `env.load_average_end` at the end), the git sha,
the config and the evidence. RUN is the run dir's path from its sweep's parent (`peers-null-256/0`), so the
reports' own readers (`reports.aggregate.find_jobs`) read a finding's runs as they read a sweep.

Each finding (`FINDINGS`) backs one section of docs/measurements.md (the figures measured by hand, which the
README once held): what the runs measure, the command that re-measures them, and its tables, made by the
reports' own comparisons (`reports.peers`, `reports.connect`, `reports.fast_paths`, `reports.bottleneck_check`,
`reports.server`) over its kept runs, then every run with its date, machine, load and git sha. A run is marked
loaded when the 1-minute load average at its start exceeded the machine's cores: other work shared them, and its
figures are lower than the machine's. A finding with no kept run is listed as awaiting re-measurement, with its
command, never with figures.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from pipeline.config.reference import publish
from pipeline.projection.calibrate import RATES_FILE, kept_rates, load
from pipeline.projection.rates import measured_rates
from pipeline.rundir import RESULT_FILE, atomic_write
from reports import bottleneck_check, connect, fast_paths, peers, server
from reports.aggregate import OVERRIDES_FILE, SWEEP_FILE, Job, find_jobs, job_frame

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path("docs") / "results"
PAGE = Path("docs") / "findings.md"
MEASURED = Path("docs") / "measurements.md"  # the figures measured by hand, each section a finding's
COMMAND = "python -m reports.findings"
TRIMMED = (("tasks", "records"), ("evidence", "timeline"))  # (record, field): bulky, and read by no table here

Table = Callable[[list[Job], pd.DataFrame, list[Path]], list[str]]


@dataclass(frozen=True)
class Finding:
    name: str  # docs/results/NAME
    section: str  # the section of docs/measurements.md (and of this page) whose figures it backs
    about: str
    command: str  # what re-measures it
    tables: tuple[Table, ...] = ()  # each writes Markdown lines from the kept runs (jobs, their table, the dirs)


# ------------------------------------------------------------------------------------------------ formatting


def _rate(value: Any) -> str:
    if value is None or pd.isna(value):
        return "–"
    value = float(value)
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _times(value: Any) -> str:
    return "–" if value is None or pd.isna(value) else f"{float(value):.2f}x"


def _seconds(value: Any) -> str:
    return "–" if value is None or pd.isna(value) else f"{float(value):.1f}"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("<", "\\<").replace("\n", " ")


def markdown(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


def _load(env: dict[str, Any], key: str) -> float | None:
    values = env.get(key)
    return float(values[0]) if values else None


def loaded(env: dict[str, Any]) -> bool | None:
    """Whether other work shared the machine: the 1-minute load average at the run's start above its cores;
    None for a run that did not record its load."""
    start, cores = _load(env, "load_average"), env.get("cpu_count")
    return None if start is None or not cores else start > cores


def _load_text(env: dict[str, Any]) -> str:
    start, end = _load(env, "load_average"), _load(env, "load_average_end")
    if start is None:
        return "not recorded"
    text = f"{start:.1f} → {end:.1f}" if end is not None else f"{start:.1f}"
    return text + (" (loaded)" if loaded(env) else "")


def _machine(env: dict[str, Any]) -> str:
    return f"{env.get('hostname')}: {env.get('cpu_count')} × {env.get('cpu_model')}" + (
        f", {env['gpu_name']}" if env.get("gpu_name") else ", no GPU"
    )


# ------------------------------------------------------------------------------------------------ tables


def runs_table(jobs: list[Job], frame: pd.DataFrame, directories: list[Path]) -> list[str]:
    """Every kept run: its throughput (median timed pass) and passes, first pass, start-up, and where, when and
    at what load it ran."""
    base = directories[0].resolve()
    rows = []
    for job, row in zip(jobs, frame.to_dict("records")):
        result = job.decoded
        metrics, env = result.metrics, result.env
        first = peers.first_pass(job)
        passes = ", ".join(f"{seconds:.2f}" for seconds in metrics.wall_s) or "–"
        rows.append(
            [
                f"`{job.dir.relative_to(base)}`",
                row["label"],
                row["status"] if row["status"] == "ok" else f"{row['status']}: {row['reason']}",
                _rate(row["throughput_images_per_s"]),
                passes,
                _rate(first),
                _seconds(metrics.startup_s),
                (result.started_at or "")[:10],
                _machine(env),
                _load_text(env),
                (env.get("git_sha") or "–")[:12] + ("-dirty" if str(env.get("git_sha")).endswith("-dirty") else ""),
            ]
        )
    header = [
        "run",
        "variant",
        "status",
        "img/s",
        "timed passes (s)",
        "first pass img/s",
        "start-up (s)",
        "date",
        "machine",
        "load 1 min, start → end",
        "git sha",
    ]
    return ["Every kept run:", "", *markdown(header, rows)]


def peers_table(jobs: list[Job], frame: pd.DataFrame, _: list[Path]) -> list[str]:
    """`reports.peers.compare`: each run against the best of each peer engine on the same work, warm and cold;
    an engine with no kept run has no column."""
    rows, headlines = peers.compare(peers.with_cold(frame, jobs))
    if not rows:
        return []
    engines = [engine for engine in peers.BASELINES if engine in set(frame["engine"].dropna())]
    lines = ["Warm: the median timed pass; cold: the first pass (workers started, model loaded).", ""]
    body = [
        [
            row.work,
            row.label,
            _rate(row.throughput),
            *(_times(row.vs.get(engine)) for engine in engines),
            _rate(row.cold),
            *(_times((row.cold_vs or {}).get(engine)) for engine in engines),
        ]
        for row in rows
    ]
    header = [
        "work",
        "run",
        "warm img/s",
        *(f"warm / best {engine}" for engine in engines),
        "cold img/s",
        *(f"cold / best {engine}" for engine in engines),
    ]
    lines += markdown(header, body)
    for headline in headlines:
        warm = ", ".join(f"{_times(headline.ratios.get(engine))} {engine}" for engine in engines)
        cold = ", ".join(f"{_times((headline.cold_ratios or {}).get(engine))} {engine}" for engine in engines)
        lines += [f"Best Spark run ({headline.best_spark}) on {headline.work}: warm {warm}; cold {cold}.", ""]
    missing = [engine for engine in peers.BASELINES if engine not in engines]
    if missing:
        lines += [f"No kept run of {', '.join(f'engine={engine}' for engine in missing)}.", ""]
    return lines


def connect_table(jobs: list[Job], frame: pd.DataFrame, _: list[Path]) -> list[str]:
    """`reports.connect.compare`: per UDF style, the Connect run against its classic twin, or why Connect refused."""
    rows = connect.compare(peers.with_cold(frame, jobs))
    body = [
        [
            row.work,
            row.udf,
            _rate(row.classic),
            _rate(row.connect),
            _times(row.ratio),
            _times(row.cold_ratio),
            row.unavailable or "runs",
        ]
        for row in rows
    ]
    header = ["work", "UDF style", "classic img/s", "Connect img/s", "Connect / classic", "cold", "under Connect"]
    return markdown(header, body) if body else []


def fast_paths_table(jobs: list[Job], frame: pd.DataFrame, _: list[Path]) -> list[str]:
    """`reports.fast_paths.compare`: each option against its baseline run, with what the tasks' evidence says."""
    rows = fast_paths.compare(jobs, frame)
    body = [
        [row.option, row.work, row.baseline_run, _rate(row.baseline), _rate(row.with_option), _times(row.ratio)]
        + [row.took_effect or "–"]
        for row in rows
    ]
    header = ["option", "work", "baseline run", "baseline img/s", "with option img/s", "ratio", "took effect"]
    return markdown(header, body) if body else []


def bottleneck_table(jobs: list[Job], frame: pd.DataFrame, directories: list[Path]) -> list[str]:
    """`reports.bottleneck_check`: each simulated-device run against the bottleneck model's prediction, from the
    rates of the other kept runs, and again from a kept `sweep=calibrate` rates file (RATES_FILE beside the runs:
    what the advice predicts from) where the finding holds one."""
    lines = []
    for rates_file in [None, *kept_rates(directories)]:
        calibration = load(rates_file) if rates_file else None
        found = bottleneck_check.checks(directories, calibration)
        if not found:
            return []
        header, *rows = bottleneck_check.table(found)
        shown = bottleneck_check.spread(found)
        low, high = bottleneck_check.TARGET
        if calibration is None:
            title = (
                "Rates read from the kept runs, each run left out of its own prediction (`pipeline.projection.rates`)"
            )
            rates = measured_rates(directories)
        else:
            title = f"Rates from the kept `{RATES_FILE}` of a `sweep=calibrate` (what `python -m reports advise` reads)"
            rates = calibration.rates
        lines += [
            f"{title}:",
            "",
            *markdown(header, rows),
            f"{shown['hits']} of {shown['runs']} runs within {low}–{high}x; predicted/measured median "
            f"{shown['median']:.2f}, min {shown['min']:.2f}, max {shown['max']:.2f}. Where each rate came from:",
            "",
            *(f"- {name} = {getattr(rates, name):.4g}: {source}" for name, source in sorted(rates.sources.items())),
            "",
        ]
    return lines


def server_table(jobs: list[Job], frame: pd.DataFrame, _: list[Path]) -> list[str]:
    """`reports.server.ratios`: the best model_server run against the best in-process run of the same work."""
    body = [
        [item["work"], item["server"], _rate(item["server_throughput"]), item["in_process"]]
        + [_rate(item["in_process_throughput"]), _times(item["ratio"])]
        for item in server.ratios(frame)
    ]
    header = ["work", "model_server run", "img/s", "best in-process run", "img/s", "server / in-process"]
    return markdown(header, body) if body else []


FINDINGS = (
    Finding(
        "this_machine",
        "Measured on this machine",
        "The default run (the Quickstart's `python -m pipeline`): ResNet50 with random weights on 64 generated JPEGs, "
        "Spark `local[N]`, `mapInPandas`, batch 32.",
        "python -m pipeline",
    ),
    Finding(
        "peers",
        "Versus peers, and the fast path",
        "Spark against the single-machine ceiling (`engine=torch`: a DataLoader decoding in worker processes) and "
        "Ray Data on the same data, with ResNet50 and with the null model (decoding and the harness only).",
        "python -m pipeline sweep=peers",
        (peers_table,),
    ),
    Finding(
        "torch_knobs",
        "Versus peers, and the fast path (the fast-path options on and off)",
        "`model.channels_last`, `model.compile`, `model.precision=bf16`, `preprocess.decoder=torchvision`, "
        "`preprocess.decode_on`, `udf.prefetch`, each on and off.",
        "python -m pipeline -m engine=torch model.channels_last=true,false  (and likewise for each option)",
    ),
    Finding(
        "bottleneck_check",
        "A simulated accelerator, and the bottleneck model checked",
        "`model=accelerator` (a simulated device, never a GPU figure) at rates from CPU-bound to GPU-bound, against "
        "the bottleneck model's prediction for the same topology, shape and device.",
        "python -m pipeline sweep=bottleneck_check",
        (bottleneck_table,),
    ),
    Finding(
        "model_server",
        "In-process model or model server",
        "`topology=model_server` (a PyTriton server per node) against the in-process topologies on the same work.",
        "python -m pipeline sweep=model_server",
        (server_table,),
    ),
    Finding(
        "microbenchmark",
        'Where the original\'s "1 s took 84.8 s" went',
        "The original's sleeping UDF taken apart, each part measured on its own (pytest-benchmark).",
        "python -m pytest tests/bench --benchmark-only --benchmark-json=bench.json",
    ),
    Finding(
        "fast_paths",
        "Spark 4.3's Python fast paths, measured",
        "Each Spark 4.1–4.3 Python fast path on and off per UDF style, with what the tasks' evidence says it did.",
        "python -m pipeline sweep=spark_fast_paths",
        (fast_paths_table,),
    ),
    Finding(
        "connect",
        "Spark Connect and a cluster the tool did not start",
        "Classic Spark against Spark Connect (a server the harness starts in front of the same `local[2]`), per UDF "
        "style; the styles Connect refuses with its reason.",
        "python -m pipeline sweep=connect",
        (connect_table,),
    ),
    Finding(
        "projection",
        "Bottleneck model, projections to real instances, and the original's table on paper",
        "The rates the bottleneck model projects from (decoding per core, Spark's fixed costs, the model server's "
        "costs), measured by one-process `engine=torch model=null_model` runs and the microbenchmark; the original's "
        "own costs by its data path in real Spark (`tests.bench.original_costs`).",
        "python -m pipeline engine=torch model=null_model dataset.num_images=256; "
        "python -m tests.bench.original_costs --out FILE; python -m reports --original-table DIR --original-costs FILE",
    ),
)


# ------------------------------------------------------------------------------------------------ keeping runs


def _command(job_dir: Path) -> tuple[str, list[str]]:
    """The command that made a run (its sweep's, when it was one) and the run's own overrides."""
    own = yaml.safe_load((job_dir / OVERRIDES_FILE).read_text()) if (job_dir / OVERRIDES_FILE).is_file() else []
    sweep = job_dir.parent / SWEEP_FILE
    if sweep.is_file():
        task = ((yaml.safe_load(sweep.read_text()).get("hydra") or {}).get("overrides") or {}).get("task") or []
        return " ".join(["python -m pipeline -m", *map(shlex.quote, task)]), list(own or [])
    return " ".join(["python -m pipeline", *map(shlex.quote, own or [])]), list(own or [])


def trimmed(record: dict[str, Any], command: str, overrides: list[str], source: Path) -> dict[str, Any]:
    """A result as kept: without TRIMMED's fields, with what made it."""
    kept = json.loads(json.dumps(record))
    dropped = []
    for outer, inner in TRIMMED:
        if isinstance(kept.get(outer), dict) and inner in kept[outer]:
            del kept[outer][inner]
            dropped.append(f"{outer}.{inner}")
    kept["kept"] = {"command": command, "overrides": overrides, "from": str(source), "trimmed": dropped}
    return kept


def keep(name: str, directories: list[Path], results: Path | None = None) -> list[Path]:
    """Keep every run with a result under `directories` as finding `name`'s; returns the files written."""
    if name not in {finding.name for finding in FINDINGS}:
        raise ValueError(f"no finding named {name!r}: one of {', '.join(finding.name for finding in FINDINGS)}")
    target = (results or ROOT / RESULTS) / name
    written = []
    for directory in directories:
        base = Path(directory).resolve().parent
        for job in find_jobs([Path(directory)]):
            if job.result is None:
                continue
            command, overrides = _command(job.dir)
            path = target / job.dir.resolve().relative_to(base) / RESULT_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps(trimmed(job.result, command, overrides, job.dir), indent=1) + "\n"
            written.append(atomic_write(path, text))
    return written


# ------------------------------------------------------------------------------------------------ the page


def _commands(jobs: list[Job]) -> list[str]:
    return sorted({str((job.result or {}).get("kept", {}).get("command")) for job in jobs if job.result})


def _section(finding: Finding, directory: Path) -> list[str]:
    jobs = [job for job in find_jobs([directory]) if job.result is not None]
    frame = job_frame(jobs)
    dates = sorted({(job.decoded.started_at or "")[:10] for job in jobs})
    flagged = [loaded(job.decoded.env) for job in jobs]
    load = (
        "every run on a loaded machine"
        if all(flagged)
        else "no run on a loaded machine"
        if not any(flagged)
        else f"{sum(bool(flag) for flag in flagged)} of {len(jobs)} runs on a loaded machine"
    )
    lines = [
        f"## {finding.section}",
        "",
        finding.about,
        "",
        f"{len(jobs)} kept run{'s' if len(jobs) != 1 else ''} in `{RESULTS / finding.name}/`, {dates[0]}"
        + (f" to {dates[-1]}" if dates[-1] != dates[0] else "")
        + f"; {load}. Made with:",
        "",
        "```bash",
        *_commands(jobs),
        "```",
        "",
    ]
    for table in (*finding.tables, runs_table):
        lines += table(jobs, frame, [directory])
    return lines


def render(results: Path | None = None) -> str:
    """The page, from the kept results under `results` (default: the repository's docs/results)."""
    results = results or ROOT / RESULTS
    kept = [f for f in FINDINGS if (results / f.name).is_dir() and any((results / f.name).rglob(RESULT_FILE))]
    awaiting = [finding for finding in FINDINGS if finding not in kept]
    lines = [
        "# Findings",
        "",
        f"<!-- Generated by `{COMMAND}` from the results kept in {RESULTS}/. Do not edit: keep new runs",
        f"(`{COMMAND} keep NAME DIR`) and regenerate; tests/test_docs.py fails when this page differs. -->",
        "",
        "Every figure here is computed from a run kept in the repository (`docs/results/FINDING/RUN/result.json`: the",
        "run's result without its per-task records), by the same code as the HTML report. Each run states its date,",
        "machine, load and git sha; a run whose machine was busy with other work when it started (1-minute load",
        "average above its cores) is marked loaded, and its throughput is below what the machine does alone.",
        "",
    ]
    if kept:
        lines += ["Findings with kept runs: " + ", ".join(f"[{f.section}](#{_anchor(f.section)})" for f in kept), ""]
    for finding in kept:
        lines += _section(finding, results / finding.name)
    if awaiting:
        lines += [
            "## Awaiting re-measurement",
            "",
            f"These sections of [{MEASURED}]({MEASURED.name}) quote figures that no kept run backs; each is to be",
            f"re-measured with its command and kept (`{COMMAND} keep NAME DIR`), or dropped.",
            "",
            *markdown(
                ["finding", "section measured by hand", "re-measure with"],
                [[f"`{f.name}`", _measured_link(f.section), f"`{f.command}`"] for f in awaiting],
            ),
        ]
    return "\n".join(lines).rstrip() + "\n"


def _measured_link(section: str) -> str:
    """A link from this page to the section of the hand-measured page with the same heading (a parenthesis
    after it names the part of that section)."""
    return f"[{section}]({MEASURED.name}#{_anchor(section.split(' (', 1)[0])})"


def _anchor(text: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    kept = "".join(char for char in text.lower() if char.isalnum() or char in " -_")
    return kept.replace(" ", "-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description="Write docs/findings.md from the kept results.")
    parser.add_argument("--check", action="store_true", help="exit 1 when the page differs from what would be written")
    parser.add_argument("--output", type=Path, default=ROOT / PAGE, help=f"the page (default: {PAGE})")
    parser.add_argument("--results", type=Path, default=ROOT / RESULTS, help=f"kept results (default: {RESULTS})")
    parser.add_argument("keep", nargs="*", help="keep NAME DIR [DIR ...]: keep the runs under DIR as NAME's")
    arguments = parser.parse_args(argv)
    if arguments.keep:
        if arguments.keep[0] != "keep" or len(arguments.keep) < 3:
            parser.error("usage: keep NAME DIR [DIR ...]")
        name, *directories = arguments.keep[1:]
        missing = [directory for directory in directories if not Path(directory).is_dir()]
        if missing:
            parser.error(f"{missing[0]} is not a directory")
        try:
            written = keep(name, [Path(directory) for directory in directories], arguments.results)
        except ValueError as error:
            parser.error(str(error))
        print(f"kept {len(written)} runs in {arguments.results / name}; now run `{COMMAND}`")
        return 0
    return publish(arguments.output, render(arguments.results), arguments.check, COMMAND)


if __name__ == "__main__":
    sys.exit(main())
