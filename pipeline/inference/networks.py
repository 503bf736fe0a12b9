"""Which network a run's model is: a torchvision classification architecture by name (`model.arch`), or the
user's own from an importable factory (`model.factory=package.module:function`). It knows nothing of Spark or
of where weights come from; `pipeline.inference.model` builds and loads, `pipeline.data.weights` calibrates.

Both are built where the model runs (each Spark executor, the torch and Ray workers, the model server), so a
factory's module must be importable there as well as in the driver: installed, or on PYTHONPATH, or, on a
cluster of other machines, shipped with the tool's code (`cluster.ship=code|env` adds the factory's top-level
package to the code zip, and the preflight names an executor that cannot import it). A factory is called
under `torch.manual_seed(model.seed)`, so whatever it initialises randomly comes out the same in every process.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torchvision.models import get_model, get_model_weights, list_models

DEFAULT_ARCH = "resnet50"
FACTORY_KEY = "model.factory"
# a dotted module path, a colon, a function name
FACTORY_PATTERN = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
SHOWN = ("resnet18", "resnet50", "efficientnet_b0", "mobilenet_v3_small", "convnext_tiny", "vit_b_16")
_HUB_LOCK = threading.Lock()


class FactoryError(ImportError):
    """`model.factory` names nothing importable, or something that does not return a torch.nn.Module."""


def architectures() -> list[str]:
    """torchvision's classification models (not detection, segmentation, video or quantized ones)."""
    return list_models(module=torchvision.models)


def check_arch(arch: str) -> None:
    """Raise ValueError naming `model.arch`, the closest names and a few common ones, unless torchvision has it."""
    names = architectures()
    if arch in names:
        return
    close = difflib.get_close_matches(arch, names, n=4, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ValueError(
        f"model.arch={arch}: not a torchvision classification model; {hint}e.g. {', '.join(SHOWN)} "
        f"({len(names)} in all: torchvision.models.list_models(module=torchvision.models))"
    )


def torchvision_weights(arch: str) -> list[str]:
    """The names of torchvision's pretrained weights for `arch` (IMAGENET1K_V1, ..., DEFAULT); none for a name
    torchvision does not have (`check_arch` says so)."""
    try:
        return list(get_model_weights(arch).__members__)
    except (ValueError, KeyError):
        return []


def check_factory_syntax(factory: str) -> None:
    if not FACTORY_PATTERN.match(factory):
        raise FactoryError(
            f"{FACTORY_KEY}={factory}: expected package.module:function (a module importable where the model "
            "runs, and a function in it returning a torch.nn.Module)"
        )


def load_factory(factory: str) -> Callable[[], torch.nn.Module]:
    """The function `factory` ("package.module:function") names, imported in this process; FactoryError says why
    not, naming the key."""
    check_factory_syntax(factory)
    module_name, function_name = factory.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise FactoryError(
            f"{FACTORY_KEY}={factory}: cannot import {module_name} ({type(error).__name__}: {error}); the module "
            "must be importable in the driver and wherever the model runs (installed there, or on PYTHONPATH)"
        ) from error
    function = getattr(module, function_name, None)
    if not callable(function):
        raise FactoryError(f"{FACTORY_KEY}={factory}: {module_name} has no function {function_name}")
    return function


def call_factory(factory: str, seed: int) -> torch.nn.Module:
    """The module `factory` returns, built under `seed` (its own random initialisation, the same in every
    process), without touching this process's random state."""
    function = load_factory(factory)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = function()
    if not isinstance(model, torch.nn.Module):
        raise FactoryError(f"{FACTORY_KEY}={factory}: returned {type(model).__name__}, not a torch.nn.Module")
    return model


def network(arch: str, factory: str | None, seed: int) -> torch.nn.Module:
    """The network, randomly initialised under `seed`: the factory's, or torchvision's `arch`."""
    if factory is not None:
        return call_factory(factory, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_model(arch, weights=None)


def pretrained(arch: str, name: str, checkpoint: str | os.PathLike[str]) -> torch.nn.Module:
    """torchvision's `arch` with its pretrained weights `name`, read from `checkpoint` (a file of any name: a
    shipped copy too), never downloaded.

    Built by torchvision's own builder, which adapts the network to its weights (ViT's image size for SWAG,
    Inception's and GoogLeNet's input transform, DenseNet's old key names): its hub lookup is pointed, for this
    call, at a directory holding `checkpoint` under the name the weights' URL gives, so the lookup finds it.
    """
    weights = get_model_weights(arch)[name]
    with tempfile.TemporaryDirectory(prefix="hub-") as hub, _HUB_LOCK:
        checkpoints = Path(hub) / "checkpoints"
        checkpoints.mkdir()
        (checkpoints / os.path.basename(weights.url)).symlink_to(Path(checkpoint).resolve())
        before = torch.hub._hub_dir  # set_dir's own variable, restored as it was (unset: TORCH_HOME decides)
        torch.hub.set_dir(hub)
        try:
            return get_model(arch, weights=weights)
        finally:
            torch.hub._hub_dir = before
