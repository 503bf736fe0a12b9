"""One run in a process of its own: `python -m pipeline.job RUN_DIR` runs the config in RUN_DIR/job.yaml.

`python -m pipeline` composes and checks the config with Hydra, then starts this for every job, also
inside a multirun: Hydra's basic launcher runs all jobs in one Python process, and a driver JVM started
there keeps its first settings (driver memory, classpath) for every later job. A fresh process per run
gives each variant its own Spark application and driver JVM.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import OmegaConf

from pipeline.run import run
from pipeline.rundir import RunDir
from pipeline.schema import Config, typed


def load(run_dir: Path) -> Config:
    """The resolved config the parent wrote."""
    return typed(OmegaConf.load(RunDir(run_dir).job))


def main(run_dir: Path) -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s",
        handlers=[logging.StreamHandler(), logging.FileHandler(RunDir(run_dir).log)],
    )
    return 0 if run(load(run_dir), run_dir).status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
