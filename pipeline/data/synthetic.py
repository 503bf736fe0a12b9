"""Deterministic, photo-like stand-ins for ImageNet validation JPEGs.

The benchmark needs input that costs the pipeline what real ImageNet costs
it -- JPEG bytes to move, entropy decoding, resizing -- without shipping or
licensing the data set.  Neither easy fake will do: white noise is both far
larger than a photo and unlike one to decode, and flat shapes compress to
almost nothing.  So the images are built the way natural scenes look
statistically: a smooth low-frequency backdrop (sky over ground, wall over
floor, or a defocused background), objects with sharp or blurred edges,
clusters of small shapes, and 1/f-like texture whose strength differs per
region.  Texture strength is calibrated so that quality-90, 4:2:0 JPEGs
average 110-130 KB, like ImageNet validation files, with a natural spread.
Matching that mean at quality 90 takes dense fine detail over most of the
frame, so the images look like busy, grainy photographs.

Each image is a pure function of ``(seed, index)``: all randomness comes
from ``numpy.random.default_rng([seed, index])`` (no global state), so any
worker in any process can regenerate any item, in any order, byte for byte
(given the same numpy, Pillow and libjpeg builds).
"""

from __future__ import annotations

import colorsys
import io
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["synth_image", "synth_label", "encode_jpeg", "synth_jpeg", "NUM_CLASSES"]

NUM_CLASSES = 1000

# (width, height) and relative weight; modelled on the most common ImageNet
# validation shapes: mostly 500-wide landscapes, some portraits, a few squares.
_SHAPES: tuple[tuple[tuple[int, int], float], ...] = (
    ((500, 375), 30.0),
    ((500, 333), 14.0),
    ((375, 500), 11.0),
    ((333, 500), 5.0),
    ((640, 480), 7.0),
    ((480, 640), 2.0),
    ((640, 427), 5.0),
    ((427, 640), 2.0),
    ((500, 400), 5.0),
    ((400, 500), 3.0),
    ((500, 500), 4.0),
    ((400, 400), 3.0),
    ((600, 450), 3.0),
    ((450, 600), 2.0),
    ((400, 300), 4.0),
)
_SHAPE_SIZES = np.array([s for s, _ in _SHAPES], dtype=np.int64)
_SHAPE_P = np.array([w for _, w in _SHAPES], dtype=np.float64)
_SHAPE_P /= _SHAPE_P.sum()

# Calibration.  _DETAIL_GAIN scales every region's texture strength and is
# the knob that sets the mean JPEG size: 3.2 gives ~119 KB at quality 90
# averaged over seeds 0-5 (indices 0-199; seed 0 alone ~114 KB).  _AMP_CAP
# bounds any one region's strength: beyond it texture mostly clips at 0/255,
# costing looks and buying few bytes.
_DETAIL_GAIN = 3.2
_AMP_CAP = 0.45

# Orthonormal basis of the colour plane (perpendicular to grey, (1, 1, 1)).
_CHROMA_BASIS = np.array([[1.0, -1.0, 0.0], [0.5, 0.5, -1.0]], dtype=np.float32)
_CHROMA_BASIS /= np.sqrt(np.sum(_CHROMA_BASIS * _CHROMA_BASIS, axis=1, keepdims=True))


# ---------------------------------------------------------------------------
# small helpers
#
# Images are built as float32 planes, shape (3, h, w): broadcasting a (h, w)
# mask or gain over the channel axis then runs long inner loops, which is
# several times faster than (h, w, 3) with a length-3 innermost axis.
# Transcendental functions are evaluated in float64 and rounded to float32
# (or avoided), and BLAS is not used, so that CPU-specific SIMD kernels
# (whose last-bit rounding can differ) practically never change an output
# byte between machines.
# ---------------------------------------------------------------------------
def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """HSV in [0, 1] -> RGB float32 column (3, 1, 1) in [0, 255]."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return np.array([r, g, b], dtype=np.float32).reshape(3, 1, 1) * np.float32(255.0)


@lru_cache(maxsize=32)
def _freq_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Squared radial frequency (cycles/pixel)**2 and its log, on an h x w real-FFT grid."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f2 = np.maximum(fx * fx + fy * fy, 1.0 / max(h, w) ** 2)
    logf = 0.5 * np.log(f2)
    f2.setflags(write=False)
    logf.setflags(write=False)
    return f2, logf


def _white_spectrum(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Complex64 array of independent zero-mean random real and imaginary parts.

    Uniform rather than Gaussian draws: about 3x cheaper, and the inverse FFT
    of many independent terms is Gaussian anyway (central limit theorem).
    """
    white = np.empty(shape, dtype=np.complex64)
    parts = white.view(np.float32)
    rng.random(out=parts, dtype=np.float32)
    parts -= np.float32(0.5)
    return white


@lru_cache(maxsize=32)
def _freq_products(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """fx**2, fy**2 and fx*fy on an h x w real-FFT grid (float64)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    shape = (h, fx.size)
    out = (np.broadcast_to(fx * fx, shape).copy(), np.broadcast_to(fy * fy, shape).copy(), fy * fx)
    for a in out:
        a.setflags(write=False)
    return out


def _texture_field(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Zero-mean, unit-std (h, w) random field with a natural-image-like spectrum.

    The amplitude spectrum is the sum of a steep 1/f**1.2-1.6 part (blotches,
    uneven surfaces) and a flatter 1/f**0.4-0.9 part (foliage, fabric, fur),
    each given a chosen share of the variance: a single 1/f law puts nearly
    all the variance in the lowest frequencies, leaving too little of the fine
    detail that a JPEG spends its bytes on.  The fine part rolls off towards
    the Nyquist frequency like a camera's optics, and in half of the images
    is anisotropic (streaky, like grass or fur).  One inverse real FFT.
    """
    f2, logf = _freq_grid(h, w)
    fc = rng.uniform(0.5, 1.0)
    beta = rng.uniform(0.4, 0.9)
    stretch = rng.uniform(1.5, 4.0)
    theta = rng.normal(0.0, 0.3) if rng.uniform() < 0.7 else rng.uniform(0, np.pi)
    if rng.uniform() < 0.5:
        # Anisotropic: features elongated along ``theta`` (grass, fur, grain,
        # bark).  Squared frequency in a rotated, stretched frame, as a
        # quadratic form in (fx, fy).
        fx2, fy2, fxy = _freq_products(h, w)
        c, s = np.cos(theta), np.sin(theta)
        f2_fine = (c * c / stretch + s * s * stretch) * fx2
        f2_fine += (s * s / stretch + c * c * stretch) * fy2
        f2_fine += (2 * c * s * (1 / stretch - stretch)) * fxy
        np.maximum(f2_fine, 1.0 / max(h, w) ** 2, out=f2_fine)
        fine = np.exp(-0.5 * beta * np.log(f2_fine) - f2_fine * (1.0 / (fc * fc)))
    else:
        fine = np.exp(-beta * logf - f2 * (1.0 / (fc * fc)))
    coarse = np.exp(-rng.uniform(1.2, 1.6) * logf)
    fine[0, 0] = coarse[0, 0] = 0.0
    coarse_share = rng.uniform(0.05, 0.25)
    spec = fine * np.sqrt((1.0 - coarse_share) / np.sum(fine * fine))
    spec += coarse * np.sqrt(coarse_share / np.sum(coarse * coarse))
    white = _white_spectrum(rng, logf.shape)
    white *= spec.astype(np.float32)
    field = np.fft.irfft2(white, s=(h, w)).astype(np.float32, copy=False)
    field *= np.float32(1.0 / (field.std(dtype=np.float64) + 1e-12))
    return field


@lru_cache(maxsize=32)
def _full_freq_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`_freq_grid`, for a full (complex) h x w FFT."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    f2 = np.maximum(fx * fx + fy * fy, 1.0 / max(h, w) ** 2)
    logf = 0.5 * np.log(f2)
    f2.setflags(write=False)
    logf.setflags(write=False)
    return f2, logf


def _chroma_fields(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Two independent unit-std colour-variation fields at half resolution, (2, h/2, w/2).

    Colour detail in photos is coarser than brightness detail, and a 4:2:0
    JPEG keeps chroma at half resolution anyway, so these are made at half
    size (a quarter of the work) and later repeated 2x2.  The real and
    imaginary parts of one complex inverse FFT give the two fields.
    """
    f2, logf = _full_freq_grid(h, w)
    spec = np.exp(-rng.uniform(0.7, 1.2) * logf - f2 * (1.0 / 0.35**2))
    spec[0, 0] = 0.0
    white = _white_spectrum(rng, (h, w))
    white *= spec.astype(np.float32)
    field = np.fft.ifft2(white)
    out = np.stack([field.real, field.imag]).astype(np.float32)
    out[0] *= np.float32(1.0 / (out[0].std(dtype=np.float64) + 1e-12))
    out[1] *= np.float32(1.0 / (out[1].std(dtype=np.float64) + 1e-12))
    return out


def _smooth_field(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth, roughly N(0,1) random (h, w) field: a coarse random grid, bicubic-upsampled.

    Pillow's resampler is used rather than a matrix product: BLAS would pick
    CPU-specific kernels (rounding) and may start threads, which oversubscribe
    cores when many of these run side by side.
    """
    gh = max(2, int(round(cells * h / max(h, w))))
    gw = max(2, int(round(cells * w / max(h, w))))
    coarse = rng.standard_normal((gh, gw), dtype=np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((w, h), Image.Resampling.BICUBIC))


def _lighting(rng: np.random.Generator, h: int, w: int, lum_amp: float, chroma_amp: float) -> np.ndarray:
    """Multiplicative (3, h, w) gain: smooth brightness variation plus a faint, varying colour cast."""
    cells = int(rng.integers(3, 8))
    lum = _smooth_field(rng, h, w, cells) * np.float32(lum_amp)
    lum += np.float32(1.0)
    cast = _smooth_field(rng, h, w, cells) * np.float32(chroma_amp)
    direction = rng.standard_normal(3)
    direction -= direction.mean()
    direction /= np.sqrt(np.sum(direction * direction)) + 1e-6
    gain = direction.astype(np.float32).reshape(3, 1, 1) * cast
    gain += lum
    return gain


def _mask(size: tuple[int, int], polygon: list[tuple[float, float]], blur: float) -> np.ndarray:
    """Filled polygon as float32 alpha in [0, 1], optionally Gaussian-blurred (soft edge)."""
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).polygon(polygon, fill=255)
    if blur > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(blur))
    alpha = np.asarray(mask, dtype=np.float32)
    alpha *= np.float32(1.0 / 255.0)
    return alpha


# ---------------------------------------------------------------------------
# scene layers
# ---------------------------------------------------------------------------
def _background(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Large-scale structure: (rgb planes (3, h, w), texture amplitude (h, w), scene kind)."""
    kind = str(rng.choice(["outdoor", "indoor", "closeup"], p=[0.5, 0.2, 0.3]))

    if kind == "closeup":
        # Defocused background: smooth variation around one base colour.
        base = _hsv(rng.uniform(), rng.uniform(0.05, 0.45), rng.uniform(0.25, 0.85))
        rgb = _lighting(rng, h, w, rng.uniform(0.1, 0.3), rng.uniform(0.03, 0.1))
        rgb *= base
        amp = np.full((h, w), rng.uniform(0.01, 0.05), dtype=np.float32)
        return rgb, amp, kind

    if kind == "outdoor":
        style = rng.uniform()
        if style < 0.55:  # blue sky
            top = _hsv(rng.uniform(0.55, 0.63), rng.uniform(0.3, 0.7), rng.uniform(0.55, 0.9))
            low = _hsv(rng.uniform(0.53, 0.6), rng.uniform(0.05, 0.25), rng.uniform(0.8, 1.0))
        elif style < 0.8:  # overcast
            g = rng.uniform(0.55, 0.9)
            top = _hsv(rng.uniform(0.5, 0.65), rng.uniform(0.0, 0.1), g)
            low = _hsv(rng.uniform(0.5, 0.65), rng.uniform(0.0, 0.08), min(1.0, g + 0.1))
        else:  # dusk
            top = _hsv(rng.uniform(0.6, 0.7), rng.uniform(0.3, 0.6), rng.uniform(0.25, 0.55))
            low = _hsv(rng.uniform(0.03, 0.12), rng.uniform(0.4, 0.8), rng.uniform(0.7, 1.0))
        gtop = _hsv(rng.uniform(0.07, 0.33), rng.uniform(0.25, 0.65), rng.uniform(0.3, 0.6))
        gbot = gtop * np.float32(rng.uniform(0.45, 0.9))
        sky_amp, ground_amp = rng.uniform(0.002, 0.01), rng.uniform(0.12, 0.3)
        # Horizon height; about a third of outdoor shots show little or no sky.
        frac = rng.uniform(-0.2, 0.12) if rng.uniform() < 0.35 else rng.uniform(0.2, 0.55)
    else:  # indoor: wall over floor
        top = _hsv(rng.uniform(), rng.uniform(0.0, 0.3), rng.uniform(0.45, 0.9))
        low = top * np.float32(rng.uniform(0.75, 1.05))
        gtop = _hsv(rng.uniform(0.03, 0.12), rng.uniform(0.2, 0.6), rng.uniform(0.25, 0.6))
        gbot = gtop * np.float32(rng.uniform(0.6, 1.0))
        sky_amp, ground_amp = rng.uniform(0.02, 0.08), rng.uniform(0.1, 0.25)
        frac = rng.uniform(0.35, 0.75)

    # Vertical gradients, one value per row: (3, h, 1), broadcast along x.
    y = np.arange(h, dtype=np.float32)[None, :, None]
    hy = np.float32(max(frac * h, 1.0))
    t_sky = np.minimum(y / hy, np.float32(1.0))
    t_gnd = np.maximum((y - hy) / (np.float32(h) - hy), np.float32(0.0))
    sky = top + (low - top) * t_sky
    gnd = gtop + (gbot - gtop) * t_gnd

    # Horizon: a tilted, gently undulating line, drawn as a polygon mask.
    x = np.linspace(0, w, 33)
    yh = frac * h + rng.uniform(-0.12, 0.12) * (x - w / 2)
    for _ in range(2):
        period = rng.uniform(0.3, 1.5) * w
        yh = yh + rng.uniform(0.0, 0.04) * h * np.sin(2 * np.pi * x / period + rng.uniform(0, 2 * np.pi))
    yh = np.clip(yh, -5.0, 0.9 * h)
    soft = float(rng.choice([0.0, 0.0, 0.8, 2.0, 4.0]))
    a = _mask((w, h), [*zip(x.tolist(), yh.tolist()), (w, h + 5), (0, h + 5)], soft)  # 1 = ground

    rgb = _lighting(rng, h, w, rng.uniform(0.05, 0.2), rng.uniform(0.02, 0.06))
    layer = (gnd - sky) * a
    layer += sky
    rgb *= layer
    amp = a * np.float32(ground_amp - sky_amp)
    amp += np.float32(sky_amp)
    return rgb, amp, kind


def _object_polygon(rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Vertices (n, 2) of an ellipse, rectangle or irregular polygon, rotated."""
    shape = rng.choice(3, p=[0.45, 0.25, 0.3])
    if shape == 0:  # ellipse
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        px, py = rx * np.cos(t), ry * np.sin(t)
    elif shape == 1:  # rectangle
        px = np.array([-rx, rx, rx, -rx])
        py = np.array([-ry, -ry, ry, ry])
    else:  # irregular polygon
        n = int(rng.integers(3, 9))
        t = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = rng.uniform(0.55, 1.0, n)
        px, py = rx * r * np.cos(t), ry * r * np.sin(t)
    th = rng.uniform(0, np.pi)
    c, s = np.cos(th), np.sin(th)
    return np.stack([cx + c * px - s * py, cy + s * px + c * py], axis=1)


def _add_objects(rng: np.random.Generator, rgb: np.ndarray, amp: np.ndarray, kind: str) -> None:
    """Composite shaded, textured objects with sharp or blurred edges, in place."""
    _, h, w = rgb.shape
    m = min(h, w)
    n = int(rng.integers(4, 19))
    # Radius as a fraction of the short side; a close-up gets one dominant object.
    sizes = np.exp(rng.uniform(np.log(0.02), np.log(0.45), n))
    if kind == "closeup":
        sizes[0] = rng.uniform(0.3, 0.55)
    order = np.argsort(-sizes, kind="stable")  # big (behind) first, small on top
    for k in order:
        r = float(sizes[k]) * m
        aspect = np.exp(rng.uniform(-0.7, 0.7))
        rx, ry = r * np.sqrt(aspect), r / np.sqrt(aspect)
        if kind == "closeup" and k == 0:
            cx, cy = rng.normal(w / 2, w * 0.08), rng.normal(h / 2, h * 0.08)
        else:
            cx = rng.uniform(-0.05, 1.05) * w
            cy = (rng.beta(2.0, 1.6) if kind != "closeup" else rng.uniform()) * h
        poly = _object_polygon(rng, cx, cy, rx, ry)
        blur = float(rng.choice([0.0, 0.0, 0.0, 0.6, 1.5, 3.0, 6.0]))
        # All of an object's parameters are drawn before the visibility check,
        # so the rng stream never depends on clipping.
        base = _hsv(rng.uniform(), rng.beta(1.2, 3.0), rng.uniform(0.12, 0.9))
        shade = rng.uniform(0.1, 0.6)
        light = rng.uniform(0, 2 * np.pi)
        obj_amp = float(np.exp(rng.uniform(np.log(0.05), np.log(0.35))))
        if kind == "closeup" and k == 0:  # the subject: fur, feathers, fabric
            obj_amp = max(obj_amp, 0.2)
        stripes = rng.uniform() < 0.3
        s_period = rng.uniform(3.0, 18.0)
        s_theta = rng.uniform(0, np.pi)
        s_depth = rng.uniform(0.05, 0.25)

        pad = int(np.ceil(3 * blur)) + 2
        x0 = max(0, int(np.floor(poly[:, 0].min())) - pad)
        x1 = min(w, int(np.ceil(poly[:, 0].max())) + pad + 1)
        y0 = max(0, int(np.floor(poly[:, 1].min())) - pad)
        y1 = min(h, int(np.ceil(poly[:, 1].max())) + pad + 1)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        alpha = _mask((x1 - x0, y1 - y0), [(px - x0, py - y0) for px, py in poly.tolist()], blur)

        # Directional shading and optional stripes, built from 1-D profiles:
        # sin(a + b) = sin a cos b + cos a sin b keeps the transcendental
        # work one-dimensional.
        xx = np.arange(x0, x1, dtype=np.float64) - cx
        yy = np.arange(y0, y1, dtype=np.float64) - cy
        g = shade / max(r, 1.0)
        lum = (g * np.sin(light) * yy).astype(np.float32)[:, None]
        lum = lum + (1.0 + g * np.cos(light) * xx).astype(np.float32)
        if stripes:
            kx = 2 * np.pi / s_period * np.cos(s_theta)
            ky = 2 * np.pi / s_period * np.sin(s_theta)
            sin_x = (s_depth * np.sin(kx * xx)).astype(np.float32)
            cos_x = (s_depth * np.cos(kx * xx)).astype(np.float32)
            sin_y = np.sin(ky * yy).astype(np.float32)[:, None]
            cos_y = np.cos(ky * yy).astype(np.float32)[:, None]
            wave = sin_x * cos_y
            wave += cos_x * sin_y
            wave += np.float32(1.0)
            lum *= wave
        np.clip(lum, 0.2, 2.0, out=lum)

        view = rgb[:, y0:y1, x0:x1]
        colour = base * lum
        colour -= view
        colour *= alpha
        view += colour
        av = amp[y0:y1, x0:x1]
        av += (np.float32(obj_amp) - av) * alpha


def _add_clusters(rng: np.random.Generator, rgb: np.ndarray, amp: np.ndarray) -> None:
    """Composite a few clusters of many small blobs (foliage, pebbles, flowers), in place.

    Clutter of small, sharp-edged shapes is what gives real photos much of
    their fine detail; drawing a whole cluster into one mask keeps it cheap.
    """
    _, h, w = rgb.shape
    for _ in range(int(rng.integers(0, 4))):
        cw, ch = rng.uniform(0.15, 0.6) * w, rng.uniform(0.1, 0.4) * h
        cx, cy = rng.uniform(0, w), rng.beta(2.5, 1.5) * h
        count = int(rng.integers(15, 120))
        radius = rng.uniform(1.5, 9.0)
        bx = rng.normal(cx, cw / 3, count)
        by = rng.normal(cy, ch / 3, count)
        br = radius * np.exp(rng.normal(0.0, 0.35, count))
        stretch = np.exp(rng.normal(0.0, 0.4, count))
        base = _hsv(rng.uniform(), rng.beta(1.5, 2.0), rng.uniform(0.1, 0.9))
        blur = float(rng.choice([0.0, 0.0, 0.7, 2.0]))
        obj_amp = rng.uniform(0.08, 0.3)
        pad = int(np.ceil(3 * blur)) + 2
        x0 = max(0, int(np.floor((bx - br * stretch).min())) - pad)
        x1 = min(w, int(np.ceil((bx + br * stretch).max())) + pad + 1)
        y0 = max(0, int(np.floor((by - br / stretch).min())) - pad)
        y1 = min(h, int(np.ceil((by + br / stretch).max())) + pad + 1)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        mask = Image.new("L", (x1 - x0, y1 - y0), 0)
        draw = ImageDraw.Draw(mask)
        for ex, ey, er, es in zip((bx - x0).tolist(), (by - y0).tolist(), br.tolist(), stretch.tolist()):
            draw.ellipse((ex - er * es, ey - er / es, ex + er * es, ey + er / es), fill=255)
        if blur > 0:
            mask = mask.filter(ImageFilter.GaussianBlur(blur))
        alpha = np.asarray(mask, dtype=np.float32)
        alpha *= np.float32(1.0 / 255.0)
        view = rgb[:, y0:y1, x0:x1]
        colour = (base - view) * alpha
        view += colour
        av = amp[y0:y1, x0:x1]
        av += (np.float32(obj_amp) - av) * alpha


def _texture(rng: np.random.Generator, rgb: np.ndarray, amp: np.ndarray) -> None:
    """Modulate brightness and colour with the texture field, scaled per region; in place.

    ``amp`` is the texture's relative strength per pixel.  The modulation is
    partly multiplicative (bright surfaces show more texture) and partly
    additive, so dark surfaces are not left featureless.
    """
    _, h, w = rgb.shape
    field = _texture_field(rng, h, w)
    # Optional soft threshold: turns Gaussian texture into patchy, edge-rich
    # texture (dappled leaves, gravel, lichen) for part of the images.
    k = rng.uniform(0.0, 2.5)
    if k > 1.9:
        # x / sqrt(1 + x^2): a tanh-like sigmoid from correctly rounded
        # operations only, so it gives the same bits on every CPU.
        field *= np.float32(k)
        field /= np.sqrt(field * field + np.float32(1.0))
        field *= np.float32(1.0 / (field.std(dtype=np.float64) + 1e-12))
    # Compress the range of region strengths, amp * sqrt(0.3 / (amp + 0.03)):
    # about linear for near-smooth regions (skies stay calm), square-root-like
    # for textured ones.  JPEG size grows with the log of texture amplitude,
    # so evenly spread detail reaches the target size with far less
    # pixel-to-pixel noise than a few saturated regions would.
    a = amp
    a *= np.sqrt(np.float32(0.3) / (amp + np.float32(0.03)))
    a *= np.float32(_DETAIL_GAIN * float(np.exp(rng.normal(0.0, 0.25))))
    np.minimum(a, np.float32(_AMP_CAP), out=a)
    field *= a
    tint = rng.standard_normal(3) * rng.uniform(0.0, 0.3) * 64.0 + 0.4 * 128.0
    rgb *= 1.0 + 0.6 * field
    rgb += tint.astype(np.float32).reshape(3, 1, 1) * field
    # Colour texture (hue/saturation variation), made at half resolution.
    hh, hw = (h + 1) // 2, (w + 1) // 2
    c1, c2 = _chroma_fields(rng, hh, hw)
    d1, d2 = _CHROMA_BASIS * (rng.uniform(0.06, 0.2) * 128.0)
    a_half = a[::2, ::2]
    c1 *= a_half
    c2 *= a_half
    chroma = d1.reshape(3, 1, 1) * c1
    chroma += d2.reshape(3, 1, 1) * c2
    rgb += chroma.repeat(2, axis=1).repeat(2, axis=2)[:, :h, :w]


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------
def synth_label(seed: int, index: int) -> int:
    """Class label in [0, 1000) for item ``index``.

    It is the first draw of ``default_rng([seed, index])`` -- the same stream
    :func:`synth_image` continues from -- so it costs one draw to compute.
    """
    return int(np.random.default_rng([seed, index]).integers(NUM_CLASSES))


def synth_image(seed: int, index: int) -> Image.Image:
    """Photo-like RGB image for item ``index``, 300..640 px per side."""
    rng = np.random.default_rng([seed, index])
    rng.integers(NUM_CLASSES)  # the label (see synth_label); keeps the streams aligned
    w, h = (int(v) for v in _SHAPE_SIZES[rng.choice(len(_SHAPE_P), p=_SHAPE_P)])
    rgb, amp, kind = _background(rng, h, w)
    _add_objects(rng, rgb, amp, kind)
    _add_clusters(rng, rgb, amp)
    _texture(rng, rgb, amp)
    np.clip(rgb, 0.0, 255.0, out=rgb)
    planes = np.rint(rgb, out=rgb).astype(np.uint8)
    return Image.merge("RGB", [Image.fromarray(p, mode="L") for p in planes])


def encode_jpeg(image: Image.Image, quality: int = 90) -> bytes:
    """Baseline (non-progressive) JPEG with 4:2:0 chroma subsampling."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality, subsampling="4:2:0", progressive=False)
    return buf.getvalue()


def synth_jpeg(seed: int, index: int, quality: int = 90) -> bytes:
    """``encode_jpeg(synth_image(seed, index), quality)``."""
    return encode_jpeg(synth_image(seed, index), quality)
