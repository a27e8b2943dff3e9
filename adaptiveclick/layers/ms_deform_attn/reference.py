"""Pure-PyTorch reference of multi-scale deformable attention.

Semantics (Deformable DETR, Zhu et al. 2021, Eq. 3; the Mask2Former PMMD path): for every query, head, level and
point, the value map of that level is sampled bilinearly at the normalised location (x, y) in [0, 1] with the
``align_corners=False`` pixel convention (pixel i covers [i, i+1), so the continuous pixel coordinate is
``x * W - 0.5``) and zeros outside the map; the samples are weighted by the attention weights and summed over
levels and points.  This module is the ground truth the C++ and CUDA kernels are tested against.
"""

import torch
import torch.nn.functional as F

__all__ = ["ms_deform_attn_pytorch"]


def ms_deform_attn_pytorch(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """Reference implementation built on :func:`torch.nn.functional.grid_sample`.

    Shapes: value (N, S, M, D); spatial_shapes (L, 2) rows [H, W]; level_start_index (L,);
    sampling_locations (N, Lq, M, L, P, 2) as (x, y) in [0, 1]; attention_weights (N, Lq, M, L, P).
    Returns (N, Lq, M * D).  No input checking here: use :func:`ms_deform_attn` for that.
    """
    n, _, m, d = value.shape
    _, lq, _, num_levels, num_points, _ = sampling_locations.shape
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    starts = [int(s) for s in level_start_index.tolist()]
    # grid_sample takes coordinates in [-1, 1]; with align_corners=False, g = 2 * loc - 1 maps loc * W - 0.5
    # to the pixel coordinate, which is exactly the convention above.
    grids = 2.0 * sampling_locations - 1.0
    sampled = []
    for lvl, (h, w) in enumerate(shapes):
        start = starts[lvl]
        v = value[:, start : start + h * w]  # (N, HW, M, D)
        v = v.permute(0, 2, 3, 1).reshape(n * m, d, h, w)
        g = grids[:, :, :, lvl].permute(0, 2, 1, 3, 4).reshape(n * m, lq, num_points, 2)
        s = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        sampled.append(s)  # (N*M, D, Lq, P)
    stacked = torch.stack(sampled, dim=-2).flatten(-2)  # (N*M, D, Lq, L*P)
    w = attention_weights.permute(0, 2, 1, 3, 4).reshape(n * m, 1, lq, num_levels * num_points)
    out = (stacked * w).sum(-1)  # (N*M, D, Lq)
    return out.view(n, m * d, lq).transpose(1, 2).contiguous()
