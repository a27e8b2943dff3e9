"""Click-fused plain ViT and the GN1 simple feature pyramid of AdaptiveClick (model.md §1.3-§2).

The ViT is detectron2's :class:`~detectron2.modeling.backbone.vit.ViT` (patch embedding, absolute position
embedding resized with :func:`get_abs_pos`, window/global blocks) with three changes:

* a second patch embedding ``patch_embed_coords`` (3 -> D, kernel = stride = patch, PyTorch default init)
  of the coordinate features [previous mask, positive disks, negative disks], added to the image tokens;
* attention through ``F.scaled_dot_product_attention``;
* the position embedding is stored at the training grid (``img_size / patch``, class-token slot kept, as the
  official state dict has it) and bicubically resized on the fly for other grids.

Parameter names follow the MAE/timm layout (``patch_embed.proj``, ``pos_embed``, ``blocks.{i}.{norm1,
attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``), so MAE and official checkpoints map key for key.
"""

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.utils import PatchEmbed, get_abs_pos
from detectron2.modeling.backbone.vit import ViT, Attention
from detectron2.config import configurable

from adaptiveclick.utils.checks import check_int

__all__ = ["SDPAAttention", "ClickViT", "SimpleFeaturePyramidGN", "ClickViTBackbone", "VIT_INITS"]


class SDPAAttention(Attention):
    """detectron2's ViT attention (same ``qkv``/``proj`` parameters) computed with scaled_dot_product_attention.

    Input and output are (B, H, W, C) token grids; no relative position bias (the official model has none).
    """

    def __init__(self, dim, num_heads=8, qkv_bias=True):
        super().__init__(dim, num_heads=num_heads, qkv_bias=qkv_bias, use_rel_pos=False)

    def forward(self, x):
        b, h, w, c = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, heads, HW, C/heads)
        return self.proj(out.transpose(1, 2).reshape(b, h, w, c))


#: MODEL.VIT.INIT: random initialisation of the ViT (see :meth:`ClickViT.official_init`)
VIT_INITS = ("official", "detectron2")


class ClickViT(ViT):
    """Plain ViT whose tokens are image patches + coordinate-feature patches + position embedding.

    Args:
        img_size: training input size; ``pos_embed`` holds ``(img_size // patch_size) ** 2`` patch slots
            plus the (unused) class-token slot of the official model.
        patch_size, embed_dim, depth, num_heads, mlp_ratio, qkv_bias, drop_path_rate: as detectron2's ViT
            (LayerNorm eps 1e-6, GELU, no layer scale, no final norm).
        window_size: window side in tokens for the window-attention blocks (official: 224 px, i.e. 14 tokens
            for patch 16 and 16 for patch 14).
        global_block_indexes: 0-based blocks with global attention; all others attend within windows.
        coord_chans: channels of the coordinate features (previous mask + 2 disk maps).
    """

    def __init__(self, img_size=448, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
                 qkv_bias=True, drop_path_rate=0.0, window_size=14, global_block_indexes=(5, 11), coord_chans=3,
                 init="official"):
        if init not in VIT_INITS:
            raise ValueError(f"ClickViT init (MODEL.VIT.INIT) must be one of {VIT_INITS}, got {init!r}")
        for value, name in ((img_size, "img_size"), (patch_size, "patch_size"), (embed_dim, "embed_dim"),
                            (depth, "depth"), (num_heads, "num_heads")):
            check_int(value, f"ClickViT {name} (MODEL.VIT.{name.upper()})")
        global_block_indexes = [int(i) for i in global_block_indexes]
        bad = [i for i in global_block_indexes if not 0 <= i < depth]
        if bad:
            raise ValueError(f"global_block_indexes {bad} out of range for depth {depth}")
        if img_size % patch_size != 0:
            raise ValueError(f"img_size ({img_size}) must be a multiple of patch_size ({patch_size})")
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        window_blocks = [i for i in range(depth) if i not in global_block_indexes] if window_size > 0 else []
        super().__init__(
            img_size=img_size, patch_size=patch_size, in_chans=3, embed_dim=embed_dim, depth=depth,
            num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path_rate=drop_path_rate,
            norm_layer=partial(nn.LayerNorm, eps=1e-6), act_layer=nn.GELU, use_abs_pos=True, use_rel_pos=False,
            window_size=window_size, window_block_indexes=window_blocks, residual_block_indexes=(),
            pretrain_img_size=img_size, pretrain_use_cls_token=True, out_feature="last_feat")
        for blk in self.blocks:
            blk.attn = SDPAAttention(embed_dim, num_heads=num_heads, qkv_bias=qkv_bias)
            blk.attn.apply(self._init_weights)
        self.patch_embed_coords = PatchEmbed(kernel_size=(patch_size, patch_size), stride=(patch_size, patch_size),
                                             in_chans=coord_chans, embed_dim=embed_dim)
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.window_size = window_size
        self.global_block_indexes = tuple(global_block_indexes)
        self.coord_chans = coord_chans
        if init == "official":
            self.official_init()

    @torch.no_grad()
    def official_init(self):
        """The official ViT's random initialisation (lab206/AdaptiveClick ``models_vit.VisionTransformer.
        init_weights``, after the JAX ViT): the image patch embedding's weight xavier-uniform as a linear layer
        of its flattened kernel (its bias as PyTorch leaves it), position embedding N(0, 0.02), every linear
        layer of the blocks xavier-uniform with zero bias, LayerNorms 1 / 0.  detectron2's ViT instead draws
        linear weights from a truncated N(0, 0.02).  The click embedding keeps PyTorch's default, as the
        official ``patch_embed_coords`` (built outside its ViT).  MAE weights (MODEL.VIT.PRETRAINED) replace all
        but the click embedding, so this matters for training from scratch only."""
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.pos_embed, std=0.02)
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def size_divisibility(self):
        # token grids must tile into whole windows (no window padding, as the official model) and be even
        # (the stride-32 pyramid level halves the grid)
        return self.patch_size * (self.window_size * 2 // math.gcd(self.window_size, 2) if self.window_size > 0 else 2)

    def forward(self, x, coord_features):
        """x: (B, 3, H, W) normalised RGB; coord_features: (B, coord_chans, H, W). Returns (B, D, H/p, W/p):
        in eval mode channels-last in memory (a permuted view of the contiguous (B, H/p, W/p, D) token grid),
        in training mode a contiguous NCHW copy."""
        if x.shape[-2:] != coord_features.shape[-2:] or coord_features.shape[1] != self.coord_chans:
            raise ValueError(f"coord_features must be (B, {self.coord_chans}, {x.shape[-2]}, {x.shape[-1]}), "
                             f"got {tuple(coord_features.shape)}")
        tokens = self.patch_embed(x) + self.patch_embed_coords(coord_features)  # (B, gh, gw, D)
        # PatchEmbed returns its convolution's (B, D, gh, gw) output permuted, so the token grid is channel-major
        # in memory, and element-wise ops keep that layout through every block: each LayerNorm and linear layer
        # then copies its input.  One copy here instead (same values up to rounding).  Measured on the 2-core
        # CPU, paired (2026-12-01): inference, ViT-B/H backbone + pyramid 0.97 of before, the pyramid's
        # convolutions being faster on the channels-last map this gives; training (ViT-B, batch 2, forward +
        # backward) 0.91 of before if the pyramid gets a contiguous NCHW map, but 1.02 with the channels-last
        # one (the convolutions' backward is slower on channels-last), hence the copy in training mode.
        tokens = (tokens + get_abs_pos(self.pos_embed, True, (tokens.shape[1], tokens.shape[2]))).contiguous()
        for blk in self.blocks:
            tokens = blk(tokens)
        out = tokens.permute(0, 3, 1, 2)
        return out.contiguous() if self.training else out


def _gn1(channels):
    # GroupNorm with one group: normalises over (C, H, W) per sample (model.md §2; not ViTDet's channel LN)
    return nn.GroupNorm(1, channels)


class SimpleFeaturePyramidGN(nn.Module):
    """Four parallel branches from the ViT map to strides 4/8/16/32 (official ``SimpleFPN``, model.md §2).

    Submodule names ``down_4``, ``down_8``, ``down_16``, ``down_32`` and their Sequential indices match the
    official ``pixel_decoder.neck.*`` keys.  PyTorch default initialisation.
    """

    def __init__(self, in_dim, out_dims=(256, 512, 1024, 2048)):
        super().__init__()
        if len(out_dims) != 4:
            raise ValueError(f"out_dims must have 4 entries (res2..res5), got {list(out_dims)}")
        o2, o3, o4, o5 = (int(d) for d in out_dims)
        c4 = max(2 * o2, in_dim // 2)
        c8 = max(o3, in_dim // 2)
        c32 = max(o5, 2 * in_dim)
        self.down_4 = nn.Sequential(
            nn.ConvTranspose2d(in_dim, c4, 2, stride=2), _gn1(c4), nn.GELU(),
            nn.ConvTranspose2d(c4, c4 // 2, 2, stride=2), _gn1(c4 // 2),
            nn.Conv2d(c4 // 2, o2, 1), _gn1(o2), nn.GELU())
        self.down_8 = nn.Sequential(
            nn.ConvTranspose2d(in_dim, c8, 2, stride=2), _gn1(c8),
            nn.Conv2d(c8, o3, 1), _gn1(o3), nn.GELU())
        self.down_16 = nn.Sequential(nn.Conv2d(in_dim, o4, 1), _gn1(o4), nn.GELU())
        self.down_32 = nn.Sequential(
            nn.Conv2d(in_dim, c32, 2, stride=2), _gn1(c32),
            nn.Conv2d(c32, o5, 1), _gn1(o5), nn.GELU())
        self.out_dims = (o2, o3, o4, o5)

    def forward(self, x):
        return {"res2": self.down_4(x), "res3": self.down_8(x), "res4": self.down_16(x), "res5": self.down_32(x)}


@BACKBONE_REGISTRY.register()
class ClickViTBackbone(Backbone):
    """Registered backbone: :class:`ClickViT` + :class:`SimpleFeaturePyramidGN` -> ``res2``..``res5``.

    ``forward(x, coord_features)`` takes the normalised image (B, 3, H, W) and the coordinate features
    (B, 3, H, W); H and W must be multiples of :attr:`size_divisibility`.  Declared strides are 4/8/16/32
    for every patch size, as in the official code (true strides are patch/4 .. 2*patch).
    """

    @configurable
    def __init__(self, *, net: ClickViT, out_dims=(256, 512, 1024, 2048)):
        super().__init__()
        self.net = net
        self.pyramid = SimpleFeaturePyramidGN(net.embed_dim, out_dims)
        self._out_features = ["res2", "res3", "res4", "res5"]
        self._out_feature_strides = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
        self._out_feature_channels = dict(zip(self._out_features, self.pyramid.out_dims))

    @classmethod
    def from_config(cls, cfg, input_shape=None):
        v = cfg.MODEL.VIT
        net = ClickViT(img_size=v.IMG_SIZE, patch_size=v.PATCH_SIZE, embed_dim=v.EMBED_DIM, depth=v.DEPTH,
                       num_heads=v.NUM_HEADS, mlp_ratio=v.MLP_RATIO, qkv_bias=v.QKV_BIAS,
                       drop_path_rate=v.DROP_PATH_RATE, window_size=v.WINDOW_SIZE,
                       global_block_indexes=tuple(v.GLOBAL_BLOCK_INDEXES), init=v.INIT)
        if v.PRETRAINED:
            from .mae import load_mae_weights

            load_mae_weights(net, v.PRETRAINED)
        return {"net": net, "out_dims": tuple(v.FPN_OUT_DIMS)}

    @property
    def size_divisibility(self):
        return self.net.size_divisibility

    @property
    def padding_constraints(self):
        return {"size_divisibility": self.size_divisibility}

    def output_shape(self):
        return {k: ShapeSpec(channels=self._out_feature_channels[k], stride=self._out_feature_strides[k])
                for k in self._out_features}

    def forward(self, x, coord_features):
        div = self.size_divisibility
        if x.shape[-2] % div or x.shape[-1] % div:
            raise ValueError(f"input size {tuple(x.shape[-2:])} must be a multiple of {div} (patch x window)")
        return self.pyramid(self.net(x, coord_features))
