"""The evaluation click oracle (the simulated user of RITM / SimpleClick / AdaptiveClick), protocol.md A.3."""

from typing import Iterable, Tuple

import cv2
import numpy as np

from .click import Click, as_mask, as_optional_mask

__all__ = ["padded_distance_transform", "error_masks", "next_click"]

#: OpenCV mask sizes: 0 = exact Euclidean (DIST_MASK_PRECISE), 3 and 5 = chamfer approximations.
_MASK_SIZES = (0, 3, 5)


def padded_distance_transform(mask: np.ndarray, mask_size: int = 0) -> np.ndarray:
    """Euclidean distance of every True pixel of ``mask`` to the nearest False pixel, image border included.

    The mask is padded with one row/column of False on every side before OpenCV's ``DIST_L2`` transform
    and cropped afterwards (protocol.md A.3 step 2-3, A.8 "Padding"), so a pixel on the image edge is at
    distance 1.  ``mask_size`` 0 is exact (evaluation); 5 is the chamfer approximation used by the
    iterative-training rule (B.4).  Returns float32 (H, W); False pixels get 0.
    """
    if mask_size not in _MASK_SIZES:
        raise ValueError(f"mask_size must be one of {_MASK_SIZES}, got {mask_size!r}")
    mask = as_mask(mask, "mask")
    padded = np.pad(mask.astype(np.uint8), 1, mode="constant", constant_values=0)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, mask_size)
    return dist[1:-1, 1:-1]


def error_masks(gt, pred, ignore=None) -> Tuple[np.ndarray, np.ndarray]:
    """False-negative and false-positive masks of binary ``pred`` against binary ``gt``; ignored pixels excluded."""
    gt = as_mask(gt, "gt")
    pred = as_mask(pred, "pred", gt.shape)
    valid = ~as_optional_mask(ignore, "ignore", gt.shape)
    fn = gt & ~pred & valid
    fp = ~gt & pred & valid
    return fn, fp


def next_click(gt, pred, ignore=None, previous_clicks: Iterable[Click] = ()) -> Click:
    """The next click of the simulated user given the ground truth and the current binary prediction.

    Args:
        gt: (H, W) binary ground truth of one object (bool or 0/1); must contain at least one
            non-ignored object pixel.
        pred: (H, W) binary current prediction (the caller thresholds probabilities, ``p > 0.49``).
        ignore: optional (H, W) binary map of pixels that are neither object nor background.
        previous_clicks: clicks already made; their pixels are never clicked again.

    Rule (protocol.md A.3): exact distance transforms of the 1-pixel-padded FN and FP masks, zeroed at
    clicked pixels; the click is positive iff max(D_fn) > max(D_fp) (a tie is negative) and lies at the
    first maximum of the winning map in row-major order.  When no unclicked error pixel is left, both
    maxima are 0 and the official oracle answers a negative click at (0, 0) (protocol.md C5); this is
    reproduced, and it is the one case where a pixel may be clicked twice.
    """
    gt = as_mask(gt, "gt")
    shape = gt.shape
    ignore = as_optional_mask(ignore, "ignore", shape)
    if not (gt & ~ignore).any():
        raise ValueError("gt has no (non-ignored) object pixel; the oracle needs a non-empty object")
    fn, fp = error_masks(gt, pred, ignore)
    not_clicked = np.ones(shape, dtype=bool)
    for i, click in enumerate(previous_clicks):
        if not isinstance(click, Click):
            raise TypeError(f"previous_clicks[{i}] must be a Click, got {type(click).__name__}")
        click.check_inside(shape, f"previous_clicks[{i}]")
        not_clicked[click.row, click.col] = False
    # float32 distances, as OpenCV returns them; the comparison below is done on these values (A.3).
    d_fn = padded_distance_transform(fn) * not_clicked
    d_fp = padded_distance_transform(fp) * not_clicked
    is_positive = bool(d_fn.max() > d_fp.max())
    dist = d_fn if is_positive else d_fp
    # argmax on the C-ordered flat array returns the first maximum in row-major order (A.8).
    row, col = np.unravel_index(int(np.argmax(dist)), shape)
    return Click(is_positive, int(row), int(col))
