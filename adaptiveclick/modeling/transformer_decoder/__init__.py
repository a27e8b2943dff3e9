"""Mask decoders (registry ``TRANSFORMER_DECODER_REGISTRY``): CAMD with the clicks-aware attention module."""

from .camd import (CAAM_MODES, CAAM_POOLINGS, TRANSFORMER_DECODER_REGISTRY, CAMDDecoder, SDPAMultiheadAttention,
                   build_transformer_decoder, clicks_aware_attention_mask, open_full_rows, pool_click_map)

__all__ = ["TRANSFORMER_DECODER_REGISTRY", "build_transformer_decoder", "CAMDDecoder", "SDPAMultiheadAttention",
           "clicks_aware_attention_mask", "open_full_rows", "pool_click_map", "CAAM_MODES",
           "CAAM_POOLINGS"]
