"""A calibration for advice tests: the rates file of `sweep=calibrate`'s six runs kept in tests/fixtures/calibrate
(local[2] on this 2-core machine, 64 JPEGs, ResNet50 on the CPU; its server run failed, so its figures are assumed),
and hand-made ones for a shape with GPUs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pipeline.projection.bottleneck import Shape
from pipeline.projection.calibrate import Calibration, ModelCost, calibration

CALIBRATE_RUNS = Path(__file__).resolve().parents[1] / "fixtures" / "calibrate"


def calibrated() -> Calibration:
    """The kept calibrate runs' calibration (as `python -m pipeline.projection.rates DIR --write` reads them)."""
    return calibration([CALIBRATE_RUNS])


def with_gpus(gpus: int = 2, cores: int = 4, images_per_s: float = 100.0) -> Calibration:
    """The kept calibration on one local_cluster worker of `cores` slots with `gpus` emulated GPUs, its model a
    simulated device of `images_per_s`."""
    found = calibrated()
    model = ModelCost("t4_fp16", True, 0.001, 1 / images_per_s, 0.0, "the simulated device's own profile")
    return replace(
        found,
        model=model,
        shape=Shape(1, cores, gpus, cpus_per_node=2.0),
        cluster_mode="local_cluster",
        overrides=(
            "cluster=local_cluster",
            "cluster.workers=1",
            f"cluster.worker_cores={cores}",
            f"gpu.emulate={gpus}",
            "model=accelerator",
            f"device.images_per_s={images_per_s}",
        ),
    )
