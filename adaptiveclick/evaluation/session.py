"""The per-instance NoC loop (protocol.md A.2): simulated clicks, previous-mask feedback, IoU per click."""

import time
from dataclasses import asdict, dataclass, field
from numbers import Integral, Real
from typing import List, Optional

import numpy as np
import torch

from adaptiveclick.clicks import Click, next_click

from .metrics import mask_iou
from .predictor import check_host_probabilities, transformed_prediction
from .zoom_in import ZoomIn, ZoomInParams

__all__ = ["NoCProtocol", "InstanceResult", "InteractiveSession"]


@dataclass(frozen=True)
class NoCProtocol:
    """Settings of the per-instance loop.

    max_clicks: clicks per instance (20).  stop_iou: tau, stop as soon as IoU >= tau (0.90; anything > 1,
    e.g. 1.01, never stops, which mIoU@k and the IoU curve need).  pred_threshold: P = probs > 0.49
    (strict).  zoom_in: :class:`ZoomInParams` or None.  flip: horizontal-flip TTA.  Zoom-in and flip need a
    logit network (see :mod:`adaptiveclick.evaluation.predictor`).  The defaults here are the plain
    protocol; the official evaluation (zoom-in 448 and flip on) is what ``TEST.NOC`` configures.
    """

    max_clicks: int = 20
    stop_iou: float = 0.90
    pred_threshold: float = 0.49
    zoom_in: Optional[ZoomInParams] = None
    flip: bool = False

    def __post_init__(self):
        if isinstance(self.max_clicks, bool) or not isinstance(self.max_clicks, Integral) or self.max_clicks < 1:
            raise ValueError(f"max_clicks must be a positive integer, got {self.max_clicks!r}")
        if isinstance(self.stop_iou, bool) or not isinstance(self.stop_iou, Real) or not self.stop_iou > 0:
            raise ValueError(f"stop_iou must be a positive number (> 1 never stops), got {self.stop_iou!r}")
        if (isinstance(self.pred_threshold, bool) or not isinstance(self.pred_threshold, Real)
                or not 0.0 <= self.pred_threshold < 1.0):
            raise ValueError(f"pred_threshold must lie in [0, 1), got {self.pred_threshold!r}")
        if self.zoom_in is not None and not isinstance(self.zoom_in, ZoomInParams):
            raise TypeError(f"zoom_in must be a ZoomInParams or None, got {type(self.zoom_in).__name__}")
        if not isinstance(self.flip, (bool, np.bool_)):
            raise TypeError(f"flip must be a bool, got {self.flip!r}")

    @property
    def uses_logits(self) -> bool:
        """Whether the predictor must be a logit network (zoom-in or flip requested)."""
        return self.zoom_in is not None or bool(self.flip)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class InstanceResult:
    """What one instance contributes: its IoU per click (float32), the clicks, and timings in seconds.

    ``model_time`` is spent inside the predictor; ``total_time`` is the whole loop (oracle, IoU,
    transforms, predictor), so ``total_time - model_time`` is the protocol's own cost.
    """

    ious: np.ndarray
    clicks: List[Click] = field(default_factory=list)
    model_time: float = 0.0
    total_time: float = 0.0

    def to_dict(self) -> dict:
        """JSON-ready: IoUs as floats, clicks as [row, col, is_positive] lists."""
        return {"ious": [float(v) for v in self.ious],
                "clicks": [[c.row, c.col, int(c.is_positive)] for c in self.clicks],
                "model_time": self.model_time, "total_time": self.total_time}


def _as_binary(value, name: str, shape=None) -> np.ndarray:
    arr = np.asarray(value.cpu() if isinstance(value, torch.Tensor) else value)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) mask, got shape {arr.shape}")
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"{name} has shape {arr.shape}, expected {tuple(shape)} (the image size)")
    if arr.dtype == np.bool_:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)) \
            or not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must be a bool or 0/1 mask, got dtype {arr.dtype}")
    return arr.astype(bool)


class InteractiveSession:
    """Runs the NoC protocol for one (image, object) with a predictor.

    Args:
        predictor: a probability predictor, or a logit network when ``protocol`` asks for zoom-in or flip
            (see :mod:`adaptiveclick.evaluation.predictor`).
        image: uint8 (H, W, 3) RGB.
        gt: (H, W) bool or 0/1 mask of the object; must have a non-ignored pixel.
        ignore: optional (H, W) bool or 0/1 mask of pixels excluded from IoU and from the oracle.
        protocol: :class:`NoCProtocol`.

    Each :meth:`step` asks the oracle for a click from the current error (``probs > pred_threshold``),
    runs the predictor with all clicks and the previous probabilities, and records the IoU at the image
    resolution (recorded in float32, as the official ``np.array(ious, dtype=np.float32)``).  :meth:`run` steps
    until ``max_clicks`` or IoU >= ``stop_iou``, compared on the float64 IoU as the official ``evaluate_sample``
    compares ``get_iou``'s value (float32 would stop at 0.89999998, which rounds to float32(0.9)).
    Everything runs under ``torch.no_grad()``.
    """

    def __init__(self, predictor, image, gt, ignore=None, protocol: Optional[NoCProtocol] = None):
        protocol = NoCProtocol() if protocol is None else protocol
        if not isinstance(protocol, NoCProtocol):
            raise TypeError(f"protocol must be a NoCProtocol, got {type(protocol).__name__}")
        image = np.asarray(image.cpu() if isinstance(image, torch.Tensor) else image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be a uint8 (H, W, 3) RGB array, got dtype {image.dtype} "
                             f"and shape {image.shape}")
        shape = image.shape[:2]
        self.gt = _as_binary(gt, "gt", shape)
        self.ignore = None if ignore is None else _as_binary(ignore, "ignore", shape)
        if not (self.gt if self.ignore is None else self.gt & ~self.ignore).any():
            raise ValueError("gt has no non-ignored object pixel; such an instance cannot be evaluated")
        if protocol.uses_logits:
            if not callable(getattr(predictor, "predict_logits", None)):
                raise TypeError("zoom-in and flip need a logit network (an object with predict_logits(images, "
                                f"prev_masks, clicks)); got {type(predictor).__name__}")
        elif not callable(predictor):
            raise TypeError(f"predictor must be callable, got {type(predictor).__name__}")
        self.predictor = predictor
        self.image = image
        self.protocol = protocol
        self.clicks: List[Click] = []
        self.ious: List[float] = []
        self._last_iou = 0.0  # float64 IoU of the last click (the stop test)
        self.probs = np.zeros(shape, dtype=np.float32)
        self.model_time = 0.0
        self.total_time = 0.0
        self._threshold = np.float32(protocol.pred_threshold)
        self._zoom = ZoomIn(protocol.zoom_in, shape) if protocol.zoom_in is not None else None
        self._image_t = None
        if protocol.uses_logits:
            device = torch.device(getattr(predictor, "device", None) or "cpu")
            # uint8 on the device: the network gets it as it is without zoom-in, and the crop resizes it as float
            self._image_t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(device)

    @property
    def done(self) -> bool:
        if len(self.ious) >= self.protocol.max_clicks:
            return True
        return bool(self.ious) and self._last_iou >= self.protocol.stop_iou

    @property
    def prediction(self) -> np.ndarray:
        """The current binary prediction P = probs > pred_threshold."""
        return self.probs > self._threshold

    def _predict(self) -> np.ndarray:
        if not self.protocol.uses_logits:
            prev = self.probs.view()
            prev.flags.writeable = False  # the predictor must not modify the session's state
            start = time.perf_counter()
            probs = self.predictor(self.image, list(self.clicks), prev)
            self.model_time += time.perf_counter() - start
            return probs
        prev_t = torch.from_numpy(self.probs)[None, None].to(self._image_t.device)
        net = _TimedNet(self.predictor)
        # NaN logits are found on the host, after the one copy of the probabilities (no read in between)
        probs = transformed_prediction(net, self._image_t, prev_t, self.clicks, self._zoom, self.protocol.flip,
                                       check_logits=False)
        self.model_time += net.elapsed
        return check_host_probabilities(probs.cpu().numpy())

    def _check_probs(self, probs) -> np.ndarray:
        if not isinstance(probs, np.ndarray):
            raise TypeError(f"the predictor must return a NumPy array, got {type(probs).__name__}")
        if probs.shape != self.probs.shape or not np.issubdtype(probs.dtype, np.floating):
            raise ValueError(f"the predictor must return float (H, W) = {self.probs.shape} probabilities, got "
                             f"dtype {probs.dtype} and shape {probs.shape}")
        probs = probs.astype(np.float32, copy=False)
        if not np.isfinite(probs).all():
            raise ValueError("the predictor returned NaN or infinite probabilities")
        if probs.min() < 0 or probs.max() > 1:
            raise ValueError(f"the predictor must return probabilities in [0, 1], got values in "
                             f"[{probs.min()}, {probs.max()}] (logits instead of probabilities?)")
        return probs

    def step(self) -> float:
        """Add one oracle click, predict, and return the new IoU."""
        if self.done:
            raise RuntimeError("the session is finished (max_clicks reached or IoU >= stop_iou)")
        start = time.perf_counter()
        click = next_click(self.gt, self.prediction, self.ignore, self.clicks)
        self.clicks.append(click)
        with torch.no_grad():
            self.probs = self._check_probs(self._predict())
        self._last_iou = float(mask_iou(self.prediction, self.gt, self.ignore))
        self.ious.append(float(np.float32(self._last_iou)))
        self.total_time += time.perf_counter() - start
        return self.ious[-1]

    def run(self) -> InstanceResult:
        """Step until done; returns the :class:`InstanceResult`."""
        while not self.done:
            self.step()
        return InstanceResult(np.asarray(self.ious, dtype=np.float32), list(self.clicks),
                              self.model_time, self.total_time)


class _TimedNet:
    """Forwards ``predict_logits`` and accumulates its wall time (synchronising CUDA for honest numbers)."""

    def __init__(self, net):
        self.net = net
        self.elapsed = 0.0

    def predict_logits(self, images, prev_masks, clicks):
        start = time.perf_counter()
        logits = self.net.predict_logits(images, prev_masks, clicks)
        if isinstance(logits, torch.Tensor) and logits.is_cuda:
            torch.cuda.synchronize(logits.device)
        self.elapsed += time.perf_counter() - start
        return logits
