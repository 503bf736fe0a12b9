"""The `device` group and `model=accelerator`: profiles compose into DeviceConfig, a bad key, type, kind or
profile fails at compose time naming it, and validation ties a device to model=accelerator only."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException

from pipeline.config.schema import DeviceConfig, DeviceKind, ModelName
from pipeline.config.validate import ConfigError, validate
from pipeline.projection.instances import device_profiles
from tests.helpers.config import compose_config

PROFILES = {  # name -> (images/s, kind): ours are facts.md's H100 figures
    "t4_fp16": (3000.0, DeviceKind.published),
    "t4_fp32": (380.0, DeviceKind.published),
    "a10g": (10000.0, DeviceKind.published),
    "l4": (12882.0, DeviceKind.published),
    "h100_fp32": (6146.0, DeviceKind.ours),
    "h100_bf16": (12422.0, DeviceKind.ours),
    "a100_bf16": (3900.0, DeviceKind.ours),  # approximate: ours scaled by peak ratio (said so in its file)
}


def test_the_profiles_are_the_files_of_conf_device_that_describe_a_device():
    assert device_profiles() == sorted(PROFILES)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_composes_with_its_source(name):
    config = compose_config("model=accelerator", f"device={name}")
    assert isinstance(config.device, DeviceConfig)
    assert (config.device.name, config.device.images_per_s, config.device.kind) == (name, *PROFILES[name])
    assert config.device.source and config.device.date and config.device.batch_size >= 1
    validate(config)


def test_model_accelerator_defaults_to_t4_fp16_and_other_models_have_no_device():
    assert compose_config("model=accelerator").device.name == "t4_fp16"
    assert compose_config("model=accelerator").model.name is ModelName.accelerator
    assert compose_config().device is None
    assert compose_config("model=null_model").device is None


def test_a_rate_overrides_any_profile():
    config = compose_config("model=accelerator", "device=h100_bf16", "device.images_per_s=200")
    assert (config.device.name, config.device.images_per_s, config.device.precision) == ("h100_bf16", 200.0, "bf16")


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("device=nope", "t4_fp16"),
        ("device.nope=1", "nope"),
        ("device.images_per_s=fast", "device.images_per_s"),
        ("device.kind=guessed", "published, ours"),
    ],
)
def test_compose_rejects(override, named):
    with pytest.raises(ConfigCompositionException) as failure:
        compose_config("model=accelerator", override)
    assert named in str(failure.value) + str(failure.value.__cause__)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["device=l4"], "model=accelerator only"),
        (["model=null_model", "device=l4"], "model=accelerator only"),
        (["model=accelerator", "device.images_per_s=0"], "device.images_per_s"),
        (["model=accelerator", "device.latency_s=-1"], "device.latency_s"),
        (["model=accelerator", "device.host_s_per_image=-0.1"], "device.host_s_per_image"),
    ],
)
def test_validate_rejects(overrides, named):
    with pytest.raises(ConfigError, match=named):
        validate(compose_config(*overrides))
