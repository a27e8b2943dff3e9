"""Checked entry point of multi-scale deformable attention and the choice of implementation.

Three implementations compute the same thing (see :mod:`.reference` for the semantics):

* ``"cuda"``: the CUDA kernel of ``adaptiveclick._C`` (built by setup.py when torch has CUDA and nvcc is found);
* ``"cpu"``: the C++ kernel of ``adaptiveclick._C`` (always built unless ``ADAPTIVECLICK_NO_EXT=1``);
* ``"pytorch"``: the grid_sample reference, always available.

Choice, first match wins: the ``impl`` argument; the environment variable ``ADAPTIVECLICK_MSDA_IMPL``;
automatic (the CUDA kernel for CUDA tensors if built, the CPU kernel for CPU tensors if built, else the
reference).  Forcing an implementation that is not usable for the given tensors raises a ``RuntimeError``
that says why.  Nothing here fails at import time: a missing or broken extension only narrows the choice.
The extension is loaded when this module is imported, not on first use: Dynamo cannot trace ``importlib``, so a
first use inside ``torch.compile`` (a predictor compiled before any eager click) split the network into 11
graphs.

Outputs and gradients agree to rounding, except the gradient of the sampling locations exactly on an integer
pixel position, where bilinear interpolation has a kink and the kernels and ``grid_sample`` take different
one-sided derivatives.  Mask2Former's initialisation of the sampling offsets puts every point there, so the
first optimizer step of ``sampling_offsets`` differs by a few percent between the kernels and the official
``grid_sample`` path (measured: 6-11 % relative on those two tensors, 5e-7 median over all parameters); once the
offsets leave the integer grid the implementations agree (2.6e-6).
"""

import importlib
import os
import weakref
from typing import Tuple

import torch

from .reference import ms_deform_attn_pytorch

__all__ = ["ms_deform_attn", "resolve_impl", "extension_status", "IMPLS", "ENV_VAR"]

IMPLS = ("cuda", "cpu", "pytorch")
ENV_VAR = "ADAPTIVECLICK_MSDA_IMPL"

_EXT = None  # (module or None, error message or None); loaded at import (end of this module)


def _extension():
    global _EXT
    if _EXT is None:  # the first call, made by this module's import (its last line)
        try:
            _EXT = (importlib.import_module("adaptiveclick._C"), None)
        except ImportError as e:  # not built (ADAPTIVECLICK_NO_EXT=1, failed build, or an ABI mismatch)
            _EXT = (None, f"adaptiveclick._C could not be imported ({e}); rebuild it with "
                          "`pip install --no-build-isolation -e .`")
    return _EXT


def extension_status():
    """What the compiled extension offers: ``{"built", "cpu", "cuda", "error"}``."""
    ext, err = _extension()
    return {
        "built": ext is not None,
        "cpu": ext is not None,
        "cuda": bool(ext is not None and ext.compiled_with_cuda()),
        "error": err,
    }


def _unusable_reason(impl, device):
    """None if ``impl`` can run on tensors of ``device``, else the reason it cannot."""
    if impl == "pytorch":
        return None
    ext, err = _extension()
    if ext is None:
        return err
    if impl == "cpu":
        return None if device.type == "cpu" else f"the CPU kernel cannot run on {device.type} tensors"
    if device.type != "cuda":
        return f"the CUDA kernel needs CUDA tensors, got {device.type} tensors"
    if not ext.compiled_with_cuda():
        return ("adaptiveclick._C was built without its CUDA kernel (torch without CUDA or nvcc not found at "
                "build time); rebuild with FORCE_CUDA=1 `pip install --no-build-isolation -e .`")
    return None


def resolve_impl(impl=None, device="cpu"):
    """Name of the implementation that :func:`ms_deform_attn` uses for tensors on ``device``."""
    device = torch.device(device)
    requested = impl or os.environ.get(ENV_VAR, "").strip().lower() or None
    if requested is not None:
        if requested not in IMPLS:
            raise ValueError(f"unknown MSDeformAttn implementation {requested!r}; expected one of {IMPLS} "
                             f"(from {'the impl argument' if impl else ENV_VAR})")
        reason = _unusable_reason(requested, device)
        if reason is not None:
            raise RuntimeError(f"MSDeformAttn implementation {requested!r} was requested but is unavailable: "
                               f"{reason}")
        return requested
    native = "cuda" if device.type == "cuda" else "cpu"
    if device.type in ("cuda", "cpu") and _unusable_reason(native, device) is None:
        return native
    return "pytorch"


# Host copies of index tensors already read, keyed by id(tensor) -> (weakref, version, values).  Reading a CUDA
# tensor's values synchronises the host with the GPU; a caller that passes the same spatial_shapes /
# level_start_index tensors every forward (the PMMD encoder does) pays that once, not once per layer and
# forward.  An entry is used only while the weakref still points at the very tensor and its version counter
# (bumped by every in-place change) is unchanged; it is dropped when the tensor is freed.
_INDEX_CACHE = {}


def _tensor_values(t):
    if t.is_inference():  # no version counter to notice in-place changes: read every time
        return t.tolist()
    key = id(t)
    hit = _INDEX_CACHE.get(key)
    if hit is not None and hit[0]() is t and hit[1] == t._version:
        return hit[2]
    values = t.tolist()
    _INDEX_CACHE[key] = (weakref.ref(t, lambda _, k=key: _INDEX_CACHE.pop(k, None)), t._version, values)
    return values


def _index_values(spatial_shapes, level_start_index):
    """Python lists of the values of ``spatial_shapes`` and ``level_start_index`` (see ``_INDEX_CACHE``)."""
    return _tensor_values(spatial_shapes), _tensor_values(level_start_index)


def _check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    def need(cond, msg):
        if not cond:
            raise ValueError(f"ms_deform_attn: {msg}")

    tensors = {"value": value, "spatial_shapes": spatial_shapes, "level_start_index": level_start_index,
               "sampling_locations": sampling_locations, "attention_weights": attention_weights}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"ms_deform_attn: {name} must be a torch.Tensor, got {type(t).__name__}")
    need(value.dim() == 4, f"value must be (N, S, M, D), got shape {tuple(value.shape)}")
    need(sampling_locations.dim() == 6 and sampling_locations.shape[-1] == 2,
         f"sampling_locations must be (N, Lq, M, L, P, 2), got shape {tuple(sampling_locations.shape)}")
    need(attention_weights.dim() == 5,
         f"attention_weights must be (N, Lq, M, L, P), got shape {tuple(attention_weights.shape)}")
    need(spatial_shapes.dim() == 2 and spatial_shapes.shape[1] == 2,
         f"spatial_shapes must be (L, 2) rows [H, W], got shape {tuple(spatial_shapes.shape)}")
    need(level_start_index.dim() == 1,
         f"level_start_index must be (L,), got shape {tuple(level_start_index.shape)}")
    for name in ("spatial_shapes", "level_start_index"):
        t = tensors[name]
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise TypeError(f"ms_deform_attn: {name} must be an integer tensor (int64), got {t.dtype}")
    if not value.dtype.is_floating_point:
        raise TypeError(f"ms_deform_attn: value must be a floating tensor, got {value.dtype}")
    for name in ("sampling_locations", "attention_weights"):
        if tensors[name].dtype != value.dtype:
            raise TypeError(f"ms_deform_attn: {name} has dtype {tensors[name].dtype} but value has "
                            f"{value.dtype}; all three must share one dtype")
        if tensors[name].device != value.device:
            raise ValueError(f"ms_deform_attn: {name} is on {tensors[name].device} but value is on "
                             f"{value.device}")
    n, s, m, _ = value.shape
    num_levels = spatial_shapes.shape[0]
    need(sampling_locations.shape[0] == n and sampling_locations.shape[2] == m,
         f"sampling_locations (N, Lq, M, L, P, 2) = {tuple(sampling_locations.shape)} does not match value "
         f"(N={n}, M={m})")
    need(sampling_locations.shape[3] == num_levels,
         f"sampling_locations has {sampling_locations.shape[3]} levels but spatial_shapes has {num_levels}")
    need(tuple(attention_weights.shape) == tuple(sampling_locations.shape[:5]),
         f"attention_weights must have shape {tuple(sampling_locations.shape[:5])} (sampling_locations "
         f"without the last axis), got {tuple(attention_weights.shape)}")
    need(level_start_index.shape[0] == num_levels,
         f"level_start_index has {level_start_index.shape[0]} entries but spatial_shapes has {num_levels} levels")
    if torch.compiler.is_compiling():
        # reading the index values would break the traced graph; the shapes above are still checked, and the
        # same call checked its values when it last ran eagerly
        return
    shapes, starts = _index_values(spatial_shapes, level_start_index)
    expect_start = 0
    for lvl, ((h, w), st) in enumerate(zip(shapes, starts)):
        need(h > 0 and w > 0, f"spatial_shapes[{lvl}] = {[h, w]} must be positive")
        need(st == expect_start, f"level_start_index[{lvl}] = {st}, expected {expect_start} (cumulative H*W)")
        expect_start += h * w
    need(expect_start == s, f"value has S={s} tokens but spatial_shapes sum to {expect_start} (sum of H*W)")


# The kernels as PyTorch operators (torch.library): autograd through ``register_autograd``, and fake (meta)
# implementations that give the output shapes, so that torch.compile keeps the whole PMMD encoder in one graph
# (and CUDA graphs can capture it) instead of breaking the graph at every call.
@torch.library.custom_op("adaptiveclick::ms_deform_attn", mutates_args=())
def _msda_forward_op(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                     sampling_locations: torch.Tensor, attention_weights: torch.Tensor) -> torch.Tensor:
    ext, _ = _extension()
    return ext.ms_deform_attn_forward(value, spatial_shapes, level_start_index, sampling_locations,
                                      attention_weights)


@_msda_forward_op.register_fake
def _(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    n, _, m, d = value.shape
    return value.new_empty((n, sampling_locations.shape[1], m * d))


@torch.library.custom_op("adaptiveclick::ms_deform_attn_backward", mutates_args=())
def _msda_backward_op(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                      sampling_locations: torch.Tensor, attention_weights: torch.Tensor,
                      grad_output: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ext, _ = _extension()
    grad_value, grad_loc, grad_attn = ext.ms_deform_attn_backward(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output)
    return grad_value, grad_loc, grad_attn


@_msda_backward_op.register_fake
def _(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output):
    return torch.empty_like(value), torch.empty_like(sampling_locations), torch.empty_like(attention_weights)


def _msda_setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _msda_backward(ctx, grad_output):
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
    grad_value, grad_loc, grad_attn = _msda_backward_op(value, spatial_shapes, level_start_index,
                                                        sampling_locations, attention_weights,
                                                        grad_output.contiguous())
    return grad_value, None, None, grad_loc, grad_attn


_msda_forward_op.register_autograd(_msda_backward, setup_context=_msda_setup_context)


def ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                   impl=None):
    """Multi-scale deformable attention core.

    Args:
        value: (N, S, M, D) per-head values of all levels, flattened level after level.
        spatial_shapes: (L, 2) int64 rows [H, W], with S = sum of H*W.
        level_start_index: (L,) int64 offset of each level in S.
        sampling_locations: (N, Lq, M, L, P, 2) normalised (x, y), (0, 0) the top-left corner of the map and
            (1, 1) its bottom-right corner; locations outside sample zeros.
        attention_weights: (N, Lq, M, L, P).
        impl: None (automatic / ADAPTIVECLICK_MSDA_IMPL) or "cuda" | "cpu" | "pytorch".

    Returns:
        (N, Lq, M * D) tensor of the dtype of ``value``.
    """
    _check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    chosen = resolve_impl(impl, value.device)
    if chosen == "pytorch":
        return ms_deform_attn_pytorch(value, spatial_shapes, level_start_index, sampling_locations,
                                      attention_weights)
    dev = value.device
    return _msda_forward_op(
        value.contiguous(), spatial_shapes.to(device=dev, dtype=torch.long).contiguous(),
        level_start_index.to(device=dev, dtype=torch.long).contiguous(), sampling_locations.contiguous(),
        attention_weights.contiguous())


_extension()  # at import, outside any traced code (see the module docstring)
