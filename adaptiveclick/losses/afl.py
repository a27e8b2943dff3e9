"""Adaptive Focal Loss (AFL), Lin et al., AdaptiveClick, TNNLS 2024, §III-C (Eqs. 8-20).

Computed exactly as the official ``sigmoid_adaptive_focal_loss`` (lab206/AdaptiveClick criterion.py
L122-165; restated in /work/shared/spec/model.md §5.4).  For a row k of P points with p = sigmoid(x),
p_t = p*y + (1-p)*(1-y) and ce = -log p_t:

* ADA (adaptive difficulty adjustment), no gradient: gamma_k = gamma + (1 - S_k / (N_k + eps)), S_k the sum of
  p_t over the foreground points (y > 0.5), N_k their number;
* b_i = (1 - p_t,i) ** gamma_k (with gradient);
* AGR (adaptive gradient representation), no gradient: w_k = P / ((1 + delta * gamma_k) * sum_i b_i + eps);
* l_i = w_k * b_i * ce_i + alpha * (1 - p_t,i) ** (gamma_k + 1)   (the Poly-1 term, Eq. 20);
* if epsilon >= 0: l_i *= epsilon * y_i + (1 - epsilon) * (1 - y_i);
* loss = sum_k mean_i l_i / num_masks.

Switches: ``ada=False`` keeps gamma_k = gamma; ``agr=False`` sets w_k = 1; ``epsilon < 0`` drops the class
weighting.  With both off the loss is the Poly-1 focal loss; with alpha = 0 also, focal loss; with gamma = 0
also, BCE (paper §III-C3).

The pixel-wise form of the isegm code base (``AdaptiveFocalLossSigmoid``, used when AFL is plugged into
SimpleClick-style models) is the same computation on one row per image with ignored pixels removed, no
epsilon weighting and the pixel mean: ``adaptive_focal_loss(logits[keep][None], targets[keep][None], 1,
epsilon=-1)``.
"""

import torch
from torch import nn

from detectron2.config import configurable

from ._common import one_minus_pt, prepare, reduce_map

__all__ = ["adaptive_focal_loss", "adaptive_focal_loss_map", "AdaptiveFocalLoss"]


def adaptive_focal_loss_map(logits, targets, *, epsilon=0.5, gamma=2.0, delta=0.4, alpha=1.0, eps=1e-12,
                            ada=True, agr=True):
    """Per-point AFL terms l_i (K, P) before the reduction (the module docstring); gamma_k and w_k come from
    each whole row.  Half-precision inputs are computed in fp32."""
    x, y = prepare(logits, targets, "adaptive_focal_loss")
    if gamma < 0:
        raise ValueError(f"adaptive_focal_loss: gamma must be >= 0, got {gamma}")
    num_points = x.shape[1]
    ce = nn.functional.binary_cross_entropy_with_logits(x, y, reduction="none")
    q = one_minus_pt(x, y)  # 1 - p_t
    with torch.no_grad():
        if ada:
            fg = (y > 0.5).to(x.dtype)
            p_t = 1 - q
            gamma_k = gamma + (1 - (p_t * fg).sum(1) / (fg.sum(1) + eps))
        else:
            gamma_k = torch.full((x.shape[0],), float(gamma), dtype=x.dtype, device=x.device)
        gamma_k = gamma_k[:, None]
    b = q ** gamma_k
    if agr:
        with torch.no_grad():
            w = num_points / ((1 + delta * gamma_k) * b.sum(1, keepdim=True) + eps)
        loss = w * b * ce
    else:
        loss = b * ce
    loss = loss + alpha * q ** (gamma_k + 1)
    if epsilon >= 0:
        loss = loss * (epsilon * y + (1 - epsilon) * (1 - y))
    return loss


def adaptive_focal_loss(logits, targets, num_masks, *, epsilon=0.5, gamma=2.0, delta=0.4, alpha=1.0, eps=1e-12,
                        ada=True, agr=True):
    """Adaptive Focal Loss of (K, P) ``logits`` against targets in [0, 1]; see the module docstring.

    Defaults are the official ones (epsilon 0.5, gamma 2, delta 0.4 -- paper Table XII --, alpha 1, eps 1e-12).
    Half-precision inputs are computed in fp32.  ``num_masks`` may be a number or a one-element tensor.
    """
    loss = adaptive_focal_loss_map(logits, targets, epsilon=epsilon, gamma=gamma, delta=delta, alpha=alpha,
                                   eps=eps, ada=ada, agr=agr)
    return reduce_map(loss, logits, num_masks, "adaptive_focal_loss")


class AdaptiveFocalLoss(nn.Module):
    """:func:`adaptive_focal_loss` as a module whose parameters come from ``MODEL.AFL.*``."""

    @configurable
    def __init__(self, *, epsilon=0.5, gamma=2.0, delta=0.4, alpha=1.0, eps=1e-12, ada=True, agr=True):
        super().__init__()
        if gamma < 0 or delta < 0 or eps <= 0:
            raise ValueError(f"AdaptiveFocalLoss: need gamma >= 0, delta >= 0, eps > 0; got gamma={gamma}, "
                             f"delta={delta}, eps={eps}")
        self.kwargs = dict(epsilon=epsilon, gamma=gamma, delta=delta, alpha=alpha, eps=eps, ada=ada, agr=agr)

    @classmethod
    def from_config(cls, cfg):
        a = cfg.MODEL.AFL
        return dict(epsilon=a.EPSILON, gamma=a.GAMMA, delta=a.DELTA, alpha=a.ALPHA, eps=a.EPS, ada=a.ADA,
                    agr=a.AGR)

    def forward(self, logits, targets, num_masks):
        return adaptive_focal_loss(logits, targets, num_masks, **self.kwargs)

    def extra_repr(self):
        return ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
