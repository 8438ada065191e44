"""Data augmentation (notes §12.2: "rotation, flipping, zooming"), vectorised over a batch.

Every geometric augmentation is one affine map per image. For an output pixel at ``p_d = (row, col)`` the
value is read from the input at

    p_s = F (R(-θ) (p_d - c - t)) / s + c

where ``c = ((H-1)/2, (W-1)/2)`` is the image centre, ``t = (t_row, t_col)`` the translation in pixels,
``θ`` the rotation (counter-clockwise as displayed, in degrees), ``s`` the zoom factor (``s > 1``
enlarges the content) and ``F`` mirrors the column axis when the image is flipped. :func:`warp_affine`
evaluates that for every pixel of every image in one go (coordinate grids, NumPy fancy indexing) and
interpolates bilinearly between the four neighbouring input pixels. Points that fall outside the image
take the border pixel (``fill_mode="edge"``), the mirror image (``"reflect"``) or a constant
(``"constant"``; with integer translations this equals pad-and-random-crop).

uint8 batches come back as uint8 (rounded), floating batches in their own dtype. Augment before
normalising: the loader applies ``augment`` to the raw batch and then ``transform``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError, DTypeError, ShapeError

FILL_MODES = ("edge", "reflect", "constant")
_PIXELS_PER_CHUNK = 1 << 16


def _check_batch(x: object, op: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise DTypeError(f"{op}: x must be a numpy.ndarray, got {type(x).__name__}")
    if x.ndim != 4:
        raise ShapeError(f"{op}: x must have 4 dimensions (N, C, H, W), got shape {x.shape}")
    if not (x.dtype == np.uint8 or np.issubdtype(x.dtype, np.floating)):
        raise DTypeError(f"{op}: x must be uint8 or floating point, got {x.dtype}")
    return x


def hflip(x: np.ndarray) -> np.ndarray:
    """Mirror a batch left to right: ``out[..., j] = x[..., W-1-j]`` (exact; its own inverse)."""
    return np.ascontiguousarray(_check_batch(x, "hflip")[..., ::-1])


def affine_inverse_maps(
    shape: tuple[int, int],
    degrees: np.ndarray,
    scale: np.ndarray | None = None,
    translate: np.ndarray | None = None,
    flip: np.ndarray | None = None,
) -> np.ndarray:
    """The ``(N, 2, 3)`` matrices ``A`` with ``p_s = A @ (row_d, col_d, 1)`` (see the module docstring).

    ``degrees``, ``scale`` (default 1) and ``flip`` (bool, default False) have shape ``(N,)``;
    ``translate`` ``(N, 2)`` as ``(rows, cols)`` (default 0).
    """
    theta = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    n = theta.shape[0]
    s = np.ones(n) if scale is None else np.asarray(scale, dtype=np.float64)
    t = np.zeros((n, 2)) if translate is None else np.asarray(translate, dtype=np.float64)
    f = np.ones(n) if flip is None else np.where(np.asarray(flip, dtype=bool), -1.0, 1.0)
    cos, sin = np.cos(theta), np.sin(theta)
    # R(-θ) in (row, col): row_s = cos*row + sin*col ; col_s = -sin*row + cos*col  (then / s, then F).
    lin = np.empty((n, 2, 2))
    lin[:, 0, 0], lin[:, 0, 1] = cos / s, sin / s
    lin[:, 1, 0], lin[:, 1, 1] = -sin * f / s, cos * f / s
    lin = np.round(lin, 12)  # cos(90°) is 6e-17 in floating point: make right angles exact
    c = np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2])
    offset = c - np.einsum("nij,nj->ni", lin, c + t)
    return np.concatenate([lin, offset[:, :, None]], axis=2)


def _reflect(coord: np.ndarray, size: int) -> np.ndarray:
    if size == 1:
        return np.zeros_like(coord)
    period = 2 * (size - 1)
    return (size - 1) - np.abs(np.mod(coord, period) - (size - 1))


def warp_affine(x: np.ndarray, maps: np.ndarray, fill_mode: str = "edge", fill: float = 0.0) -> np.ndarray:
    """Resample every image of ``x`` (N, C, H, W) through its inverse map ``maps[n]`` (2x3), bilinearly.

    ``out[n, :, i, j] = bilinear(x[n], maps[n] @ (i, j, 1))``: with ``(r, c)`` the source point,
    ``r0 = floor(r)``, ``a = r - r0`` (likewise ``c0``, ``b``), the value is
    ``(1-a)(1-b) x[r0, c0] + (1-a) b x[r0, c0+1] + a (1-b) x[r0+1, c0] + a b x[r0+1, c0+1]``.
    ``fill_mode="constant"`` pads the image with ``fill`` (rounded to 0..255 for uint8 images) and then
    clamps like ``"edge"``, so points far outside read ``fill`` and points near the border blend into it.
    Same dtype as ``x``; uint8 results are rounded.
    """
    x = _check_batch(x, "warp_affine")
    if fill_mode not in FILL_MODES:
        raise ConfigError(f"warp_affine: fill_mode must be one of {FILL_MODES}, got {fill_mode!r}")
    n, ch, h, w = x.shape
    maps = np.asarray(maps, dtype=np.float64)
    if maps.shape != (n, 2, 3):
        raise ShapeError(f"warp_affine: maps must have shape ({n}, 2, 3), got {maps.shape}")
    out = np.empty_like(x)
    step = max(1, _PIXELS_PER_CHUNK // (h * w))  # a few images at a time keeps the temporaries in cache
    for start in range(0, n, step):
        sl = slice(start, start + step)
        out[sl] = _warp_chunk(x[sl], maps[sl], fill_mode, fill)
    return out


def _warp_chunk(x: np.ndarray, maps: np.ndarray, fill_mode: str, fill: float) -> np.ndarray:
    n, ch, h, w = x.shape
    work = np.float64 if x.dtype == np.float64 else np.float32
    rows = np.arange(h, dtype=np.float64)[:, None]
    cols = np.arange(w, dtype=np.float64)[None, :]
    sr = maps[:, 0, 0, None, None] * rows + maps[:, 0, 1, None, None] * cols + maps[:, 0, 2, None, None]
    sc = maps[:, 1, 0, None, None] * rows + maps[:, 1, 1, None, None] * cols + maps[:, 1, 2, None, None]
    if fill_mode == "constant":
        value = float(np.clip(np.rint(fill), 0, 255)) if x.dtype == np.uint8 else fill
        x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=value)
        sr, sc = sr + 1, sc + 1
    elif fill_mode == "reflect":
        sr, sc = _reflect(sr, h), _reflect(sc, w)
    hp, wp = x.shape[2:]
    sr, sc = np.clip(sr, 0, hp - 1), np.clip(sc, 0, wp - 1)
    r0, c0 = np.floor(sr), np.floor(sc)
    a = (sr - r0).astype(work).reshape(-1, 1)
    b = (sc - c0).astype(work).reshape(-1, 1)
    r0, c0 = r0.astype(np.intp), c0.astype(np.intp)
    step_r = np.where(r0 < hp - 1, wp, 0).reshape(-1)  # the +1 neighbour, or the pixel itself at the border
    step_c = (c0 < wp - 1).astype(np.intp).reshape(-1)
    # Channels-last rows: one gather of C contiguous values per (image, pixel) and neighbour.
    pixels = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(n * hp * wp, ch)
    i00 = ((np.arange(n, dtype=np.intp) * (hp * wp))[:, None, None] + r0 * wp + c0).reshape(-1)
    i10 = i00 + step_r

    def lerp(lo: np.ndarray, hi: np.ndarray, t: np.ndarray) -> np.ndarray:
        out = np.subtract(hi, lo, dtype=work)
        out *= t
        out += lo
        return out

    top = lerp(np.take(pixels, i00, axis=0), np.take(pixels, i00 + step_c, axis=0), b)
    bottom = lerp(np.take(pixels, i10, axis=0), np.take(pixels, i10 + step_c, axis=0), b)
    out = lerp(top, bottom, a).reshape(n, h, w, ch).transpose(0, 3, 1, 2)
    if x.dtype == np.uint8:
        out += 0.5  # values lie in [0, 255]: truncating after +0.5 rounds to nearest
        return out.astype(np.uint8)
    return out


def rotate(x: np.ndarray, degrees: float, fill_mode: str = "edge", fill: float = 0.0) -> np.ndarray:
    """Rotate every image of the batch by ``degrees`` counter-clockwise about its centre."""
    x = _check_batch(x, "rotate")
    maps = affine_inverse_maps(x.shape[2:], np.full(x.shape[0], float(degrees)))
    return warp_affine(x, maps, fill_mode, fill)


def _range(value: Any, name: str, centre: float, minimum: float | None = None) -> tuple[float, float]:
    """``v`` -> ``(centre - v, centre + v)``; a pair is taken as ``(lo, hi)``."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        lo, hi = float(value[0]), float(value[1])
    elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        if value < 0:
            raise ConfigError(f"Augment: {name} must be >= 0 or a (low, high) pair, got {value!r}")
        lo, hi = centre - float(value), centre + float(value)
    else:
        raise ConfigError(f"Augment: {name} must be a number or a (low, high) pair, got {value!r}")
    if lo > hi or (minimum is not None and lo <= minimum):
        need = "low <= high" + ("" if minimum is None else f" and low > {minimum}")
        raise ConfigError(f"Augment: {name} range must satisfy {need}, got ({lo}, {hi})")
    return lo, hi


class Augment:
    """Random, seeded geometric augmentation of a batch (notes §12.2), composable in one affine map.

    Parameters
    ----------
    rotation: degrees ``r`` -> angle uniform in ``[-r, r]``; or a ``(low, high)`` pair.
    flip: ``True`` flips each image left-right with probability 0.5; a float is the probability.
    zoom: ``z`` -> scale factor uniform in ``[1 - z, 1 + z]`` (``> 1`` zooms in); or ``(low, high)``.
        The output keeps the input's shape.
    translate: ``t`` pixels -> integer shifts uniform in ``[-t, t]`` along rows and columns (a random
        crop of a padded image); or a pair ``(t_rows, t_cols)``.
    fill_mode, fill: what points outside the input become (``"edge"``, ``"reflect"``, ``"constant"``).
    seed: seed of the generator used when the caller passes no ``rng``. The same seed gives the same
        sequence of batches. :class:`~cnnkit.data.loader.DataLoader` passes its own generator, derived
        from ``(loader seed, epoch, batch index, augment seed)``, so a resumed run repeats its
        augmentation too.

    With all parameters at their identity (the defaults) the input comes back unchanged.
    """

    def __init__(
        self,
        rotation: float | tuple[float, float] = 0.0,
        flip: bool | float = False,
        zoom: float | tuple[float, float] = 0.0,
        translate: int | tuple[int, int] = 0,
        fill_mode: str = "edge",
        fill: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self.rotation = _range(rotation, "rotation", 0.0)
        self.zoom = _range(zoom, "zoom", 1.0, minimum=0.0)
        if isinstance(flip, bool):
            self.flip_p = 0.5 if flip else 0.0
        elif isinstance(flip, (int, float)) and 0.0 <= flip <= 1.0:
            self.flip_p = float(flip)
        else:
            raise ConfigError(f"Augment: flip must be a bool or a probability in [0, 1], got {flip!r}")
        if isinstance(translate, (int, np.integer)):
            t: tuple[Any, ...] = (translate, translate)
        elif isinstance(translate, (tuple, list)):
            t = tuple(translate)
        else:
            t = ()
        if len(t) != 2 or any(
            isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 for v in t
        ):
            raise ConfigError(f"Augment: translate must be an int >= 0 or a pair of them, got {translate!r}")
        self.translate = (int(t[0]), int(t[1]))
        if fill_mode not in FILL_MODES:
            raise ConfigError(f"Augment: fill_mode must be one of {FILL_MODES}, got {fill_mode!r}")
        self.fill_mode = fill_mode
        self.fill = float(fill)
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    @property
    def geometric(self) -> bool:
        """True when rotation, zoom or translation can change pixel positions beyond a flip."""
        return self.rotation != (0.0, 0.0) or self.zoom != (1.0, 1.0) or self.translate != (0, 0)

    @property
    def is_identity(self) -> bool:
        """True when the augmentation never changes anything."""
        return not self.geometric and self.flip_p == 0.0

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Draw the per-image parameters: degrees, scale, translate (N, 2), flip (bool)."""
        return {
            "degrees": rng.uniform(*self.rotation, n),
            "scale": rng.uniform(*self.zoom, n),
            "translate": np.stack([rng.integers(-t, t + 1, n) for t in self.translate], axis=1).astype(
                np.float64
            ),
            "flip": rng.random(n) < self.flip_p,
        }

    def __call__(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Augment a batch ``x`` (N, C, H, W); returns a new array of the same shape and dtype."""
        x = _check_batch(x, "Augment")
        if self.is_identity:
            return x.copy()
        return self.apply(x, self.sample(x.shape[0], self._rng if rng is None else rng))

    def apply(self, x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
        """Augment ``x`` with parameters from :meth:`sample` (one row per image; a slice of a larger
        batch's draw gives each image what it gets in the whole batch: training on several processes)."""
        x = _check_batch(x, "Augment")
        if self.is_identity:
            return x.copy()
        if not self.geometric:
            out = x.copy()
            out[p["flip"]] = out[p["flip"]][..., ::-1]
            return out
        maps = affine_inverse_maps(x.shape[2:], p["degrees"], p["scale"], p["translate"], p["flip"])
        return warp_affine(x, maps, self.fill_mode, self.fill)

    def get_config(self) -> dict[str, Any]:
        """JSON-able constructor arguments."""
        return {
            "rotation": list(self.rotation),
            "flip": self.flip_p,
            "zoom": list(self.zoom),
            "translate": list(self.translate),
            "fill_mode": self.fill_mode,
            "fill": self.fill,
            "seed": self.seed,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"Augment({args})"
