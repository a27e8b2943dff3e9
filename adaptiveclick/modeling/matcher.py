"""Hungarian matching of queries to targets (model.md §5.2), solved with SciPy on the CPU.

Cost per (query n, target m) = cost_class * (-softmax(class logits)_n[label_m]) + cost_mask * mask cost
+ cost_dice * dice cost, where the mask cost is one of:

* ``afl`` (default, the official pairwise AFL variant, quirk 3): with p = sigmoid(x) over the P cells,
  S+ = sum p y, S- = sum (1-p)(1-y), pbar = (S+ + S-) / P, gamma = gamma0 + 1 - S+ / (sum y + eps),
  b = (1 - pbar)^gamma, w = M / ((1 + delta gamma) sum_m' b_nm' + eps),
  E = eps_t sum y BCE(x, 1) + (1 - eps_t) sum (1 - y) BCE(x, 0), cost = w b E / P + eps_t alpha (b + 1);
* ``bce``: mean over cells of BCE(x, y);
* ``focal``: mean over cells of the sigmoid focal loss (alpha 0.25, gamma 2 by default).

Dice cost = 1 - (2 sum p y + 1) / (sum p + sum y + 1).  Everything runs in fp32 without autocast or gradient;
``num_points > 0`` evaluates the costs at that many uniform random points shared by queries and targets of
an image (Mask2Former) instead of the full grid.
"""

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from detectron2.projects.point_rend.point_features import point_sample

from adaptiveclick.utils.host import host_arrays

__all__ = ["HungarianMatcher", "pairwise_dice_cost", "pairwise_bce_cost", "pairwise_focal_cost",
           "pairwise_afl_cost", "COST_MASK_TYPES"]

COST_MASK_TYPES = ("afl", "bce", "focal")


def pairwise_dice_cost(logits, targets):
    """(N, P) logits, (M, P) targets -> (N, M) dice cost."""
    p = logits.sigmoid()
    numerator = 2 * p @ targets.T
    denominator = p.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def pairwise_bce_cost(logits, targets):
    """(N, P), (M, P) -> (N, M) mean binary cross-entropy."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / logits.shape[1]


def pairwise_focal_cost(logits, targets, alpha=0.25, gamma=2.0):
    """(N, P), (M, P) -> (N, M) mean sigmoid focal loss (Lin et al. 2017); alpha < 0 = no alpha weighting
    (as Mask2Former's batch_sigmoid_focal_loss and our zoo.focal)."""
    p = logits.sigmoid()
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    pos = (1 - p) ** gamma * pos
    neg = p ** gamma * neg
    if alpha >= 0:
        pos = alpha * pos
        neg = (1 - alpha) * neg
    return (pos @ targets.T + neg @ (1 - targets).T) / logits.shape[1]


def pairwise_afl_cost(logits, targets, epsilon=0.5, gamma=2.0, delta=0.4, alpha=1.0, eps=1e-12):
    """(N, P), (M, P) -> (N, M) official pairwise AFL cost (module docstring; matcher.py L90-126 of the release)."""
    num_cells, num_targets = logits.shape[1], targets.shape[0]
    p = logits.sigmoid()
    s_pos = p @ targets.T
    s_neg = (1 - p) @ (1 - targets).T
    p_bar = (s_pos + s_neg) / num_cells
    # the foreground count is of target cells > 0.5 (official matcher.py L99-101), not the sum of the targets:
    # the two differ for soft point-sampled targets (num_points > 0)
    gamma_nm = gamma + 1 - s_pos / ((targets > 0.5).sum(-1).to(p.dtype)[None, :] + eps)
    b = (1 - p_bar) ** gamma_nm
    w = num_targets / ((1 + delta * gamma_nm) * b.sum(-1, keepdim=True) + eps)
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    e = epsilon * (pos @ targets.T) + (1 - epsilon) * (neg @ (1 - targets).T)
    return w * b * e / num_cells + epsilon * alpha * (b + 1)


class HungarianMatcher(nn.Module):
    """One-to-one matching per image between the Q predictions and the M targets.

    Args:
        cost_class, cost_mask, cost_dice: weights of the three costs (official 2, 5, 5).
        cost_mask_type: "afl" (official), "bce" or "focal".
        num_points: 0 = full grid (official); > 0 = that many shared uniform random points per image.
        afl_params: epsilon, gamma, delta, alpha of the AFL cost (official 0.5, 2, 0.4, 1).
        focal_alpha, focal_gamma: parameters of the focal cost.
    """

    def __init__(self, cost_class=2.0, cost_mask=5.0, cost_dice=5.0, cost_mask_type="afl", num_points=0,
                 afl_epsilon=0.5, afl_gamma=2.0, afl_delta=0.4, afl_alpha=1.0, focal_alpha=0.25, focal_gamma=2.0):
        super().__init__()
        if cost_mask_type not in COST_MASK_TYPES:
            raise ValueError(f"cost_mask_type must be one of {COST_MASK_TYPES}, got {cost_mask_type!r}")
        if num_points < 0:
            raise ValueError(f"num_points must be >= 0, got {num_points}")
        self.cost_class, self.cost_mask, self.cost_dice = cost_class, cost_mask, cost_dice
        self.cost_mask_type = cost_mask_type
        self.num_points = int(num_points)
        self.afl_params = dict(epsilon=afl_epsilon, gamma=afl_gamma, delta=afl_delta, alpha=afl_alpha)
        self.focal_params = dict(alpha=focal_alpha, gamma=focal_gamma)

    def cost_matrix(self, class_logits, mask_logits, labels, target_masks):
        """(Q, C+1), (Q, h, w), (M,), (M, h, w) -> (Q, M) total cost (fp32)."""
        class_logits, mask_logits, target_masks = class_logits.float(), mask_logits.float(), target_masks.float()
        cost = -class_logits.softmax(-1)[:, labels]
        if self.num_points > 0:
            coords = torch.rand(1, self.num_points, 2, device=mask_logits.device)
            x = point_sample(mask_logits[:, None], coords.expand(mask_logits.shape[0], -1, -1),
                             align_corners=False)[:, 0]
            y = point_sample(target_masks[:, None], coords.expand(target_masks.shape[0], -1, -1),
                             align_corners=False)[:, 0]
        else:
            x, y = mask_logits.flatten(1), target_masks.flatten(1)
        if self.cost_mask_type == "afl":
            mask_cost = pairwise_afl_cost(x, y, **self.afl_params)
        elif self.cost_mask_type == "bce":
            mask_cost = pairwise_bce_cost(x, y)
        else:
            mask_cost = pairwise_focal_cost(x, y, **self.focal_params)
        return self.cost_class * cost + self.cost_mask * mask_cost + self.cost_dice * pairwise_dice_cost(x, y)

    @torch.no_grad()
    def forward(self, outputs, targets):
        """
        Args:
            outputs: {"pred_logits": (B, Q, C+1), "pred_masks": (B, Q, h, w)}.
            targets: B dicts {"labels": (M,) int64, "masks": (M, h, w)}.
        Returns:
            B pairs (query indices, target indices), int64 CPU tensors of length min(Q, M).
        """
        return self.match_many([outputs], targets)[0]

    @torch.no_grad()
    def match_many(self, outputs_list, targets):
        """:meth:`forward` for several predictions of the same targets (the final one and the auxiliary ones of
        deep supervision), with every cost matrix brought to the host in one copy: on a GPU one wait of the host
        for a step's ~10 decoder outputs instead of one per output.  Returns one list of B pairs per output.
        With ``num_points > 0`` the random points are drawn output after output, image after image, as
        :meth:`forward` called on each in turn would draw them."""
        costs = []  # (output, image) -> (Q, M) cost on the device
        for k, outputs in enumerate(outputs_list):
            for b, cost in self._device_costs(outputs, targets).items():
                costs.append(((k, b), cost))
        on_host = dict(zip([key for key, _ in costs], host_arrays([cost for _, cost in costs])))
        return [[self._solve(on_host.get((k, b)), f"image {b}" + (f" of prediction {k}" if k else ""))
                 for b in range(len(targets))] for k in range(len(outputs_list))]

    def _device_costs(self, outputs, targets):
        """{image: (Q, M) cost on the device} for the images that have targets."""
        logits, masks = outputs["pred_logits"], outputs["pred_masks"]
        if len(targets) != logits.shape[0]:
            raise ValueError(f"got {len(targets)} target sets for a batch of {logits.shape[0]}")
        costs = {}
        with torch.autocast(device_type=masks.device.type, enabled=False):
            for b, tgt in enumerate(targets):
                if tgt["labels"].numel() == 0:
                    continue
                if tuple(tgt["masks"].shape[-2:]) != tuple(masks.shape[-2:]):
                    raise ValueError(f"target masks {tuple(tgt['masks'].shape)} and predicted masks "
                                     f"{tuple(masks.shape)} must share the grid")
                costs[b] = self.cost_matrix(logits[b], masks[b], tgt["labels"], tgt["masks"])
        return costs

    @staticmethod
    def _solve(cost, where):
        """The optimal (query indices, target indices) of a host cost matrix (None: no targets); ``where`` names
        the image in errors."""
        if cost is None:
            empty = torch.empty(0, dtype=torch.long)
            return empty, empty
        if not np.isfinite(cost).all():
            raise FloatingPointError(f"matching cost of {where} contains NaN/inf (non-finite logits?)")
        rows, cols = linear_sum_assignment(cost)
        return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)
