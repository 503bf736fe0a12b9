"""Where a run's weights come from, always a local file: nothing is ever downloaded.

`model.weights` is `random` (the default), a state_dict file, one of torchvision's pretrained weights of the
architecture (its name, e.g. IMAGENET1K_V1, from the local torch hub cache), or, with `model.factory`,
`factory`: the factory's own weights, as its function returns them (no file).

`random` weights are the network's seeded initialisation (torchvision's for `model.arch`, the factory's own
for `model.factory`), calibrated once and cached as a state_dict. Uncalibrated, a randomly initialised
network predicts the same class for every input (measured: ResNet50, class 713 for all images, probability
0.99), which would make any agreement check vacuous. Calibration, for any architecture, runs the network's
BatchNorm layers (where it has any) in training mode over a seeded batch of synthetic photos, so each layer is
normalized, then finds the classifier (the last Linear, or 1x1 convolution, that the forward pass runs with
as many outputs as the logits have), centres it on the mean feature and scales it to ImageNet-like logit
spread; after it, the top-1 class depends on the image. A classifier initialised to zeros (torchvision's ViT
head) is first given nn.Linear's own seeded initialisation. Accuracy stays meaningless and results say so.

The calibration photos are cropped as the run crops (`preprocess.resize_size`, `preprocess.crop_size`): the
normalization a network learns depends on the scale it sees, and a small network may take small crops only.
So the cache key is (network, seed, calibration version), plus the sizes where they are not the defaults;
a factory's key also holds a fingerprint of its seeded initial weights, so a changed factory is calibrated
again. ResNet50 at the default sizes gets the very weights (same file name, same bytes) it always had.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import torch
from torchvision.models import get_model_weights

from pipeline.data import synthetic
from pipeline.inference.networks import DEFAULT_ARCH, network, torchvision_weights
from pipeline.inference.preprocess import Preprocessing
from pipeline.rundir import atomic_write
from pipeline.runtime import progress

CALIBRATION_VERSION = 1
CALIBRATION_IMAGES = 32
CALIBRATION_SEED_OFFSET = 1_000_003  # calibration images never coincide with a data set's images
LOGIT_STD = 3.0
FACTORY_WEIGHTS = "factory"  # model.weights=factory: the factory's own weights


class WeightsNotFound(FileNotFoundError):
    """Weights asked for that are not on this machine."""


class CalibrationError(RuntimeError):
    """A random network that calibration cannot make depend on its input."""


def weights_kind(weights: str, arch: str = DEFAULT_ARCH, factory: str | None = None) -> str:
    """random, factory (the factory's own), torchvision (a weights name of `arch`) or file."""
    if weights == "random":
        return "random"
    if weights == FACTORY_WEIGHTS and factory is not None:
        return "factory"
    if factory is None and weights in torchvision_weights(arch):
        return "torchvision"
    return "file"


def calibration_images(seed: int, preprocessing: Preprocessing) -> torch.Tensor:
    """The normalized batch of seeded synthetic photos that random weights are calibrated on: JPEGs decoded by
    Pillow and cropped at `preprocessing`'s sizes, whatever the run's image format and decoder, so the weights
    depend on the sizes only."""
    plain = Preprocessing(resize_size=preprocessing.resize_size, crop_size=preprocessing.crop_size)
    crops = torch.stack(
        [
            plain.crop(synthetic.synth_jpeg(seed + CALIBRATION_SEED_OFFSET, i))
            for i in progress.iterate(range(CALIBRATION_IMAGES), "weights: calibration images", CALIBRATION_IMAGES)
        ]
    )
    return plain.normalize(crops)


def calibrate(model: torch.nn.Module, images: torch.Tensor) -> None:
    """Make `model`'s top-1 depend on the image, in place (see the module docstring); under a seeded RNG, as a
    zero classifier is initialised again."""
    norms = [layer for layer in model.modules() if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm)]
    for layer in norms:
        layer.reset_running_stats()
        layer.momentum = None  # a plain average over the calibration batch
    model.eval()
    with torch.no_grad():
        if norms:
            for layer in norms:
                layer.train()
            model(images)
            model.eval()
        classifier, features, direct = _classifier(model, images)
        if not classifier.weight.any():  # torchvision's ViT head starts at zero: no logit would move
            classifier.reset_parameters()
        weight = classifier.weight.view(classifier.weight.shape[0], -1)
        mean = features.mean(0)
        centred = (features - mean) @ weight.T
        spread = centred.std(dim=1).mean()
        if not torch.isfinite(spread) or spread == 0:
            raise CalibrationError("the random network's logits do not depend on its input: cannot calibrate it")
        weight.mul_(LOGIT_STD / spread)
        if classifier.bias is not None:
            classifier.bias.copy_(-weight @ mean)
        if not direct:  # layers after it (SqueezeNet's ReLU and pooling) shrink the spread: scale to the logits'
            logits = model(images)
            spread = logits.std(dim=1).mean()
            if not torch.isfinite(spread) or spread == 0:
                raise CalibrationError("the random network's logits do not depend on its input: cannot calibrate it")
            for parameter in (classifier.weight, classifier.bias):
                if parameter is not None:
                    parameter.mul_(LOGIT_STD / spread)


def _classifier(model: torch.nn.Module, images: torch.Tensor) -> tuple[torch.nn.Module, torch.Tensor, bool]:
    """The layer that makes the logits (the last Linear or 1x1 Conv2d the forward pass runs, with as many outputs
    as the logits have classes), its inputs over `images`, one row per image (per position for a conv), and
    whether its output is the logits themselves (positively homogeneous layers may follow it: ReLU, pooling)."""
    last: list[tuple[torch.nn.Module, torch.Tensor, torch.Tensor]] = []

    def keep(layer: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        last[:] = [(layer, inputs[0], output)]

    hooks = [
        layer.register_forward_hook(keep)
        for layer in model.modules()
        if isinstance(layer, torch.nn.Linear) or (isinstance(layer, torch.nn.Conv2d) and _pointwise(layer))
    ]
    try:
        logits = model(images)
    finally:
        for hook in hooks:
            hook.remove()
    if not last or not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise CalibrationError("found no classifier layer: no Linear or 1x1 Conv2d ran before (batch, classes) logits")
    layer, inputs, output = last[0]
    direct = output is logits
    outputs = layer.out_features if isinstance(layer, torch.nn.Linear) else layer.out_channels
    if outputs != logits.shape[1]:
        raise CalibrationError(
            f"found no classifier layer: the last Linear or 1x1 Conv2d has {outputs} outputs, the logits "
            f"{logits.shape[1]} classes"
        )
    if isinstance(layer, torch.nn.Conv2d):  # (N, C, H, W) -> one feature row per position
        return layer, inputs.permute(0, 2, 3, 1).reshape(-1, layer.in_channels), direct
    return layer, inputs.reshape(-1, layer.in_features), direct


def _pointwise(layer: torch.nn.Conv2d) -> bool:
    return layer.kernel_size == (1, 1) and layer.groups == 1


def calibrated_random(
    seed: int,
    arch: str = DEFAULT_ARCH,
    factory: str | None = None,
    preprocessing: Preprocessing | None = None,
    model: torch.nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """A seeded state_dict of the network whose predictions depend on the input (see the module docstring);
    `model` is the network as `network(arch, factory, seed)` built it, when the caller has it already."""
    model = model if model is not None else network(arch, factory, seed)
    images = calibration_images(seed, preprocessing or Preprocessing())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        calibrate(model, images)
    return model.state_dict()


def fingerprint(state: dict[str, torch.Tensor]) -> str:
    """A short hash of a state_dict's names, shapes and values."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:12]


def random_name(seed: int, arch: str, factory: str | None, preprocessing: Preprocessing, initial: str = "") -> str:
    """The cache file name of random weights: the network (a factory's with the `fingerprint` of its `initial`
    weights), the seed, the crop sizes where not the defaults, the calibration version."""
    model = f"factory-{factory.replace(':', '.')}-{initial}" if factory is not None else arch
    default = Preprocessing()
    sizes = (preprocessing.resize_size, preprocessing.crop_size)
    scaled = "" if sizes == (default.resize_size, default.crop_size) else f"-resize{sizes[0]}-crop{sizes[1]}"
    return f"{model}-random-seed{seed}{scaled}-v{CALIBRATION_VERSION}.pt"


def resolve(
    weights: str,
    seed: int,
    cache_dir: str | Path,
    arch: str = DEFAULT_ARCH,
    factory: str | None = None,
    preprocessing: Preprocessing | None = None,
) -> Path | None:
    """The local file of `model.weights` for the network (`arch`, or `factory`): a state_dict, or torchvision's
    checkpoint of a weights name; None for a factory's own weights. Random weights are built into the cache
    once, calibrated at `preprocessing`'s sizes."""
    kind = weights_kind(weights, arch, factory)
    model = f"model.factory={factory}" if factory else f"model.arch={arch}"
    if kind == "factory":
        return None
    if kind == "random":
        preprocessing = preprocessing or Preprocessing()
        built = network(arch, factory, seed) if factory is not None else None  # a factory's: built to be known
        initial = fingerprint(built.state_dict()) if built is not None else ""
        path = Path(cache_dir).expanduser() / "weights" / random_name(seed, arch, factory, preprocessing, initial)
        if not path.is_file():
            buffer = io.BytesIO()
            torch.save(calibrated_random(seed, arch, factory, preprocessing, built), buffer)
            atomic_write(path, buffer.getvalue())
        return path
    if kind == "file":
        path = Path(weights).expanduser()
        if not path.is_file():
            if factory is not None:
                choices = f"'random', '{FACTORY_WEIGHTS}' (the factory's own), or a path to a state_dict of its module"
            else:
                names = ", ".join(torchvision_weights(arch))
                choices = f"'random', a path to a state_dict of {arch}, or a torchvision weights name ({names})"
            raise WeightsNotFound(f"model.weights={weights!r} ({model}): no such file. Use {choices}.")
        return path.resolve()
    url = get_model_weights(arch)[weights].url
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if not path.is_file():
        raise WeightsNotFound(
            f"model.weights={weights} ({model}): {path} is not in the local torch hub cache, and this tool never "
            f"downloads. On a machine with internet fetch {url}, copy it to {path} (or point TORCH_HOME at "
            f"a directory whose hub/checkpoints holds it), or pass model.weights=/path/to/state_dict.pth."
        )
    return path
