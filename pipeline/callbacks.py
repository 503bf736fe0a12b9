"""Hydra callbacks of a sweep: progress while it runs, results.csv and report.html when it ends.

Jobs never raise (each records its own failure), so Hydra reaches `on_multirun_end`; for a sweep cut short,
`python -m reports DIR` builds the same files from whatever results are on disk.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def count_jobs(config: DictConfig) -> int:
    """How many jobs the basic sweeper will launch: the product of every sweep's length, a command-line
    override replacing the named sweep's value for the same key, as the sweeper does."""
    params = [f"{key}={value}" for key, value in (config.hydra.sweeper.get("params") or {}).items()]
    by_key = {
        o.key_or_group: o for o in OverridesParser.create().parse_overrides(params + list(config.hydra.overrides.task))
    }
    return math.prod(len(list(o.sweep_string_iterator())) for o in by_key.values() if o.is_sweep_override())


class SweepProgress(Callback):
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.total = 0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started, self.total = time.monotonic(), count_jobs(config)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        job = config.hydra.job
        elapsed = time.monotonic() - self.started
        print(
            f"[sweep] job {job.num + 1} of {self.total or '?'} ({elapsed:.0f} s elapsed): {job.override_dirname}",
            flush=True,
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from reports import peers
        from reports.build import build

        sweep_dir = Path(config.hydra.sweep.dir)
        csv, html = build([sweep_dir], sweep_dir)
        lines = [
            f"{self.total} jobs in {time.monotonic() - self.started:.0f} s",
            *peers.summary([sweep_dir]),
            csv,
            html,
        ]
        print("\n".join(f"[sweep] {line}" for line in lines), flush=True)
