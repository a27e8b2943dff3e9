"""The interactive "image + clicks -> mask" predictor for annotation tools and demos.

A user sets an image, then adds clicks one at a time; every click runs the network once (or twice with
flip) on the image, the clicks so far and the previous prediction, exactly as the NoC protocol does
(protocol.md A.4-A.5, :func:`adaptiveclick.evaluation.transformed_prediction`): optional zoom-in to the
object's region, optional horizontal-flip averaging, probabilities at image resolution, mask = probs >
threshold (0.49, ``TEST.NOC.PRED_THRESHOLD``).  Any image size is accepted: without zoom-in the network
sees the image at its own size (padded to the backbone's size divisibility), with zoom-in it sees the
region resized to ``TEST.NOC.ZOOM_IN.TARGET_SIZE``; the protocol does the same.

The predictor keeps every step, so :meth:`InteractivePredictor.undo` restores the previous mask, the
previous-mask input of the next click and the zoom-in region exactly as they were.

Results are independent of the predictor: every :class:`PredictionResult` holds its own copy of the mask and
the probabilities, marked read-only, so that editing a result in place raises ("assignment destination is
read-only") instead of silently changing the mask the next click is fed, the undo history or
:attr:`InteractivePredictor.result`; ``np.array(result.mask)`` gives a writable copy.

Thread-safe: the calls of one predictor are serialised by its lock (a click, an undo, a reset or a new image
runs whole before the next one starts), so several threads may share a predictor; they then take turns.  For
parallel throughput use one predictor per thread, each with its own copy of the model (predictors built on
one model object are not serialised against each other by this lock).
"""

import logging
import os
import threading
import time
from dataclasses import dataclass
from numbers import Integral, Real
from typing import List, Optional, Tuple, Union

import numpy as np
import torch

from adaptiveclick.clicks import Click
from adaptiveclick.evaluation.predictor import ModelPredictor, check_host_probabilities, transformed_prediction
from adaptiveclick.evaluation.zoom_in import ZoomIn, ZoomInParams
from adaptiveclick.utils.checks import cuda_device_problem

__all__ = ["InteractivePredictor", "PredictionResult"]

logger = logging.getLogger("adaptiveclick")


@dataclass(frozen=True)
class PredictionResult:
    """The state after a click (or an undo).

    mask: bool (H, W), the object.  probs: float32 (H, W) in [0, 1].  clicks: the clicks that produced it,
    in order.  seconds: wall time of the prediction, until the probabilities are in host memory (0 for a
    restored state).  ``mask`` and ``probs`` are this result's own read-only arrays (not views of the
    predictor's state): writing to them raises; copy them (``np.array(result.mask)``) to edit.
    """

    mask: np.ndarray
    probs: np.ndarray
    clicks: Tuple[Click, ...]
    seconds: float

    @property
    def area(self) -> int:
        """Number of object pixels."""
        return int(self.mask.sum())


@dataclass
class _Step:
    click: Click
    probs: torch.Tensor  # (1, 1, H, W) on the model's device, the prediction after this click
    roi: Optional[Tuple[int, int, int, int]]  # zoom-in region used for this click
    seconds: float


def _is_cfg(obj) -> bool:
    from detectron2.config import CfgNode

    return isinstance(obj, CfgNode)


def _check_device(device, what: str) -> torch.device:
    """``torch.device(device)``; RuntimeError naming ``what`` for CUDA on a machine without a usable GPU (or a
    GPU index that does not exist), raised before anything is built instead of the driver's error."""
    device = torch.device(device)
    problem = cuda_device_problem(device)
    if problem:
        raise RuntimeError(f"{what}={str(device)!r} but {problem}: use device='cpu' or a GPU this machine has")
    return device


def _pixel_index(name: str, value) -> int:
    """``value`` as an int pixel index: Python and NumPy integers, and 0-d integer torch tensors; TypeError
    saying what to do for anything else (floats are not rounded silently)."""
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.dtype.is_floating_point \
            and not value.dtype.is_complex and value.dtype != torch.bool:
        return int(value.item())
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Integral):
        if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim > 0:
            hint = f"; pass one number, not an array of shape {tuple(value.shape)}"
        elif isinstance(value, Real) and not isinstance(value, (bool, np.bool_)) \
                or isinstance(value, torch.Tensor) and value.dtype.is_floating_point:
            hint = f"; round float coordinates first, e.g. int(round({'y' if name == 'row' else 'x'}))"
        else:
            hint = ""
        raise TypeError(f"{name} must be an integer pixel index (0-based, row first){hint}; got {value!r} "
                        f"({type(value).__name__})")
    return int(value)


class InteractivePredictor:
    """Click-by-click segmentation of one image at a time.

    Args:
        cfg_or_model: a detectron2 ``CfgNode`` with the adaptiveclick keys (the model is built with
            ``build_model`` and ``cfg.MODEL.WEIGHTS`` is loaded when set; random weights otherwise, with a
            warning), or a built model (an ``nn.Module`` following the inference contract
            ``model([{"image", "clicks", "prev_mask"}]) -> [{"mask_logits"}]``), used as it is.
        device: where the model runs; default ``cfg.MODEL.DEVICE`` for a config, the model's device for a
            model.  A given model is moved there.
        zoom_in: True (the protocol's zoom-in; parameters from ``cfg.TEST.NOC.ZOOM_IN``, or the
            AdaptiveClick defaults for a model), False, or a :class:`ZoomInParams`; default
            ``cfg.TEST.NOC.ZOOM_IN.ENABLED`` for a config, True for a model.
        flip: horizontal-flip averaging of the logits; default ``cfg.TEST.NOC.FLIP`` for a config, True for
            a model.
        threshold: mask = probs > threshold (a real number in [0, 1)); default ``cfg.TEST.NOC.PRED_THRESHOLD``
            (0.49).
        compile: opt-in ``torch.compile`` of the network (``model.compile_network``): True for the device's
            default mode (CUDA graphs, "reduce-overhead", on CUDA; "default" elsewhere) or a mode name.  The
            first click at each new input size compiles (tens of seconds); if compiling fails, a warning is
            logged and the predictor runs eagerly.  On CPUs it brings no speed (measured); meant for GPUs.
        cuda_graph: opt-in CUDA graphs recorded from the eager network (``model.graph_network``), no compiler:
            on a CUDA device each input size (the image's, and the zoom-in crops' fixed target size) is recorded
            at its second click and replayed from the third, so a click costs a few host calls instead of
            hundreds of kernel launches.  Off a CUDA device it changes nothing (a warning says so).  Not
            together with ``compile`` (its "reduce-overhead" mode records CUDA graphs itself).
        quantize: None (fp32) or ``"int8"``: a copy of the model with int8 dynamically quantised linear layers
            (CPU only, :mod:`adaptiveclick.utils.quantize`); on some CPUs about a quarter faster per ViT-B click,
            on others no faster (measured; time yours with ``tools/benchmark_inference.py --dtype fp32 int8``); NoC
            unchanged on the small trained model we could check, so check yours with
            ``tools/evaluate_noc.py --int8`` (README, Speed).  ``self.model`` is then that copy.

    Every call that reads or changes the state (:meth:`set_image`, :meth:`add_click`, :meth:`undo`,
    :meth:`reset`, :attr:`clicks`, :attr:`result`) holds the predictor's lock (a ``threading.RLock``), so a
    predictor shared by threads serialises their calls: each click sees the clicks and the previous mask
    that the calls before it left.  That is correctness, not speed: for parallel throughput use one
    predictor (and one model copy) per thread.  Every call except :meth:`set_image` needs an image first
    and raises RuntimeError without one.
    """

    def __init__(self, cfg_or_model, device=None, zoom_in: Union[None, bool, ZoomInParams] = None,
                 flip: Optional[bool] = None, threshold: Optional[float] = None, compile: Union[bool, str] = False,
                 quantize: Optional[str] = None, cuda_graph: bool = False):
        self._lock = threading.RLock()
        params = ZoomInParams()
        if _is_cfg(cfg_or_model):
            cfg = cfg_or_model
            _check_device(device if device is not None else cfg.MODEL.DEVICE,
                          "device" if device is not None else "MODEL.DEVICE")
            model = self._build(cfg, device)
            z = cfg.TEST.NOC.ZOOM_IN
            params = ZoomInParams.from_config(z)
            if threshold is None:
                threshold = cfg.TEST.NOC.PRED_THRESHOLD
            if zoom_in is None:
                zoom_in = bool(z.ENABLED)
            if flip is None:
                flip = bool(cfg.TEST.NOC.FLIP)
        elif isinstance(cfg_or_model, torch.nn.Module):
            model = cfg_or_model
            if device is not None:
                model = model.to(_check_device(device, "device"))
        else:
            raise TypeError("cfg_or_model must be a detectron2 CfgNode or a torch.nn.Module, "
                            f"got {type(cfg_or_model).__name__}")
        zoom_in = True if zoom_in is None else zoom_in
        flip = True if flip is None else flip
        if isinstance(zoom_in, ZoomInParams):
            params, zoom_in = zoom_in, True
        elif not isinstance(zoom_in, (bool, np.bool_)):
            raise TypeError(f"zoom_in must be a bool or a ZoomInParams, got {zoom_in!r}")
        if not isinstance(flip, (bool, np.bool_)):
            raise TypeError(f"flip must be a bool, got {flip!r}")
        threshold = 0.49 if threshold is None else threshold
        if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, Real) or not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must be a real number in [0, 1), got {threshold!r}")
        threshold = float(threshold)
        if not isinstance(compile, (bool, str)):
            raise TypeError(f"compile must be a bool or a torch.compile mode name, got {compile!r}")
        if not isinstance(cuda_graph, (bool, np.bool_)):
            raise TypeError(f"cuda_graph must be a bool, got {cuda_graph!r}")
        if cuda_graph and compile:
            raise ValueError("choose compile or cuda_graph, not both (compile's 'reduce-overhead' mode records "
                             "CUDA graphs itself)")
        if cuda_graph and quantize:
            raise ValueError("cuda_graph needs a CUDA device and int8 quantisation runs on the CPU only; "
                             "choose one")
        from adaptiveclick.utils.quantize import QUANTIZE_CHOICES, quantize_dynamic_int8

        if quantize not in QUANTIZE_CHOICES:
            raise ValueError(f"quantize must be one of {list(QUANTIZE_CHOICES)}, got {quantize!r}")
        self.model = model.eval()
        if quantize == "int8":
            self.model = quantize_dynamic_int8(self.model)
        self.quantize = quantize
        if compile:
            if not hasattr(self.model, "compile_network"):
                raise TypeError(f"compile=True needs a model with compile_network() (our meta-architectures); "
                                f"got {type(self.model).__name__}")
            self.model.compile_network(None if compile is True else compile)
        if cuda_graph:
            if not hasattr(self.model, "graph_network"):
                raise TypeError(f"cuda_graph=True needs a model with graph_network() (our meta-architectures); "
                                f"got {type(self.model).__name__}")
            self.model.graph_network()
        self.zoom_in_params: Optional[ZoomInParams] = params if zoom_in else None
        self.flip = bool(flip)
        self.threshold = float(threshold)
        self._net = ModelPredictor(self.model, device)
        self.device = self._net.device
        if cuda_graph and self.device.type != "cuda":
            logger.warning("cuda_graph=True on %s: CUDA graphs need a CUDA device; clicks run eagerly", self.device)
        self._image: Optional[np.ndarray] = None
        self._image_t: Optional[torch.Tensor] = None
        self._zoom: Optional[ZoomIn] = None
        self._steps: List[_Step] = []

    @classmethod
    def from_config_file(cls, config_file: str, weights: Optional[str] = None, opts=(), device=None,
                         zoom_in: Union[None, bool, ZoomInParams] = None, flip: Optional[bool] = None,
                         threshold: Optional[float] = None, compile: Union[bool, str] = False,
                         quantize: Optional[str] = None, cuda_graph: bool = False) -> "InteractivePredictor":
        """Build from a YAML config; ``weights`` sets MODEL.WEIGHTS.

        ``opts``: config overrides as a flat list (or tuple) of KEY VALUE pairs, e.g.
        ``["TEST.NOC.FLIP", False, "MODEL.DEVICE", "cpu"]``; a string raises TypeError, a key the config
        does not have raises KeyError ``Non-existent config key: ...``, as a misspelt key in a YAML file does.
        ``device="cuda"`` on a machine without a usable GPU raises RuntimeError before anything is built.
        """
        from adaptiveclick.config import load_config_file

        if isinstance(opts, (str, bytes)) or not isinstance(opts, (list, tuple)):
            raise TypeError(f"opts must be a list like ['KEY', value, ...] (config overrides), "
                            f"got {type(opts).__name__} {opts!r}")
        if device is not None:
            _check_device(device, "device")
        try:
            cfg = load_config_file(config_file, opts)
        except AssertionError as e:
            # yacs' merge_from_list reports an unknown key by assertion; a YAML file's unknown key is a KeyError
            message = str(e)
            prefix = "Non-existent key: "
            if message.startswith(prefix):
                raise KeyError(f"Non-existent config key: {message[len(prefix):]} (in opts)") from None
            raise
        if weights:
            cfg.MODEL.WEIGHTS = weights
        if device is not None:
            cfg.MODEL.DEVICE = str(device)
        cfg.freeze()
        return cls(cfg, device=device, zoom_in=zoom_in, flip=flip, threshold=threshold, compile=compile,
                   quantize=quantize, cuda_graph=cuda_graph)

    @staticmethod
    def _build(cfg, device):
        from detectron2.modeling import build_model

        import adaptiveclick.modeling  # noqa: F401  (registers the meta-architectures)
        from adaptiveclick.engine.checkpoint import AtomicCheckpointer

        if device is not None and str(device) != cfg.MODEL.DEVICE:
            cfg = cfg.clone()
            cfg.defrost()
            cfg.MODEL.DEVICE = str(device)
            cfg.freeze()
        weights = cfg.MODEL.WEIGHTS
        if weights:  # checked before the model is built: a wrong path fails at once
            if os.path.isdir(weights):
                raise IsADirectoryError(f"MODEL.WEIGHTS is a directory, not a checkpoint file: {weights} "
                                        f"(give the .pth file, e.g. {os.path.join(weights, 'model_final.pth')})")
            if not os.path.isfile(weights):
                raise FileNotFoundError(f"MODEL.WEIGHTS not found: {weights}")
        model = build_model(cfg)
        if weights:
            # strict: a corrupt file, or one whose tensors do not fit the model (other shapes, parameters
            # missing), raises CheckpointError naming the file and the keys
            AtomicCheckpointer(model, strict=True).load(weights)
        else:
            logger.warning("InteractivePredictor: no MODEL.WEIGHTS given, the model has random weights")
        return model

    # ------------------------------------------------------------------------------------------ state
    @property
    def image(self) -> Optional[np.ndarray]:
        """The current image (read-only view), or None before :meth:`set_image`."""
        return self._image

    @property
    def clicks(self) -> Tuple[Click, ...]:
        """The clicks so far, in order (empty before the first click)."""
        with self._lock:
            return tuple(s.click for s in self._steps)

    @property
    def result(self) -> Optional[PredictionResult]:
        """The state after the last click (a fresh read-only copy), or None when there is no click."""
        with self._lock:
            if not self._steps:
                return None
            return self._result(self._steps[-1].probs, self._steps[-1].seconds)

    def _require_image(self, what: str) -> None:
        if self._image is None:
            raise RuntimeError(f"{what} needs an image: call set_image() first")

    def set_image(self, image: np.ndarray) -> None:
        """Start on a new RGB image: uint8 (H, W, 3).  Drops the clicks of the previous image.  The image is
        copied: changing ``image`` afterwards does not change the predictor's."""
        if not isinstance(image, np.ndarray):
            raise TypeError(f"image must be a numpy array (H, W, 3) uint8 RGB, got {type(image).__name__}")
        if image.dtype != np.uint8:
            raise TypeError(f"image must have dtype uint8 (0..255 RGB), got {image.dtype}")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be RGB of shape (H, W, 3), got {image.shape}"
                             + (" (grey: stack it to 3 channels)" if image.ndim == 2 else "")
                             + (" (RGBA: drop the alpha channel)" if image.ndim == 3 and image.shape[2] == 4 else ""))
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"image is empty: shape {image.shape}")
        image = np.array(image, dtype=np.uint8, order="C", copy=True)
        # the image is put on the device once per image, as uint8 (the network normalises it; a zoom-in crop
        # is resized as float, as the protocol does)
        image_t = torch.from_numpy(image).permute(2, 0, 1)[None].to(self.device)
        image.setflags(write=False)
        with self._lock:
            self._image_t = image_t
            self._image = image
            self._reset()

    def reset(self) -> None:
        """Drop every click (the image stays).  Like :meth:`undo`, it needs an image: RuntimeError before
        :meth:`set_image`."""
        with self._lock:
            self._require_image("reset")
            self._reset()

    def _reset(self) -> None:
        self._steps = []
        self._zoom = ZoomIn(self.zoom_in_params, self._image.shape[:2]) if self.zoom_in_params is not None else None

    # ------------------------------------------------------------------------------------------ clicks
    def add_click(self, row: int, col: int, positive: bool = True) -> PredictionResult:
        """Add a click at pixel (row, col) and predict; returns the new state.

        ``row`` and ``col`` are 0-based integer pixel indices (row first): Python or NumPy integers, or 0-d
        integer torch tensors.  Floats are refused with a TypeError, not rounded: round them yourself, e.g.
        ``int(round(y))``.  ``positive`` is a bool (``True``/``False``, NumPy bools too); ``1``/``0`` are
        refused.  A click outside the image raises ValueError.  The state is unchanged by a failed call.
        """
        row, col = _pixel_index("row", row), _pixel_index("col", col)
        if not isinstance(positive, (bool, np.bool_)):
            raise TypeError(f"positive must be a bool: pass True (object) or False (background), got {positive!r} "
                            f"({type(positive).__name__})")
        with self._lock:
            self._require_image("add_click")
            h, w = self._image.shape[:2]
            if not (0 <= row < h and 0 <= col < w):
                raise ValueError(f"click (row={row}, col={col}) lies outside the image of size (H, W) = ({h}, {w})")
            click = Click(bool(positive), row, col)
            clicks = list(self.clicks) + [click]
            prev = self._steps[-1].probs if self._steps else torch.zeros((1, 1, h, w), device=self.device)
            roi_before = self._zoom.roi if self._zoom is not None else None
            start = time.perf_counter()
            try:
                with torch.inference_mode():
                    # no host read between the network and the copy of the probabilities to the host (on a
                    # GPU each read is a wait): NaN logits turn the map NaN and are found in the host copy
                    probs = transformed_prediction(self._net, self._image_t, prev, clicks, zoom_in=self._zoom,
                                                   flip=self.flip, check_logits=False)[None, None]
                    host = check_host_probabilities(self._host_copy(probs))
            except BaseException:
                if self._zoom is not None:  # the zoom-in region moves before the network runs: put it back
                    self._zoom.roi = roi_before
                raise
            seconds = time.perf_counter() - start  # up to the probabilities in host memory
            self._steps.append(_Step(click, probs, self._zoom.roi if self._zoom is not None else None, seconds))
            return _frozen_result(host > self.threshold, host, self.clicks, seconds)

    def undo(self) -> PredictionResult:
        """Remove the last click; returns the state before it (an empty mask when no click is left)."""
        with self._lock:
            self._require_image("undo")
            if not self._steps:
                raise ValueError("undo: there is no click to undo")
            self._steps.pop()
            if self._zoom is not None:
                # the region of the last remaining click; None lets the next click choose afresh, as at the start
                self._zoom.roi = self._steps[-1].roi if self._steps else None
            if self._steps:
                return self._result(self._steps[-1].probs, 0.0)
            h, w = self._image.shape[:2]
            return _frozen_result(np.zeros((h, w), dtype=bool), np.zeros((h, w), dtype=np.float32), (), 0.0)

    def _result(self, probs: torch.Tensor, seconds: float) -> PredictionResult:
        p = self._host_copy(probs)
        return _frozen_result(p > self.threshold, p, self.clicks, seconds)

    @staticmethod
    def _host_copy(probs: torch.Tensor) -> np.ndarray:
        # a copy on the host in every case (on the CPU, .numpy() alone would share the stored step's memory);
        # from a GPU, a copy to pageable memory waits for the work before it
        return probs[0, 0].detach().to("cpu", torch.float32, copy=True).numpy()


def _frozen_result(mask: np.ndarray, probs: np.ndarray, clicks, seconds: float) -> PredictionResult:
    """A :class:`PredictionResult` of arrays owned by it alone, marked read-only."""
    mask.setflags(write=False)
    probs.setflags(write=False)
    return PredictionResult(mask, probs, tuple(clicks), seconds)
