"""MLPerf/torchvision ResNet50 preprocessing, shared by every engine and every Spark variant: resize the shorter
side to 256 and centre-crop 224, or the sizes `preprocess.resize_size` and `preprocess.crop_size` give another
network.

It knows nothing of Spark so that the reference run and each variant transform pixels identically. The
per-image step ends at a uint8 crop; scaling to [0,1] and normalizing happen once per batch on the device
that runs the model, which is both faster and what a GPU path needs. The original study skipped the /255;
`normalize` does not.

Two decoders give identical pixels for baseline JPEGs (libjpeg-turbo in both): Pillow, and torchvision.io,
which skips the PIL image object and is faster per core; with torchvision, JPEGs can also be decoded on the
model's device (nvjpeg on CUDA) in batches. Non-JPEG images always go through Pillow. TorchCodec's
`decode_jpeg` (optional: `pip install -e '.[torchcodec]'`), which torchvision 0.29 names as the successor of its
deprecated `torchvision.io` decoders, is the third: measured here, the same pixels as Pillow on the generated
JPEGs (RGB and grayscale), so the same crops (tests/test_fast_path.py).

torchvision 0.29 warns (DeprecationWarning) on every `torchvision.io` decode. That warning, from that module
only, is ignored from the moment this module is imported (also in every Spark Python worker, which imports
it to unpickle the UDF): a user who chose `preprocess.decoder=torchvision` learns nothing from it on each
image, and docs/peers.md says which decoder replaces it. Any other warning is shown as before.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from pipeline.data.formats import RAW_BYTES, RAW_SIDE

TORCHVISION_IO_DEPRECATION = "The image decoding and encoding capabilities of TorchVision are deprecated"
warnings.filterwarnings(
    "ignore", message=TORCHVISION_IO_DEPRECATION, category=DeprecationWarning, module=r"torchvision\.io\.image"
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
JPEG_MAGIC = b"\xff\xd8\xff"
BAD_RAW_PREFIX = b"bad image at import: "
# Pillow's own decompression-bomb warning threshold (a 268 MB RGB array); Pillow refuses outright at twice it.
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS
PILLOW_PIXEL_LIMIT = 2 * Image.MAX_IMAGE_PIXELS
# Images whose longer side is over this many times their shorter one take the thin-image path of `crop`.
MAX_ASPECT = 4


class BadImage(ValueError):
    """An image that cannot be turned into a crop; the message is the reason a run reports."""


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise BadImage(
            f"image is {width}x{height} = {width * height} pixels, over the limit preprocess.max_pixels={max_pixels}"
        )


def check_pixels(data: bytes, max_pixels: int) -> None:
    """Raise BadImage when the header declares more than `max_pixels`, for decoders without a limit of their
    own (torchvision.io, nvjpeg); reads the header only. A header Pillow cannot read is the decoder's to judge."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Exception:
        return
    _check_size(width, height, max_pixels)


def decode_rgb(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode any Pillow-readable image to RGB, compositing transparency onto white.

    The size is checked from the header before any pixel is decoded: a small file can declare a huge image
    (a decompression bomb), and decoding it would allocate width x height x 3 bytes in a worker.
    """
    if not data:
        raise BadImage("empty image bytes")
    try:
        with Image.open(io.BytesIO(data)) as image:
            _check_size(image.width, image.height, max_pixels)
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


def bad_raw(reason: str) -> bytes:
    """What a raw data set stores for an image that could not be made raw when it was imported (undecodable,
    over `preprocess.max_pixels`): the reason, so preprocessing reports that image as bad with it, as it would
    report the JPEG, instead of the image vanishing at import. Never RAW_BYTES long, so never pixels."""
    return (BAD_RAW_PREFIX + reason.encode())[: RAW_BYTES - 1]


def raw_to_tensor(data: bytes) -> torch.Tensor:
    """A raw image (the original study's 256x256x3 uint8 array) as a CHW uint8 tensor."""
    if data is not None and len(data) != RAW_BYTES and data.startswith(BAD_RAW_PREFIX):
        raise BadImage(data[len(BAD_RAW_PREFIX) :].decode(errors="replace"))
    if data is None or len(data) != RAW_BYTES:
        size = 0 if data is None else len(data)
        raise BadImage(f"raw image has {size} bytes, expected {RAW_BYTES} (256x256x3 uint8)")
    array = np.frombuffer(data, dtype=np.uint8).reshape(RAW_SIDE, RAW_SIDE, 3)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def to_device(crops: torch.Tensor, device: str) -> torch.Tensor:
    """uint8 crops onto the model's device; to a GPU through pinned memory, so the copy is asynchronous and
    moves a quarter of the bytes of the float batch. Crops the DataLoader pinned already (`Prepared.pin_memory`)
    are not copied again: torch's `pin_memory` returns a pinned tensor as it is."""
    if crops.device.type == "cpu" and device.startswith("cuda"):
        return crops.pin_memory().to(device, non_blocking=True)
    return crops.to(device)


def is_jpeg(data: bytes | None) -> bool:
    return bool(data) and data[:3] == JPEG_MAGIC


def _encoded(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def decode_jpeg_on(data: bytes, device: str) -> torch.Tensor:
    """One JPEG to an RGB uint8 CHW tensor on `device` with torchvision.io; raises BadImage."""
    if not data:
        raise BadImage("empty image bytes")
    try:
        return decode_jpeg(_encoded(data), mode=ImageReadMode.RGB, device=device)
    except RuntimeError as error:
        raise BadImage(f"cannot decode: {str(error).strip().splitlines()[-1]}") from error


def decode_jpeg_torchcodec(data: bytes) -> torch.Tensor:
    """One JPEG to an RGB uint8 CHW tensor on the CPU with TorchCodec; raises BadImage. Imported here: an
    optional dependency, needed only with `preprocess.decoder=torchcodec` (validate checks it is there)."""
    from torchcodec.decoders import decode_jpeg as torchcodec_decode_jpeg

    if not data:
        raise BadImage("empty image bytes")
    try:
        return torchcodec_decode_jpeg(_encoded(data), mode="RGB")
    except RuntimeError as error:
        raise BadImage(f"cannot decode: {str(error).strip().splitlines()[-1]}") from error


def decode_jpegs(images: Sequence[bytes], device: str) -> list[torch.Tensor | BadImage]:
    """JPEGs to RGB uint8 CHW tensors on `device` with torchvision.io, one call for the whole batch (nvjpeg
    batches on CUDA); when the batch call fails, image by image, so each bad one gets its own reason."""
    if not images:
        return []
    try:
        return list(decode_jpeg([_encoded(data) for data in images], mode=ImageReadMode.RGB, device=device))
    except (RuntimeError, ValueError, TypeError):
        decoded: list[torch.Tensor | BadImage] = []
        for data in images:
            try:
                decoded.append(decode_jpeg_on(data, device))
            except BadImage as error:
                decoded.append(error)
        return decoded


@dataclass(frozen=True, kw_only=True)
class Preprocessing:
    """Resize the shorter side, center crop, scale and normalize, as torchvision's ImageNet eval preset."""

    image_format: str = "jpeg"
    decoder: str = "pil"  # or "torchvision", "torchcodec"
    decode_on: str = "task"  # or "model_device": decode in the model phase, on the model's device
    resize_size: int = 256
    crop_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    max_pixels: int = DEFAULT_MAX_PIXELS

    def decode(self, data: bytes) -> torch.Tensor:
        """One encoded (or raw) image to RGB uint8 CHW pixels on the CPU; raises BadImage."""
        if self.image_format == "raw":
            return raw_to_tensor(data)
        if self.decoder == "torchvision" and is_jpeg(data):
            check_pixels(data, self.max_pixels)
            return decode_jpeg_on(data, "cpu")
        if self.decoder == "torchcodec" and is_jpeg(data):
            check_pixels(data, self.max_pixels)
            return decode_jpeg_torchcodec(data)
        return pil_to_tensor(decode_rgb(data, self.max_pixels))

    def resize_crop(self, pixels: torch.Tensor) -> torch.Tensor:
        height, width = pixels.shape[-2:]
        if max(height, width) > MAX_ASPECT * min(height, width):
            return self._thin_crop(pixels)
        resized = F.resize(pixels, [self.resize_size], interpolation=InterpolationMode.BILINEAR, antialias=True)
        return F.center_crop(resized, [self.crop_size])

    def crop(self, data: bytes) -> torch.Tensor:
        """One encoded (or raw) image to a uint8 (3, crop, crop) tensor; raises BadImage."""
        return self.resize_crop(self.decode(data))

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

    def crops(
        self, images: Sequence[bytes], device: str = "cpu"
    ) -> tuple[torch.Tensor, list[int], list[tuple[int, str]]]:
        """Crop a batch on `device`: the stacked uint8 crops, the positions they came from, and (position,
        reason) of the bad ones. Off the CPU, JPEGs are decoded there in one batch; other images on the CPU."""
        decoded: dict[int, torch.Tensor | BadImage] = {}
        if device != "cpu":
            jpegs = []
            for position, data in enumerate(images):
                if is_jpeg(data):
                    try:
                        check_pixels(data, self.max_pixels)
                        jpegs.append(position)
                    except BadImage as error:
                        decoded[position] = error
            decoded.update(zip(jpegs, decode_jpegs([images[position] for position in jpegs], device)))
        good: list[torch.Tensor] = []
        positions: list[int] = []
        bad: list[tuple[int, str]] = []
        for position, data in enumerate(images):
            try:
                pixels = decoded[position] if position in decoded else self.decode(data).to(device)
                if isinstance(pixels, BadImage):
                    raise pixels
                good.append(self.resize_crop(pixels))
                positions.append(position)
            except BadImage as error:
                bad.append((position, str(error)))
        size = self.crop_size
        empty = torch.empty((0, 3, size, size), dtype=torch.uint8, device=device)
        return (torch.stack(good) if good else empty), positions, bad
