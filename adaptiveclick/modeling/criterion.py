"""Set criterion of AdaptiveClick (model.md §5.3): click (class) CE, mask loss (AFL by default) and dice.

For every prediction (the final one and, with deep supervision, each auxiliary one) the matcher pairs
queries with targets; then

* ``loss_ce``: weighted cross-entropy over the class logits of all queries; matched queries take their
  target's label, unmatched ones class 0.  ``class_weights_mode="official"`` puts the no-object weight on
  index 1 (quirk 2: in this model index 1 is the object, so the object class is down-weighted);
  ``"clean"`` puts it on index 0, the unmatched/background class.
* ``loss_mask`` / ``loss_dice``: the injected ``mask_loss`` and ``dice_loss`` on the matched pairs, over the
  full mask grid (official) or, with ``point_sampling``, on Mask2Former's importance-sampled points
  (``num_points``, ``oversample_ratio``, ``importance_sample_ratio``; uncertainty = -|logit|).

Both mask losses take (K, P) logits and targets and ``num_masks`` (number of targets in the batch averaged
over processes, at least 1) and return a scalar.  Losses of auxiliary prediction j carry the suffix ``_j``.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.projects.point_rend.point_features import (get_uncertain_point_coords_with_randomness,
                                                           point_sample)
from detectron2.utils import comm

from adaptiveclick.losses import targets_are_checked, targets_checked
from adaptiveclick.losses._common import check_unit_interval, in_unit_interval

from .matcher import check_one_grid

__all__ = ["SetCriterion", "CLASS_WEIGHT_MODES"]

CLASS_WEIGHT_MODES = ("official", "clean")


def _uncertainty(logits):
    # Mask2Former: points whose logit is closest to 0 are the most uncertain
    return -torch.abs(logits)


class SetCriterion(nn.Module):
    """Matching-based losses for the query predictions.

    Args:
        matcher: a :class:`~adaptiveclick.modeling.matcher.HungarianMatcher`.
        mask_loss, dice_loss: callables ``(logits (K, P), targets (K, P), num_masks) -> scalar``.
        num_classes: object classes (official 1; the class head has num_classes + 1 logits).
        eos_coef: the no-object class weight (official 0.1).
        class_weights_mode: "official" or "clean" (module docstring).
        deep_supervision: also compute the losses of ``aux_outputs``.
        point_sampling, num_points, oversample_ratio, importance_sample_ratio: Mask2Former point sampling
            (off in the official code, whose 12544 / 3.0 / 0.75 settings are unused).
    """

    def __init__(self, matcher, mask_loss, dice_loss, num_classes=1, eos_coef=0.1, class_weights_mode="official",
                 deep_supervision=True, point_sampling=False, num_points=12544, oversample_ratio=3.0,
                 importance_sample_ratio=0.75):
        super().__init__()
        if class_weights_mode not in CLASS_WEIGHT_MODES:
            raise ValueError(f"class_weights_mode must be one of {CLASS_WEIGHT_MODES}, got {class_weights_mode!r}")
        self.matcher = matcher
        self.mask_loss = mask_loss
        self.dice_loss = dice_loss
        self.num_classes = num_classes
        weight = torch.ones(num_classes + 1)
        weight[-1 if class_weights_mode == "official" else 0] = eos_coef
        self.register_buffer("empty_weight", weight)
        self.class_weights_mode = class_weights_mode
        self.deep_supervision = deep_supervision
        self.point_sampling = point_sampling
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio

    def loss_labels(self, outputs, pairs, all_labels):
        """Class cross-entropy; ``pairs`` = (image, query, target) index tensors of the matched pairs (targets
        indexed into ``all_labels``, the batch's labels concatenated)."""
        logits = outputs["pred_logits"].float()  # (B, Q, C+1)
        image, query, target = pairs
        classes = torch.zeros(logits.shape[:2], dtype=torch.long, device=logits.device)
        classes = classes.index_put((image, query), all_labels[target])
        return F.cross_entropy(logits.transpose(1, 2), classes, self.empty_weight.to(logits.dtype))

    def loss_masks(self, outputs, pairs, all_masks, num_masks):
        """Mask and dice losses of the matched pairs (``pairs`` as in :meth:`loss_labels`, targets indexed into
        ``all_masks``, the batch's target masks concatenated)."""
        image, query, target = pairs
        if image.shape[0] == 0:
            zero = outputs["pred_masks"].sum() * 0.0  # keeps the graph connected
            return zero, zero
        src = outputs["pred_masks"][image, query].float()  # (K, h, w)
        tgt = all_masks[target]
        if self.point_sampling:
            with torch.no_grad():
                coords = get_uncertain_point_coords_with_randomness(
                    src[:, None], _uncertainty, self.num_points, self.oversample_ratio, self.importance_sample_ratio)
                labels = point_sample(tgt[:, None].float(), coords, align_corners=False)[:, 0]
            logits = point_sample(src[:, None], coords, align_corners=False)[:, 0]
        else:
            logits, labels = src.flatten(1), tgt.float().flatten(1)
        return self.mask_loss(logits, labels, num_masks), self.dice_loss(logits, labels, num_masks)

    def _losses(self, outputs, pairs, all_labels, all_masks, num_masks, suffix=""):
        loss_mask, loss_dice = self.loss_masks(outputs, pairs, all_masks, num_masks)
        return {f"loss_ce{suffix}": self.loss_labels(outputs, pairs, all_labels),
                f"loss_mask{suffix}": loss_mask, f"loss_dice{suffix}": loss_dice}

    def forward(self, outputs, targets):
        """outputs: decoder outputs; targets: B dicts {"labels", "masks"}. Returns the unweighted losses."""
        device = outputs["pred_logits"].device
        num_masks = torch.as_tensor(float(sum(len(t["labels"]) for t in targets)), device=device)
        if comm.get_world_size() > 1:
            torch.distributed.all_reduce(num_masks)
        num_masks = torch.clamp(num_masks / comm.get_world_size(), min=1.0)
        predictions = [outputs]
        if self.deep_supervision:
            predictions += list(outputs.get("aux_outputs", []))
        # the batch's targets concatenated once, and the matched pairs of every prediction as index tensors made
        # on the host and copied at once: a few operators per prediction where image by image took ~40 (on a
        # GPU each a kernel launch by the host)
        check_one_grid(targets)
        all_labels = torch.cat([t["labels"] for t in targets]).to(device)
        all_masks = torch.cat([t["masks"] for t in targets]).to(device)
        _check_target_values(all_masks, targets)  # first: bad targets would show up as non-finite matching costs
        all_indices = self._match(predictions, targets)
        all_pairs = _pair_indices(all_indices, [len(t["labels"]) for t in targets], device)
        losses = {}
        # the targets were checked once above: the losses skip their own check (one host read each)
        with targets_checked():
            for j, (prediction, pairs) in enumerate(zip(predictions, all_pairs)):
                losses.update(self._losses(prediction, pairs, all_labels, all_masks, num_masks,
                                           "" if j == 0 else f"_{j - 1}"))
        return losses

    def _match(self, predictions, targets):
        """The matcher's indices for every prediction; a matcher with ``match_many`` (ours) matches them all with
        one copy of the costs to the host.  So with random matching points (``num_points > 0``) and point
        sampling both on, the matcher draws all its points before the losses draw theirs."""
        match_many = getattr(self.matcher, "match_many", None)
        if match_many is not None:
            return match_many(predictions, targets)
        return [self.matcher(prediction, targets) for prediction in predictions]


def _pair_indices(all_indices, counts, device):
    """Per prediction, the (image, query, target) int64 index tensors on ``device`` of its matched pairs, the
    targets numbered across the batch (image b's target j is ``sum(counts[:b]) + j``), from the matcher's
    per-image (query indices, target indices): assembled in NumPy, all predictions' in one host-to-device copy."""
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    blocks = []
    for indices in all_indices:
        if len(indices) != len(counts):
            raise ValueError(f"the matcher returned {len(indices)} index pairs for a batch of {len(counts)}")
        image, query, target = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for b, (src, tgt) in enumerate(indices):
            src, tgt = _host_indices(src), _host_indices(tgt)
            if src.shape != tgt.shape:
                raise ValueError(f"the matcher paired {src.size} queries with {tgt.size} targets in image {b}")
            image.append(np.full(src.size, b, dtype=np.int64))
            query.append(src)
            target.append(tgt + offsets[b])
        blocks.append(np.stack([np.concatenate(image), np.concatenate(query), np.concatenate(target)]))
    sizes = [block.shape[1] for block in blocks]
    flat = torch.from_numpy(np.concatenate(blocks, axis=1) if blocks else np.zeros((3, 0), np.int64))
    flat = flat.to(device, non_blocking=True)
    return [tuple(part.unbind(0)) for part in flat.split(sizes, dim=1)] if blocks else []


def _host_indices(index):
    """A matcher's index tensor (ours: on the host; another's may be on the device) as a flat int64 array."""
    if isinstance(index, torch.Tensor):
        index = index.detach().cpu().numpy()
    return np.asarray(index, dtype=np.int64).reshape(-1)


def _check_target_values(all_masks, targets):
    """The batch's target masks (``all_masks``, concatenated) are finite and in [0, 1], with one host read (bool
    masks need none; none either inside :func:`~adaptiveclick.losses.targets_checked`, where the caller vouches
    for them); the error names the first bad image of ``targets``."""
    if targets_are_checked() or all_masks.numel() == 0 or all_masks.dtype == torch.bool:
        return
    if in_unit_interval(all_masks):
        return
    for b, t in enumerate(targets):
        check_unit_interval(t["masks"], f"target masks of image {b}")
