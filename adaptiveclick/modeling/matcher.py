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

__all__ = ["HungarianMatcher", "check_one_grid", "pairwise_dice_cost", "pairwise_bce_cost", "pairwise_focal_cost",
           "pairwise_afl_cost", "COST_MASK_TYPES"]

COST_MASK_TYPES = ("afl", "bce", "focal")


def _t(targets):
    """(..., M, P) -> (..., P, M)."""
    return targets.transpose(-1, -2)


def pairwise_dice_cost(logits, targets):
    """(..., N, P) logits, (..., M, P) targets -> (..., N, M) dice cost (leading dims: a batch of images)."""
    p = logits.sigmoid()
    numerator = 2 * p @ _t(targets)
    denominator = p.sum(-1)[..., :, None] + targets.sum(-1)[..., None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def pairwise_bce_cost(logits, targets):
    """(..., N, P), (..., M, P) -> (..., N, M) mean binary cross-entropy."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ _t(targets) + neg @ _t(1 - targets)) / logits.shape[-1]


def pairwise_focal_cost(logits, targets, alpha=0.25, gamma=2.0):
    """(..., N, P), (..., M, P) -> (..., N, M) mean sigmoid focal loss (Lin et al. 2017); alpha < 0 = no alpha
    weighting (as Mask2Former's batch_sigmoid_focal_loss and our zoo.focal)."""
    p = logits.sigmoid()
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    pos = (1 - p) ** gamma * pos
    neg = p ** gamma * neg
    if alpha >= 0:
        pos = alpha * pos
        neg = (1 - alpha) * neg
    return (pos @ _t(targets) + neg @ _t(1 - targets)) / logits.shape[-1]


def pairwise_afl_cost(logits, targets, epsilon=0.5, gamma=2.0, delta=0.4, alpha=1.0, eps=1e-12, valid=None):
    """(..., N, P), (..., M, P) -> (..., N, M) official pairwise AFL cost (module docstring; matcher.py L90-126
    of the release).  ``valid`` (..., M) bool marks the real targets of a padded batch: the weight w sums over
    those only and counts them as M (padding columns come out finite and are to be ignored)."""
    num_cells = logits.shape[-1]
    p = logits.sigmoid()
    s_pos = p @ _t(targets)
    s_neg = (1 - p) @ _t(1 - targets)
    p_bar = (s_pos + s_neg) / num_cells
    # the foreground count is of target cells > 0.5 (official matcher.py L99-101), not the sum of the targets:
    # the two differ for soft point-sampled targets (num_points > 0)
    gamma_nm = gamma + 1 - s_pos / ((targets > 0.5).sum(-1).to(p.dtype)[..., None, :] + eps)
    b = (1 - p_bar) ** gamma_nm
    if valid is None:
        num_targets, b_sum = targets.shape[-2], b.sum(-1, keepdim=True)
    else:
        valid = valid.to(p.dtype)[..., None, :]
        num_targets, b_sum = valid.sum(-1, keepdim=True), (b * valid).sum(-1, keepdim=True)
    w = num_targets / ((1 + delta * gamma_nm) * b_sum + eps)
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    e = epsilon * (pos @ _t(targets)) + (1 - epsilon) * (neg @ _t(1 - targets))
    return w * b * e / num_cells + epsilon * alpha * (b + 1)


def check_one_grid(targets):
    """ValueError unless the target masks of a batch (B dicts with "masks" (M, h, w)) share one (h, w) grid: the
    batch's targets are stacked or concatenated."""
    grids = {tuple(t["masks"].shape[-2:]) for t in targets}
    if len(grids) > 1:
        raise ValueError(f"the target masks of a batch must share one grid, got {sorted(grids)}")


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
        """(Q, C+1), (Q, h, w), (M,), (M, h, w) -> (Q, M) total cost (fp32) of one image."""
        return self.batch_costs(class_logits[None], mask_logits[None], labels[None], target_masks[None])[0]

    def batch_costs(self, class_logits, mask_logits, labels, target_masks, valid=None):
        """(B, Q, C+1), (B, Q, h, w), (B, M), (B, M, h, w) -> (B, Q, M) total costs (fp32) of B images at once,
        their targets padded to a common M (``valid`` (B, M) bool: the real ones; the padding columns are finite
        and meaningless).  A few dozen operators for the batch, where image by image took as many per image:
        on a GPU each is a kernel launch by the host (a ViT-B step at batch 16 with 10 decoder outputs matched
        image by image dispatched ~9000).  With ``num_points > 0`` each image gets its own random points."""
        class_logits, mask_logits, target_masks = class_logits.float(), mask_logits.float(), target_masks.float()
        num_queries, num_targets = mask_logits.shape[1], target_masks.shape[1]
        probs = class_logits.softmax(-1)
        cost = -probs.gather(-1, labels[:, None, :].expand(-1, num_queries, num_targets))
        if self.num_points > 0:
            # point_sample treats the queries (targets) of an image as the channels of one map
            coords = torch.rand(mask_logits.shape[0], self.num_points, 2, device=mask_logits.device)
            x = point_sample(mask_logits, coords, align_corners=False)
            y = point_sample(target_masks, coords, align_corners=False)
        else:
            x, y = mask_logits.flatten(2), target_masks.flatten(2)
        if self.cost_mask_type == "afl":
            mask_cost = pairwise_afl_cost(x, y, **self.afl_params, valid=valid)
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
        deep supervision): the costs of each prediction's images computed together (:meth:`batch_costs`, the
        targets padded once), and every cost matrix brought to the host in one copy: on a GPU one wait of the
        host for a step's ~10 decoder outputs instead of one per output.  Returns one list of B pairs per
        output.  With ``num_points > 0`` the random points are drawn output after output, as :meth:`forward`
        called on each in turn would draw them."""
        counts = [int(t["labels"].shape[0]) for t in targets]
        padded = self._padded_targets(targets, counts)
        costs = [self._device_costs(outputs, targets, padded) for outputs in outputs_list]
        present = [k for k, cost in enumerate(costs) if cost is not None]
        on_host = dict(zip(present, host_arrays([costs[k] for k in present])))
        return [[self._solve(on_host[k][b, :, :m] if m else None, f"image {b}" + (f" of prediction {k}" if k else ""))
                 for b, m in enumerate(counts)] for k in range(len(outputs_list))]

    @staticmethod
    def _padded_targets(targets, counts):
        """(labels (B, M), masks (B, M, h, w), valid (B, M)) with M the largest target count, or None if no image
        has a target; one stack when every image has M targets (the usual case: one object per image)."""
        check_one_grid(targets)
        most = max(counts, default=0)
        if most == 0:
            return None
        if all(m == most for m in counts):
            labels = torch.stack([t["labels"] for t in targets])
            masks = torch.stack([t["masks"] for t in targets])
            return labels, masks, None
        labels = torch.nn.utils.rnn.pad_sequence([t["labels"] for t in targets], batch_first=True)
        masks = torch.nn.utils.rnn.pad_sequence([t["masks"] for t in targets], batch_first=True)
        # made on the host and copied (a host-to-device copy does not wait for the GPU)
        valid = torch.arange(most)[None, :] < torch.tensor(counts)[:, None]
        return labels, masks, valid.to(labels.device, non_blocking=True)

    def _device_costs(self, outputs, targets, padded):
        """(B, Q, M) costs of one prediction on the device, or None when no image has a target."""
        logits, masks = outputs["pred_logits"], outputs["pred_masks"]
        if len(targets) != logits.shape[0]:
            raise ValueError(f"got {len(targets)} target sets for a batch of {logits.shape[0]}")
        if padded is None:
            return None
        labels, target_masks, valid = padded
        if tuple(target_masks.shape[-2:]) != tuple(masks.shape[-2:]):
            raise ValueError(f"target masks {tuple(target_masks.shape[1:])} and predicted masks "
                             f"{tuple(masks.shape)} must share the grid")
        with torch.autocast(device_type=masks.device.type, enabled=False):
            return self.batch_costs(logits, masks, labels, target_masks, valid)

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
