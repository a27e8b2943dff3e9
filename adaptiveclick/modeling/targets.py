"""Training targets of the set criterion from the binary GT masks (model.md §5.1).

``official`` reproduces the released code (quirk 1): the GT is resized bilinearly (align_corners=False) to
the mask-feature grid; the sorted distinct values of the resized map are truncated to integers and the first
is dropped; each remaining entry e gives one target with label e and mask (trunc(map) == e).  A typical
stride-4 crop gives 3 identical background targets (label 0) and one foreground target (label 1, only the
cells whose value is exactly 1.0); an all-0 or all-1 crop gives no target.

``clean`` gives one target per image: label 1 (the object class, so inference is unchanged) and the resized
map thresholded at 0.5; an image whose thresholded mask is empty gets no target.
"""

import numpy as np
import torch
import torch.nn.functional as F

from adaptiveclick.utils.host import host_arrays

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
    batch, device = resized.shape[0], resized.device
    if mode == "clean":
        masks = (resized >= 0.5).float()
        # which images keep a target: one copy of B flags (on a GPU one wait, not one per image)
        keep = host_arrays([masks.flatten(1).any(1)])[0] if batch else []
        return [{"labels": torch.ones(int(k), dtype=torch.long, device=device),
                 "masks": mask[None].expand(int(k), -1, -1).contiguous()} for mask, k in zip(masks, keep)]
    if batch == 0:
        return []
    # the sorted distinct values of every image at once: the distinct (image, value) rows, sorted
    # lexicographically, so each image's values come out ascending; one value-dependent operator for the batch
    # (on a GPU one wait, where one unique per image waited B times)
    flat = resized.reshape(batch, -1)
    image = torch.arange(batch, device=device, dtype=flat.dtype)[:, None].expand_as(flat)
    pairs = torch.unique(torch.stack([image, flat], -1).reshape(-1, 2), dim=0).cpu().numpy()
    labels = [np.trunc(pairs[pairs[:, 0] == b, 1]).astype(np.int64)[1:] for b in range(batch)]  # first dropped
    # every image's labels with their image index in one host-to-device copy; the masks of all images made by
    # one comparison (a few operators for the batch, not two per image: kernel launches on a GPU), then split
    # into per-image views
    counts = [len(v) for v in labels]
    rows = np.stack([np.concatenate(labels), np.repeat(np.arange(batch, dtype=np.int64), counts)])
    all_labels, image_of = torch.from_numpy(rows).to(device, non_blocking=True).unbind(0)
    classes = resized.trunc().long()
    masks = (classes[image_of] == all_labels[:, None, None]).float()
    return [{"labels": lab, "masks": m} for lab, m in zip(torch.split(all_labels, counts), torch.split(masks, counts))]
