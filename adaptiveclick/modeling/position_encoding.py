"""Sine position encoding of DETR/Mask2Former (model.md §3), for maps without padding."""

import math

import torch
from torch import nn

from .shape_cache import shape_constant

__all__ = ["PositionEmbeddingSine"]


class PositionEmbeddingSine(nn.Module):
    """2-D sine/cosine encoding: (B, C, H, W) -> (B, 2 * num_pos_feats, H, W), y features first, then x.

    With ``normalize``, the coordinate of row i (1-based) is i / (H + 1e-6) * scale (likewise columns); feature
    k of an axis is sin(coord / T^(2 floor(k/2) / F)) for even k and cos(...) for odd k (F = num_pos_feats,
    T = temperature).  The encoding depends only on (H, W): it is made once per size, device and dtype and
    returned as a batch-expanded view of that cached tensor (:func:`shape_constant`; do not modify it in place).
    """

    def __init__(self, num_pos_feats=128, temperature=10000, normalize=True, scale=2 * math.pi):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale
        self._cache = {}  # (h, w, device, dtype) -> encoding; a plain attribute, not in the state dict

    def forward(self, x):
        b, _, h, w = x.shape
        key = (h, w, str(x.device), x.dtype)
        pos = shape_constant(self._cache, key, lambda: self.encode(h, w, x.device).to(x.dtype))
        return pos.expand(b, -1, -1, -1)

    def encode(self, h: int, w: int, device) -> torch.Tensor:
        """The (1, 2 * num_pos_feats, h, w) float32 encoding, computed."""
        ys = torch.arange(1, h + 1, device=device, dtype=torch.float32)
        xs = torch.arange(1, w + 1, device=device, dtype=torch.float32)
        if self.normalize:
            ys = ys / (h + 1e-6) * self.scale
            xs = xs / (w + 1e-6) * self.scale
        k = torch.arange(self.num_pos_feats, device=device, dtype=torch.float32)
        freq = self.temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / self.num_pos_feats)
        even = (torch.arange(self.num_pos_feats, device=device) % 2 == 0)

        def encode(coords):  # (L,) -> (L, F)
            a = coords[:, None] / freq
            return torch.where(even, a.sin(), a.cos())

        pos_y = encode(ys)[:, None, :].expand(h, w, -1)
        pos_x = encode(xs)[None, :, :].expand(h, w, -1)
        return torch.cat([pos_y, pos_x], dim=-1).permute(2, 0, 1)[None]
