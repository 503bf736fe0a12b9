"""`python -m pipeline`: compose a run (or, with -m or sweep=NAME, a sweep) with Hydra and benchmark it.

Each job runs in a child process (`pipeline.job`) with its own Spark application; this process composes,
waits, forwards Ctrl-C and SIGTERM so the child can stop what it started, and prints the summary.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pipeline.job import JOB_FILE
from pipeline.results import RESULT_FILE, Metrics, Result, now, summary, write_result
from pipeline.schema import register

register()
CHILD_GRACE_S = 120


def _lost(run_dir: Path, code: int) -> Result:
    """The record of a job whose process died without writing its result (killed, out of memory)."""
    result = Result(
        status="failed",
        variant={},
        config={},
        env={},
        run_dir=str(run_dir),
        started_at=now(),
        finished_at=now(),
        error={"type": "JobProcessDied", "message": f"the job process exited with code {code} without a result"},
    )
    write_result(run_dir, result)
    return result


def run_child(run_dir: Path) -> Result:
    child = subprocess.Popen([sys.executable, "-m", "pipeline.job", str(run_dir)])
    forward = lambda signum, frame: child.send_signal(signum)  # noqa: E731
    previous = signal.signal(signal.SIGTERM, forward)
    try:
        try:
            code = child.wait()
        except KeyboardInterrupt:  # the child got the same Ctrl-C: let it clean up and record it
            child.wait(CHILD_GRACE_S)
            raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    path = run_dir / RESULT_FILE
    if not path.is_file():
        return _lost(run_dir, code)
    record = json.loads(path.read_text())
    record["metrics"] = Metrics(**record["metrics"])
    return Result(**record)


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    (run_dir / JOB_FILE).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    result = run_child(run_dir)
    print(summary(result), flush=True)
    if result.status != "ok" and hydra_config.mode is RunMode.RUN:
        sys.exit(1)


if __name__ == "__main__":
    main()
