"""The losses the paper compares AFL with (Tables V-VIII; formulas in /work/shared/spec/model.md §5.5).

All take (K, P) ``logits``, targets in [0, 1] of the same shape and ``num_masks``, and return
``sum over rows / num_masks`` of a per-row loss: the mean over the P points for the per-pixel losses, the
region score for dice and soft IoU.  p = sigmoid(x), p_t = p*y + (1-p)*(1-y).  Each per-pixel loss also has
a ``*_map`` form returning the (K, P) per-point terms before the reduction (for plots and pixel-wise uses).
"""

import torch
import torch.nn.functional as F

from ._common import check_num_masks, empty_loss, one_minus_pt, prepare, reduce_map, reduce_rows

__all__ = ["bce", "weighted_bce", "balanced_ce", "soft_iou", "focal", "normalized_focal", "poly", "dice",
           "bce_map", "weighted_bce_map", "balanced_ce_map", "focal_map", "normalized_focal_map", "poly_map"]


def _alpha_t(alpha, y):
    # alpha-balancing of Lin et al. 2017 (focal loss, Eq. 3); alpha < 0 disables it
    return alpha * y + (1 - alpha) * (1 - y) if alpha >= 0 else 1.0


def _check_gamma(gamma, name):
    if gamma < 0:
        raise ValueError(f"{name}: gamma must be >= 0, got {gamma}")


def bce_map(logits, targets):
    """Per-point binary cross-entropy -log p_t (paper Eq. 1)."""
    x, y = prepare(logits, targets, "bce")
    return F.binary_cross_entropy_with_logits(x, y, reduction="none")


def bce(logits, targets, num_masks):
    """Binary cross-entropy, mean over points."""
    return reduce_map(bce_map(logits, targets), logits, num_masks, "bce")


def weighted_bce_map(logits, targets, *, pos_weight=2.0):
    """Weighted BCE (Pihur et al. 2007): -[w*y*log p + (1-y)*log(1-p)], the weight on positives only.

    The paper does not give w legibly; 2.0 is our default (``MODEL.LOSS.WBCE.POS_WEIGHT``).
    """
    x, y = prepare(logits, targets, "weighted_bce")
    if pos_weight <= 0:
        raise ValueError(f"weighted_bce: pos_weight must be > 0, got {pos_weight}")
    w = torch.tensor(float(pos_weight), dtype=x.dtype, device=x.device)
    return F.binary_cross_entropy_with_logits(x, y, pos_weight=w, reduction="none")


def weighted_bce(logits, targets, num_masks, *, pos_weight=2.0):
    """Weighted BCE, mean over points (see :func:`weighted_bce_map`)."""
    return reduce_map(weighted_bce_map(logits, targets, pos_weight=pos_weight), logits, num_masks, "weighted_bce")


def balanced_ce_map(logits, targets):
    """Class-balanced CE of HED (Xie & Tu, ICCV 2015): -[b*y*log p + (1-b)*(1-y)*log(1-p)], b = #neg / #all
    per row (points with y <= 0.5 count as negative); b depends on the targets only."""
    x, y = prepare(logits, targets, "balanced_ce")
    beta = (y <= 0.5).to(x.dtype).mean(1, keepdim=True)
    # -log p = softplus(-x), -log(1-p) = softplus(x): stable for large |x|
    return beta * y * F.softplus(-x) + (1 - beta) * (1 - y) * F.softplus(x)


def balanced_ce(logits, targets, num_masks):
    """Class-balanced CE, mean over points (see :func:`balanced_ce_map`)."""
    return reduce_map(balanced_ce_map(logits, targets), logits, num_masks, "balanced_ce")


def focal_map(logits, targets, *, alpha=0.25, gamma=2.0):
    """Per-point focal loss (Lin et al. 2017; paper Eq. 2): -alpha_t * (1-p_t)**gamma * log p_t.

    alpha_t = alpha*y + (1-alpha)*(1-y); ``alpha < 0`` disables the balancing (alpha_t = 1).
    """
    x, y = prepare(logits, targets, "focal")
    _check_gamma(gamma, "focal")
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    return _alpha_t(alpha, y) * one_minus_pt(x, y) ** gamma * ce


def focal(logits, targets, num_masks, *, alpha=0.25, gamma=2.0):
    """Focal loss, mean over points (see :func:`focal_map`)."""
    return reduce_map(focal_map(logits, targets, alpha=alpha, gamma=gamma), logits, num_masks, "focal")


def normalized_focal_map(logits, targets, *, alpha=0.25, gamma=2.0, eps=1e-12):
    """Per-point normalised focal loss of RITM (Sofiiuk et al. 2022): the focal weights (1-p_t)**gamma rescaled
    per row by P / sum(1-p_t)**gamma (the rescaling factor without gradient), times alpha_t.

    RITM/SimpleClick training configs use alpha 0.5; the class default (and ours) is 0.25.
    """
    x, y = prepare(logits, targets, "normalized_focal")
    _check_gamma(gamma, "normalized_focal")
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    beta = one_minus_pt(x, y) ** gamma
    with torch.no_grad():
        scale = x.shape[1] / (beta.sum(1, keepdim=True) + eps)
    return _alpha_t(alpha, y) * beta * scale * ce


def normalized_focal(logits, targets, num_masks, *, alpha=0.25, gamma=2.0, eps=1e-12):
    """Normalised focal loss, mean over points (see :func:`normalized_focal_map`)."""
    loss = normalized_focal_map(logits, targets, alpha=alpha, gamma=gamma, eps=eps)
    return reduce_map(loss, logits, num_masks, "normalized_focal")


def poly_map(logits, targets, *, alpha=-1.0, gamma=2.0, epsilon=1.0):
    """Per-point Poly-1 focal loss (Leng et al., PolyLoss, ICLR 2022; paper Eq. 3):
    focal + epsilon * (1-p_t)**(gamma+1).

    ``alpha`` is the focal alpha-balancing, off (-1) by default so that this equals AFL with ADA, AGR and the
    class weighting off; epsilon 1 matches AFL's alpha = 1.
    """
    x, y = prepare(logits, targets, "poly")
    _check_gamma(gamma, "poly")
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    q = one_minus_pt(x, y)
    return _alpha_t(alpha, y) * q ** gamma * ce + epsilon * q ** (gamma + 1)


def poly(logits, targets, num_masks, *, alpha=-1.0, gamma=2.0, epsilon=1.0):
    """Poly-1 focal loss, mean over points (see :func:`poly_map`)."""
    return reduce_map(poly_map(logits, targets, alpha=alpha, gamma=gamma, epsilon=epsilon), logits, num_masks,
                      "poly")


def soft_iou(logits, targets, num_masks, *, eps=1e-8):
    """Soft IoU loss (isegm ``SoftIoU``): 1 - sum(p*y) / (sum(max(p, y)) + eps) per row."""
    x, y = prepare(logits, targets, "soft_iou")
    check_num_masks(num_masks, x.shape[0], "soft_iou")
    if x.shape[0] == 0:
        return empty_loss(logits)
    p = torch.sigmoid(x)
    return reduce_rows(1 - (p * y).sum(1) / (torch.maximum(p, y).sum(1) + eps), num_masks)


def dice(logits, targets, num_masks, *, smooth=1.0):
    """Dice loss as Mask2Former / the official criterion: 1 - (2*sum(p*y) + s) / (sum(p) + sum(y) + s) per row."""
    x, y = prepare(logits, targets, "dice")
    check_num_masks(num_masks, x.shape[0], "dice")
    if x.shape[0] == 0:
        return empty_loss(logits)
    p = torch.sigmoid(x)
    return reduce_rows(1 - (2 * (p * y).sum(1) + smooth) / (p.sum(1) + y.sum(1) + smooth), num_masks)
