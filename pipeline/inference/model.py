"""The model for inference: loaded once per process, batched top-1/top-5 prediction.

The network is torchvision's ResNet50 unless `model.arch` names another torchvision classifier or
`model.factory` the user's own (`pipeline.inference.networks`). It knows nothing of Spark. `load_model` caches
per process, so a Spark Python worker that is reused across tasks builds the model once (the original study
rebuilt it for every Arrow batch); `model_builds` is the proof that results record. The null model (MLPerf's
null backend) answers without computing, so a run with it measures everything but the model.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.inference.networks import DEFAULT_ARCH, FACTORY_KEY, network, pretrained

NUM_CLASSES = 1000  # the null model's classes (ImageNet's)
MIN_CLASSES = 5  # predictions hold the top five
NETWORK = "resnet50"  # ModelSpec.name of a network (the option `model=resnet50`), whatever `arch` or `factory` it is
SIMULATED = "simulated"  # the device string of a simulated device's task: "simulated:<gpu address>" or "simulated"


@dataclass(frozen=True)
class SimulatedDevice:
    """What a task needs to simulate one device: its rate and costs (`pipeline.config.schema.DeviceConfig`) and where
    the GPU locks are."""

    name: str
    images_per_s: float
    latency_s: float
    host_s_per_image: float
    lock_dir: str

    def call_seconds(self, images: int) -> float:
        """How long one call of `images` holds the device: the law the stand-in sleeps by."""
        return self.latency_s + images / self.images_per_s


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """The model a task loads: a network (`name="resnet50"`: torchvision's `arch`, or `factory`'s) with its
    weights (see `pipeline.data.weights.resolve`), or null. Small and hashable: it travels with every task.

    `weights_file` is a state_dict, or with `pretrained` torchvision's checkpoint of those weights; None runs a
    factory's own weights (it is called under `seed`, so they are the same in every process).
    `precision="bf16"` runs it under autocast; `channels_last` converts weights and inputs to NHWC, which
    oneDNN and cuDNN convolve faster; `compile` wraps it in torch.compile (once per process and device).
    `device` is the simulated device of `name="accelerator"` (`pipeline.inference.accelerator`); None there
    means predictions only, without holding a device (the in-process reference).
    """

    name: str = NETWORK
    arch: str = DEFAULT_ARCH
    factory: str | None = None  # "package.module:function"; then `arch` is not used
    seed: int = 0
    pretrained: str | None = None  # torchvision's weights name (IMAGENET1K_V1, ...) for `arch`
    # a path, or a path-like an engine resolves where the model is built (a file Spark shipped to an executor)
    weights_file: str | os.PathLike[str] | None = None
    precision: str = "fp32"
    channels_last: bool = True
    compile: bool = False
    device: SimulatedDevice | None = None

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def network(self) -> bool:
        return self.name == NETWORK

    @property
    def label(self) -> str:
        """What results call the model: the architecture, "factory package.module:function", or the option."""
        if not self.network:
            return self.name
        return f"factory {self.factory}" if self.factory else self.arch

    @property
    def key(self) -> str:
        """The config key that chose the network, for messages."""
        return f"{FACTORY_KEY}={self.factory}" if self.factory else f"model.arch={self.arch}"


class NullModel(torch.nn.Module):
    """Fixed logits (class 0 wins) for any batch, computing nothing from the input."""

    def __init__(self) -> None:
        super().__init__()
        logits = torch.full((NUM_CLASSES,), -1e4)
        logits[0] = 0.0
        self.register_buffer("logits", logits)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(batch.shape[0], NUM_CLASSES)


class ModelError(ValueError):
    """A network that cannot run here as configured: weights that do not fit it, an input it refuses, an
    output that is not logits. The message names the keys."""


def _network(spec: ModelSpec) -> torch.nn.Module:
    if spec.pretrained is not None:
        return pretrained(spec.arch, spec.pretrained, spec.weights_file)
    model = network(spec.arch, spec.factory, spec.seed)
    if spec.weights_file is not None:
        state = torch.load(spec.weights_file, map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            reason = str(error).strip().splitlines()
            raise ModelError(
                f"the weights {os.fspath(spec.weights_file)} do not fit {spec.key}: {' '.join(reason[:3])[:600]}"
            ) from error
    return model


def _build(spec: ModelSpec, device: str) -> torch.nn.Module:
    if not spec.network:  # the accelerator's predictions are the null model's
        # a simulated device's task (`simulated:<address>`, `pick_device`) keeps its model on the CPU: a build per
        # batch (udf.rebuild_model_per_batch) is asked for on the task's device string
        return NullModel().to("cpu" if device.startswith(SIMULATED) else device)
    model = _network(spec).eval().to(device=device, memory_format=spec.memory_format)
    return torch.compile(model) if spec.compile else model


@dataclass(frozen=True)
class ModelFacts:
    """What a run's network turned out to be, for its result."""

    classes: int
    parameters: int


def check_model(spec: ModelSpec, crop_size: int) -> ModelFacts:
    """Build `spec`'s network here, as every task will, and run one blank crop through it, so that a factory that
    does not import, weights that do not fit, an input size the network refuses or an output that is not a
    (batch, classes) tensor of logits fail before any task, naming the keys."""
    model = _network(spec).eval()
    blank = torch.zeros((1, 3, crop_size, crop_size))
    try:
        with torch.inference_mode():
            logits = model(blank)
    except Exception as error:
        raise ModelError(
            f"{spec.key} fails on a 3x{crop_size}x{crop_size} crop (preprocess.crop_size={crop_size}): "
            f"{type(error).__name__}: {str(error).strip()[:400]}"
        ) from error
    if not isinstance(logits, torch.Tensor):
        raise ModelError(f"{spec.key}: the model returns {type(logits).__name__}; predict needs a tensor of logits")
    if logits.dim() != 2 or logits.shape[0] != 1 or logits.shape[1] < MIN_CLASSES:
        raise ModelError(
            f"{spec.key}: the model returns logits of shape {tuple(logits.shape)} for one image; predict needs "
            f"(batch, classes) with at least {MIN_CLASSES} classes (it reports the top {MIN_CLASSES})"
        )
    return ModelFacts(classes=int(logits.shape[1]), parameters=sum(p.numel() for p in model.parameters()))


class _Models:
    """This process's models by (spec, device); `builds` counts constructions per spec."""

    def __init__(self) -> None:
        self._models: dict[tuple[ModelSpec, str], torch.nn.Module] = {}
        self.builds: Counter[ModelSpec] = Counter()

    def get(self, spec: ModelSpec, device: str, rebuild: bool) -> torch.nn.Module:
        key = (spec, device)
        if rebuild or key not in self._models:
            self._models[key] = _build(spec, device)
            self.builds[spec] += 1
        return self._models[key]


_MODELS = _Models()


def load_model(spec: ModelSpec, device: str, rebuild: bool = False) -> torch.nn.Module:
    """The model in eval mode on `device`: built once per (spec, device) in this process, unless `rebuild`
    asks for the original study's build-per-batch."""
    return _MODELS.get(spec, device, rebuild)


def model_builds(spec: ModelSpec) -> int:
    """How many times this process has built `spec`'s model. A reused Spark Python worker may hold other
    runs' models too (a test session's, or a sweep's in one application): they are not this run's builds."""
    return _MODELS.builds[spec]


def pick_device(gpus: str, addresses: Sequence[str] = (), simulated: bool = False) -> str:
    """The device a task's model runs on, by the kind of GPUs its scheduler hands out (`GpuPlan.kind`, one rule
    for every engine): an emulated GPU is an address with no device behind it, so the CPU; a real one is
    `cuda:N` for the task's first address (`cuda_ordinal`); with none scheduled, this machine's first GPU if it
    has one. A simulated device's task gets `simulated:<address>` (`simulated` without one): the stand-in locks
    that GPU, real or emulated."""
    if simulated:
        return f"{SIMULATED}:{addresses[0]}" if addresses else SIMULATED
    if gpus == "emulated" or not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{cuda_ordinal(addresses[0])}" if gpus == "real" and addresses else "cuda:0"


def cuda_ordinal(address: str) -> int:
    """This process's CUDA ordinal of the GPU a scheduler calls `address`: its place in CUDA_VISIBLE_DEVICES when
    that lists it, else the address itself. Spark hands out nvidia-smi's indexes and sets nothing; Ray sets
    CUDA_VISIBLE_DEVICES in each actor to the GPUs it gave it, so an actor given GPU 3 sees it as cuda:0
    (as `ray.train.torch.get_device` maps it)."""
    visible = [name.strip() for name in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    return visible.index(address) if address in visible else int(address)


def use_threads(threads: int) -> None:
    """Give torch exactly the task's CPU share so concurrent tasks do not oversubscribe the cores."""
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class Predictions:
    top1: np.ndarray  # int64 (N,)
    prob: np.ndarray  # float32 (N,), softmax probability of top1
    top5: np.ndarray  # int64 (N, 5)


def predict(model: torch.nn.Module, batch: torch.Tensor, spec: ModelSpec) -> Predictions:
    """Top-1 class, its softmax probability and the top-5 classes for a normalized float32 NCHW batch that is
    already on the model's device."""
    bf16 = spec.precision == "bf16"
    with torch.inference_mode(), torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(batch.contiguous(memory_format=spec.memory_format))
        probs = torch.softmax(logits.float(), dim=1)
        top_probs, top_classes = probs.topk(5, dim=1)
    top_classes = top_classes.cpu().numpy()
    return Predictions(top1=top_classes[:, 0].copy(), prob=top_probs[:, 0].cpu().numpy(), top5=top_classes)
