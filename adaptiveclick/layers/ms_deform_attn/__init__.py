"""Multi-scale deformable attention: checked op with CUDA / C++ / pure-PyTorch implementations, and the layer."""

from .function import ENV_VAR, IMPLS, extension_status, ms_deform_attn, resolve_impl
from .module import MSDeformAttn, offset_normalizer_of
from .reference import ms_deform_attn_pytorch

__all__ = ["ms_deform_attn", "ms_deform_attn_pytorch", "MSDeformAttn", "offset_normalizer_of", "resolve_impl",
           "extension_status", "IMPLS", "ENV_VAR"]
