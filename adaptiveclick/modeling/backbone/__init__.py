"""Click-fused plain ViT backbone with the GN1 simple feature pyramid, and MAE weight loading."""

from .mae import MAELoadReport, load_mae_weights, read_checkpoint, resize_pos_embed
from .vit import ClickViT, ClickViTBackbone, SDPAAttention, SimpleFeaturePyramidGN

__all__ = ["ClickViT", "ClickViTBackbone", "SDPAAttention", "SimpleFeaturePyramidGN", "MAELoadReport",
           "load_mae_weights", "read_checkpoint", "resize_pos_embed"]
