"""Training targets of the set criterion from the binary GT masks (model.md §5.1).

``official`` reproduces the released code (quirk 1): the GT is resized bilinearly (align_corners=False) to
the mask-feature grid; the sorted distinct values of the resized map are truncated to integers and the first
is dropped; each remaining entry e gives one target with label e and mask (trunc(map) == e).  A typical
stride-4 crop gives 3 identical background targets (label 0) and one foreground target (label 1, only the
cells whose value is exactly 1.0); an all-0 or all-1 crop gives no target.

``clean`` gives one target per image: label 1 (the object class, so inference is unchanged) and the resized
map thresholded at 0.5; an image whose thresholded mask is empty gets no target.
"""

import torch
import torch.nn.functional as F

__all__ = ["TARGET_MODES", "build_targets", "resize_gt_masks"]

TARGET_MODES = ("official", "clean")


def resize_gt_masks(gt_masks, size):
    """(B, H, W) {0, 1} masks -> (B, h, w) float bilinear resize (align_corners=False, no antialias)."""
    return F.interpolate(gt_masks[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def build_targets(gt_masks, size, mode="official"):
    """Targets per image: a list of ``{"labels": (M,) int64, "masks": (M, h, w) float32}`` on the masks' device.

    Args:
        gt_masks: (B, H, W) binary masks (any numeric dtype, values in {0, 1}).
        size: (h, w) of the mask-feature grid.
        mode: "official" or "clean" (module docstring).
    """
    if mode not in TARGET_MODES:
        raise ValueError(f"target mode must be one of {TARGET_MODES}, got {mode!r}")
    resized = resize_gt_masks(gt_masks, size)
    targets = []
    for value_map in resized:
        if mode == "clean":
            mask = (value_map >= 0.5).float()
            keep = int(mask.any())
            targets.append({"labels": torch.ones(keep, dtype=torch.long, device=mask.device),
                            "masks": mask[None].expand(keep, -1, -1).contiguous()})
            continue
        labels = torch.unique(value_map).trunc().long()[1:]  # sorted distinct values, truncated, first dropped
        classes = value_map.trunc().long()
        masks = (classes[None] == labels[:, None, None]).float()
        targets.append({"labels": labels, "masks": masks})
    return targets
