"""Rebuild a sweep's results.csv and report.html from the result.json files on disk.

The one entry point for whoever wants the report: the command line (`python -m reports`) and a Hydra
callback at the end of a multirun (`build([sweep_dir], sweep_dir)`). Both files are written under a
temporary name and renamed into place, so a reader never sees half a file, and rebuilding is always safe:
an interrupted sweep gives `missing` rows, a later rebuild fills them in.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.rundir import atomic_write
from reports import bottleneck_check, connect, fast_paths, peers, scaling
from reports.aggregate import find_jobs, job_frame, write_csv
from reports.html import render
from reports.projection import Projection

CSV_FILE = "results.csv"
HTML_FILE = "report.html"


def build(
    directories: list[Path], out_dir: Path, microbenchmark: Path | None = None, projection: Projection | None = None
) -> tuple[Path, Path]:
    """Write results.csv and report.html for every job under `directories` into `out_dir`; return both paths.

    `microbenchmark`: a pytest-benchmark JSON file (`pytest tests/bench --benchmark-json`), shown in its own section;
    `projection`: the results projected onto an instance (`reports.projection`), shown in its own section.
    Raises FileNotFoundError when a directory does not exist.
    """
    directories = [Path(directory) for directory in directories]
    jobs = find_jobs(directories)
    frame = job_frame(jobs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(frame, out_dir / CSV_FILE)
    html_path = atomic_write(out_dir / HTML_FILE, render(jobs, frame, out_dir, directories, microbenchmark, projection))
    return csv_path, html_path


def summaries(directories: list[Path]) -> list[str]:
    """The lines a sweep prints at its end (`pipeline.callbacks`) and `python -m reports` after its files: each
    comparison's ratios (peers, Connect, fast paths), the bottleneck model's check and the scaling targets."""
    return [
        *peers.summary(directories),
        *connect.summary(directories),
        *fast_paths.summary(directories),
        *bottleneck_check.summary(directories),
        *scaling.summary(directories),
    ]
