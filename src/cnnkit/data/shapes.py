"""A seeded generator of RGB images of simple shapes: a data set that needs no download.

Each image holds one shape (its class) of random colour, size, position and rotation on a random
background (a colour plus a gentle linear gradient), with uniform pixel noise. Any image size works:
32x32x3 feeds the network of notes §5 (ten classes), 128x128x3 the one of notes §9.

Drawing is vectorised over a chunk of images: each shape is a signed distance ``d(u, v)`` in the shape's
own rotated, scaled coordinates (negative inside), evaluated on a coordinate grid for all images at once;
the pixel coverage ``clip(0.5 - d * r, 0, 1)`` (``r`` = radius in pixels) gives anti-aliased edges.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..errors import ConfigError
from ..utils.checks import check_int
from .core import LabeledImages

Sdf = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _polygon(k: int) -> Sdf:
    """Regular k-gon with circumradius 1: the largest distance past the k edge lines."""
    angles = np.pi / 2 + np.pi / k + 2 * np.pi * np.arange(k) / k
    apothem = np.cos(np.pi / k)

    def sdf(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        d = u * np.float32(np.cos(angles[0])) + v * np.float32(np.sin(angles[0]))
        for a in angles[1:]:
            np.maximum(d, u * np.float32(np.cos(a)) + v * np.float32(np.sin(a)), out=d)
        return d - np.float32(apothem)

    return sdf


def _box(u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
    return np.maximum(np.abs(u) - np.float32(a), np.abs(v) - np.float32(b))


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Five points: the boundary radius runs linearly from 1 (tips) to 0.45 (notches) in angle.
    theta = np.arctan2(v, u)
    t = np.abs(((theta * np.float32(5 / (2 * np.pi))) % 1) - np.float32(0.5)) * 2  # 1 at tips, 0 between
    return np.hypot(u, v) - (np.float32(0.45) + np.float32(0.55) * t)


#: The shapes the generator can draw, each a signed distance in units of its circumradius.
SHAPES: dict[str, Sdf] = {
    "circle": lambda u, v: np.hypot(u, v) - 1,
    "square": _polygon(4),
    "triangle": _polygon(3),
    "cross": lambda u, v: np.minimum(_box(u, v, 1.0, 0.3), _box(u, v, 0.3, 1.0)),
    "ring": lambda u, v: np.abs(np.hypot(u, v) - np.float32(0.72)) - np.float32(0.28),
    "star": _star,
    "hexagon": _polygon(6),
    "ellipse": lambda u, v: (np.hypot(u, v * 2) - 1) * np.float32(0.5),
    "bar": lambda u, v: _box(u, v, 1.0, 0.22),
    "semicircle": lambda u, v: np.maximum(np.hypot(u, v + np.float32(0.4)) - 1, -(v + np.float32(0.4))),
}

#: The default classes: all ten shapes, matching the 10-way output of notes §5.
DEFAULT_CLASSES: tuple[str, ...] = tuple(SHAPES)

_MIN_CONTRAST = 90.0  # minimum RGB distance between shape and background colours
_PIXELS_PER_CHUNK = 1 << 18


def shapes(
    n: int,
    image_size: int | tuple[int, int] = 32,
    classes: Sequence[str] = DEFAULT_CLASSES,
    seed: int | None = 0,
    noise: float = 0.04,
    size_range: tuple[float, float] = (0.22, 0.45),
) -> LabeledImages:
    """Generate ``n`` labelled RGB images of shapes.

    Parameters
    ----------
    n: number of images; classes are balanced (``n // len(classes)`` each, the first ``n % k`` classes
        one more) and the order shuffled.
    image_size: ``S`` or ``(H, W)``; images are ``uint8 (n, 3, H, W)``.
    classes: names from :data:`SHAPES` (``circle, square, triangle, cross, ring, star, hexagon,
        ellipse, bar, semicircle``); label ``k`` is ``classes[k]``. Every shape is drawn at a random
        rotation, so no two classes are rotations of each other.
    seed: the same seed gives the same images bit for bit.
    noise: standard deviation of the (uniform, zero-mean) pixel noise as a fraction of 255.
    size_range: circumradius as a fraction of ``min(H, W)``.

    Returns :class:`~cnnkit.data.core.LabeledImages` ``(x, y, class_names)``; ``.split(test_size)``
    makes a stratified :class:`~cnnkit.data.core.Dataset`.
    """
    check_int(n, "n", "shapes", 1)
    h, w = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else tuple(image_size)
    if min(h, w) < 8:
        raise ConfigError(f"shapes: image_size must be at least 8 pixels, got {image_size!r}")
    names = [str(c) for c in classes]
    unknown = [c for c in names if c not in SHAPES]
    if unknown or len(set(names)) != len(names) or len(names) < 1:
        raise ConfigError(
            f"shapes: classes must be distinct names from {list(SHAPES)}, got {list(classes)!r}"
        )
    lo, hi = size_range
    if not 0.05 <= lo <= hi <= 0.5:
        raise ConfigError(f"shapes: size_range must satisfy 0.05 <= lo <= hi <= 0.5, got {size_range!r}")
    if noise < 0:
        raise ConfigError(f"shapes: noise must be >= 0, got {noise!r}")

    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % len(names)).astype(np.int64)
    params = _draw_params(rng, n, h, w, lo, hi)
    x = np.empty((n, 3, h, w), dtype=np.uint8)
    chunk = max(1, _PIXELS_PER_CHUNK // (h * w))
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        x[sl] = _render(rng, y[sl], {k: v[sl] for k, v in params.items()}, names, h, w, noise)
    return LabeledImages(x, y, names)


def _draw_params(
    rng: np.random.Generator, n: int, h: int, w: int, lo: float, hi: float
) -> dict[str, np.ndarray]:
    side = min(h, w)
    radius = rng.uniform(lo, hi, n) * side
    cy = rng.uniform(radius, h - 1 - radius)
    cx = rng.uniform(radius, w - 1 - radius)
    angle = rng.uniform(0, 2 * np.pi, n)
    fg = rng.uniform(0, 255, (n, 3))
    bg = rng.uniform(0, 255, (n, 3))
    close = np.linalg.norm(fg - bg, axis=1) < _MIN_CONTRAST
    while close.any():  # redraw the shape colour until it stands out from the background
        fg[close] = rng.uniform(0, 255, (int(close.sum()), 3))
        close = np.linalg.norm(fg - bg, axis=1) < _MIN_CONTRAST
    grad_dir = rng.uniform(0, 2 * np.pi, n)
    grad_amp = rng.uniform(0, 40, (n, 3))  # brightness change across the image, per channel
    return {
        "radius": radius,
        "cy": cy,
        "cx": cx,
        "angle": angle,
        "fg": fg,
        "bg": bg,
        "grad_dir": grad_dir,
        "grad_amp": grad_amp,
    }


def _render(
    rng: np.random.Generator,
    y: np.ndarray,
    p: dict[str, np.ndarray],
    names: list[str],
    h: int,
    w: int,
    noise: float,
) -> np.ndarray:
    m = len(y)
    f32 = np.float32
    rows = np.arange(h, dtype=f32)[None, :, None]
    cols = np.arange(w, dtype=f32)[None, None, :]
    dy = rows - p["cy"].astype(f32)[:, None, None]
    dx = cols - p["cx"].astype(f32)[:, None, None]
    r = p["radius"].astype(f32)[:, None, None]
    cos = np.cos(p["angle"]).astype(f32)[:, None, None]
    sin = np.sin(p["angle"]).astype(f32)[:, None, None]
    u = (dx * cos + dy * sin) / r  # shape coordinates: rotated by -angle, in units of the radius
    v = (dy * cos - dx * sin) / r
    cover = np.empty((m, h, w), dtype=f32)
    for k, name in enumerate(names):
        sel = np.flatnonzero(y == k)
        if sel.size:
            d = SHAPES[name](u[sel], v[sel])
            cover[sel] = np.clip(f32(0.5) - d * r[sel], 0, 1)
    # Background: colour + linear gradient through the image centre, in a random direction.
    gy = np.sin(p["grad_dir"]).astype(f32)[:, None, None]
    gx = np.cos(p["grad_dir"]).astype(f32)[:, None, None]
    ramp = ((rows - (h - 1) / 2) * gy + (cols - (w - 1) / 2) * gx) / f32(max(h, w))  # in [-0.71, 0.71]
    bg = p["bg"].astype(f32)[:, :, None, None] + p["grad_amp"].astype(f32)[:, :, None, None] * ramp[:, None]
    fg = p["fg"].astype(f32)[:, :, None, None]
    img = bg + (fg - bg) * cover[:, None]
    if noise > 0:  # uniform noise of standard deviation noise * 255 (cheaper to draw than Gaussian)
        half = f32(noise * 255 * np.sqrt(3.0))
        img += rng.random(img.shape, dtype=f32) * (2 * half) - half
    np.clip(img, 0, 255, out=img)
    img += f32(0.5)  # round to nearest on the cast below
    return img.astype(np.uint8)
