"""A calibrate run's own model keys, put in place after Hydra has composed the run.

Why: `python -m pipeline sweep=calibrate model.arch=resnet18` (or `model=accelerator device.images_per_s=50`, or
`model.factory=...`) names the model the advice is for, and every job of the sweep gets the command line. Hydra
applies a command-line key after the whole defaults list, so an option of the sweep cannot keep `model.arch` off
its no-model runs (validation rightly refuses model.arch with model=null_model, and a `device.*` key cannot be set
on a run whose device is null). So the calibrate options do not set `model` or `device` themselves: they state
what their run owns under `calibrate` (schema.CalibrateConfig), and `apply` replaces the config's model and device
with it once composition is done, before the run's job.yaml is written. Validation of ordinary runs is untouched:
without `+calibrate=` nothing changes.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf


def apply(cfg: DictConfig) -> DictConfig:
    """`cfg` with its calibrate run's own model and device (`calibrate.model`, `calibrate.device`) in place of the
    composed ones, and its model at `calibrate.batch_size` where the run fixes one; unchanged without `calibrate`.
    Changes `cfg` in place (Hydra's config of this job) and returns it."""
    run = OmegaConf.select(cfg, "calibrate", default=None)
    if run is None:
        return cfg
    if run.model is not None:
        cfg.model = run.model
        cfg.device = run.device
    if run.batch_size is not None:
        cfg.model.batch_size = run.batch_size
    return cfg


__all__ = ["apply"]
