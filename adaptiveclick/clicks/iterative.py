"""The iterative-training click rule (protocol.md B.4, model.md 6.4): one extra click from the current error."""

from numbers import Integral
from typing import Optional

import numpy as np

from .click import Click, as_mask, as_optional_mask, check_rng
from .oracle import padded_distance_transform

__all__ = ["next_training_click", "iterative_click_slot", "write_iterative_click", "PREV_THRESHOLD"]

#: Probability threshold of the previous prediction (strict on both sides: exactly 0.49 is no error).
PREV_THRESHOLD = 0.49


def next_training_click(gt, prev, rng: np.random.Generator, ignore=None) -> Optional[Click]:
    """A click drawn from the larger error region of the previous prediction, or None if there is no error.

    Args:
        gt: (H, W) binary target (may be empty: a background-only sample).
        prev: (H, W) previous probabilities in [0, 1].
        rng: the random generator.
        ignore: optional (H, W) binary map excluded from both error regions (None = official behaviour).

    FN = gt AND prev < 0.49, FP = NOT gt AND prev > 0.49; distances by OpenCV's mask-5 chamfer transform on
    the 1-pixel-padded masks; positive iff max(D_fn) > max(D_fp) (tie negative); the click is uniform over
    the pixels of the winning map with D > max / 2 (strict).
    """
    rng = check_rng(rng)
    gt = as_mask(gt, "gt")
    prev = np.asarray(prev)
    if prev.shape != gt.shape:
        raise ValueError(f"prev has shape {prev.shape}, expected {gt.shape} (same as gt)")
    if not np.issubdtype(prev.dtype, np.floating) and not np.issubdtype(prev.dtype, np.integer):
        raise ValueError(f"prev must hold probabilities, got dtype {prev.dtype}")
    if not np.isfinite(prev).all() or prev.min(initial=0) < 0 or prev.max(initial=0) > 1:
        raise ValueError("prev must hold finite probabilities in [0, 1]")
    valid = ~as_optional_mask(ignore, "ignore", gt.shape)
    fn = gt & (prev < PREV_THRESHOLD) & valid
    fp = ~gt & (prev > PREV_THRESHOLD) & valid
    d_fn = padded_distance_transform(fn, mask_size=5)
    d_fp = padded_distance_transform(fp, mask_size=5)
    m_fn, m_fp = d_fn.max(), d_fp.max()
    if m_fn == 0 and m_fp == 0:
        return None
    is_positive = bool(m_fn > m_fp)
    dist = d_fn if is_positive else d_fp
    candidates = np.flatnonzero(dist > max(m_fn, m_fp) / 2)
    flat = int(candidates[rng.integers(len(candidates))])
    return Click(is_positive, flat // gt.shape[1], flat % gt.shape[1])


def iterative_click_slot(is_positive: bool, iteration: int, max_num_points: int) -> int:
    """Row of the (2K, 3) training layout that iteration ``i`` (1-based) writes: K - i or 2K - i."""
    if isinstance(max_num_points, bool) or not isinstance(max_num_points, Integral) or max_num_points < 1:
        raise ValueError(f"max_num_points must be a positive integer, got {max_num_points!r}")
    if isinstance(iteration, bool) or not isinstance(iteration, Integral) or not 1 <= iteration <= max_num_points:
        raise ValueError(f"iteration must be an integer in [1, {max_num_points}], got {iteration!r}")
    return (max_num_points if is_positive else 2 * max_num_points) - int(iteration)


def write_iterative_click(clicks: np.ndarray, click: Click, iteration: int) -> np.ndarray:
    """Write ``click`` into its slot of a (2K, 3) training click array, in place (overwriting); returns it."""
    if not isinstance(click, Click):
        raise TypeError(f"click must be a Click, got {type(click).__name__}")
    if clicks.ndim != 2 or clicks.shape[1] != 3 or clicks.shape[0] % 2:
        raise ValueError(f"clicks must be a (2K, 3) training click array, got shape {tuple(clicks.shape)}")
    slot = iterative_click_slot(click.is_positive, iteration, clicks.shape[0] // 2)
    clicks[slot, 0] = click.row
    clicks[slot, 1] = click.col
    clicks[slot, 2] = int(click.is_positive)
    return clicks
