"""`python -m pipeline`: compose a run (or, with -m, a sweep) with Hydra and benchmark it."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pipeline.results import summary
from pipeline.run import run
from pipeline.schema import register

register()


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_config = HydraConfig.get()
    result = run(OmegaConf.to_object(cfg), Path(hydra_config.runtime.output_dir))
    print(summary(result), flush=True)
    if result.status != "ok" and hydra_config.mode is RunMode.RUN:
        sys.exit(1)


if __name__ == "__main__":
    main()
