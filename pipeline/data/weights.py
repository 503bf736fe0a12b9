"""Where a run's ResNet50 weights come from, always a local file: nothing is ever downloaded.

`random` weights are torchvision's seeded initialisation, calibrated once and cached as a state_dict.
Uncalibrated, a randomly initialised ResNet50 predicts the same class for every input (measured: class 713
for all images, probability 0.99), which would make any agreement check vacuous. Calibration runs the
BatchNorm layers in training mode over a seeded batch of synthetic photos (so each layer is normalized),
centres the classifier on the mean feature and scales it to ImageNet-like logit spread; after it, the
top-1 class depends on the image. Accuracy stays meaningless and results say so.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch
from torchvision.models import ResNet50_Weights, resnet50

from pipeline.data import synthetic
from pipeline.inference.preprocess import Preprocessing
from pipeline.rundir import atomic_write
from pipeline.runtime import progress

CALIBRATION_VERSION = 1
CALIBRATION_IMAGES = 32
CALIBRATION_SEED_OFFSET = 1_000_003  # calibration images never coincide with a data set's images
LOGIT_STD = 3.0


class WeightsNotFound(FileNotFoundError):
    """Weights asked for that are not on this machine."""


def weights_kind(weights: str) -> str:
    if weights == "random":
        return "random"
    return "torchvision" if weights in ResNet50_Weights.__members__ else "file"


def calibrated_random(seed: int) -> dict[str, torch.Tensor]:
    """A seeded ResNet50 state_dict whose predictions depend on the input (see the module docstring)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = resnet50(weights=None)
    preprocessing = Preprocessing()
    crops = torch.stack(
        [
            preprocessing.crop(synthetic.synth_jpeg(seed + CALIBRATION_SEED_OFFSET, i))
            for i in progress.iterate(range(CALIBRATION_IMAGES), "weights: calibration images", CALIBRATION_IMAGES)
        ]
    )
    images = preprocessing.normalize(crops)
    for layer in model.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.reset_running_stats()
            layer.momentum = None  # a plain average over the calibration batch
    model.train()
    with torch.no_grad():
        model(images)
        model.eval()
        features = torch.flatten(model.avgpool(_trunk(model, images)), 1)
        centred = (features - features.mean(0)) @ model.fc.weight.T
        scale = LOGIT_STD / centred.std(dim=1).mean()
        model.fc.weight.mul_(scale)
        model.fc.bias.copy_(-model.fc.weight @ features.mean(0))
    return model.state_dict()


def _trunk(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    x = model.maxpool(model.relu(model.bn1(model.conv1(images))))
    return model.layer4(model.layer3(model.layer2(model.layer1(x))))


def resolve(weights: str, seed: int, cache_dir: str | Path) -> Path:
    """The local state_dict file for `model.weights`; random weights are built into the cache once."""
    kind = weights_kind(weights)
    if kind == "random":
        path = Path(cache_dir).expanduser() / "weights" / f"resnet50-random-seed{seed}-v{CALIBRATION_VERSION}.pt"
        if not path.is_file():
            buffer = io.BytesIO()
            torch.save(calibrated_random(seed), buffer)
            atomic_write(path, buffer.getvalue())
        return path
    if kind == "file":
        path = Path(weights).expanduser()
        if not path.is_file():
            names = ", ".join(ResNet50_Weights.__members__)
            raise WeightsNotFound(
                f"model.weights={weights!r}: no such file. Use 'random', a path to a ResNet50 state_dict, "
                f"or a torchvision weights name ({names})."
            )
        return path.resolve()
    url = ResNet50_Weights[weights].url
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if not path.is_file():
        raise WeightsNotFound(
            f"model.weights={weights}: {path} is not in the local torch hub cache, and this tool never "
            f"downloads. On a machine with internet fetch {url}, copy it to {path} (or point TORCH_HOME at "
            f"a directory whose hub/checkpoints holds it), or pass model.weights=/path/to/state_dict.pth."
        )
    return path
