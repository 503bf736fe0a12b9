"""torchvision ResNet50 for inference: loaded once per process, batched top-1/top-5 prediction.

It knows nothing of Spark. `load_model` caches per process, so a Spark Python worker that is reused
across tasks builds the model once (the original study rebuilt it for every Arrow batch); `model_builds`
is the proof that results record.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.models import resnet50


@dataclass(frozen=True)
class ModelSpec:
    """The model a task loads: a local ResNet50 state_dict (see `pipeline.weights.resolve`)."""

    weights_file: str


def _build(spec: ModelSpec, device: str) -> torch.nn.Module:
    model = resnet50(weights=None)
    model.load_state_dict(torch.load(spec.weights_file, map_location="cpu", weights_only=True))
    return model.eval().to(device=device, memory_format=torch.channels_last)


class _Models:
    """This process's models by (spec, device); `builds` counts constructions."""

    def __init__(self) -> None:
        self._models: dict[tuple[ModelSpec, str], torch.nn.Module] = {}
        self.builds = 0

    def get(self, spec: ModelSpec, device: str, rebuild: bool) -> torch.nn.Module:
        key = (spec, device)
        if rebuild or key not in self._models:
            self._models[key] = _build(spec, device)
            self.builds += 1
        return self._models[key]


_MODELS = _Models()


def load_model(spec: ModelSpec, device: str, rebuild: bool = False) -> torch.nn.Module:
    """ResNet50 in eval mode, channels_last, on `device`: built once per (spec, device) in this process,
    unless `rebuild` asks for the original study's build-per-batch."""
    return _MODELS.get(spec, device, rebuild)


def model_builds() -> int:
    """How many times this process has built a model."""
    return _MODELS.builds


def pick_device(gpu_addresses: list[str] | None = None) -> str:
    """The GPU the scheduler assigned (or the only one), else the CPU: emulated GPUs run on the CPU."""
    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{gpu_addresses[0]}" if gpu_addresses else "cuda:0"


def use_threads(threads: int) -> None:
    """Give torch exactly the task's CPU share so concurrent tasks do not oversubscribe the cores."""
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class Predictions:
    top1: np.ndarray  # int64 (N,)
    prob: np.ndarray  # float32 (N,), softmax probability of top1
    top5: np.ndarray  # int64 (N, 5)


def predict(model: torch.nn.Module, batch: torch.Tensor) -> Predictions:
    """Top-1 class, its softmax probability and the top-5 classes for a normalized float32 NCHW batch."""
    device = next(model.parameters()).device
    with torch.inference_mode():
        inputs = batch.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        probs = torch.softmax(model(inputs).float(), dim=1)
        top_probs, top_classes = probs.topk(5, dim=1)
    top_classes = top_classes.cpu().numpy()
    return Predictions(top1=top_classes[:, 0].copy(), prob=top_probs[:, 0].cpu().numpy(), top5=top_classes)
