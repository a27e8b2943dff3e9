"""Adaptive Focal Loss and the loss zoo of the paper, all with the signature
``loss(logits (K, P), targets (K, P), num_masks) -> scalar``; :func:`build_mask_loss` picks one by
``MODEL.LOSS.NAME``."""

from ._common import targets_are_checked, targets_checked
from .afl import AdaptiveFocalLoss, adaptive_focal_loss, adaptive_focal_loss_map
from .registry import ALIASES, LOSS_REGISTRY, MaskLoss, build_loss, build_mask_loss
from .zoo import (balanced_ce, balanced_ce_map, bce, bce_map, dice, focal, focal_map, normalized_focal,
                  normalized_focal_map, poly, poly_map, soft_iou, weighted_bce, weighted_bce_map)

# the criterion's dice term (model.md §5.3)
dice_loss = dice

__all__ = [
    "adaptive_focal_loss", "AdaptiveFocalLoss", "bce", "weighted_bce", "balanced_ce", "soft_iou", "focal",
    "normalized_focal", "poly", "dice", "dice_loss", "LOSS_REGISTRY", "ALIASES", "MaskLoss", "build_loss",
    "build_mask_loss", "adaptive_focal_loss_map", "bce_map", "weighted_bce_map", "balanced_ce_map", "focal_map",
    "normalized_focal_map", "poly_map", "targets_checked", "targets_are_checked",
]
