"""The engines a run can measure with. Each is a module of this package whose `run(config, dataset, inference,
run_dir) -> Measurement` is the whole interface (`pipeline.engines.base`); it is imported only when chosen,
since Spark and Ray are heavy and Ray is optional. A new engine is a module here and a line below.
"""

from __future__ import annotations

import importlib

from pipeline.engines.base import Engine
from pipeline.schema import Engine as EngineName

ENGINES: dict[EngineName, str] = {
    EngineName.spark: "pipeline.engines.spark",
    EngineName.torch: "pipeline.engines.torch",
    EngineName.ray: "pipeline.engines.ray",
}


def engine(name: EngineName) -> Engine:
    """The `run` function of the engine called `name`."""
    return importlib.import_module(ENGINES[name]).run
