"""Several variants of a run (each one override: `udf=map_in_arrow`, `topology=split`) in ONE Spark application,
in a Python process of its own: the run's config (its cluster, storage, data set and model) composed, validated,
its data set prepared and its weights shipped as a job does, then each variant's pass measured and compared with
the in-process reference.

Why: what a UDF style or a topology does on a cluster is the same in a job's own application, and a whole
`python -m pipeline` per variant costs its start-up (Hydra, the job's imports, a JVM, executors, Python workers
importing torch: 25-45 s on 2 cores) for seconds of passes. A variant whose GPU scheduling needs other application
settings than the run's fails the helper, naming it. A process of its own because a driver JVM keeps its first
settings (the session's `spark` fixture holds one); `python -m tests.helpers.one_application OUT VARIANTS RUN_DIR
OVERRIDES...` writes OUT as JSON: per variant, the images read and predicted and the agreement; and what was
shipped, and to which executors.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.runtime.processes import descendants, python_helpers, stop_processes
from tests.helpers.cli import CHECKOUT, checkout_env

log = logging.getLogger(__name__)


def in_one_application(tmp_path: Path, variants: list[str], *overrides: str, timeout: int = 900) -> dict[str, Any]:
    """Run `variants` in one application of the run `overrides` configure (see the module docstring); what it
    wrote. The process and everything under it are stopped by PID if it outlives `timeout`."""
    out, run_dir = tmp_path / "variants.json", tmp_path / "run"
    command = [sys.executable, "-m", __name__, str(out), ",".join(variants), str(run_dir), *overrides]
    env = {**os.environ, **checkout_env()}
    with open(tmp_path / "variants.log", "wb") as log:
        process = subprocess.Popen(command, cwd=CHECKOUT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            process.wait(timeout=timeout)
        finally:
            if process.poll() is None:
                stop_processes([process.pid])
    text = (tmp_path / "variants.log").read_text(errors="replace")
    assert process.returncode == 0 and out.is_file(), f"exit {process.returncode}:\n{text[-4000:]}"
    return json.loads(out.read_text())


def assert_every_variant_agrees(found: dict[str, Any], variants: list[str], workers: set[str], images: int) -> None:
    """What `in_one_application` found, checked for each of `variants`: every image read and predicted once, none
    bad, top-1 agreement 1.0 with every image compared, and its tasks on the worker nodes only."""
    assert set(variants) <= set(found["variants"])
    for variant in variants:
        measured = found["variants"][variant]
        assert (measured["read"], measured["predicted"], measured["bad"]) == (images, images, []), variant
        agreement = measured["agreement"]
        assert agreement["top1_agreement"] == 1.0 and agreement["duplicate_ids"] == 0, (variant, agreement)
        assert agreement["compared"] == images, variant
        assert measured["hosts"] and set(measured["hosts"]) <= workers, (variant, measured["hosts"])


def _main(out: Path, variants: list[str], run_dir: Path, overrides: list[str]) -> None:
    """The child's work (its imports here: the test process needs none of them)."""
    from pipeline.config.validate import validate
    from pipeline.data import weights
    from pipeline.data.datasets import prepare
    from pipeline.data.storage import Storage
    from pipeline.engines.spark import application, measure
    from pipeline.run import build_inference, preprocessing_of
    from pipeline.spark.generation import generator
    from pipeline.spark.shipping import ship_weights, shipment
    from pipeline.verify import compare, reference_predictions
    from tests.helpers.config import compose_config

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    config = compose_config(*overrides)
    plan = validate(config)
    assert plan is not None
    cache = config.cache_dir
    storage = Storage.of(config.storage, run_dir, cache)
    dataset = prepare(config.dataset, storage.dataset_cache, config.preprocess.max_pixels, generator(config, plan))
    model = config.model
    path = weights.resolve(model.weights, model.seed, cache, model.arch, model.factory, preprocessing_of(config))
    inference = build_inference(config, path)
    reference = reference_predictions(dataset, inference, cache)
    found: dict[str, Any] = {"num_images": dataset.num_images, "variants": {}}
    with application(config, run_dir, dataset, plan, shipment(config, True)) as app:
        shipped_inference, shipped = ship_weights(app.spark, inference)
        found["shipped"] = shipped
        for variant in variants:
            started = time.perf_counter()
            varied = compose_config(*overrides, variant)
            its_plan = validate(varied)
            assert its_plan is not None and its_plan.gpus == plan.gpus, (
                f"{variant} schedules GPUs as another application would ({its_plan and its_plan.gpus}, the run's "
                f"{plan.gpus}): run it as a job of its own"
            )
            its_dir = run_dir / variant.replace("=", "-")
            run = measure(app.spark, varied, dataset, shipped_inference, its_dir, its_plan.model_slots)
            timed = run.timed[-1]
            records = timed.tasks.get("records", [])
            found["variants"][variant] = {
                "read": timed.read,
                "predicted": timed.predicted,
                "bad": timed.bad,
                "agreement": compare(run.predictions, reference),
                "hosts": sorted({record.get("host", "") for record in records}),
                "seconds": round(time.perf_counter() - started, 1),
            }
            log.info("%s: %s", variant, found["variants"][variant])
    out.write_text(json.dumps(found, default=str))


if __name__ == "__main__":
    from pipeline.runtime.lifetime import die_with_parent
    from pipeline.spark.driver_jvm import stop_driver_jvm

    die_with_parent(signum=signal.SIGTERM)  # a test killed by its timeout takes this run with it
    try:
        _main(Path(sys.argv[1]), sys.argv[2].split(","), Path(sys.argv[3]), sys.argv[4:])
    finally:
        stop_driver_jvm()  # and the JVM it started, then whatever else it started, as a job does
        stop_processes(descendants() - python_helpers())
