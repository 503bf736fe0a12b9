"""Hydra callbacks of a sweep: progress while it runs, results.csv and report.html when it ends.

Jobs never raise (each records its own failure), so Hydra reaches `on_multirun_end`; for a sweep cut short,
`python -m reports DIR` builds the same files from whatever results are on disk.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from pipeline.runtime.claim import DirectoryInUse, claim, unique_dir
from pipeline.runtime.progress import sweep_eta


def _probe(directory: Path) -> None:
    """Create a file of one byte in `directory` and remove it; raises OSError where that is refused (read-only,
    not a dir, full: an empty file takes no space, so only a byte finds a full disk before Hydra's trace does)."""
    handle, name = tempfile.mkstemp(prefix=".write-probe-", dir=directory)
    try:
        os.write(handle, b"\0")
        os.fsync(handle)
    finally:
        os.close(handle)
        os.unlink(name)


def unwritable(directory: Path) -> str | None:
    """Why the output directory `directory` cannot be written (without creating it), or None."""
    existing = directory.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    try:
        _probe(existing)
    except OSError as error:
        return f"{existing} is not writable ({error.strerror or error})"
    return None


def require_writable(directory: str, key: str) -> None:
    """Stop with one line, before Hydra configures its log file there (whose failure is a page of trace)."""
    why = unwritable(Path(directory))
    if why is not None:
        print(f"error: cannot write the run directory {directory} ({key}): {why}", file=sys.stderr, flush=True)
        raise SystemExit(1)  # not an Exception: Hydra's callback runner would only warn


def count_jobs(config: DictConfig) -> int:
    """How many jobs the basic sweeper will launch: the product of every sweep's length, a command-line
    override replacing the named sweep's value for the same key, as the sweeper does."""
    params = [f"{key}={value}" for key, value in (config.hydra.sweeper.get("params") or {}).items()]
    by_key = {
        o.key_or_group: o for o in OverridesParser.create().parse_overrides(params + list(config.hydra.overrides.task))
    }
    return math.prod(len(list(o.sweep_string_iterator())) for o in by_key.values() if o.is_sweep_override())


class SweepProgress(Callback):
    """Checks the output directory is writable before a run or sweep starts; prints `job k of n` in a sweep."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.total = 0

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        require_writable(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        require_writable(config.hydra.sweep.dir, "hydra.sweep.dir")
        self.started, self.total = time.monotonic(), count_jobs(config)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        job = config.hydra.job
        if OmegaConf.is_missing(job, "num"):  # a single run, not a sweep's job: nothing to count
            return
        elapsed = time.monotonic() - self.started
        eta = sweep_eta(job.num, self.total, elapsed)  # from the mean time of the jobs done so far
        print(
            f"[sweep] job {job.num + 1} of {self.total or '?'} ({elapsed:.0f} s elapsed{eta}): {job.override_dirname}",
            flush=True,
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from reports.build import build, summaries

        sweep_dir = Path(config.hydra.sweep.dir)
        csv, html = build([sweep_dir], sweep_dir)
        lines = [f"{self.total} jobs in {time.monotonic() - self.started:.0f} s", *summaries([sweep_dir]), csv, html]
        print("\n".join(f"[sweep] {line}" for line in lines), flush=True)


def _quoted(value: str) -> str:
    """`value` as a quoted Hydra override value."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def claim_output_dir(config: DictConfig, mode: str) -> Path:
    """Claim the run's (`mode="run"`) or sweep's (`"sweep"`) output dir before Hydra writes there; see
    `ClaimOutputDir`. Returns the directory, which for a time-named one may have got a suffix."""
    node = config.hydra[mode]
    setting = f"hydra.{mode}.dir"
    directory = Path(str(node.dir))
    spelt = str(OmegaConf.to_container(node, resolve=False)["dir"])
    if "${now:" in spelt:  # named by the second: a collision is an accident, so this run takes a free sibling
        chosen = unique_dir(directory)
        if chosen != directory:
            with read_write(config.hydra), open_dict(config.hydra):
                node.dir = str(chosen)
                if mode == "sweep":  # each job's config is composed again from these overrides
                    config.hydra.overrides.hydra.append(f"{setting}={_quoted(str(chosen))}")
            print(f"note: {directory} was taken by a run started in the same second: this one is {chosen}", flush=True)
        directory = chosen
    try:
        claim(directory, setting)
    except DirectoryInUse as error:  # a directory the user named: refused at once, nothing in it touched
        print(f"error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None  # not an Exception: Hydra's callback runner would only warn
    return directory


class ClaimOutputDir(Callback):
    """One run per output dir (`pipeline.runtime.claim`): a run claims its run dir, a sweep its sweep dir, before
    Hydra writes anything there (each job dir is claimed by `pipeline.__main__`). A dir named by the time (the
    default `outputs/DATE/TIME`) that a run of the same second took gets a suffix (`TIME_2`); a dir the user named
    that another run holds stops this one at once, with the holder's PID and host. The claim lasts until this
    process (and its job's process) has ended."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        claim_output_dir(config, "run")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        claim_output_dir(config, "sweep")


class WriteRates(Callback):
    """sweep=calibrate's end: the rates its runs measured, with their sources, into <sweep dir>/rates.json
    (`pipeline.projection.calibrate`); `python -m pipeline.projection.rates DIR --write FILE` does the same later."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from pipeline.projection.calibrate import RATES_FILE, write

        sweep_dir = Path(config.hydra.sweep.dir)
        path = write([sweep_dir], sweep_dir / RATES_FILE)
        print(f"[sweep] rates: {path}", flush=True)
