"""What executors on other machines get from the driver before any pass, since they see nothing of its disk.

The model's weights: the driver's file (cached in `cache_dir`, or the user's `model.weights`) travels with the
application, `SparkContext.addFile` in a classic session and `addArtifacts(file=True)` under Spark Connect,
and a task opens its executor's copy through `SparkFile`, a path that resolves where it is opened. Chosen over
broadcast bytes (no broadcast under Connect; the state_dict would be unpickled in every Python worker, not
read from disk) and over a path on the storage root (a second copy of a cached file per run, and the cluster
fetches it per executor either way). Each executor fetches the file once, during the warm-up pass; what was
sent, its size and the seconds the driver spent are in the result (`cluster.shipped`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.inference.steps import Inference
from pipeline.spark.connect import is_connect


@dataclass(frozen=True)
class SparkFile(os.PathLike):
    """A file shipped with the application, as a path that resolves on whichever side opens it."""

    name: str

    def __fspath__(self) -> str:
        from pyspark import SparkFiles

        return SparkFiles.get(self.name)


def ship_file(spark: Any, path: Path) -> dict[str, Any]:
    """Send `path` to every executor of `spark`'s application; what was sent, how, and the driver's seconds."""
    started = time.perf_counter()
    if is_connect(spark):
        spark.addArtifacts(str(path), file=True)
        how = "Spark Connect artifact (addArtifacts file=True)"
    else:
        spark.sparkContext.addFile(str(path))
        how = "SparkContext.addFile"
    return {"file": path.name, "bytes": path.stat().st_size, "how": how, "seconds": time.perf_counter() - started}


def ship_weights(spark: Any, inference: Inference) -> tuple[Inference, dict[str, Any]]:
    """`inference` with its weights file shipped to the executors and opened there as a `SparkFile`; unchanged
    (and nothing shipped) for a model without weights."""
    weights = inference.model.weights_file
    if weights is None:
        return inference, {}
    shipped = ship_file(spark, Path(weights))
    model = dataclasses.replace(inference.model, weights_file=SparkFile(Path(weights).name))
    return dataclasses.replace(inference, model=model), {"weights": shipped}
