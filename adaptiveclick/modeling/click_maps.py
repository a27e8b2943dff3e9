"""Clicks as disk maps in torch (model.md §1.2), batched and without a Python loop over clicks.

A click row is (row, col, is_positive); a row is padding iff both coordinates are negative (the official
``DistMaps`` rule, also used by :func:`adaptiveclick.clicks.encode_clicks`).  Pixel (r, c) of the positive
(negative) map is 1 iff some valid positive (negative) click (y, x) has (r - y)^2 + (c - x)^2 <= radius^2.

Instead of a dense (B, N, H, W) distance volume, each click only visits the pixels of its bounding square
(at most floor(2 radius) + 1 pixels per side) and writes them into the map with a scatter; the result is the
same for integer and fractional coordinates.
"""

import math

import numpy as np
import torch

from adaptiveclick.utils.host import host_arrays

__all__ = ["check_clicks", "click_disk_maps"]


def check_clicks(clicks, image_size, outside="error", name="clicks"):
    """Validate one click tensor (N, 3) of (row, col, is_positive) for an image of ``image_size`` (H, W).

    Raises ``TypeError``/``ValueError`` naming ``name`` for: a wrong type, shape or dtype, non-finite values,
    ``is_positive`` not in {0, 1} on a non-padding row, and (with ``outside="error"``) a non-padding click
    whose centre lies outside [0, H) x [0, W).  ``outside="draw"`` accepts such clicks (the part of the
    disk inside the image is drawn, as the official predictor does for clicks mapped outside a zoom-in crop).
    """
    if not isinstance(clicks, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, 3), got {type(clicks).__name__}")
    if clicks.ndim != 2 or clicks.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3) = (row, col, is_positive), got {tuple(clicks.shape)}")
    if clicks.dtype == torch.bool or clicks.is_complex():
        raise TypeError(f"{name} must be an integer or floating tensor, got {clicks.dtype}")
    if outside not in ("error", "draw"):
        raise ValueError(f"outside must be 'error' or 'draw', got {outside!r}")
    if clicks.shape[0] == 0:
        return
    # checked on the host in NumPy: a click tensor is a few rows, and on a GPU one copy (one synchronisation)
    # replaces a synchronising read per test; a CPU tensor is viewed, not copied, and runs no torch operator
    values = host_arrays([clicks])[0].astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    padding = (values[:, 0] < 0) & (values[:, 1] < 0)
    flags = values[:, 2]
    bad_flag = ~padding & (flags != 0) & (flags != 1)
    if bad_flag.any():
        i = int(np.flatnonzero(bad_flag)[0])
        raise ValueError(f"{name}[{i}] = {_row_text(values[i], clicks.dtype)}: is_positive must be 0 or 1")
    if outside == "error":
        height, width = image_size
        out = ~padding & ((values[:, 0] < 0) | (values[:, 0] >= height) | (values[:, 1] < 0) | (values[:, 1] >= width))
        if out.any():
            i = int(np.flatnonzero(out)[0])
            raise ValueError(f"{name}[{i}] = {_row_text(values[i], clicks.dtype)} lies outside the {height}x{width} "
                             "image; clicks must satisfy 0 <= row < H and 0 <= col < W (padding rows have row < 0 "
                             "and col < 0)")


def _row_text(row, dtype) -> str:
    """A click row as a list, integers for an integer tensor (as ``tensor.tolist()`` prints it)."""
    return str([int(v) for v in row] if not dtype.is_floating_point else [float(v) for v in row])


def click_disk_maps(clicks, size, radius=5.0):
    """Rasterise clicks as disks.

    Args:
        clicks: (B, N, 3) tensor of (row, col, is_positive) rows, integer or fractional coordinates; rows with
            row < 0 and col < 0 are padding.  Not validated here (see :func:`check_clicks`).
        size: (H, W) of the maps.
        radius: disk radius in pixels (official ``norm_radius`` 5); the boundary is included.
    Returns:
        (B, 2, H, W) float32 maps on the device of ``clicks``: channel 0 positive, channel 1 negative.
    """
    if clicks.ndim != 3 or clicks.shape[-1] != 3:
        raise ValueError(f"clicks must have shape (B, N, 3), got {tuple(clicks.shape)}")
    if not radius > 0 or not math.isfinite(radius):
        raise ValueError(f"radius must be a positive finite number, got {radius!r}")
    height, width = int(size[0]), int(size[1])
    batch, num = clicks.shape[:2]
    device = clicks.device
    maps = torch.zeros(batch * 2 * height * width, dtype=torch.float32, device=device)
    if num == 0:
        return maps.view(batch, 2, height, width)
    pts = clicks.to(torch.float32)
    rows, cols, flags = pts[..., 0], pts[..., 1], pts[..., 2]
    valid = ~((rows < 0) & (cols < 0))
    # pixels of the bounding square: ceil(y - r) + k for k = 0..floor(2r) covers every integer in [y - r, y + r]
    span = int(math.floor(2 * radius)) + 1
    offsets = torch.arange(span, device=device, dtype=torch.float32)
    pix_r = torch.ceil(rows - radius)[..., None] + offsets  # (B, N, S)
    pix_c = torch.ceil(cols - radius)[..., None] + offsets
    dist2 = (pix_r - rows[..., None])[..., :, None] ** 2 + (pix_c - cols[..., None])[..., None, :] ** 2
    in_r = (pix_r >= 0) & (pix_r < height)
    in_c = (pix_c >= 0) & (pix_c < width)
    hit = (dist2 <= radius * radius) & in_r[..., :, None] & in_c[..., None, :] & valid[..., None, None]
    channel = (flags != 1).long()  # 0 positive, 1 negative
    base = (torch.arange(batch, device=device)[:, None] * 2 + channel) * (height * width)  # (B, N)
    flat = base[..., None, None] + pix_r.long().clamp(0, height - 1)[..., :, None] * width \
        + pix_c.long().clamp(0, width - 1)[..., None, :]
    # misses point at a clamped in-range pixel with value 0, which the max-scatter leaves unchanged
    maps.scatter_reduce_(0, flat.reshape(-1), hit.reshape(-1).to(torch.float32), reduce="amax")
    return maps.view(batch, 2, height, width)
