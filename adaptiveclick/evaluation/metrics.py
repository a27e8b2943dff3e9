"""IoU and the NoC metrics of interactive segmentation (protocol.md A.6-A.7).

An instance's result is its IoU sequence ``s = [IoU_1, ..., IoU_n]`` (n <= max_clicks), stored as float32.
Thresholds are compared with those float32 values *as float32* (A.7: a stored 0.90 reaches NoC@90).
"""

from collections import OrderedDict
from numbers import Integral, Real
from typing import Iterable, List, Optional, Sequence

import numpy as np

__all__ = ["mask_iou", "noc", "nof", "noc_list", "iou_curve", "success_curve", "summarize_noc",
           "check_thresholds", "threshold_name"]


def _check_max_clicks(max_clicks) -> int:
    if isinstance(max_clicks, bool) or not isinstance(max_clicks, Integral) or max_clicks < 1:
        raise ValueError(f"max_clicks must be a positive integer, got {max_clicks!r}")
    return int(max_clicks)


def _check_threshold(threshold, name: str = "threshold") -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"{name} must be an IoU in (0, 1], got {threshold!r}")
    return float(threshold)


def _as_sequence(ious, max_clicks: int, name: str = "ious") -> np.ndarray:
    """Validate one IoU sequence and return it as float32."""
    arr = np.asarray(ious)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of IoUs, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must hold numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite IoUs: {arr.tolist()}")
    if arr.min() < 0 or arr.max() > 1:
        raise ValueError(f"{name} must lie in [0, 1], got values in [{arr.min()}, {arr.max()}]")
    if arr.size > max_clicks:
        raise ValueError(f"{name} has {arr.size} entries but max_clicks is {max_clicks}")
    return arr


def check_thresholds(thresholds: Sequence[float], stop_iou: Optional[float] = None) -> List[float]:
    """Validate NoC thresholds (each in (0, 1], at most ``stop_iou`` when given); returns them as floats.

    A threshold above the early-stop IoU cannot be evaluated: a run that stopped does not tell whether it
    would have reached it.
    """
    out = [_check_threshold(t, "thresholds[]") for t in thresholds]
    if not out:
        raise ValueError("thresholds is empty")
    if stop_iou is not None:
        too_high = [t for t in out if np.float32(t) > np.float32(stop_iou)]
        if too_high:
            raise ValueError(f"thresholds {too_high} exceed the stop IoU {stop_iou}: runs that stopped early do "
                             "not tell whether they would have reached them")
    return out


def threshold_name(threshold: float) -> str:
    """The percent label of a threshold: 0.85 -> "85" (as in "NoC@85")."""
    return f"{round(100 * float(threshold)):d}"


def mask_iou(pred, gt, ignore=None) -> float:
    """IoU of binary ``pred`` and ``gt`` over the non-ignored pixels (A.6; ``get_iou`` of RITM).

    IoU = |pred AND gt AND valid| / |(pred OR gt) AND valid|, valid = NOT ignore.  Raises ValueError when
    the union is empty (the IoU is undefined) instead of returning NaN.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    for name, arr in (("pred", pred), ("gt", gt)):
        if arr.dtype != np.bool_ or arr.ndim != 2:
            raise ValueError(f"{name} must be a 2-D bool mask, got dtype {arr.dtype} and shape {arr.shape}")
    if pred.shape != gt.shape:
        raise ValueError(f"pred has shape {pred.shape}, gt has shape {gt.shape}; they must match")
    if ignore is None:
        inter, union = np.count_nonzero(pred & gt), np.count_nonzero(pred | gt)
    else:
        ignore = np.asarray(ignore)
        if ignore.dtype != np.bool_ or ignore.shape != gt.shape:
            raise ValueError(f"ignore must be a bool mask of shape {gt.shape}, got dtype {ignore.dtype} "
                             f"and shape {ignore.shape}")
        valid = ~ignore
        inter, union = np.count_nonzero(pred & gt & valid), np.count_nonzero((pred | gt) & valid)
    if union == 0:
        raise ValueError("IoU is undefined: prediction and ground truth are both empty on the non-ignored pixels")
    return inter / union


def noc(ious, threshold: float, max_clicks: int = 20) -> int:
    """Number of clicks: the smallest 1-based k with ``ious[k] >= threshold``, or ``max_clicks`` if none.

    The comparison is done in float32 (A.7).  Example: ``noc([0.62, 0.80, 0.86], 0.85) == 3``.
    """
    max_clicks = _check_max_clicks(max_clicks)
    threshold = _check_threshold(threshold)
    seq = _as_sequence(ious, max_clicks)
    reached = np.flatnonzero(seq >= np.float32(threshold))
    return int(reached[0]) + 1 if reached.size else max_clicks


def noc_list(sequences: Iterable[Sequence[float]], threshold: float, max_clicks: int = 20) -> List[int]:
    """:func:`noc` of every sequence."""
    return [noc(s, threshold, max_clicks) for s in sequences]


def nof(sequences: Iterable[Sequence[float]], threshold: float, max_clicks: int = 20) -> int:
    """Number of failures: instances whose NoC is ``max_clicks`` (also those first reaching it at the last click)."""
    max_clicks = _check_max_clicks(max_clicks)
    return sum(k == max_clicks for k in noc_list(sequences, threshold, max_clicks))


def _full_sequences(sequences, max_clicks: int) -> np.ndarray:
    seqs = [_as_sequence(s, max_clicks, f"sequences[{i}]") for i, s in enumerate(sequences)]
    if not seqs:
        raise ValueError("sequences is empty")
    short = [i for i, s in enumerate(seqs) if s.size != max_clicks]
    if short:
        raise ValueError(f"mIoU@k needs full {max_clicks}-click sequences (run without early stopping, stop IoU "
                         f"> 1), but {len(short)} sequence(s) are shorter, e.g. sequences[{short[0]}]")
    return np.stack(seqs)


def iou_curve(sequences: Iterable[Sequence[float]], max_clicks: int = 20) -> np.ndarray:
    """mIoU@k for k = 1..max_clicks (float64 array); every sequence must have ``max_clicks`` entries."""
    max_clicks = _check_max_clicks(max_clicks)
    return _full_sequences(list(sequences), max_clicks).astype(np.float64).mean(axis=0)


def success_curve(sequences: Iterable[Sequence[float]], threshold: float, max_clicks: int = 20) -> np.ndarray:
    """Fraction of instances with NoC@threshold <= k, for k = 1..max_clicks.

    Exact for early-stopped sequences as long as ``threshold`` does not exceed the stop IoU.  An instance
    that first reaches the threshold at click ``max_clicks`` counts as reached at k = max_clicks.
    """
    max_clicks = _check_max_clicks(max_clicks)
    seqs = list(sequences)
    if not seqs:
        raise ValueError("sequences is empty")
    nocs = np.array(noc_list(seqs, threshold, max_clicks))
    reached = np.array([bool((_as_sequence(s, max_clicks) >= np.float32(threshold)).any()) for s in seqs])
    ks = np.arange(1, max_clicks + 1)
    return ((nocs[None, :] <= ks[:, None]) & reached[None, :]).mean(axis=1)


def summarize_noc(sequences: Iterable[Sequence[float]], thresholds: Sequence[float] = (0.85, 0.90),
                  max_clicks: int = 20, stop_iou: Optional[float] = None) -> "OrderedDict[str, float]":
    """The dataset metrics of A.7 from per-instance IoU sequences.

    Returns an OrderedDict with, for every threshold t (label ``threshold_name(t)``, e.g. "85"):
    ``NoC@85`` (mean over instances), ``NoC@85_std`` (population std), ``NoF@85`` (failures); then
    ``num_instances`` and ``num_clicks`` (sum of sequence lengths); then ``mIoU@1 .. mIoU@max_clicks`` only
    when every sequence is full (no early stop).  ``stop_iou`` (the early-stop IoU the sequences were made
    with), when given, must be >= every threshold: a NoC above the stop IoU cannot be read off stopped runs.
    """
    max_clicks = _check_max_clicks(max_clicks)
    seqs = [_as_sequence(s, max_clicks, f"sequences[{i}]") for i, s in enumerate(sequences)]
    if not seqs:
        raise ValueError("sequences is empty: no instance was evaluated")
    thresholds = check_thresholds(thresholds, stop_iou)
    out = OrderedDict()
    for t in thresholds:
        nocs = np.array(noc_list(seqs, t, max_clicks), dtype=np.float64)
        name = threshold_name(t)
        out[f"NoC@{name}"] = float(nocs.mean())
        out[f"NoC@{name}_std"] = float(nocs.std())
        out[f"NoF@{name}"] = int((nocs == max_clicks).sum())
    out["num_instances"] = len(seqs)
    out["num_clicks"] = int(sum(s.size for s in seqs))
    if all(s.size == max_clicks for s in seqs):
        for k, value in enumerate(iou_curve(seqs, max_clicks), start=1):
            out[f"mIoU@{k}"] = float(value)
    return out
