"""``MSDeformAttn``: the multi-scale deformable attention layer (projections around :func:`ms_deform_attn`)."""

import math

import torch
from torch import nn
from torch.nn.init import constant_, xavier_uniform_

from .function import ms_deform_attn

__all__ = ["MSDeformAttn", "offset_normalizer_of"]


def offset_normalizer_of(spatial_shapes):
    """(L, 2) int64 rows [H, W] -> (L, 2) float32 rows [W, H]: what a level's pixel offsets (x, y) are divided by
    to become normalised coordinates."""
    return spatial_shapes.flip(-1).to(torch.float32)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021, Eq. 3).

    Each query predicts, per head, level and point, a sampling offset (in pixels of that level, added to its
    reference point) and an attention weight (softmax jointly over levels and points of a head).

    Args:
        d_model: width of queries and values; must be divisible by ``n_heads``.
        n_levels, n_heads, n_points: levels L, heads M and points P per (head, level).
        impl: implementation passed to :func:`ms_deform_attn` (None = automatic).
    """

    def __init__(self, d_model=256, n_levels=4, n_heads=8, n_points=4, impl=None):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"MSDeformAttn: d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.impl = impl or None
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self):
        # Deformable DETR initialisation (model.md §3): zero offset weights; head h starts looking along the
        # direction (cos 2πh/M, sin 2πh/M), scaled so its larger component is 1, at distance k+1 for point k.
        constant_(self.sampling_offsets.weight, 0.0)
        angles = torch.arange(self.n_heads, dtype=torch.float64) * (2.0 * math.pi / self.n_heads)
        direction = torch.stack([angles.cos(), angles.sin()], dim=-1)
        direction = direction / direction.abs().max(dim=-1, keepdim=True).values
        scale = torch.arange(1, self.n_points + 1, dtype=torch.float64).view(1, 1, -1, 1)
        bias = direction.view(self.n_heads, 1, 1, 2).expand(-1, self.n_levels, self.n_points, -1) * scale
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(bias.reshape(-1).to(self.sampling_offsets.bias.dtype))
        constant_(self.attention_weights.weight, 0.0)
        constant_(self.attention_weights.bias, 0.0)
        for lin in (self.value_proj, self.output_proj):
            xavier_uniform_(lin.weight)
            constant_(lin.bias, 0.0)

    def forward(self, query, reference_points, input_flatten, input_spatial_shapes, input_level_start_index,
                input_padding_mask=None, offset_normalizer=None):
        """
        Args:
            query: (N, Lq, C).
            reference_points: (N, Lq, L, 2) normalised (x, y), (0, 0) top-left and (1, 1) bottom-right.
            input_flatten: (N, S, C) values of all levels flattened level after level.
            input_spatial_shapes: (L, 2) int64 rows [H, W].
            input_level_start_index: (L,) int64.
            input_padding_mask: optional (N, S) bool, True where the value is padding (set to zero).
            offset_normalizer: optional (L, 2) float32 rows [W, H] of ``input_spatial_shapes``, which the
                offsets (in pixels) are divided by; made here when None.  A caller that runs several layers on
                the same sizes makes it once (on a GPU, two kernel launches fewer per layer).
        Returns:
            (N, Lq, C).
        """
        n, lq, c = query.shape
        if c != self.d_model:
            raise ValueError(f"MSDeformAttn: query must be (N, Lq, {self.d_model}), got {tuple(query.shape)}")
        if input_flatten.dim() != 3 or input_flatten.shape[0] != n or input_flatten.shape[2] != self.d_model:
            raise ValueError(f"MSDeformAttn: input_flatten must be ({n}, S, {self.d_model}), got "
                             f"{tuple(input_flatten.shape)}")
        if tuple(reference_points.shape) != (n, lq, self.n_levels, 2):
            raise ValueError(f"MSDeformAttn: reference_points must be ({n}, {lq}, {self.n_levels}, 2), got "
                             f"{tuple(reference_points.shape)}")
        s = input_flatten.shape[1]
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            if tuple(input_padding_mask.shape) != (n, s) or input_padding_mask.dtype != torch.bool:
                raise ValueError(f"MSDeformAttn: input_padding_mask must be a bool ({n}, {s}) tensor, got "
                                 f"{input_padding_mask.dtype} {tuple(input_padding_mask.shape)}")
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(n, s, self.n_heads, self.d_model // self.n_heads)
        offsets = self.sampling_offsets(query).view(n, lq, self.n_heads, self.n_levels, self.n_points, 2)
        weights = self.attention_weights(query).view(n, lq, self.n_heads, self.n_levels * self.n_points)
        weights = weights.softmax(-1).view(n, lq, self.n_heads, self.n_levels, self.n_points)
        # offsets are in pixels of each level: divide by (W, H) to get normalised coordinates
        # (float32 whatever the offsets' dtype: level sizes are exact in it, and the division of low-precision
        # offsets then gives float32 locations, which the op receives in float32 anyway: see below)
        if offset_normalizer is None:
            offset_normalizer = offset_normalizer_of(input_spatial_shapes).to(offsets.device)
        elif tuple(offset_normalizer.shape) != (self.n_levels, 2) or offset_normalizer.dtype != torch.float32:
            raise ValueError(f"MSDeformAttn: offset_normalizer must be a float32 ({self.n_levels}, 2) tensor, got "
                             f"{offset_normalizer.dtype} {tuple(offset_normalizer.shape)}")
        locations = reference_points[:, :, None, :, None, :] + offsets / offset_normalizer[None, None, None, :, None, :]
        # One dtype for the op: under autocast the projections are low precision while the reference points
        # are fp32; sampling coordinates need fp32 precision, so promote.
        dtype = torch.promote_types(value.dtype, locations.dtype)
        out = ms_deform_attn(value.to(dtype), input_spatial_shapes, input_level_start_index, locations.to(dtype),
                             weights.to(dtype), impl=self.impl)
        return self.output_proj(out.to(value.dtype))
