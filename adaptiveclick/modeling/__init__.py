"""AdaptiveClick as detectron2 modules; importing this package registers them.

Registered: backbone ``ClickViTBackbone`` (BACKBONE_REGISTRY), pixel decoder ``PMMDPixelDecoder``
(PIXEL_DECODER_REGISTRY), mask decoder ``CAMDDecoder`` (TRANSFORMER_DECODER_REGISTRY), meta-architectures
``AdaptiveClick`` and ``SimpleClickBaseline`` (META_ARCH_REGISTRY).
"""

from .backbone import ClickViT, ClickViTBackbone, MAELoadReport, SimpleFeaturePyramidGN, load_mae_weights
from .click_maps import check_clicks, click_disk_maps
from .criterion import SetCriterion
from .matcher import HungarianMatcher
from .meta_arch import AdaptiveClick, SimpleClickBaseline, SimpleSegHead, merge_query_logits
from .pixel_decoder import PIXEL_DECODER_REGISTRY, PMMDPixelDecoder, build_pixel_decoder
from .targets import build_targets
from .transformer_decoder import (TRANSFORMER_DECODER_REGISTRY, CAMDDecoder, build_transformer_decoder,
                                  clicks_aware_attention_mask, pool_click_map)

__all__ = [
    "ClickViT", "ClickViTBackbone", "SimpleFeaturePyramidGN", "MAELoadReport", "load_mae_weights",
    "check_clicks", "click_disk_maps",
    "PIXEL_DECODER_REGISTRY", "PMMDPixelDecoder", "build_pixel_decoder",
    "TRANSFORMER_DECODER_REGISTRY", "CAMDDecoder", "build_transformer_decoder", "clicks_aware_attention_mask",
    "pool_click_map",
    "HungarianMatcher", "SetCriterion", "build_targets",
    "AdaptiveClick", "SimpleClickBaseline", "SimpleSegHead", "merge_query_logits",
]
