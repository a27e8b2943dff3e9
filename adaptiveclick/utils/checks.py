"""Argument checks shared by the model's constructors: a wrong size fails when the model is built, with the
argument named, not later inside a reshape or a division."""

import math
from numbers import Integral, Real
from typing import Sequence

__all__ = ["check_int", "check_positive_reals"]


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
