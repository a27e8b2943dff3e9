"""Input checks and the reduction shared by every loss of :mod:`adaptiveclick.losses`.

Every loss takes ``logits`` and ``targets`` of shape (K, P) -- K predicted masks (matched pairs, or images
for the pixel-wise baseline), P points (grid cells or sampled points) -- and ``num_masks``, and returns
``sum over rows of (per-row loss) / num_masks``; per-pixel losses use the mean over the P points as the
per-row loss (the reduction of the official criterion, model.md §5.4 step 7).
"""

import contextlib
import contextvars
import numbers

import torch

__all__ = ["prepare", "reduce_map", "reduce_rows", "check_num_masks", "one_minus_pt", "empty_loss",
           "targets_checked", "targets_are_checked", "in_unit_interval", "check_unit_interval"]

# set while a caller that has already checked the targets' values runs the losses (see targets_checked)
_TARGETS_CHECKED = contextvars.ContextVar("adaptiveclick_loss_targets_checked", default=False)


@contextlib.contextmanager
def targets_checked():
    """Within this block the losses skip the value check of their targets (finite, in [0, 1]).

    For a caller that has checked the values once itself, e.g. the set criterion, which checks a batch's target
    masks with one flag and then runs two losses on each of its ~10 decoder outputs: on a GPU each check is a
    read of a device value, a wait of the host.  The type and shape checks still run.  Targets derived from
    checked ones by bilinear point sampling stay in [0, 1] (a convex combination)."""
    token = _TARGETS_CHECKED.set(True)
    try:
        yield
    finally:
        _TARGETS_CHECKED.reset(token)


def targets_are_checked():
    """Whether the caller runs inside :func:`targets_checked`."""
    return _TARGETS_CHECKED.get()


def prepare(logits, targets, name):
    """Validate the inputs of loss ``name``; returns fp32 (fp64 kept) logits and targets.

    Half-precision logits (fp16/bf16, e.g. under autocast) are computed in fp32.  Targets may be bool or
    floating (soft targets from point sampling lie in [0, 1]).
    """
    if not isinstance(logits, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise TypeError(f"{name}: logits and targets must be torch.Tensor, got {type(logits).__name__} "
                        f"and {type(targets).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"{name}: logits must be a floating tensor, got {logits.dtype}")
    if not (targets.is_floating_point() or targets.dtype == torch.bool):
        raise TypeError(f"{name}: targets must be floating or bool, got {targets.dtype}")
    if logits.ndim != 2:
        raise ValueError(f"{name}: logits must have shape (num_masks, num_points), got {tuple(logits.shape)}")
    if targets.shape != logits.shape:
        raise ValueError(f"{name}: targets shape {tuple(targets.shape)} != logits shape {tuple(logits.shape)}")
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    x = logits.to(dtype)
    y = targets.to(dtype)
    if not targets_are_checked():
        check_unit_interval(y, f"{name}: targets")
    return x, y


def in_unit_interval(t):
    """Whether every value of ``t`` lies in [0, 1], with one flag read on the host (on a GPU each read waits for
    it): the minimum and maximum are NaN if any value is, and every comparison with NaN is False."""
    low, high = torch.aminmax(t)
    return bool((low >= 0) & (high <= 1))


def check_unit_interval(t, what):
    """ValueError naming ``what`` ("... contain NaN" / "... must lie in [0, 1], got values in [lo, hi]") unless
    every value of ``t`` lies in [0, 1]; one host read when they do (:func:`in_unit_interval`)."""
    if t.numel() == 0 or in_unit_interval(t):
        return
    if torch.isnan(t).any():
        raise ValueError(f"{what} contain NaN")
    low, high = torch.aminmax(t)
    raise ValueError(f"{what} must lie in [0, 1], got values in [{low.item()}, {high.item()}]")


def reduce_map(loss_map, logits, num_masks, name):
    """``sum over rows of mean over points of loss_map / num_masks``; zero (with a gradient) for no rows, and
    for rows of no points (a crop whose pixels are all ignored): the isegm losses divide their sums by
    ``count + eps`` and give 0 there, where a plain mean would give NaN."""
    check_num_masks(num_masks, loss_map.shape[0], name)
    if loss_map.shape[0] == 0 or loss_map.shape[1] == 0:
        return empty_loss(logits)
    return reduce_rows(loss_map.mean(1), num_masks)


def check_num_masks(num_masks, rows, name):
    """``num_masks``: a number >= 0 (0 only without rows) or a one-element tensor (not inspected: no sync)."""
    if isinstance(num_masks, numbers.Number):
        if not num_masks >= 0:
            raise ValueError(f"{name}: num_masks must be >= 0, got {num_masks}")
        if num_masks == 0 and rows > 0:
            raise ValueError(f"{name}: num_masks is 0 but {rows} masks were given")
    elif not isinstance(num_masks, torch.Tensor) or num_masks.numel() != 1:
        raise TypeError(f"{name}: num_masks must be a number or a one-element tensor, got {num_masks!r}")


def empty_loss(logits):
    """Zero loss, connected to ``logits`` so that backward() gives a (zero) gradient."""
    return logits.sum() * 0.0


def reduce_rows(per_row, num_masks):
    """Sum of per-row losses divided by ``num_masks``."""
    return per_row.sum() / num_masks


def one_minus_pt(x, y):
    """1 - p_t with p = sigmoid(x), p_t = p*y + (1-p)*(1-y), as sigmoid(x)*(1-y) + sigmoid(-x)*y.

    Written without the cancellation of ``1 - p_t`` so that it stays accurate (not rounded to 0) for
    confident logits.  A floor of 1e-30 keeps the gradients of powers (1 - p_t)**gamma finite for gamma < 1
    when the value underflows; below it the true gradient is below 1e-30 anyway.
    """
    return (torch.sigmoid(x) * (1 - y) + torch.sigmoid(-x) * y).clamp_min(1e-30)
