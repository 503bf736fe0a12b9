"""The real composed config, as the CLI builds it (the schema registered as `python -m pipeline` does, also in
the subprocesses tests start)."""

from __future__ import annotations

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from pipeline.config import calibrate_run
from pipeline.config.schema import Config, register

register()


def compose_config(*overrides: str) -> Config:
    """The config `python -m pipeline OVERRIDES` would run (before validation; a calibrate run's own model keys
    applied, as `pipeline.__main__` does)."""
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return OmegaConf.to_object(calibrate_run.apply(compose(config_name="config", overrides=list(overrides))))


SERVER_CLIENT = ("tritonclient", "grpc")  # topology=model_server's client, the [server] extra


def with_server_client(monkeypatch) -> None:
    """Validation as if the [server] extra were installed: the default suite runs without it, and a test of another
    model_server rule must not fail on the extra's check instead."""
    import importlib.util

    real = importlib.util.find_spec
    fake = object()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: fake if name in SERVER_CLIENT else real(name, *a))
