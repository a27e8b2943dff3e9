"""Click maps as disks (the model's click input), protocol.md B.3."""

import math
from numbers import Real
from typing import Sequence, Tuple, Union

import numpy as np

from .click import Click

__all__ = ["encode_clicks"]


def _click_rows(clicks) -> np.ndarray:
    """Clicks as a float64 (N, 3) array of (row, col, is_positive) from Click objects or an (N, 3) array."""
    if isinstance(clicks, np.ndarray) or hasattr(clicks, "__array__"):
        arr = np.asarray(clicks, dtype=np.float64)
        if arr.size == 0:
            return np.zeros((0, 3))
        if arr.ndim != 2 or arr.shape[1] != 3:
            raise ValueError(f"clicks array must have shape (N, 3) = (row, col, is_positive), got {arr.shape}")
        return arr
    rows = []
    for i, click in enumerate(clicks):
        if not isinstance(click, Click):
            raise TypeError(f"clicks[{i}] must be a Click, got {type(click).__name__}")
        rows.append((click.row, click.col, float(click.is_positive)))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3)


def encode_clicks(clicks: Union[Sequence[Click], np.ndarray], shape: Tuple[int, int],
                  radius: float = 5) -> np.ndarray:
    """Rasterise clicks as disks: a float32 (2, H, W) array, channel 0 positive, channel 1 negative.

    Pixel (r, c) of a channel is 1 iff some click (y, x) of that polarity has (r - y)^2 + (c - x)^2 <=
    radius^2 (inclusive), evaluated in float32 as the official ``DistMaps``.  ``clicks`` is a sequence of :class:`Click` or an (N, 3) array of
    (row, col, is_positive) whose coordinates may be fractional (clicks mapped by a zoom-in).  As in the
    official ``DistMaps``, an array row is padding iff max(row, col) < 0; any other row is a click even
    when its centre lies outside the map (only the part of its disk inside is drawn).
    """
    if (not isinstance(shape, (tuple, list)) or len(shape) != 2
            or not all(isinstance(s, (int, np.integer)) and s > 0 for s in shape)):
        raise ValueError(f"shape must be (H, W) with positive integers, got {shape!r}")
    if isinstance(radius, bool) or not isinstance(radius, Real) or not radius > 0 or not math.isfinite(radius):
        raise ValueError(f"radius must be a positive finite number, got {radius!r}")
    height, width = int(shape[0]), int(shape[1])
    rows = _click_rows(clicks)
    if not np.isfinite(rows).all():
        raise ValueError("clicks contain NaN or infinite values")
    maps = np.zeros((2, height, width), dtype=np.float32)
    # float32 arithmetic, as the official DistMaps (torch float32): with fractional (zoomed) clicks a pixel
    # within float rounding of the circle is in or out by the float32 result, as there
    r2 = np.float32(float(radius) ** 2)
    for y, x, pos in rows:
        if max(y, x) < 0:
            continue  # padding
        if pos not in (0.0, 1.0):
            raise ValueError(f"is_positive must be 0 or 1, got {pos} for the click at ({y}, {x})")
        y32, x32 = np.float32(y), np.float32(x)
        # the bounding square, one pixel wider on each side for the pixels float32 rounding lets in
        r0, r1 = max(0, math.ceil(y - radius) - 1), min(height, math.floor(y + radius) + 2)
        c0, c1 = max(0, math.ceil(x - radius) - 1), min(width, math.floor(x + radius) + 2)
        if r0 >= r1 or c0 >= c1:
            continue  # the disk lies entirely outside the map
        dy2 = (np.arange(r0, r1, dtype=np.float32) - y32)[:, None] ** 2
        dx2 = (np.arange(c0, c1, dtype=np.float32) - x32)[None, :] ** 2
        channel = 0 if pos == 1.0 else 1
        maps[channel, r0:r1, c0:c1][dy2 + dx2 <= r2] = 1.0
    return maps
