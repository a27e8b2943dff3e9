"""Pixel decoders (registry ``PIXEL_DECODER_REGISTRY``): PMMD, the deformable-attention multi-scale decoder."""

from .pmmd import (PIXEL_DECODER_REGISTRY, DeformableEncoder, DeformableEncoderLayer, PMMDPixelDecoder,
                   build_pixel_decoder)

__all__ = ["PIXEL_DECODER_REGISTRY", "build_pixel_decoder", "PMMDPixelDecoder", "DeformableEncoder",
           "DeformableEncoderLayer"]
