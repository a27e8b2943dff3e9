"""The :class:`Click` type, its array formats, and the input checks shared by the click functions.

Array format (``/tmp/data_contract.md``): an int64 array of shape (max_points, 3) whose rows are
(row, col, is_positive) with is_positive in {0, 1}; unused rows are (-1, -1, -1).
The training layout (protocol.md B.2/B.4) has 2K rows: slots 0..K-1 hold positive clicks and slots
K..2K-1 negative clicks, each group padded at its end, so that the iterative-training rule can
overwrite slot K - i / 2K - i as the official trainer does.
"""

from dataclasses import dataclass
from numbers import Integral
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["Click", "clicks_to_array", "array_to_clicks", "training_click_array", "PAD_ROW"]

PAD_ROW = (-1, -1, -1)


@dataclass(frozen=True)
class Click:
    """One click at pixel (row, col) (0-based, row first); positive clicks mark the object."""

    is_positive: bool
    row: int
    col: int

    def __post_init__(self):
        if not isinstance(self.is_positive, (bool, np.bool_)):
            raise TypeError(f"Click.is_positive must be a bool, got {type(self.is_positive).__name__}")
        for name in ("row", "col"):
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, Integral):
                raise TypeError(f"Click.{name} must be an integer, got {value!r}")
            if value < 0:
                raise ValueError(f"Click.{name} must be >= 0 (a pixel of the image), got {value}")
            object.__setattr__(self, name, int(value))
        object.__setattr__(self, "is_positive", bool(self.is_positive))

    def check_inside(self, shape: Tuple[int, int], name: str = "click") -> None:
        """Raise ValueError unless the click lies inside an image of ``shape`` (H, W)."""
        if not (self.row < shape[0] and self.col < shape[1]):
            raise ValueError(f"{name} {self} lies outside the image of shape (H, W) = {tuple(shape)}")


def clicks_to_array(clicks: Iterable[Click], max_points: int,
                    shape: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """Pack clicks, in order, into an int64 (max_points, 3) array of (row, col, is_positive), -1 padded.

    ``shape`` (H, W), when given, checks that every click lies inside the image.
    """
    clicks = list(clicks)
    if not isinstance(max_points, Integral) or max_points < 0:
        raise ValueError(f"max_points must be a non-negative integer, got {max_points!r}")
    if len(clicks) > max_points:
        raise ValueError(f"got {len(clicks)} clicks but max_points is {max_points}")
    out = np.full((int(max_points), 3), -1, dtype=np.int64)
    for i, click in enumerate(clicks):
        if not isinstance(click, Click):
            raise TypeError(f"clicks[{i}] must be a Click, got {type(click).__name__}")
        if shape is not None:
            click.check_inside(shape, f"clicks[{i}]")
        out[i] = (click.row, click.col, int(click.is_positive))
    return out


def array_to_clicks(array, shape: Optional[Tuple[int, int]] = None) -> List[Click]:
    """Inverse of :func:`clicks_to_array` (and of :func:`training_click_array`): the non-padding rows, in order.

    Accepts any (N, 3) integer array (NumPy or a CPU tensor).  A row is padding iff it is (-1, -1, -1);
    any other row must have row >= 0, col >= 0 and is_positive in {0, 1}.
    """
    arr = np.asarray(array)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"click array must have shape (N, 3), got {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"click array must hold integers, got dtype {arr.dtype}")
    clicks = []
    for i, (row, col, pos) in enumerate(arr.tolist()):
        if (row, col, pos) == PAD_ROW:
            continue
        if row < 0 or col < 0 or pos not in (0, 1):
            raise ValueError(f"click array row {i} = {(row, col, pos)} is neither a click "
                             "(row >= 0, col >= 0, is_positive in {0, 1}) nor padding (-1, -1, -1)")
        click = Click(bool(pos), row, col)
        if shape is not None:
            click.check_inside(shape, f"click array row {i}")
        clicks.append(click)
    return clicks


def training_click_array(positives: Sequence[Click], negatives: Sequence[Click], max_num_points: int,
                         shape: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """The (2K, 3) training layout, K = max_num_points: positives in rows 0..K-1, negatives in K..2K-1."""
    if any(not c.is_positive for c in positives) or any(c.is_positive for c in negatives):
        raise ValueError("positives must all be positive clicks and negatives all negative clicks")
    return np.concatenate([clicks_to_array(positives, max_num_points, shape),
                           clicks_to_array(negatives, max_num_points, shape)])


def as_mask(value, name: str, shape: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """Return ``value`` as a 2-D bool array; it must be bool or hold only 0 and 1 (ValueError otherwise)."""
    arr = np.asarray(value)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) mask, got shape {arr.shape}")
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"{name} has shape {arr.shape}, expected {tuple(shape)} (same as the ground truth)")
    if arr.dtype == np.bool_:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must be a bool or numeric 0/1 mask, got dtype {arr.dtype}")
    if not np.isin(arr, (0, 1)).all():
        bad = np.unique(arr[~np.isin(arr, (0, 1))])[:5]
        raise ValueError(f"{name} must be binary (bool or values 0/1), found values {bad.tolist()}")
    return arr.astype(bool)


def as_optional_mask(value, name: str, shape: Tuple[int, int]) -> np.ndarray:
    """Like :func:`as_mask`; ``None`` becomes an all-False mask of ``shape``."""
    if value is None:
        return np.zeros(shape, dtype=bool)
    return as_mask(value, name, shape)


def check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng
