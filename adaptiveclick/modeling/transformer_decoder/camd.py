"""CAMD: the clicks-aware mask decoder with the clicks-aware attention module (CAAM), model.md §4.

Mask2Former's multi-scale masked-attention decoder in which the attention mask of every cross-attention is
the clicks-aware mask of :func:`clicks_aware_attention_mask`: a pixel of level l is open to query q if the
query's current mask predicts foreground there, OR (``caam_mode="official"``) the pixel is covered by the
max-pooled positive-click map and the query is currently classified as the object (class index 1).

Layout: 10 learnable queries (``query_feat`` content, ``query_embed`` position); L = 9 layers, layer i
attends level i mod 3 (1/32, 1/16, 1/8) with cross-attention -> self-attention -> FFN, all post-norm; shared
heads (``decoder_norm``, ``class_embed`` Linear(256, 2), ``mask_embed`` 3-layer MLP) produce 10 predictions:
one from the learnable queries and one after each layer.  Parameter names follow the official state dict
(``transformer_cross_attention_layers.{i}.multihead_attn.in_proj_weight`` ...).  All attention goes through
``F.scaled_dot_product_attention`` with the mask broadcast over heads (no per-query loops), as an additive
bias (0 / -inf) made in one operator from cached scalars.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.utils.registry import Registry

from adaptiveclick.utils.checks import check_int

from ..position_encoding import PositionEmbeddingSine
from ..shape_cache import shape_constant

__all__ = ["TRANSFORMER_DECODER_REGISTRY", "build_transformer_decoder", "CAMDDecoder", "SDPAMultiheadAttention",
           "clicks_aware_attention_mask", "open_full_rows", "pool_click_map", "pool_click_maps", "CAAM_MODES",
           "CAAM_POOLINGS"]

TRANSFORMER_DECODER_REGISTRY = Registry("ADAPTIVECLICK_TRANSFORMER_DECODER")
TRANSFORMER_DECODER_REGISTRY.__doc__ = """Mask decoders of adaptiveclick: ``cls(cfg, in_channels)``."""

CAAM_MODES = ("official", "off")
CAAM_POOLINGS = ("official", "adaptive_max")


def build_transformer_decoder(cfg, in_channels):
    """Build the decoder named by ``cfg.MODEL.ADAPTIVECLICK.TRANSFORMER_DECODER_NAME``."""
    return TRANSFORMER_DECODER_REGISTRY.get(cfg.MODEL.ADAPTIVECLICK.TRANSFORMER_DECODER_NAME)(cfg, in_channels)


def pool_click_map(click_map, target_size, input_width, pooling="official"):
    """The CAAM click map at a decoder level (model.md §4.2 step 2).

    ``pooling="official"``: ``click_map`` (B, H, W) positive disks at network-input resolution is max-pooled
    n = floor(log2(input_width / w)) times (3x3, stride 2, padding 1), then resized bilinearly
    (align_corners=False) to ``target_size`` (h, w) if the pooled size differs; for patch 14 that shrink can
    push a pooled click below 0.5 so that it vanishes (quirk 11).  ``"adaptive_max"``: one adaptive max-pool
    straight to (h, w), so a click always survives.  Returns (B, h, w).
    """
    return pool_click_maps(click_map, [target_size], input_width, pooling)[0]


def pool_click_maps(click_map, target_sizes, input_width, pooling="official"):
    """:func:`pool_click_map` for several levels at once: the same maps, but with ``"official"`` pooling the
    repeated 3x3 stride-2 max-pools are shared (the level pooled n times continues from the one pooled fewer
    times), so the three levels of a 448-px ViT-B take 5 poolings instead of 5 + 4 + 3.  Returns a list."""
    if pooling not in CAAM_POOLINGS:
        raise ValueError(f"CAAM pooling must be one of {CAAM_POOLINGS}, got {pooling!r}")
    sizes = [(int(s[0]), int(s[1])) for s in target_sizes]
    x = click_map[:, None].float()
    if pooling == "adaptive_max":
        return [F.adaptive_max_pool2d(x, s)[:, 0] for s in sizes]
    times = [max(0, math.floor(math.log2(input_width / w))) for _, w in sizes]
    pooled = {0: x}
    for n in range(1, max(times, default=0) + 1):
        pooled[n] = F.max_pool2d(pooled[n - 1], kernel_size=3, stride=2, padding=1)
    out = []
    for s, n in zip(sizes, times):
        y = pooled[n]
        if tuple(y.shape[-2:]) != s:
            y = F.interpolate(y, size=s, mode="bilinear", align_corners=False)
        out.append(y[:, 0])
    return out


def clicks_aware_attention_mask(mask_logits, class_logits, target_size, pooled_clicks=None):
    """Blocked positions of the next cross-attention, True = may not attend (model.md §4.2 steps 1-3).

    Args:
        mask_logits: (B, Q, H4, W4) query mask logits (or already at ``target_size``: used as they are).
        class_logits: (B, Q, C) class logits; argmax 1 = the query is currently the object.
        target_size: (h, w) of the attended level.
        pooled_clicks: (B, h, w) from :func:`pool_click_map` (a pixel is a click where it is >= 0.5), or the
            boolean map of those pixels (what the decoder passes: made once per level and click), or None for
            plain Mask2Former masking.
    Returns:
        (B, Q, h * w) bool, detached.  Rows blocked everywhere are NOT opened here (see :func:`open_full_rows`).

    The official rule, blocked = sigmoid(m) < 0.5 AND pool(g_q * P) < 0.5 with g_q = [argmax_c = 1], is computed
    in fewer operators (kernel launches of an eager GPU forward): sigmoid(m) < 0.5 is m < 0 (the two differ only
    for logits within ~1.8e-7 below zero, where float32's sigmoid rounds to 0.5); max-pooling and the bilinear
    resize commute with the per-query factor g_q in {0, 1}, so pool(g_q * P) = g_q * pool(P), pooled once per
    level; and g_q * p < 0.5 is NOT (g_q AND p >= 0.5).  With 2 classes g_q is logit_1 > logit_0 (argmax
    takes the first of tied maxima, so a tie is class 0, as here).
    """
    with torch.no_grad():
        logits = mask_logits
        if tuple(logits.shape[-2:]) != tuple(target_size):
            logits = F.interpolate(logits.float(), size=tuple(target_size), mode="bilinear", align_corners=False)
        blocked = logits < 0
        if pooled_clicks is not None:
            if class_logits.shape[-1] == 2:
                background, foreground = class_logits.unbind(-1)  # one view operator where two selects took two
                is_object = foreground > background
            else:
                is_object = class_logits.argmax(-1) == 1
            on_click = pooled_clicks if pooled_clicks.dtype == torch.bool else pooled_clicks >= 0.5
            # blocked AND NOT (g_q AND click): for booleans a > b is a AND NOT b
            blocked = blocked > (is_object[:, :, None, None] & on_click[:, None])
        return blocked.flatten(2)


def open_full_rows(blocked):
    """Mask2Former rule: a query row blocked at every position is opened entirely. Returns the allowed mask."""
    # allowed = not blocked, or the whole row blocked; for booleans that is blocked <= row_blocked (two
    # operators, where ~blocked | row_blocked took three: kernel launches of an eager GPU forward)
    return blocked <= blocked.all(dim=-1, keepdim=True)


class SDPAMultiheadAttention(nn.Module):
    """Batch-first multi-head attention with ``nn.MultiheadAttention``'s parameters, via scaled_dot_product_attention.

    ``forward(query (B, Lq, E), key (B, Lk, E), value (B, Lk, E), allowed=None)``; ``allowed`` is a boolean
    mask broadcastable to (B, heads, Lq, Lk), True = may attend.  It goes to the attention as an additive bias
    (0 where allowed, -inf elsewhere, in the queries' dtype): the conversion that
    ``scaled_dot_product_attention`` would make of a boolean mask, but in one operator, with the two values
    made once per device and dtype, instead of three (two scalar tensors and a ``where``) per call.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.constant_(self.out_proj.bias, 0.0)
        self._bias_values = {}  # (device, dtype) -> (0, -inf) scalar tensors; a plain attribute, not in the state dict

    def _attention_bias(self, allowed, dtype):
        zero, blocked = shape_constant(
            self._bias_values, (str(allowed.device), dtype),
            lambda: (torch.zeros((), dtype=dtype, device=allowed.device),
                     torch.full((), -math.inf, dtype=dtype, device=allowed.device)))
        return torch.where(allowed, zero, blocked)

    def forward(self, query, key, value, allowed=None):
        e, w, b = self.embed_dim, self.in_proj_weight, self.in_proj_bias

        def heads(x):
            return x.view(x.shape[0], x.shape[1], self.num_heads, -1).transpose(1, 2)

        if key is query:
            # self-attention (the same tensor as query and key): both projections in one matrix product, one
            # kernel launch fewer per layer in an eager GPU forward
            (w_qk, w_v), (b_qk, b_v) = w.split([2 * e, e]), b.split([2 * e, e])
            q, k = F.linear(query, w_qk, b_qk).split(e, dim=-1)
        else:
            (w_q, w_k, w_v), (b_q, b_k, b_v) = w.chunk(3), b.chunk(3)
            q, k = F.linear(query, w_q, b_q), F.linear(key, w_k, b_k)
        v = F.linear(value, w_v, b_v)
        if allowed is not None:
            if allowed.dtype != torch.bool:
                raise TypeError(f"allowed must be a boolean mask, got {allowed.dtype}")
            allowed = self._attention_bias(allowed, q.dtype)
        out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=allowed,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(query.shape[0], query.shape[1], self.embed_dim))


def _xavier_matrices(module):
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class CrossAttentionLayer(nn.Module):
    """t <- LN(t + MHA(t + qpos, memory + pos, memory, mask)) (post-norm)."""

    def __init__(self, d_model, nhead, dropout=0.0):
        super().__init__()
        self.multihead_attn = SDPAMultiheadAttention(d_model, nhead, dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        _xavier_matrices(self)

    def forward(self, tgt, memory, allowed, pos, query_pos):
        out = self.multihead_attn(tgt + query_pos, memory + pos, memory, allowed)
        return self.norm(tgt + self.dropout(out))


class SelfAttentionLayer(nn.Module):
    """t <- LN(t + MHA(t + qpos, t + qpos, t)) (post-norm)."""

    def __init__(self, d_model, nhead, dropout=0.0):
        super().__init__()
        self.self_attn = SDPAMultiheadAttention(d_model, nhead, dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        _xavier_matrices(self)

    def forward(self, tgt, query_pos):
        q = tgt + query_pos
        return self.norm(tgt + self.dropout(self.self_attn(q, q, tgt)))


class FFNLayer(nn.Module):
    """t <- LN(t + W2 ReLU(W1 t)) (post-norm)."""

    def __init__(self, d_model, dim_feedforward, dropout=0.0):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)
        _xavier_matrices(self)

    def forward(self, tgt):
        return self.norm(tgt + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(tgt))))))


class MLP(nn.Module):
    """Linear layers (``layers.{i}``) with ReLU between them."""

    def __init__(self, input_dim, hidden_dim, output_dim, num_layers):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


@TRANSFORMER_DECODER_REGISTRY.register()
class CAMDDecoder(nn.Module):
    """Clicks-aware mask decoder; see the module docstring.

    Args:
        in_channels: channels of the multi-scale features (a 1x1 projection is added if != hidden_dim).
        hidden_dim, nheads, dim_feedforward, dropout: transformer widths (official 256, 8, 2048, 0).
        num_queries: learnable queries (official 10).
        dec_layers: number of predictions = transformer layers + 1 (official 10, i.e. 9 layers).
        mask_dim: channels of the mask features.
        num_classes: object classes; the class head has num_classes + 1 logits (official 1 -> 2 logits).
        num_feature_levels: levels cycled through (official 3).
        caam_mode: "official" (CAAM as released) or "off" (plain Mask2Former masked attention).
        caam_pooling: how the click map reaches a level, "official" or "adaptive_max" (see :func:`pool_click_map`).
    """

    @configurable
    def __init__(self, in_channels, *, hidden_dim=256, num_queries=10, nheads=8, dim_feedforward=2048,
                 dec_layers=10, mask_dim=256, num_classes=1, dropout=0.0, num_feature_levels=3,
                 caam_mode="official", caam_pooling="official"):
        super().__init__()
        if caam_mode not in CAAM_MODES:
            raise ValueError(f"caam_mode must be one of {CAAM_MODES}, got {caam_mode!r}")
        if caam_pooling not in CAAM_POOLINGS:
            raise ValueError(f"caam_pooling must be one of {CAAM_POOLINGS}, got {caam_pooling!r}")
        self.caam_pooling = caam_pooling
        for value, name in ((dec_layers, "dec_layers (MODEL.ADAPTIVECLICK.DEC_LAYERS; predictions incl. the one "
                                         "from the queries)"),
                            (num_queries, "num_queries (MODEL.ADAPTIVECLICK.NUM_QUERIES)"),
                            (hidden_dim, "hidden_dim (MODEL.ADAPTIVECLICK.HIDDEN_DIM)"),
                            (nheads, "nheads (MODEL.ADAPTIVECLICK.NHEADS)"),
                            (dim_feedforward, "dim_feedforward (MODEL.ADAPTIVECLICK.DIM_FEEDFORWARD)"),
                            (mask_dim, "mask_dim (MODEL.ADAPTIVECLICK.MASK_DIM)"),
                            (num_feature_levels, "num_feature_levels")):
            check_int(value, f"CAMD {name}")
        self.caam_mode = caam_mode
        self.num_layers = dec_layers - 1
        self.num_feature_levels = num_feature_levels
        self.num_queries = num_queries
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads, dropout) for _ in range(self.num_layers))
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads, dropout) for _ in range(self.num_layers))
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward, dropout) for _ in range(self.num_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(num_feature_levels):
            if in_channels != hidden_dim:
                conv = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
                nn.init.kaiming_uniform_(conv.weight, a=1)  # c2_xavier_fill
                nn.init.constant_(conv.bias, 0)
                self.input_proj.append(conv)
            else:
                self.input_proj.append(nn.Identity())
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    @classmethod
    def from_config(cls, cfg, in_channels):
        a = cfg.MODEL.ADAPTIVECLICK
        return {
            "in_channels": in_channels,
            "hidden_dim": a.HIDDEN_DIM,
            "num_queries": a.NUM_QUERIES,
            "nheads": a.NHEADS,
            "dim_feedforward": a.DIM_FEEDFORWARD,
            "dec_layers": a.DEC_LAYERS,
            "mask_dim": a.MASK_DIM,
            "dropout": a.DROPOUT,
            "num_feature_levels": len(a.DEFORMABLE_IN_FEATURES),
            "caam_mode": a.CAAM.MODE,
            "caam_pooling": a.CAAM.POOLING,
        }

    def _heads(self, tgt, mask_features):
        h = self.decoder_norm(tgt)
        return self.class_embed(h), torch.einsum("bqc,bchw->bqhw", self.mask_embed(h), mask_features)

    def _level_mask_features(self, mask_features, sizes):
        """Eval mode: the mask features bilinearly resized to every level size (align_corners=False, as the
        attention mask's resize).  Resizing is linear and acts on the spatial axes only, so
        ``resize(einsum(E, F)) == einsum(E, resize(F))``: the intermediate masks, needed only for the next
        layer's attention mask at its level, are computed at that level's size (3 resizes of the features per
        click instead of a full-resolution product and a resize per layer)."""
        return [F.interpolate(mask_features, size=s, mode="bilinear", align_corners=False)
                if s != tuple(mask_features.shape[-2:]) else mask_features for s in sizes]

    def forward(self, features, mask_features, click_map):
        """
        Args:
            features: ``num_feature_levels`` maps (B, C, h_l, w_l), coarse first.
            mask_features: (B, mask_dim, H4, W4).
            click_map: (B, H, W) positive-click disks at network-input resolution (used by CAAM).
        Returns:
            {"pred_logits": (B, Q, 2), "pred_masks": (B, Q, H4, W4), "aux_outputs": [earlier predictions]}.
            In train mode every earlier prediction is at (H4, W4) (deep supervision); in eval mode
            ``aux_outputs`` is empty: the earlier masks are computed at the next attended level's size only
            (see :meth:`_level_mask_features`), the final prediction is the same.
        """
        if len(features) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature levels, got {len(features)}")
        batch = mask_features.shape[0]
        sizes = [tuple(x.shape[-2:]) for x in features]
        srcs, poss = [], []
        for i, x in enumerate(features):
            poss.append(self.pe_layer(x).flatten(2).transpose(1, 2))
            srcs.append((self.input_proj[i](x).flatten(2) + self.level_embed.weight[i][None, :, None]).transpose(1, 2))
        # CAAM's click pixels per level, as booleans (pooled >= 0.5), made once per forward
        pooled = [p >= 0.5 for p in pool_click_maps(click_map, sizes, click_map.shape[-1], self.caam_pooling)] \
            if self.caam_mode == "official" else [None] * len(sizes)
        query_pos = self.query_embed.weight[None].expand(batch, -1, -1)
        tgt = self.query_feat.weight[None].expand(batch, -1, -1)
        level_features = None if self.training else self._level_mask_features(mask_features, sizes)

        def heads(layer):  # predictions after ``layer`` decoder layers (0 = from the learnt queries)
            if level_features is None or layer == self.num_layers:
                return self._heads(tgt, mask_features)
            return self._heads(tgt, level_features[layer % self.num_feature_levels])

        cls, masks = heads(0)
        predictions = [(cls, masks)]
        for i in range(self.num_layers):
            lvl = i % self.num_feature_levels
            blocked = clicks_aware_attention_mask(masks, cls, sizes[lvl], pooled[lvl])
            allowed = open_full_rows(blocked)[:, None]  # (B, 1, Q, h*w), broadcast over heads
            tgt = self.transformer_cross_attention_layers[i](tgt, srcs[lvl], allowed, poss[lvl], query_pos)
            tgt = self.transformer_self_attention_layers[i](tgt, query_pos)
            tgt = self.transformer_ffn_layers[i](tgt)
            cls, masks = heads(i + 1)
            predictions.append((cls, masks))
        if level_features is not None:
            predictions = predictions[-1:]
        return {
            "pred_logits": predictions[-1][0],
            "pred_masks": predictions[-1][1],
            "aux_outputs": [{"pred_logits": c, "pred_masks": m} for c, m in predictions[:-1]],
        }
