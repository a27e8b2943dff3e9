"""Argument checks shared by the model's constructors and the tools: a wrong size fails when the model is
built, with the argument named, not later inside a reshape or a division; a CUDA device that cannot work here
is refused before anything is built."""

import math
from numbers import Integral, Real
from typing import Optional, Sequence

__all__ = ["check_int", "check_positive_reals", "cuda_device_problem"]


def check_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as an int, which must be an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive_reals(values: Sequence, name: str) -> list:
    """``values`` as floats, each finite and > 0."""
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must hold finite values > 0, got {list(values)}")
        out.append(float(v))
    return out


def cuda_device_problem(device) -> Optional[str]:
    """Why the CUDA ``device`` (a ``torch.device``) cannot be used on this machine (no usable CUDA, or no GPU of
    that index); None when it can, and for other device types.  Callers raise their own error with it."""
    import torch  # here, not at the top: adaptiveclick.clicks uses this module and must not import torch

    if device.type != "cuda":
        return None
    if not torch.cuda.is_available():
        return f"CUDA is not available on this machine (torch {torch.__version__}, CUDA build {torch.version.cuda})"
    if device.index is not None and device.index >= torch.cuda.device_count():
        return f"this machine has only {torch.cuda.device_count()} CUDA device(s)"
    return None
