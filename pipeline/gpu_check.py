"""How fast our own preprocessing and model code run on one device, without Spark, Java or Hydra.

For a GPU machine that has PyTorch and nothing else of this project's stack: it imports only torch,
torchvision, numpy and Pillow (through `pipeline.inference.preprocess`, `pipeline.inference.model` and
`pipeline.data.synthetic`), generates its JPEGs, and prints images/s for
- predict: normalized batches already on the device through `pipeline.inference.model.predict`, per precision mode
  (fp32, bf16 autocast, bf16 + torch.compile), channels_last;
- decode + predict: JPEG bytes → crops → predict in one process, decoding with torchvision.io on the CPU,
  or on the device (nvjpeg on CUDA) as `preprocess.decode_on=model_device` does;
- decode on the CPU with Pillow and with torchvision.io, per core (one thread).
Weights are torchvision's random initialisation: speed does not depend on them.

    python -m pipeline.gpu_check                      # every mode, on CUDA if present
    python -m pipeline.gpu_check --device cpu --images 64 --modes fp32
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torchvision.models import resnet50

from pipeline.data.synthetic import synth_jpeg
from pipeline.inference.model import ModelSpec, load_model, predict
from pipeline.inference.preprocess import Preprocessing, to_device
from pipeline.runtime.timing import timed

MODES = ("fp32", "bf16", "bf16_compile")


def _spec(weights_file: str, mode: str) -> ModelSpec:
    spec = ModelSpec(weights_file=weights_file)
    if mode == "fp32":
        return spec
    return replace(spec, precision="bf16", compile=mode == "bf16_compile")


def _rate(images: int, action: Callable[[], object], device: str, repeats: int) -> float:
    """Images/s of the best of `repeats` runs of `action` (after one warm-up run), synchronized on CUDA."""

    def synchronized() -> None:
        action()
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)

    synchronized()
    return images / min(timed(synchronized)[1] for _ in range(repeats))


def check(device: str, images: int, batch_size: int, modes: list[str], repeats: int) -> dict[str, float]:
    """images/s per measured path, keyed by a name that says what was timed."""
    jpegs = [synth_jpeg(0, index % 64) for index in range(images)]
    batches = [jpegs[start : start + batch_size] for start in range(0, images, batch_size)]
    plain, fast = Preprocessing(), Preprocessing(decoder="torchvision")
    figures: dict[str, float] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    sample = jpegs[:64]
    figures["cpu_decode_crop_pil_per_core"] = _rate(len(sample), lambda: list(map(plain.crop, sample)), "cpu", 1)
    figures["cpu_decode_crop_torchvision_per_core"] = _rate(len(sample), lambda: list(map(fast.crop, sample)), "cpu", 1)
    torch.set_num_threads(threads)
    crops = torch.stack([fast.crop(jpegs[index % len(sample)]) for index in range(batch_size)])
    on_device = fast.normalize(to_device(crops, device))
    with tempfile.TemporaryDirectory() as scratch:
        weights_file = str(Path(scratch) / "resnet50-init.pt")
        torch.save(resnet50(weights=None).state_dict(), weights_file)
        for mode in modes:
            spec = _spec(weights_file, mode)
            model = load_model(spec, device)
            figures[f"predict_{mode}"] = _rate(
                batch_size * len(batches), lambda: [predict(model, on_device, spec) for _ in batches], device, repeats
            )

            def decode_and_predict(decode_on: str) -> None:
                for batch in batches:
                    decoded, _, _ = fast.crops(batch, decode_on)
                    predict(model, fast.normalize(to_device(decoded, device)), spec)

            figures[f"cpu_decode_predict_{mode}"] = _rate(images, lambda: decode_and_predict("cpu"), device, repeats)
            if device != "cpu":
                figures[f"device_decode_predict_{mode}"] = _rate(
                    images, lambda: decode_and_predict(device), device, repeats
                )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=2048, help="images per timed run (default 2048)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure; the best is reported")
    args = parser.parse_args(argv)
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    print(f"device: {args.device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads")
    figures = check(args.device, args.images, args.batch_size, args.modes, args.repeats)
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value:>10,.0f} images/s")
    print(json.dumps({"device": name, "torch": torch.__version__, "batch_size": args.batch_size, **figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
