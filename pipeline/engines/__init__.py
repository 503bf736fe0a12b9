"""The engines a run can measure with. Each is a module of this package whose `run(config, dataset, inference,
run_dir, plan) -> Measurement` is the whole interface (`pipeline.engines.base.EngineRun`); it is imported only when
chosen, since Spark and Ray are heavy and Ray is optional. A new engine is a module here and a line below.
"""

from __future__ import annotations

import importlib

from pipeline.config.schema import Engine
from pipeline.engines.base import EngineRun

ENGINES: dict[Engine, str] = {
    Engine.spark: "pipeline.engines.spark",
    Engine.torch: "pipeline.engines.torch",
    Engine.ray: "pipeline.engines.ray",
}


def engine(name: Engine) -> EngineRun:
    """The `run` function of the engine called `name`."""
    return importlib.import_module(ENGINES[name]).run
