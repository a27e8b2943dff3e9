"""Opt-in int8 inference on the CPU: dynamic quantisation of every ``nn.Linear`` (weights int8, activations
quantised per call), through PyTorch's ``torch.ao.quantization.quantize_dynamic``.

Why: on CPUs without fast bf16 (AVX2 only), fp32 matrix products are the floor of a ViT-B/448 click
(the linear layers are ~133 GFLOP per click, see docs/speed.md); int8 products can cut their time, by how
much depends on the CPU: a ViT-B/448 click took 0.59-0.62 of the official fp32 time in int8 against ~0.8 in
fp32 on one 2-core AMD EPYC, while on another (2026-12-08) an int8 linear layer of the ViT-B MLP was only 8 %
faster than fp32 and the int8 click no faster; measure on your CPU (``tools/benchmark_inference.py --dtype
fp32 int8``).  What it costs: the logits move (max |change| 1.9 on a random-weight ViT-B/448 with logits up to
26; 2.2 % of the mask pixels flipped there); on a trained model the effect must be measured with the NoC
protocol before relying on it (``tools/evaluate_noc.py --int8``).  The convolutions, the deformable-attention
kernel and the decoder's functional attention stay fp32.

The model is copied: the original keeps its fp32 weights.  CPU only (PyTorch's dynamic int8 kernels are
FBGEMM/oneDNN CPU kernels); a model on another device is refused with a clear error.
"""

import copy
import warnings

import torch
from torch import nn

__all__ = ["QUANTIZE_CHOICES", "quantize_dynamic_int8", "count_quantized_linears"]

#: accepted values of the ``quantize`` options (None = fp32)
QUANTIZE_CHOICES = (None, "int8")


def _quantized_linear_type():
    return torch.ao.nn.quantized.dynamic.Linear


def quantize_dynamic_int8(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` whose ``nn.Linear`` layers are dynamically quantised to int8.

    ValueError if the model has parameters off the CPU, is in training mode, or has no ``nn.Linear``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    devices = {p.device.type for p in model.parameters()}
    if devices - {"cpu"}:
        raise ValueError(f"int8 dynamic quantisation runs on the CPU only; the model has parameters on "
                         f"{sorted(devices - {'cpu'})} (move it with model.to('cpu') first)")
    if model.training:
        raise ValueError("int8 dynamic quantisation is for inference: call model.eval() first")
    if getattr(model, "compiled_network", None) is not None:
        raise ValueError("the model's network is compiled (compile_network); quantise the eager model, then "
                         "compile the quantised copy")
    if not any(type(m) is nn.Linear for m in model.modules()):
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to quantise")
    quantize_dynamic = _quantize_dynamic()
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; the eager dynamic path still works as documented
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor", category=UserWarning)
        quantized = quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
    return quantized.eval()


def _quantize_dynamic():
    """PyTorch's eager ``quantize_dynamic``, or a RuntimeError saying why int8 is unavailable: PyTorch deprecated
    ``torch.ao.quantization`` (announced for removal in favour of torchao), so a future torch may lack it."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            from torch.ao.quantization import quantize_dynamic
    except ImportError as e:
        raise RuntimeError(f"int8 inference needs torch.ao.quantization.quantize_dynamic, which torch "
                           f"{torch.__version__} does not provide ({e}); use fp32, or a torch that still has it") \
            from e
    return quantize_dynamic


def count_quantized_linears(model: nn.Module) -> int:
    """How many int8 dynamic linear layers ``model`` has."""
    kind = _quantized_linear_type()
    return sum(isinstance(m, kind) for m in model.modules())
