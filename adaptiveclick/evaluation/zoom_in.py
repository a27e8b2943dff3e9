"""Zoom-in, the SimpleClick/AdaptiveClick ("cvpr" mode) variant (protocol.md A.5).

Boxes are ``(rmin, rmax, cmin, cmax)`` with inclusive bounds.  The ROI is recomputed from the previous
probability map and the positive clicks, kept while it stays consistent, and the 4-channel network input
(RGB + previous mask) is cropped to it and resized to a fixed target size (aspect ratio not preserved).
Parameters (A.5): expansion 1.4, minimum crop side 200, ROI recompute IoU 0.5, ROI probability threshold
0.5 (strict), target 448 x 448 (672 x 672 for DAVIS).
"""

from dataclasses import dataclass
from numbers import Integral, Real
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from adaptiveclick.clicks import Click
from adaptiveclick.utils.host import host_arrays

__all__ = ["ZoomInParams", "ZoomIn", "mask_bbox", "expand_box", "clamp_box", "box_iou", "object_roi",
           "clicks_inside"]

Box = Tuple[int, int, int, int]


@dataclass(frozen=True)
class ZoomInParams:
    """Zoom-in settings; the defaults are AdaptiveClick's (``get_predictor_and_zoomin_params``, A.5)."""

    target_size: Tuple[int, int] = (448, 448)
    expansion_ratio: float = 1.4
    min_crop_size: int = 200
    recompute_iou: float = 0.5
    prob_threshold: float = 0.5

    @classmethod
    def from_config(cls, zoom_cfg, target_size=None) -> "ZoomInParams":
        """The parameters of a config's ``TEST.NOC.ZOOM_IN`` node; ``target_size`` replaces its TARGET_SIZE."""
        return cls(target_size=tuple(zoom_cfg.TARGET_SIZE if target_size is None else target_size),
                   expansion_ratio=zoom_cfg.EXPANSION_RATIO, min_crop_size=zoom_cfg.MIN_CROP_SIZE,
                   recompute_iou=zoom_cfg.RECOMPUTE_IOU, prob_threshold=zoom_cfg.PROB_THRESHOLD)

    def __post_init__(self):
        size = self.target_size
        if (not isinstance(size, (tuple, list)) or len(size) != 2
                or not all(isinstance(s, Integral) and not isinstance(s, bool) and s > 0 for s in size)):
            raise ValueError(f"target_size must be (height, width) with positive integers, got {size!r}")
        object.__setattr__(self, "target_size", (int(size[0]), int(size[1])))
        for name, low in (("expansion_ratio", 0.0), ("min_crop_size", 0.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real) or not value > low:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name in ("recompute_iou", "prob_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value!r}")


def mask_bbox(mask: torch.Tensor) -> Optional[Box]:
    """Inclusive bounding box of the True pixels of a 2-D bool tensor, or None if there are none."""
    return _bbox_of_projections(*_projections(mask))


def _projections(mask: torch.Tensor) -> Tuple[np.ndarray, np.ndarray]:
    """Which rows and which columns of a 2-D bool tensor hold a True pixel, as host arrays: one copy of H + W
    flags (one synchronisation on a GPU, where searching the device tensors took several)."""
    rows, cols = host_arrays([mask.any(dim=1), mask.any(dim=0)])
    return rows, cols


def _bbox_of_projections(rows: np.ndarray, cols: np.ndarray) -> Optional[Box]:
    r, c = np.flatnonzero(rows), np.flatnonzero(cols)
    if r.size == 0:
        return None
    return int(r[0]), int(r[-1]), int(c[0]), int(c[-1])


def expand_box(box: Box, ratio: float, min_size: float) -> Box:
    """Scale a box about its centre to max(ratio x side, min_size) per axis; bounds rounded half-to-even.

    May leave the image; see :func:`clamp_box`.  Example (protocol.md C9): rows 100..199, cols 50..129,
    ratio 1.4, min 200 -> (50, 250, -10, 190).
    """
    rmin, rmax, cmin, cmax = box
    rc, cc = 0.5 * (rmin + rmax), 0.5 * (cmin + cmax)
    height = max(ratio * (rmax - rmin + 1), min_size)
    width = max(ratio * (cmax - cmin + 1), min_size)
    # Python's round() rounds half to even, as the official code does (A.5)
    return (int(round(rc - 0.5 * height)), int(round(rc + 0.5 * height)),
            int(round(cc - 0.5 * width)), int(round(cc + 0.5 * width)))


def clamp_box(box: Box, shape: Tuple[int, int]) -> Box:
    """Clamp a box to an image of ``shape`` (H, W)."""
    rmin, rmax, cmin, cmax = box
    return max(rmin, 0), min(rmax, shape[0] - 1), max(cmin, 0), min(cmax, shape[1] - 1)


def _interval_iou(a0: int, a1: int, b0: int, b1: int) -> float:
    inter = max(0, min(a1, b1) - max(a0, b0) + 1)
    return inter / (max(a1, b1) - min(a0, b0) + 1)


def box_iou(a: Box, b: Box) -> float:
    """Product of the row and column IoUs of two inclusive boxes (A.5)."""
    return _interval_iou(a[0], a[1], b[0], b[1]) * _interval_iou(a[2], a[3], b[2], b[3])


def clicks_inside(roi: Box, clicks: Sequence[Click]) -> bool:
    """True iff every positive click satisfies rmin <= row < rmax and cmin <= col < cmax (last row/col: outside)."""
    rmin, rmax, cmin, cmax = roi
    return all(rmin <= c.row < rmax and cmin <= c.col < cmax for c in clicks if c.is_positive)


def object_roi(prev_probs: torch.Tensor, clicks: Sequence[Click], params: ZoomInParams) -> Optional[Box]:
    """Candidate ROI: box of (prev_probs > threshold) plus the positive click pixels, expanded and clamped.

    None when the thresholded previous mask is empty (the caller then uses the whole image).
    """
    box = _bbox_of_projections(*_projections(prev_probs > params.prob_threshold))
    if box is None:
        return None
    # the box of the mask with the positive click pixels set (A.5): the mask's box grown to hold each click
    rmin, rmax, cmin, cmax = box
    for c in clicks:
        if c.is_positive:
            rmin, rmax, cmin, cmax = min(rmin, c.row), max(rmax, c.row), min(cmin, c.col), max(cmax, c.col)
    box = expand_box((rmin, rmax, cmin, cmax), params.expansion_ratio, params.min_crop_size)
    return clamp_box(box, tuple(prev_probs.shape))


class ZoomIn:
    """Per-instance zoom-in state: the current ROI of an image of ``image_shape`` (H, W).

    Per click: :meth:`update` (with the previous full-resolution probabilities and all clicks so far),
    then :meth:`crop` the network input, :meth:`map_clicks`, run the network, and :meth:`paste` its
    probabilities back into a full-resolution map (zero outside the ROI).
    """

    def __init__(self, params: ZoomInParams, image_shape: Tuple[int, int]):
        if not isinstance(params, ZoomInParams):
            raise TypeError(f"params must be a ZoomInParams, got {type(params).__name__}")
        self.params = params
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        self.roi: Optional[Box] = None

    def update(self, prev_probs: torch.Tensor, clicks: Sequence[Click]) -> bool:
        """Recompute the ROI if needed (A.5 steps 1-2); returns whether it changed."""
        if tuple(prev_probs.shape) != self.image_shape:
            raise ValueError(f"prev_probs has shape {tuple(prev_probs.shape)}, expected {self.image_shape}")
        candidate = object_roi(prev_probs, clicks, self.params)
        if candidate is None:
            candidate = (0, self.image_shape[0] - 1, 0, self.image_shape[1] - 1)
        if (self.roi is None or not clicks_inside(self.roi, clicks)
                or box_iou(candidate, self.roi) < self.params.recompute_iou):
            changed = candidate != self.roi
            self.roi = candidate
            return changed
        return False

    def _roi(self) -> Box:
        if self.roi is None:
            raise RuntimeError("ZoomIn.update() must be called before crop/map_clicks/paste")
        return self.roi

    def crop(self, tensor: torch.Tensor) -> torch.Tensor:
        """Crop a (B, C, H, W) tensor to the ROI and resize it bilinearly (align_corners=True) to the target; a
        uint8 image is resized as float32 (its 0..255 values), so the crop is float32 either way."""
        rmin, rmax, cmin, cmax = self._roi()
        if tensor.ndim != 4 or tuple(tensor.shape[-2:]) != self.image_shape:
            raise ValueError(f"tensor must be (B, C, {self.image_shape[0]}, {self.image_shape[1]}), "
                             f"got {tuple(tensor.shape)}")
        patch = tensor[:, :, rmin:rmax + 1, cmin:cmax + 1]
        if not patch.is_floating_point():
            patch = patch.float()
        return F.interpolate(patch, size=self.params.target_size, mode="bilinear", align_corners=True)

    def map_clicks(self, clicks: Sequence[Click]) -> np.ndarray:
        """Clicks in target coordinates: float64 (K, 3) rows (row', col', is_positive), A.5 step 4."""
        rmin, rmax, cmin, cmax = self._roi()
        th, tw = self.params.target_size
        out = np.empty((len(clicks), 3), dtype=np.float64)
        for i, c in enumerate(clicks):
            out[i] = (th * (c.row - rmin) / (rmax - rmin + 1), tw * (c.col - cmin) / (cmax - cmin + 1),
                      float(c.is_positive))
        return out

    def paste(self, probs: torch.Tensor) -> torch.Tensor:
        """Resize (B, 1, th, tw) ROI probabilities to the ROI size (bilinear, align_corners=True) and paste
        them into an all-zero (B, 1, H, W) map."""
        rmin, rmax, cmin, cmax = self._roi()
        if probs.ndim != 4:
            raise ValueError(f"probs must be (B, 1, h, w), got {tuple(probs.shape)}")
        resized = F.interpolate(probs, size=(rmax - rmin + 1, cmax - cmin + 1), mode="bilinear",
                                align_corners=True)
        full = probs.new_zeros(probs.shape[:2] + self.image_shape)
        full[:, :, rmin:rmax + 1, cmin:cmax + 1] = resized
        return full
