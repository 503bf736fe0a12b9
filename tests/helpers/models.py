"""A user's own models for `model.factory` (`model.factory=tests.helpers.models:tiny`), importable wherever the
tests' runs build models: every local mode shares this machine and a subprocess gets the checkout on PYTHONPATH."""

from __future__ import annotations

import torch
from torch import nn

CLASSES = 10


def tiny() -> nn.Module:
    """A small CNN with BatchNorm and a Linear head of ten classes, for crops of any size (adaptive pooling)."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, CLASSES),
    )


def wider() -> nn.Module:
    """`tiny` with a wider first layer: another network, so other random weights."""
    layers = [nn.Conv2d(3, 12, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, CLASSES)]
    return nn.Sequential(*layers)


class _Pair(nn.Module):
    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = batch.mean(dim=(2, 3)).repeat(1, 4)
        return logits, logits


def pair() -> nn.Module:
    """A model whose output is a tuple, not logits."""
    return _Pair()


def three_classes() -> nn.Module:
    """Logits of three classes: fewer than the top five predictions report."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3))


def not_a_model() -> str:
    return "a string"
