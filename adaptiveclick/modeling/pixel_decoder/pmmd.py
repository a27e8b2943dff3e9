"""PMMD pixel decoder: multi-scale deformable-attention encoder on res3-res5 and lateral fusion to stride 4.

model.md §3 (Mask2Former's MSDeformAttn pixel decoder as configured by the official AdaptiveClick):

* ``input_proj[l]`` = Conv1x1 (xavier, bias 0) + GroupNorm(32) for res5, res4, res3 (coarse first);
* sine position encoding + learned ``transformer.level_embed``; ``transformer.encoder.layers[i]`` post-norm
  layers: s <- LN(s + MSDA(s + pos, s)), s <- LN(s + FFN(s)) with a ReLU FFN;
* ``lateral_convs[0]`` = Conv1x1 (bias) + GN + ReLU on res2 (the official ReLU and bias, quirk 13),
  added to the bilinearly upsampled stride-8 encoder map, then ``output_convs[0]`` = Conv3x3 + GN + ReLU;
* ``mask_features`` = Conv1x1 on the stride-4 map.

Returns (mask_features (B, mask_dim, H/4, W/4), multi_scale_features [1/32, 1/16, 1/8] maps (B, conv_dim, ., .)).
The decoder always runs in fp32 (autocast disabled), as the official training is fp32.
"""

from typing import Dict, List

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec, get_norm
from detectron2.utils.registry import Registry

from adaptiveclick.layers.ms_deform_attn import MSDeformAttn, offset_normalizer_of
from adaptiveclick.utils.checks import check_int

from ..position_encoding import PositionEmbeddingSine
from ..shape_cache import shape_constant

__all__ = ["PIXEL_DECODER_REGISTRY", "build_pixel_decoder", "DeformableEncoderLayer", "DeformableEncoder",
           "PMMDPixelDecoder"]

PIXEL_DECODER_REGISTRY = Registry("ADAPTIVECLICK_PIXEL_DECODER")
PIXEL_DECODER_REGISTRY.__doc__ = """Pixel decoders of adaptiveclick: ``cls(cfg, input_shape: Dict[str, ShapeSpec])``."""


def build_pixel_decoder(cfg, input_shape):
    """Build the pixel decoder named by ``cfg.MODEL.ADAPTIVECLICK.PIXEL_DECODER_NAME``."""
    return PIXEL_DECODER_REGISTRY.get(cfg.MODEL.ADAPTIVECLICK.PIXEL_DECODER_NAME)(cfg, input_shape)


class DeformableEncoderLayer(nn.Module):
    """Post-norm deformable self-attention layer (``self_attn``, ``norm1``, ``linear1``, ``linear2``, ``norm2``)."""

    def __init__(self, d_model=256, d_ffn=1024, dropout=0.0, n_levels=3, n_heads=8, n_points=4, msda_impl=None):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points, impl=msda_impl)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference_points, spatial_shapes, level_start_index, offset_normalizer=None):
        attn = self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index,
                              offset_normalizer=offset_normalizer)
        src = self.norm1(src + self.dropout1(attn))
        ffn = self.linear2(self.dropout2(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout3(ffn))


def encoder_reference_points(spatial_shapes, num_levels, device):
    """Token centres ((j + 0.5) / W_l, (i + 0.5) / H_l) of every level, repeated for every level: (1, S, L, 2)."""
    points = []
    for h, w in spatial_shapes:
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1))
    return torch.cat(points, 0)[None, :, None, :].expand(1, -1, num_levels, 2)


class DeformableEncoder(nn.Module):
    """``level_embed`` + a stack of :class:`DeformableEncoderLayer` over flattened multi-level maps."""

    def __init__(self, d_model=256, nhead=8, num_layers=4, dim_feedforward=1024, dropout=0.0, num_levels=3,
                 n_points=4, msda_impl=None):
        super().__init__()
        # with no layers (the "without PMMD" ablation) the maps pass through unchanged, and no level
        # embedding is created: it would get no gradient, which DistributedDataParallel refuses
        self.level_embed = nn.Parameter(torch.empty(num_levels, d_model)) if num_layers > 0 else None
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(
            DeformableEncoderLayer(d_model, dim_feedforward, dropout, num_levels, nhead, n_points, msda_impl)
            for _ in range(num_layers))
        self.num_levels = num_levels
        # (level sizes, device) -> (spatial_shapes, level_start_index, reference points, offset normaliser); a
        # plain attribute, not in the state dict
        self._index_cache = {}
        # Deformable DETR / Mask2Former init: xavier for every matrix, then the MSDA-specific init
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        if self.level_embed is not None:
            nn.init.normal_(self.level_embed)

    @staticmethod
    def _make_index_tensors(shapes, device):
        starts = [0]
        for h, w in shapes[:-1]:
            starts.append(starts[-1] + h * w)
        spatial_shapes = torch.tensor(shapes, dtype=torch.long, device=device)
        return (spatial_shapes, torch.tensor(starts, dtype=torch.long, device=device),
                encoder_reference_points(shapes, len(shapes), device), offset_normalizer_of(spatial_shapes))

    def _index_tensors(self, shapes, device):
        """``spatial_shapes``, ``level_start_index``, the (1, S, L, 2) reference points and the layers' offset
        normaliser for these level sizes, made once per (sizes, device) and reused (:func:`shape_constant`): the
        operator's input check then reads the index values from the GPU only once (no host synchronisation in
        later forwards; see ``_INDEX_CACHE`` of the op), and the reference points and the normaliser cost no
        kernel launches after the first forward.  Under
        ``torch.compile`` the graph makes them from the Python sizes (the op's check, which reads values, is
        skipped while compiling) and the cache is untouched."""
        return shape_constant(self._index_cache, (shapes, str(device)),
                              lambda: self._make_index_tensors(shapes, device))

    def forward(self, srcs: List[torch.Tensor], pos_embeds: List[torch.Tensor]):
        """srcs/pos_embeds: per level (B, C, H_l, W_l). Returns the encoded maps, same shapes."""
        if not len(self.encoder.layers):
            return list(srcs)
        shapes = [tuple(s.shape[-2:]) for s in srcs]
        flat = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], dim=1)
        pos = torch.cat([(p.flatten(2) + self.level_embed[i][None, :, None]).transpose(1, 2)
                         for i, p in enumerate(pos_embeds)], dim=1)
        device = flat.device
        sizes = [h * w for h, w in shapes]
        spatial_shapes, level_start_index, ref, normalizer = self._index_tensors(tuple(shapes), device)
        ref = ref.expand(flat.shape[0], -1, -1, -1)
        out = flat
        for layer in self.encoder.layers:
            out = layer(out, pos, ref, spatial_shapes, level_start_index, normalizer)
        b, c = out.shape[0], out.shape[2]
        return [t.transpose(1, 2).reshape(b, c, h, w) for t, (h, w) in zip(out.split(sizes, dim=1), shapes)]


@PIXEL_DECODER_REGISTRY.register()
class PMMDPixelDecoder(nn.Module):
    """Progressive multi-scale mask decoder (PMMD) of AdaptiveClick; see the module docstring."""

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], *, conv_dim=256, mask_dim=256, norm="GN",
                 transformer_in_features=("res3", "res4", "res5"), transformer_enc_layers=4,
                 transformer_dim_feedforward=1024, transformer_nheads=8, transformer_n_points=4,
                 transformer_dropout=0.0, common_stride=4, msda_impl=None):
        super().__init__()
        check_int(transformer_enc_layers, "transformer_enc_layers (MODEL.ADAPTIVECLICK.ENC_LAYERS)", 0)
        for value, name in ((conv_dim, "conv_dim"), (mask_dim, "mask_dim"), (transformer_nheads, "transformer_nheads"),
                            (transformer_n_points, "transformer_n_points"),
                            (transformer_dim_feedforward, "transformer_dim_feedforward")):
            check_int(value, f"PMMD {name}")
        shapes = sorted(input_shape.items(), key=lambda kv: kv[1].stride)  # fine to coarse
        self.in_features = [k for k, _ in shapes]
        missing = [f for f in transformer_in_features if f not in input_shape]
        if missing:
            raise ValueError(f"transformer_in_features {missing} not among the backbone outputs {self.in_features}")
        trans = sorted(((k, input_shape[k]) for k in transformer_in_features), key=lambda kv: -kv[1].stride)
        self.transformer_in_features = [k for k, _ in trans]  # coarse first: res5, res4, res3
        self.num_levels = len(trans)
        self.input_proj = nn.ModuleList()
        for _, spec in trans:
            conv = nn.Conv2d(spec.channels, conv_dim, kernel_size=1)
            nn.init.xavier_uniform_(conv.weight, gain=1)
            nn.init.constant_(conv.bias, 0)
            self.input_proj.append(nn.Sequential(conv, nn.GroupNorm(32, conv_dim)))
        self.transformer = DeformableEncoder(conv_dim, transformer_nheads, transformer_enc_layers,
                                             transformer_dim_feedforward, transformer_dropout, self.num_levels,
                                             transformer_n_points, msda_impl)
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)
        # lateral fusion for the backbone levels finer than the finest transformer level, down to common_stride
        finest_transformer_stride = min(spec.stride for _, spec in trans)
        strides = [spec.stride for _, spec in shapes if spec.stride <= finest_transformer_stride]
        if common_stride not in strides:
            raise ValueError(f"common_stride (MODEL.ADAPTIVECLICK.COMMON_STRIDE) must be the stride of a backbone "
                             f"level no coarser than the transformer's finest ({strides}), got {common_stride!r}")
        self.fpn_features = [k for k, spec in shapes if common_stride <= spec.stride < finest_transformer_stride]
        self.lateral_convs = nn.ModuleList()
        self.output_convs = nn.ModuleList()
        for name in reversed(self.fpn_features):  # coarse to fine, as the fusion runs
            lateral = nn.Conv2d(input_shape[name].channels, conv_dim, kernel_size=1)
            output = nn.Conv2d(conv_dim, conv_dim, kernel_size=3, padding=1)
            weight_init.c2_xavier_fill(lateral)
            weight_init.c2_xavier_fill(output)
            self.lateral_convs.append(nn.Sequential(lateral, get_norm(norm, conv_dim), nn.ReLU()))
            self.output_convs.append(nn.Sequential(output, get_norm(norm, conv_dim), nn.ReLU()))
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, kernel_size=1)
        weight_init.c2_xavier_fill(self.mask_features)
        self.mask_dim = mask_dim
        self.conv_dim = conv_dim

    @classmethod
    def from_config(cls, cfg, input_shape):
        a = cfg.MODEL.ADAPTIVECLICK
        return {
            "input_shape": dict(input_shape),
            "conv_dim": a.CONVS_DIM,
            "mask_dim": a.MASK_DIM,
            "norm": a.NORM,
            "transformer_in_features": tuple(a.DEFORMABLE_IN_FEATURES),
            "transformer_enc_layers": a.ENC_LAYERS,
            "transformer_dim_feedforward": a.ENC_DIM_FEEDFORWARD,
            "transformer_nheads": a.ENC_NHEADS,
            "transformer_n_points": a.ENC_N_POINTS,
            "transformer_dropout": a.DROPOUT,
            "common_stride": a.COMMON_STRIDE,
            "msda_impl": cfg.MODEL.MSDA.IMPL or None,
        }

    def forward_features(self, features: Dict[str, torch.Tensor]):
        """features: backbone outputs. Returns (mask_features, [1/32, 1/16, 1/8] encoder maps)."""
        device_type = next(iter(features.values())).device.type
        with torch.autocast(device_type=device_type, enabled=False):
            srcs, pos = [], []
            for proj, name in zip(self.input_proj, self.transformer_in_features):
                x = proj(features[name].float())
                srcs.append(x)
                pos.append(self.pe_layer(x))
            multi_scale = self.transformer(srcs, pos)
            y = multi_scale[-1]
            for lateral, output, name in zip(self.lateral_convs, self.output_convs, reversed(self.fpn_features)):
                cur = lateral(features[name].float())
                # the encoder maps are channels-last views of its token sequence (the decoder reads them as
                # tokens for free); the bilinear upsampling is ~2x faster on a contiguous NCHW copy (CPU, 56->112)
                y = output(cur + F.interpolate(y.contiguous(), size=cur.shape[-2:], mode="bilinear",
                                               align_corners=False))
            return self.mask_features(y), multi_scale

    def forward(self, features):
        return self.forward_features(features)
