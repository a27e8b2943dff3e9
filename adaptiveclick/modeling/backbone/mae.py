"""Loading MAE ImageNet-1k ViT checkpoints into :class:`~.vit.ClickViT` (model.md §1.5).

The MAE files (``mae_pretrain_vit_{base,large,huge}.pth``) hold ``{"model": state_dict}`` with the timm ViT
layout, which :class:`ClickViT` shares.  ``pos_embed`` is resized from the MAE grid (14x14 for patch 16, 16x16
for patch 14) to the model's grid, bicubic with align_corners=False, the class-token slot kept as is.
Keys that have no counterpart (``cls_token``, ``norm.*``, MAE decoder keys, ``mask_token``) are reported as
unused; parameters the checkpoint does not provide (``patch_embed_coords.*``) are reported as missing.
"""

import logging
import math
from dataclasses import dataclass, field
from typing import List

import torch
import torch.nn.functional as F

__all__ = ["MAELoadReport", "load_mae_weights", "read_checkpoint", "resize_pos_embed"]

logger = logging.getLogger(__name__)


@dataclass
class MAELoadReport:
    """What :func:`load_mae_weights` did: keys loaded, model keys left at their init, checkpoint keys unused."""

    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)

    def __str__(self):
        return (f"loaded {len(self.loaded)} tensors; missing (kept at init): {self.missing or 'none'}; "
                f"unused checkpoint keys: {self.unexpected or 'none'}")


def read_checkpoint(path):
    """Read a checkpoint file with ``torch.load(weights_only=True)`` and return its state dict.

    Accepts ``{"model": sd}``, ``{"state_dict": sd}`` or a bare state dict.  A missing, truncated or
    otherwise unreadable file raises ``ValueError`` naming the file.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # torch raises several types for corrupt/non-zip/pickle-unsafe files
        raise ValueError(f"could not read checkpoint {path!r} with torch.load(weights_only=True): "
                         f"{type(e).__name__}: {e}") from e
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise ValueError(f"checkpoint {path!r} does not contain a state dict (a mapping of names to tensors)")
    return obj


def resize_pos_embed(pos_embed, grid, num_prefix=1):
    """Resize a (1, num_prefix + g*g, D) position embedding to ``grid`` (gh, gw), bicubic, align_corners=False."""
    prefix, patches = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    side = int(round(math.sqrt(patches.shape[1])))
    if side * side != patches.shape[1]:
        raise ValueError(f"pos_embed has {patches.shape[1]} patch slots, not a square grid")
    if (side, side) != tuple(grid):
        dim = patches.shape[-1]
        img = patches.reshape(1, side, side, dim).permute(0, 3, 1, 2).float()
        img = F.interpolate(img, size=tuple(grid), mode="bicubic", align_corners=False)
        patches = img.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], dim).to(pos_embed.dtype)
    return torch.cat([prefix, patches], dim=1)


_KNOWN_UNUSED = ("cls_token", "norm.", "fc_norm.", "head.", "mask_token", "decoder_")
# ViT tensors an MAE checkpoint never has: the click / previous-mask patch embedding is ours (model.md §1.3)
_NOT_IN_MAE = ("patch_embed_coords.",)


def load_mae_weights(vit, checkpoint):
    """Load an MAE checkpoint (path or state dict) into a :class:`ClickViT` in place; returns a report.

    Shape mismatches (e.g. a ViT-L file for a ViT-B model) raise ``ValueError`` listing the keys.
    """
    state = read_checkpoint(checkpoint) if isinstance(checkpoint, (str, bytes)) or hasattr(checkpoint, "__fspath__") \
        else checkpoint
    own = vit.state_dict()
    report = MAELoadReport()
    new_state, mismatched = {}, []
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
            continue
        if key == "pos_embed":
            grid = (int(math.isqrt(own[key].shape[1] - 1)),) * 2
            if value.ndim != 3 or value.shape[-1] != own[key].shape[-1]:
                mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(own[key].shape)}")
                continue
            value = resize_pos_embed(value, grid)
        if value.shape != own[key].shape:
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(own[key].shape)}")
            continue
        new_state[key] = value
    if mismatched:
        raise ValueError("MAE checkpoint does not fit this ViT (wrong size?): " + "; ".join(mismatched[:5])
                         + (f" and {len(mismatched) - 5} more" if len(mismatched) > 5 else ""))
    if not new_state:
        raise ValueError("MAE checkpoint shares no key with the ViT (expected patch_embed.proj.*, pos_embed, "
                         "blocks.*); is it an MAE ViT checkpoint?")
    vit.load_state_dict(new_state, strict=False)
    report.loaded = sorted(new_state)
    report.missing = sorted(k for k in own if k not in new_state)
    report.unexpected = sorted(report.unexpected)
    logger.info("MAE weights: %s", report)
    partial = [k for k in report.missing if not k.startswith(_NOT_IN_MAE)]
    if partial:
        logger.warning("MAE checkpoint lacks %d ViT tensors, which keep their random initialisation: %s%s",
                       len(partial), ", ".join(partial[:10]), " ..." if len(partial) > 10 else "")
    strange = [k for k in report.unexpected if not k.startswith(_KNOWN_UNUSED)]
    if strange:
        logger.warning("MAE checkpoint keys with no counterpart in the ViT (not the usual cls_token/norm/decoder "
                       "keys): %s", strange)
    return report
