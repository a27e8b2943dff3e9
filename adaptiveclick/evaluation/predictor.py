"""Predictors for the NoC protocol and the test-time transforms around them (protocol.md A.4-A.5).

Two interfaces, both at the caller's choice:

* **probability predictor** -- any callable
  ``predictor(image, clicks, prev_mask) -> probs``: ``image`` uint8 (H, W, 3) RGB, ``clicks`` a list of
  :class:`~adaptiveclick.clicks.Click` in image pixels, ``prev_mask`` float32 (H, W) probabilities of the
  previous click (zeros before the first; a read-only view); returns float32 (H, W) probabilities in
  [0, 1].  Enough for the plain protocol (no zoom-in, no flip).
* **logit network** -- an object with ``predict_logits(images, prev_masks, clicks) -> logits``:
  ``images`` float32 (B, 3, h, w) RGB on the 0..255 scale, ``prev_masks`` float32 (B, 1, h, w),
  ``clicks`` a list of B float64 (K, 3) arrays of (row, col, is_positive) whose coordinates may be
  fractional; returns (B, 1, h', w') logits (resized bilinearly to (h, w) if another size); an optional
  ``device`` attribute says where the input tensors are put (CPU otherwise).
  Zoom-in and flip need this interface: the official predictor crops and resizes the 4-channel *float*
  input (so the crop is not a uint8 image), maps clicks to fractional coordinates, and averages the
  flipped pair on *logits* before the sigmoid.  :func:`transformed_prediction` implements that, so the
  network sees the crop.

:class:`ModelPredictor` offers both interfaces for a detectron2 meta-architecture.
"""

from typing import List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from adaptiveclick.clicks import Click

from .zoom_in import ZoomIn

__all__ = ["ModelPredictor", "transformed_prediction", "check_host_probabilities", "clicks_to_rows"]


def clicks_to_rows(clicks: Sequence[Click]) -> np.ndarray:
    """Clicks as a float64 (K, 3) array of (row, col, is_positive)."""
    out = np.empty((len(clicks), 3), dtype=np.float64)
    for i, c in enumerate(clicks):
        if not isinstance(c, Click):
            raise TypeError(f"clicks[{i}] must be a Click, got {type(c).__name__}")
        out[i] = (c.row, c.col, float(c.is_positive))
    return out


#: the error of NaN logits (also raised by callers that check the probabilities on the host)
NAN_LOGITS = "predict_logits returned NaN logits"


def _check_logits(logits, batch: int, size, read: bool = True) -> torch.Tensor:
    """Shape-checked float32 logits at ``size``.  NaN logits raise ValueError (one host read: a GPU
    synchronisation) or, with ``read=False``, make the whole result NaN, for a check on the host later."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"predict_logits must return a torch.Tensor, got {type(logits).__name__}")
    if logits.ndim != 4 or logits.shape[0] != batch or logits.shape[1] != 1:
        raise ValueError(f"predict_logits must return (B={batch}, 1, h, w) logits, got {tuple(logits.shape)}")
    has_nan = torch.isnan(logits).any()
    if read and has_nan:
        raise ValueError(NAN_LOGITS)
    logits = logits.float()
    if tuple(logits.shape[-2:]) != tuple(size):
        # A.4 step 4: network output resized to the input tensor size
        logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=True)
    if not read:
        # a NaN logit need not reach every output pixel (a downsizing resize skips pixels, the zoom-in paste
        # keeps only the ROI): the whole map is made NaN so that the caller's host check cannot miss it
        logits = torch.where(has_nan, torch.nan, logits)
    return logits


def check_host_probabilities(probs: np.ndarray) -> np.ndarray:
    """The host-side check after ``transformed_prediction(..., check_logits=False)``: returns ``probs``, or
    raises ValueError if any is NaN (NaN logits, which that call spreads over the whole map, or +inf next to
    -inf logits, which a bilinear resize mixes into NaN)."""
    if np.isnan(probs).any():
        raise ValueError(f"{NAN_LOGITS}, or +inf and -inf logits that the bilinear resize mixed into NaN: the "
                         "probabilities contain NaN")
    return probs


def transformed_prediction(net, image: torch.Tensor, prev_mask: torch.Tensor, clicks: Sequence[Click],
                           zoom_in: Optional[ZoomIn] = None, flip: bool = False,
                           check_logits: bool = True) -> torch.Tensor:
    """One prediction of the official predictor with its transforms (A.4): returns (H, W) probabilities.

    ``net`` is a logit network (module docstring); ``image`` (1, 3, H, W) on the 0..255 scale, uint8 or
    float32 (a uint8 image reaches the network as uint8 unless the zoom-in resizes it), ``prev_mask`` (1, 1, H,
    W) probabilities, ``clicks`` in image pixels.  Order: zoom-in (crop + resize of [image, prev_mask], clicks
    mapped), flip (batch [x, mirrored x], mirrored columns W' - 1 - col), network, resize of the logits to the
    input size, average of the logits with the un-mirrored copy, sigmoid, paste of the ROI probabilities into a
    zero map of the full image.

    ``check_logits``: NaN logits raise ValueError here (a host read of a flag: on a GPU the host waits for
    the network); with False they make the returned map all NaN instead, and the caller checks the
    probabilities once they are on the host (no wait before the post-processing is queued).
    """
    if image.ndim != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"image must be (1, 3, H, W), got {tuple(image.shape)}")
    if not image.is_floating_point() and image.dtype != torch.uint8:
        raise TypeError(f"image must be uint8 or float (0..255), got {image.dtype}")
    if tuple(prev_mask.shape) != (1, 1) + tuple(image.shape[-2:]):
        raise ValueError(f"prev_mask must be (1, 1, H, W) = {(1, 1) + tuple(image.shape[-2:])}, "
                         f"got {tuple(prev_mask.shape)}")
    # image and previous mask form the 4-channel input of the official predictor; every transform acts on
    # channels independently, so they are kept apart (no full-resolution concatenation)
    prev = prev_mask.float()
    if zoom_in is not None:
        zoom_in.update(prev_mask[0, 0], clicks)
        image, prev = zoom_in.crop(image), zoom_in.crop(prev)
        rows = zoom_in.map_clicks(clicks)
    else:
        rows = clicks_to_rows(clicks)
    batch_rows: List[np.ndarray] = [rows]
    if flip:
        image = torch.cat([image, torch.flip(image, dims=[3])], dim=0)
        prev = torch.cat([prev, torch.flip(prev, dims=[3])], dim=0)
        mirrored = rows.copy()
        mirrored[:, 1] = image.shape[3] - 1 - rows[:, 1]
        batch_rows.append(mirrored)
    logits = _check_logits(net.predict_logits(image, prev, batch_rows), image.shape[0], image.shape[-2:],
                           read=check_logits)
    if flip:
        logits = 0.5 * (logits[:1] + torch.flip(logits[1:], dims=[3]))
    probs = torch.sigmoid(logits)
    if zoom_in is not None:
        probs = zoom_in.paste(probs)
    return probs[0, 0]


def _model_device(model) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, (torch.device, str)):
        return torch.device(device)
    if isinstance(model, torch.nn.Module):
        for tensor in model.parameters():
            return tensor.device
    return torch.device("cpu")


class ModelPredictor:
    """Adapts a detectron2-style meta-architecture to both predictor interfaces.

    The model's inference call is ``model([{"image", "clicks", "prev_mask"}, ...]) ->
    [{"mask_logits": (1, h, w)}, ...]`` (data contract).  Inputs are sent as the contract says, uint8 image
    and int64 clicks, as long as nothing resampled them: a uint8 image stays uint8 (the probability
    interface, and :func:`transformed_prediction` without zoom-in), and integral click coordinates go as
    int64.  After a zoom-in resize the model receives a float32 image (0..255 scale) and float32 click
    coordinates instead, as the official predictor feeds float tensors and fractional clicks; so does any
    float image given to :meth:`predict_logits`.  The model must be in eval mode.
    """

    def __init__(self, model, device=None):
        if not callable(model):
            raise TypeError(f"model must be callable, got {type(model).__name__}")
        self.model = model
        self.device = torch.device(device) if device is not None else _model_device(model)

    def predict_logits(self, images: torch.Tensor, prev_masks: torch.Tensor,
                       clicks: Sequence[np.ndarray]) -> torch.Tensor:
        if isinstance(self.model, torch.nn.Module) and self.model.training:
            raise RuntimeError("the model is in training mode; call model.eval() before evaluating it")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, h, w), got {tuple(images.shape)}")
        if len(clicks) != images.shape[0] or prev_masks.shape[0] != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images, {prev_masks.shape[0]} prev masks and "
                             f"{len(clicks)} click arrays; they must match")
        if not images.is_floating_point() and images.dtype != torch.uint8:
            raise TypeError(f"images must be uint8 or float (0..255), got {images.dtype}")
        inputs = []
        for image, prev, rows in zip(images, prev_masks, clicks):
            # the image goes as it comes: uint8 (the contract's type) or, after a zoom-in resize, float32; no
            # test of its values here (on CUDA a read of one synchronises the host with the GPU)
            image = image if image.dtype == torch.uint8 else image.float()
            rows = np.asarray(rows, dtype=np.float64)
            if np.array_equal(rows, np.round(rows)):
                rows_t = torch.as_tensor(rows.astype(np.int64))
            else:
                rows_t = torch.as_tensor(rows.astype(np.float32))
            inputs.append({"image": image, "clicks": rows_t, "prev_mask": prev.float()})
        outputs = self.model(inputs)
        if not isinstance(outputs, (list, tuple)) or len(outputs) != len(inputs):
            raise ValueError(f"the model must return a list of {len(inputs)} dicts, got {type(outputs).__name__}")
        logits = []
        for i, out in enumerate(outputs):
            if not isinstance(out, dict) or "mask_logits" not in out:
                raise ValueError(f"model output {i} must be a dict with key 'mask_logits'")
            m = out["mask_logits"]
            if not isinstance(m, torch.Tensor) or m.ndim != 3 or m.shape[0] != 1:
                raise ValueError(f"model output {i}['mask_logits'] must be a (1, h, w) tensor, got "
                                 f"{tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__}")
            logits.append(m)
        return torch.stack(logits).to(images.device)

    def __call__(self, image: np.ndarray, clicks: Sequence[Click], prev_mask: np.ndarray) -> np.ndarray:
        """Probability-predictor interface: full image, no test-time transform."""
        image_t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(self.device)
        prev_t = torch.tensor(np.asarray(prev_mask, dtype=np.float32))[None, None].to(self.device)
        with torch.no_grad():
            return transformed_prediction(self, image_t, prev_t, clicks).cpu().numpy()
