"""MLPerf/torchvision ResNet50 preprocessing, shared by every engine and every Spark variant.

It knows nothing of Spark so that the reference run and each variant transform pixels identically. The
per-image step ends at a uint8 crop; scaling to [0,1] and normalizing happen once per batch on the device
that runs the model, which is both faster and what a GPU path needs. The original study skipped the /255;
`normalize` does not.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RAW_SIDE = 256
RAW_BYTES = RAW_SIDE * RAW_SIDE * 3
# Pillow's own decompression-bomb warning threshold (a 268 MB RGB array); Pillow refuses outright at twice it.
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS
PILLOW_PIXEL_LIMIT = 2 * Image.MAX_IMAGE_PIXELS
# Images whose longer side is over this many times their shorter one take the thin-image path of `crop`.
MAX_ASPECT = 4


class BadImage(ValueError):
    """An image that cannot be turned into a crop; the message is the reason a run reports."""


def decode_rgb(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode any Pillow-readable image to RGB, compositing transparency onto white.

    The size is checked from the header before any pixel is decoded: a small file can declare a huge image
    (a decompression bomb), and decoding it would allocate width x height x 3 bytes in a worker.
    """
    if not data:
        raise BadImage("empty image bytes")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > max_pixels:
                raise BadImage(
                    f"image is {image.width}x{image.height} = {image.width * image.height} pixels, over the limit "
                    f"preprocess.max_pixels={max_pixels}"
                )
            image.load()
            if image.mode.startswith("I;16") or image.mode == "I":  # 16-bit: keep the high byte, don't clip
                image = Image.fromarray((np.asarray(image, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8))
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                rgba = image.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(white, rgba).convert("RGB")
            return image.convert("RGB")
    except BadImage:
        raise
    except Image.DecompressionBombError as error:  # over Pillow's own hard limit, which max_pixels stays under
        raise BadImage(f"{error} (preprocess.max_pixels={max_pixels})") from error
    except Exception as error:  # any decoder failure makes this one image bad, never the task
        raise BadImage(f"cannot decode: {type(error).__name__}: {error}") from error


def raw_to_tensor(data: bytes) -> torch.Tensor:
    """A raw image (the original study's 256x256x3 uint8 array) as a CHW uint8 tensor."""
    if data is None or len(data) != RAW_BYTES:
        size = 0 if data is None else len(data)
        raise BadImage(f"raw image has {size} bytes, expected {RAW_BYTES} (256x256x3 uint8)")
    array = np.frombuffer(data, dtype=np.uint8).reshape(RAW_SIDE, RAW_SIDE, 3)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


@dataclass(frozen=True, kw_only=True)
class Preprocessing:
    """Resize the shorter side, center crop, scale and normalize, as torchvision's ImageNet eval preset."""

    image_format: str = "jpeg"
    resize_size: int = 256
    crop_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    max_pixels: int = DEFAULT_MAX_PIXELS

    def crop(self, data: bytes) -> torch.Tensor:
        """One encoded (or raw) image to a uint8 (3, crop, crop) tensor; raises BadImage."""
        if self.image_format == "raw":
            pixels = raw_to_tensor(data)
        else:
            pixels = pil_to_tensor(decode_rgb(data, self.max_pixels))
        height, width = pixels.shape[-2:]
        if max(height, width) > MAX_ASPECT * min(height, width):
            return self._thin_crop(pixels)
        resized = F.resize(pixels, [self.resize_size], interpolation=InterpolationMode.BILINEAR, antialias=True)
        return F.center_crop(resized, [self.crop_size])

    def _thin_crop(self, pixels: torch.Tensor) -> torch.Tensor:
        """The crop of a very thin image without resizing all of it: a 1000x1 image resized whole is 256000x256.

        The antialiased resize runs one axis after the other, the long one first; its columns (for a wide
        image) are independent in the second pass, so resizing the long axis alone, keeping the central
        `crop_size` columns, then resizing the short axis gives the very pixels of the whole resize (tested;
        a tall image goes through transposed, and differs by at most one uint8 level, as the second pass
        then rounds a different axis). The long pass still holds resize_size x width pixels, so that too is
        held to `max_pixels`.
        """
        tall = pixels.shape[-2] > pixels.shape[-1]
        if tall:
            pixels = pixels.transpose(-2, -1)
        height, width = pixels.shape[-2:]
        long = int(self.resize_size * width / height)  # torchvision's own rounding of the longer side
        if height * long > self.max_pixels:
            raise BadImage(
                f"a {height}x{width} image resizes through {height * long} pixels, over the limit "
                f"preprocess.max_pixels={self.max_pixels}"
            )
        bilinear = InterpolationMode.BILINEAR
        strip = F.resize(pixels, [height, long], interpolation=bilinear, antialias=True)
        left = int(round((long - self.crop_size) / 2.0))
        strip = strip[..., left : left + self.crop_size]
        resized = F.resize(strip, [self.resize_size, self.crop_size], interpolation=bilinear, antialias=True)
        crop = F.center_crop(resized, [self.crop_size])
        return crop.transpose(-2, -1).contiguous() if tall else crop

    def normalize(self, crops: torch.Tensor) -> torch.Tensor:
        """A uint8 NCHW batch to float32 in [0,1], then ImageNet-normalized, on the batch's device."""
        mean = torch.tensor(self.mean, device=crops.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=crops.device).view(1, 3, 1, 1)
        return crops.to(torch.float32).div(255.0).sub_(mean).div_(std)

    def crops(self, images: Sequence[bytes]) -> tuple[torch.Tensor, list[int], list[tuple[int, str]]]:
        """Crop a batch: the stacked uint8 crops, the positions they came from, and (position, reason) of bad ones."""
        good: list[torch.Tensor] = []
        positions: list[int] = []
        bad: list[tuple[int, str]] = []
        for position, data in enumerate(images):
            try:
                good.append(self.crop(data))
                positions.append(position)
            except BadImage as error:
                bad.append((position, str(error)))
        size = self.crop_size
        stacked = torch.stack(good) if good else torch.empty((0, 3, size, size), dtype=torch.uint8)
        return stacked, positions, bad
