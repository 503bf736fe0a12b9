"""Specification of the shared preprocessing (pipeline.inference.preprocess): bytes -> uint8 crop -> normalized
batch."""

from __future__ import annotations

import io
import random
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as v1
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from pipeline.data import synthetic
from pipeline.inference import preprocess as preprocess_module
from pipeline.inference.preprocess import IMAGENET_MEAN, IMAGENET_STD, RAW_BYTES, BadImage, Preprocessing, pil_to_tensor
from tests.helpers.data import corrupt_images

CROP = 224
MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)

# The reference: torchvision's classic (v1) ImageNet eval transform, applied to the PIL image.
TORCHVISION_V1 = v1.Compose(
    [v1.Resize(256), v1.CenterCrop(224), v1.ToTensor(), v1.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
)

# Ours resizes a uint8 tensor (antialiased bilinear, torchvision v2) where v1 resizes with PIL, so pixels may
# round to a neighbouring uint8 level. Measured over 40 synthetic photos (300..640 px) and the sizes below
# (upscales, extreme aspects, 1280x960): the largest difference is exactly one uint8 level, i.e.
# 1/255/0.224 = 0.0175 normalized units, everywhere it occurs; the mean is 0.00001..0.00017, except 300x1000
# where a quarter of the pixels are one level off (mean 0.0042). Bounds: two levels and ~2.4x that worst mean.
MAX_ABS_TOLERANCE = 2 / 255 / min(IMAGENET_STD)  # 0.035
MEAN_ABS_TOLERANCE = 0.01

SHAPES = [(500, 375), (375, 500), (640, 480), (1000, 300), (300, 1000), (901, 677), (224, 300), (200, 150)]


def encode(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A 640x480 synthetic photo, resampled to the shapes under test."""
    return synthetic.synth_image(0, 12)


@pytest.fixture(scope="module")
def preprocessing() -> Preprocessing:
    return Preprocessing()


def ours(preprocessing: Preprocessing, data: bytes) -> torch.Tensor:
    return preprocessing.normalize(preprocessing.crop(data).unsqueeze(0))[0]


def reference(data: bytes) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as image:
        return TORCHVISION_V1(image.convert("RGB"))


# --- agreement with torchvision ----------------------------------------------------------------------------
@pytest.mark.parametrize("index", [0, 1, 2, 3, 5])
def test_generated_photos_match_torchvision_v1_eval_transform(preprocessing, index):
    data = synthetic.synth_jpeg(0, index)
    difference = (ours(preprocessing, data) - reference(data)).abs()
    assert difference.max() < MAX_ABS_TOLERANCE
    assert difference.mean() < MEAN_ABS_TOLERANCE


@pytest.mark.parametrize("size", SHAPES, ids=lambda size: f"{size[0]}x{size[1]}")
def test_every_size_and_aspect_matches_torchvision_v1_eval_transform(preprocessing, photo, size):
    data = synthetic.encode_jpeg(photo.resize(size, Image.Resampling.LANCZOS))
    difference = (ours(preprocessing, data) - reference(data)).abs()
    assert difference.max() < MAX_ABS_TOLERANCE
    assert difference.mean() < MEAN_ABS_TOLERANCE


def test_normalize_is_exactly_scale_to_unit_then_imagenet_standardize(preprocessing):
    values = torch.arange(256, dtype=torch.uint8)
    batch = values.view(1, 1, 16, 16).expand(2, 3, 16, 16).contiguous()
    expected = (batch.double() / 255 - MEAN.double()) / STD.double()
    assert torch.allclose(preprocessing.normalize(batch).double(), expected, rtol=0, atol=1e-6)


def test_normalize_leaves_its_input_crops_untouched(preprocessing):
    crops = torch.full((1, 3, 4, 4), 200, dtype=torch.uint8)
    preprocessing.normalize(crops)
    assert bool((crops == 200).all())


# --- output layout and geometry ----------------------------------------------------------------------------
def test_a_batch_normalizes_to_float32_nchw_224(preprocessing):
    crops, positions, bad = preprocessing.crops([synthetic.synth_jpeg(0, i) for i in range(3)])
    batch = preprocessing.normalize(crops)
    assert crops.dtype == torch.uint8
    assert batch.dtype == torch.float32
    assert batch.shape == (3, 3, CROP, CROP)
    assert positions == [0, 1, 2] and bad == []


def ramp(width: int, height: int) -> np.ndarray:
    """R = x // 4 and G = y // 2 over a 1024x512 landscape (transposed for a portrait): a crop's pixel values
    tell which part of the original it came from."""
    x = np.arange(1024)[None, :].repeat(512, 0)
    y = np.arange(512)[:, None].repeat(1024, 1)
    pixels = np.stack([x // 4, y // 2, np.full_like(x, 7)], axis=-1).astype(np.uint8)
    return pixels if (width, height) == (1024, 512) else pixels.transpose(1, 0, 2).copy()


@pytest.mark.parametrize("orientation", ["landscape", "portrait"])
def test_shorter_side_is_resized_to_256_then_the_center_224_is_cropped(preprocessing, orientation):
    # 1024x512 halves to 512x256, whose center 224 starts 144 pixels along the long side and 16 along the short
    # one. Halving maps a resized pixel k to the original's 2k+0.5, where the ramps read (2k+0.5)/4 - 0.375 and
    # (2k+0.5)/2 - 0.25 on average, so crop pixel (i, j) of the landscape should read R = (144+j)/2 - 0.25
    # and G = 16 + i, to within a level of rounding. A crop without the resize, a squash to 256x256 or an
    # off-center crop reads tens of levels off.
    size = (1024, 512) if orientation == "landscape" else (512, 1024)
    crop = preprocessing.crop(encode(Image.fromarray(ramp(*size)), "PNG")).float()
    along = torch.arange(CROP, dtype=torch.float32)
    expected_r = (144 + along) / 2 - 0.25
    expected_g = 16 + along
    if orientation == "landscape":
        r_error = crop[0] - expected_r[None, :]
        g_error = crop[1] - expected_g[:, None]
    else:
        r_error = crop[0] - expected_r[:, None]
        g_error = crop[1] - expected_g[None, :]
    assert r_error.abs().max() <= 1
    assert g_error.abs().max() <= 1
    assert bool((crop[2] == 7).all())


def test_an_image_already_256_on_its_shorter_side_is_only_cropped(preprocessing):
    pixels = np.random.default_rng(0).integers(0, 256, (256, 512, 3), dtype=np.uint8)
    crop = preprocessing.crop(encode(Image.fromarray(pixels), "PNG"))
    expected = torch.from_numpy(pixels[16:240, 144:368]).permute(2, 0, 1)
    assert torch.equal(crop, expected)


# --- decoding ----------------------------------------------------------------------------------------------
def uniform_crop_colour(crop: torch.Tensor) -> list[int]:
    """The one colour of a crop that must be uniform, or fail."""
    colours = crop.reshape(3, -1).unique(dim=1)
    assert colours.shape[1] == 1, f"crop is not uniform: {colours.shape[1]} colours"
    return colours[:, 0].tolist()


def test_a_grayscale_jpeg_becomes_three_equal_channels(preprocessing):
    data = encode(Image.new("L", (320, 240), 100), "JPEG", quality=95)
    crop = preprocessing.crop(data)
    assert crop.shape == (3, CROP, CROP) and crop.dtype == torch.uint8
    assert uniform_crop_colour(crop) == [100, 100, 100]


def test_a_cmyk_jpeg_is_converted_to_rgb(preprocessing):
    data = encode(Image.new("CMYK", (300, 200), (0, 255, 255, 0)), "JPEG", quality=95)  # pure red in CMYK
    crop = preprocessing.crop(data)
    assert crop.shape == (3, CROP, CROP) and crop.dtype == torch.uint8
    red, green, blue = crop.float().mean(dim=(1, 2)).tolist()
    assert red > 245 and green < 10 and blue < 10


def test_an_rgb_png_is_decoded_losslessly(preprocessing):
    crop = preprocessing.crop(encode(Image.new("RGB", (300, 400), (10, 120, 230)), "PNG"))
    assert crop.shape == (3, CROP, CROP) and crop.dtype == torch.uint8
    assert uniform_crop_colour(crop) == [10, 120, 230]


def test_transparent_pixels_of_an_rgba_png_become_white(preprocessing):
    pixels = np.zeros((256, 512, 4), dtype=np.uint8)
    pixels[:, :256] = (200, 0, 0, 255)  # left half opaque red; right half fully transparent black
    crop = preprocessing.crop(encode(Image.fromarray(pixels, mode="RGBA"), "PNG"))
    assert crop.shape == (3, CROP, CROP) and crop.dtype == torch.uint8
    # the crop spans columns 144..368 of the 512: 144..256 red, 256..368 white
    assert uniform_crop_colour(crop[:, :, :100]) == [200, 0, 0]
    assert uniform_crop_colour(crop[:, :, 124:]) == [255, 255, 255]


def test_a_palette_png_is_decoded_and_its_transparent_index_becomes_white(preprocessing):
    image = Image.new("P", (512, 256))
    image.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)  # 0 blue, 1 green (transparent)
    indices = np.zeros((256, 512), dtype=np.uint8)
    indices[:, 256:] = 1
    image.putdata(indices.flatten().tolist())
    crop = preprocessing.crop(encode(image, "PNG", transparency=1))
    assert crop.shape == (3, CROP, CROP) and crop.dtype == torch.uint8
    assert uniform_crop_colour(crop[:, :, :100]) == [0, 0, 255]
    assert uniform_crop_colour(crop[:, :, 124:]) == [255, 255, 255]


def test_a_16_bit_grayscale_png_keeps_its_brightness(preprocessing):
    pixels = np.full((240, 320), 32768, dtype=np.uint16)  # mid grey; a clipping conversion makes it white
    crop = preprocessing.crop(encode(Image.fromarray(pixels), "PNG"))
    assert uniform_crop_colour(crop) == [128, 128, 128]


def test_a_one_pixel_image_fills_the_whole_crop(preprocessing):
    crop = preprocessing.crop(encode(Image.new("RGB", (1, 1), (30, 60, 90)), "PNG"))
    assert crop.shape == (3, CROP, CROP) and crop.dtype == torch.uint8
    assert uniform_crop_colour(crop) == [30, 60, 90]


# --- bad images ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("image_id", "reason"),
    [("bad-empty", "empty image bytes"), ("bad-truncated", "truncated"), ("bad-random", "cannot identify image")],
)
def test_an_undecodable_image_raises_bad_image_with_the_reason(preprocessing, image_id, reason):
    with pytest.raises(BadImage, match=reason):
        preprocessing.crop(corrupt_images()[image_id])


@pytest.mark.parametrize("size", [0, 100, RAW_BYTES - 1, RAW_BYTES + 3])
def test_a_raw_image_of_the_wrong_length_raises_bad_image_naming_both_sizes(size):
    with pytest.raises(BadImage, match=rf"raw image has {size} bytes, expected {RAW_BYTES} \(256x256x3 uint8\)"):
        Preprocessing(image_format="raw").crop(bytes(size))


def test_crops_keeps_the_good_images_and_lists_the_bad_ones_by_position(preprocessing):
    good = [synthetic.synth_jpeg(3, i) for i in range(3)]
    bad = corrupt_images()
    images = [good[0], bad["bad-empty"], good[1], bad["bad-truncated"], bad["bad-random"], good[2]]
    crops, positions, failures = preprocessing.crops(images)
    assert positions == [0, 2, 5]
    assert torch.equal(crops, torch.stack([preprocessing.crop(data) for data in good]))
    assert [position for position, _ in failures] == [1, 3, 4]
    assert failures[0][1] == "empty image bytes"
    assert all(reason.startswith("cannot decode: ") for _, reason in failures[1:])


def test_crops_of_only_bad_images_is_an_empty_uint8_batch(preprocessing):
    crops, positions, failures = preprocessing.crops(list(corrupt_images().values()))
    assert crops.shape == (0, 3, CROP, CROP) and crops.dtype == torch.uint8
    assert positions == [] and len(failures) == 3


def test_an_image_over_max_pixels_is_bad_before_its_pixels_are_decoded():
    # 2000x2000 of one colour: a 5 KB PNG that decodes to 12 MB
    bomb = encode(Image.new("RGB", (2000, 2000), (1, 2, 3)), "PNG")
    with pytest.raises(BadImage, match=r"2000x2000 = 4000000 pixels, over the limit preprocess.max_pixels=3999999"):
        Preprocessing(max_pixels=3_999_999).crop(bomb)
    assert Preprocessing(max_pixels=4_000_000).crop(bomb).shape == (3, CROP, CROP)


def test_an_image_over_pillows_own_limit_is_a_bad_image_too(preprocessing):
    # a PNG header declaring 20000x20000 pixels; Pillow refuses it on open, before our check
    png = encode(Image.new("1", (1, 1)), "PNG")
    ihdr = (20000).to_bytes(4, "big") * 2 + png[24:29]  # width, height, then depth, colour type, ...
    huge = png[:16] + ihdr + zlib.crc32(b"IHDR" + ihdr).to_bytes(4, "big") + png[33:]
    with pytest.raises(BadImage, match=r"400000000 pixels.*preprocess.max_pixels"):
        preprocessing.crop(huge)


def whole_resize_crop(pixels: torch.Tensor) -> torch.Tensor:
    """What `crop` does to an ordinary image: resize all of it, then crop."""
    resized = F.resize(pixels, [256], interpolation=InterpolationMode.BILINEAR, antialias=True)
    return F.center_crop(resized, [CROP])


@pytest.mark.parametrize(
    ("size", "levels"), [((1000, 1), 0), ((3001, 53), 0), ((2003, 21), 0), ((1, 1000), 1), ((97, 1700), 1)]
)
def test_a_very_thin_image_crops_like_the_whole_resize_without_allocating_it(photo, size, levels, monkeypatch):
    pixels = pil_to_tensor(photo.resize(size))
    expected = whole_resize_crop(pixels)
    resized = []
    resize = preprocess_module.F.resize
    monkeypatch.setattr(
        preprocess_module.F,
        "resize",
        lambda pixels, *a, **k: resized.append(pixels.shape[-2:]) or resize(pixels, *a, **k),
    )
    crop = Preprocessing().crop(encode(photo.resize(size), "PNG"))
    assert (crop.int() - expected.int()).abs().max() <= levels
    largest = max(int(256 * max(size) / min(size)), 256)
    assert max(max(shape) for shape in resized) <= largest and max(shape.numel() for shape in resized) <= 256 * max(
        size
    )


def test_a_thin_image_whose_resize_exceeds_max_pixels_is_bad():
    data = encode(Image.new("RGB", (1000, 1), (30, 60, 90)), "PNG")
    with pytest.raises(BadImage, match=r"resizes through 256000 pixels, over the limit preprocess.max_pixels=255999"):
        Preprocessing(max_pixels=255_999).crop(data)
    assert uniform_crop_colour(Preprocessing(max_pixels=256_000).crop(data)) == [30, 60, 90]


# --- raw format --------------------------------------------------------------------------------------------
def test_a_raw_256_array_crops_to_exactly_its_center_224():
    pixels = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    crop = Preprocessing(image_format="raw").crop(pixels.tobytes())
    assert torch.equal(crop, torch.from_numpy(pixels[16:240, 16:240]).permute(2, 0, 1))


def test_raw_bytes_are_not_decoded_as_an_encoded_image():
    # random bytes of the right length are a valid raw image, and never a valid JPEG
    data = random.Random(2).randbytes(RAW_BYTES)
    assert Preprocessing(image_format="raw").crop(data).shape == (3, CROP, CROP)
    with pytest.raises(BadImage):
        Preprocessing().crop(data)
