"""The instance catalogue (conf/instance/): real machines the reports project measured rates onto.

Why a catalogue of its own: a projection needs each machine's vCPUs, GPUs and their device profile
(conf/device/), its memory and its price, with their sources; the price stays in the cost table
(conf/cost/aws_on_demand.yaml), so a price lives in one place. Each file is typed by
`pipeline.config.schema.InstanceConfig`: a misspelt key, a wrong type, an unknown instance, a price or device the
other tables lack all fail naming the key and the choices.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.config.schema import ConfigError, CostConfig, DeviceConfig, InstanceConfig, PriceConfig
from pipeline.projection.bottleneck import Device

COST_TABLE = "aws_on_demand"


@dataclass(frozen=True)
class Instance:
    config: InstanceConfig
    price: PriceConfig
    device: Device | None
    device_config: DeviceConfig | None


def _group(name: str):
    return resources.files("conf") / name


def names(group: str = "instance") -> list[str]:
    """The options of a conf group (file names without .yaml)."""
    return sorted(item.name.removesuffix(".yaml") for item in _group(group).iterdir() if item.name.endswith(".yaml"))


def device_profiles() -> list[str]:
    """The device profiles of conf/device/: the files that describe a device (the others choose one, or none,
    for a model)."""
    return [name for name in names("device") if "images_per_s" in OmegaConf.load(_group("device") / f"{name}.yaml")]


def _load(group: str, name: str, schema: type):
    if name not in names(group):
        raise ConfigError(f"{group}={name}: no such option; choose one of {', '.join(names(group))}")
    try:
        data = OmegaConf.load(str(_group(group) / f"{name}.yaml"))
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), data))
    except OmegaConfBaseException as error:
        raise ConfigError(f"conf/{group}/{name}.yaml: {error}") from error


def device_profile(name: str) -> tuple[Device, DeviceConfig]:
    """A device profile of conf/device/ as the bottleneck model's Device, with its config (source, kind)."""
    config = _load("device", name, DeviceConfig)
    return Device(
        config.name, config.images_per_s, config.batch_size, config.latency_s, config.host_s_per_image
    ), config


def load(name: str, device: str | None = None) -> Instance:
    """Instance `name` (conf/instance/NAME.yaml), its price from the cost table and its device profile
    (`device` replaces the catalogue's)."""
    config = _load("instance", name, InstanceConfig)
    if config.vcpus < 1 or config.gpus < 0 or not config.vcpu_speed > 0:
        raise ConfigError(f"instance={name}: vcpus must be >= 1, gpus >= 0 and vcpu_speed > 0")
    prices = _load("cost", COST_TABLE, CostConfig).prices
    if config.price not in prices:
        raise ConfigError(
            f"instance={name}: price {config.price!r} is not in cost={COST_TABLE}; priced: {', '.join(prices)}"
        )
    chosen = device if device is not None else config.device
    if chosen is not None and not config.gpus:
        raise ConfigError(f"instance={name} has no GPU for device={chosen}")
    profile, device_config = device_profile(chosen) if chosen is not None else (None, None)
    return Instance(config, prices[config.price], profile, device_config)
