"""Meta-architectures: :class:`AdaptiveClick` and the :class:`SimpleClickBaseline` used for loss comparisons.

Inputs (``/tmp/data_contract.md``), one dict per image:

* ``"image"``: (3, H, W) RGB, uint8 or float on the 0..255 scale (float after a zoom-in resize);
* ``"clicks"``: (N, 3) rows (row, col, is_positive), int64 or float (fractional after a zoom-in); rows with
  row < 0 and col < 0 are padding; the slot order is irrelevant (clicks are drawn as a union of disks);
* ``"prev_mask"`` (optional): (1, H, W) float probabilities of the previous prediction, zeros if absent;
* training only: ``"gt_mask"`` (H, W) in {0, 1} and ``"ignore_mask"`` (H, W) bool (optional).

The model normalises the image (``pixel_mean``/``pixel_std``, RGB, 0..255 scale), draws the clicks as disks
(radius ``click_radius``) at the network-input resolution, and pads the batch (bottom/right, zeros after
normalisation) to a multiple of the backbone's ``size_divisibility``.  Training ``forward`` returns the
weighted loss dict; in eval mode ``forward`` (or :meth:`inference` in any mode) returns
``[{"mask_logits": (1, H, W)}]`` at each input's resolution.
"""

import contextlib
import math
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.layers import get_norm
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.structures import ImageList

from adaptiveclick.losses import targets_checked
from adaptiveclick.utils.checks import check_positive_reals
from adaptiveclick.utils.host import host_arrays

from .click_maps import check_clicks, click_disk_maps
from .criterion import SetCriterion
from .matcher import HungarianMatcher
from .pixel_decoder import build_pixel_decoder
from .targets import TARGET_MODES, build_targets
from .transformer_decoder import build_transformer_decoder

__all__ = ["AdaptiveClick", "SimpleClickBaseline", "SimpleSegHead", "MERGE_MODES", "merge_query_logits"]

MERGE_MODES = ("weighted_logits", "best_query")


def merge_query_logits(class_logits, mask_logits, mode="weighted_logits"):
    """One mask from the query predictions (model.md §4.4), on the mask grid: (B, Q, 2), (B, Q, h, w) -> (B, 1, h, w).

    ``weighted_logits`` (official): sum over queries of sigmoid(class logit 1) * mask logits.  The official
    code upsamples every query mask before summing; upsampling is linear, so summing first is the same.
    ``best_query`` (paper): the logits of the query with the highest softmax(class)[1] times the mean
    sigmoid over its foreground (sigmoid > 0.5) cells.
    """
    if mode == "weighted_logits":
        weights = class_logits[..., 1].sigmoid()
        return torch.einsum("bq,bqhw->bhw", weights, mask_logits)[:, None]
    if mode == "best_query":
        probs = mask_logits.sigmoid().flatten(2)
        fg = (probs > 0.5).to(probs.dtype)
        mask_score = (probs * fg).sum(-1) / (fg.sum(-1) + 1e-6)
        best = (class_logits.softmax(-1)[..., 1] * mask_score).argmax(-1)  # (B,)
        return mask_logits[torch.arange(mask_logits.shape[0], device=best.device), best][:, None]
    raise ValueError(f"merge mode must be one of {MERGE_MODES}, got {mode!r}")


def _float_map_flag(t, shape, name, unit_range):
    """Structure checks of an input map (raise at once) and its value checks folded into one device flag
    (True = something is wrong; None when there is no value to check), not read: see :func:`_read_flags`."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must be a real numeric tensor, got {t.dtype}")
    if t.numel() == 0 or not (unit_range or t.is_floating_point()):
        return None  # nothing to check: an integer image has no invalid value
    # one pass over the map: its minimum and maximum, which are NaN if any value is NaN (torch's reductions
    # propagate NaN); every comparison with NaN is False, so NaN, +-inf and values outside [0, 1] all fail
    low, high = torch.aminmax(t)
    ok = (low >= 0) & (high <= 1) if unit_range else (low > -math.inf) & (high < math.inf)
    return ~ok


def _explain_float_map(t, name):
    """The error of a map whose flag was set (reads its values: the error path only)."""
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    raise ValueError(f"{name} must lie in [0, 1], got values in [{float(t.min())}, {float(t.max())}]")


def _read_flags(checks):
    """Read the flags of ``checks`` ([(flag or None, explain)], in input order) with one host read per device
    (on CUDA each read synchronises the host with the GPU: a whole batch's checks cost one); if any is set,
    ``explain()`` of the first set one raises the detailed error."""
    by_device = {}
    for flag, _ in checks:
        if flag is not None:
            by_device.setdefault(flag.device, []).append(flag)
    if not any(bool(flags[0] if len(flags) == 1 else torch.stack(flags).any()) for flags in by_device.values()):
        return
    for flag, explain in checks:
        if flag is not None and bool(flag):
            explain()


def _float_map_check(t, shape, name, unit_range):
    """The ``(flag, explain)`` pair of one input map for :func:`_read_flags`: finite values, and in [0, 1] with
    ``unit_range``."""
    return _float_map_flag(t, shape, name, unit_range), lambda: _explain_float_map(t, name)


def _stackable(tensors, size_divisibility):
    """Whether ``tensors`` can be batched without padding: one shape, one device, sides multiples of
    ``size_divisibility`` (what ``ImageList.from_tensors`` would return unpadded)."""
    shape, device = tuple(tensors[0].shape), tensors[0].device
    if any(tuple(t.shape) != shape or t.device != device for t in tensors):
        return False
    return size_divisibility <= 1 or (shape[-2] % size_divisibility == 0 and shape[-1] % size_divisibility == 0)


def _stack(tensors):
    return tensors[0][None] if len(tensors) == 1 else torch.stack(tensors)


def _click_rows(batched_inputs, device):
    """(B, N, 3) float32 click rows on ``device``, shorter lists padded with -1 rows.  Host tensors (the usual
    case) are assembled in NumPy and copied once; others are copied row block by row block."""
    num = max(x["clicks"].shape[0] for x in batched_inputs)
    if all(x["clicks"].device.type == "cpu" for x in batched_inputs):
        rows = np.full((len(batched_inputs), num, 3), -1.0, dtype=np.float32)
        for b, c in enumerate(host_arrays([x["clicks"] for x in batched_inputs])):
            rows[b, :c.shape[0]] = c
        return torch.from_numpy(rows).to(device, non_blocking=True)
    clicks = torch.full((len(batched_inputs), num, 3), -1.0, device=device)
    for b, x in enumerate(batched_inputs):
        clicks[b, :x["clicks"].shape[0]] = x["clicks"].to(device=device, dtype=torch.float32, non_blocking=True)
    return clicks


class _ClickModel(nn.Module):
    """Input checking and preprocessing shared by the meta-architectures."""

    def __init__(self, backbone, pixel_mean, pixel_std, click_radius=5.0, outside_clicks="error"):
        super().__init__()
        if outside_clicks not in ("error", "draw"):
            raise ValueError(f"outside_clicks must be 'error' or 'draw', got {outside_clicks!r}")
        if len(pixel_mean) != 3 or len(pixel_std) != 3:
            raise ValueError(f"pixel_mean and pixel_std must have 3 (RGB) entries, got {pixel_mean}, {pixel_std}")
        check_positive_reals(pixel_std, "pixel_std (MODEL.PIXEL_STD; the image is divided by it)")
        self.backbone = backbone
        self.click_radius = float(click_radius)
        self.outside_clicks = outside_clicks
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)

    @property
    def device(self):
        return self.pixel_mean.device

    # -- opt-in compiled inference --------------------------------------------------------------------------

    def _network(self, data):
        """The network on preprocessed ``data`` (what :meth:`compile_network` compiles)."""
        raise NotImplementedError

    def compile_network(self, mode: Optional[str] = None):
        """Run the inference network (not the pre/post-processing, not training) through ``torch.compile``.

        ``mode``: a torch.compile mode; default ``"reduce-overhead"`` (CUDA graphs) on CUDA, ``"default"``
        elsewhere.  If compiling fails, one warning is logged and inference runs eagerly
        (:class:`adaptiveclick.utils.compile.CompiledOrEager`).  :meth:`uncompile_network` undoes it.
        """
        from adaptiveclick.utils.compile import CompiledOrEager, default_compile_mode

        wrapper = CompiledOrEager(self._network, mode or default_compile_mode(self.device))
        self.set_network_wrapper(wrapper)
        return wrapper

    def graph_network(self, max_graphs: int = 4, capture_after: int = 2):
        """Replay the inference network from CUDA graphs recorded from its eager code (no compiler).

        Each input size is recorded at its ``capture_after``-th inference call on a CUDA device (a warm-up run
        and a capture) and replayed from then on; at most ``max_graphs`` sizes are kept.  Calls that cannot be
        recorded (CPU tensors, gradients on, training mode) run eagerly; a capture that fails logs one warning
        and inference runs eagerly from then on (:class:`adaptiveclick.utils.cuda_graph.GraphedOrEager`).
        Moving or converting the model (``.to``, ``.half()``) drops the recorded graphs; loading weights in
        place does not need to.  :meth:`uncompile_network` undoes it.
        """
        wrapper = self.network_graphs(max_graphs=max_graphs, capture_after=capture_after)
        self.set_network_wrapper(wrapper)
        return wrapper

    def network_graphs(self, max_graphs: int = 4, capture_after: int = 2):
        """A new :class:`adaptiveclick.utils.cuda_graph.GraphedOrEager` around :meth:`_network`, keeping alive
        what its graphs read (:meth:`_graph_keep_alive`), not installed: :meth:`graph_network` installs it, a
        benchmark may call it directly to time the graphed network beside the eager one."""
        from adaptiveclick.utils.cuda_graph import GraphedOrEager

        return GraphedOrEager(self._network, max_graphs=max_graphs, capture_after=capture_after,
                              keep_alive=self._graph_keep_alive)

    @contextlib.contextmanager
    def _graph_keep_alive(self):
        """What a graph recorded inside the block reads by address and must keep alive: the cached size
        constants it is handed (position encodings, index tensors, ...; a cache may start over) and the model's
        parameters and buffers (``load_state_dict(..., assign=True)`` replaces them without ``_apply``; the
        graph then still reads the old values, but never freed memory: :meth:`graph_network` again, or
        ``reset()``, records the new ones)."""
        from .shape_cache import collecting_constants

        with collecting_constants() as kept:
            kept.extend(self.parameters())
            kept.extend(self.buffers())
            yield kept

    def set_network_wrapper(self, wrapper):
        """Run inference through ``wrapper(data)`` (a callable around :meth:`_network`, as :meth:`compile_network`
        and :meth:`graph_network` make), or eagerly for None; returns the wrapper it replaces (or None)."""
        if wrapper is not None and not callable(wrapper):
            raise TypeError(f"wrapper must be callable or None, got {type(wrapper).__name__}")
        previous = self.__dict__.pop("_compiled_network", None)
        if wrapper is not None:
            self.__dict__["_compiled_network"] = wrapper  # a plain attribute, not a submodule or state
        return previous

    def uncompile_network(self) -> None:
        """Back to eager inference after :meth:`compile_network` or :meth:`graph_network`."""
        self.set_network_wrapper(None)

    @property
    def compiled_network(self):
        """The wrapper in use for inference (:class:`CompiledOrEager` or :class:`GraphedOrEager`), or None."""
        return self.__dict__.get("_compiled_network")

    def _apply(self, fn, *args, **kwargs):
        # .to / .cuda / .half / ... make new parameter tensors: graphs recorded on the old ones must go
        wrapper = self.compiled_network
        if wrapper is not None and hasattr(wrapper, "reset"):
            wrapper.reset()
        return super()._apply(fn, *args, **kwargs)

    def _inference_network(self, data):
        wrapper = self.compiled_network
        return self._network(data) if wrapper is None or self.training else wrapper(data)

    def _check_inputs(self, batched_inputs, training):
        if not isinstance(batched_inputs, (list, tuple)) or not batched_inputs:
            raise TypeError("batched_inputs must be a non-empty list of dicts")
        checks = []  # value checks: (device flag, explain), read together after the structure checks

        def float_map(t, shape, name, unit_range):
            checks.append(_float_map_check(t, shape, name, unit_range))

        def binary(gt, name):
            def explain():
                raise ValueError(f"{name} must be binary (0/1)")
            checks.append((~((gt == 0) | (gt == 1)).all(), explain))

        for i, item in enumerate(batched_inputs):
            if not isinstance(item, dict):
                raise TypeError(f"batched_inputs[{i}] must be a dict, got {type(item).__name__}")
            for key in ("image", "clicks") + (("gt_mask",) if training else ()):
                if key not in item:
                    raise ValueError(f"batched_inputs[{i}] has no {key!r}")
            image = item["image"]
            if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
                raise ValueError(f"batched_inputs[{i}]['image'] must be a (3, H, W) RGB tensor, got "
                                 f"{tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__}")
            float_map(image, image.shape, f"batched_inputs[{i}]['image']", unit_range=False)
            size = tuple(image.shape[-2:])
            # training clicks come from the sampler and must lie inside the crop; at inference the official
            # zoom-in may map clicks outside the crop ("draw" mode)
            check_clicks(item["clicks"], size, outside="error" if training else self.outside_clicks,
                         name=f"batched_inputs[{i}]['clicks']")
            if item.get("prev_mask") is not None:
                float_map(item["prev_mask"], (1,) + size, f"batched_inputs[{i}]['prev_mask']", True)
            if training:
                gt = item["gt_mask"]
                if not isinstance(gt, torch.Tensor) or tuple(gt.shape) != size:
                    raise ValueError(f"batched_inputs[{i}]['gt_mask'] must be a {size} tensor, got "
                                     f"{tuple(gt.shape) if isinstance(gt, torch.Tensor) else type(gt).__name__}")
                binary(gt, f"batched_inputs[{i}]['gt_mask']")
                if item.get("ignore_mask") is not None:
                    ign = item["ignore_mask"]
                    if not isinstance(ign, torch.Tensor) or ign.dtype != torch.bool or tuple(ign.shape) != size:
                        raise ValueError(f"batched_inputs[{i}]['ignore_mask'] must be a bool {size} tensor")
        _read_flags(checks)

    def preprocess(self, batched_inputs, training=False):
        """Checked, normalised, padded network inputs.

        Returns a dict: ``images`` (B, 3, Hp, Wp) normalised, ``coord_features`` (B, 3, Hp, Wp) = [prev mask,
        positive disks, negative disks], ``image_sizes`` [(H, W)], and for training ``gt_masks`` (B, Hp, Wp)
        float and ``ignore_masks`` (B, Hp, Wp) bool (padding is background, not ignored).
        """
        self._check_inputs(batched_inputs, training)
        device = self.device
        div = self.backbone.size_divisibility
        # non_blocking: from pinned loader batches (DATALOADER.PIN_MEMORY) the host-to-device copies overlap
        # with the GPU's work; from pageable memory they are ordinary synchronous copies
        moved = [x["image"].to(device, non_blocking=True) for x in batched_inputs]
        image_sizes = [(int(m.shape[-2]), int(m.shape[-1])) for m in moved]

        def pad(maps):
            # the common case (a predictor's click, a training batch of equal crops) needs no padding: stacked,
            # where detectron2's ImageList costs ~10 small operators per call
            if _stackable(maps, div):
                return _stack(maps)
            return ImageList.from_tensors(maps, size_divisibility=div, pad_value=0).tensor

        if _stackable(moved, div):  # no padding: the batch is normalised as one tensor
            images = (_stack(moved).float() - self.pixel_mean) / self.pixel_std
        else:
            images = pad([(m.float() - self.pixel_mean) / self.pixel_std for m in moved])
        padded = tuple(images.shape[-2:])

        prev = pad([x["prev_mask"].to(device, non_blocking=True).float() if x.get("prev_mask") is not None
                    else torch.zeros((1,) + tuple(x["image"].shape[-2:]), device=device) for x in batched_inputs])
        disks = click_disk_maps(_click_rows(batched_inputs, device), padded, self.click_radius)
        data = {"images": images, "coord_features": torch.cat([prev, disks], dim=1), "image_sizes": image_sizes}
        if training:
            data["gt_masks"] = pad([x["gt_mask"].to(device, non_blocking=True).float() for x in batched_inputs])
            data["ignore_masks"] = pad([x["ignore_mask"].to(device=device, dtype=torch.uint8, non_blocking=True)
                                        if x.get("ignore_mask") is not None
                                        else torch.zeros(x["gt_mask"].shape, dtype=torch.uint8, device=device)
                                        for x in batched_inputs]).bool()
        return data

    def _postprocess(self, logits, data):
        """(B, 1, h, w) logits -> per-image (1, H, W) logits at input resolution (bilinear, align_corners=True)."""
        logits = F.interpolate(logits.float(), size=tuple(data["images"].shape[-2:]), mode="bilinear",
                               align_corners=True)
        return [{"mask_logits": logits[b, :, :h, :w]} for b, (h, w) in enumerate(data["image_sizes"])]

    def forward(self, batched_inputs: List[Dict]):
        if self.training:
            return self.losses(batched_inputs)
        return self.inference(batched_inputs)


@META_ARCH_REGISTRY.register()
class AdaptiveClick(_ClickModel):
    """AdaptiveClick: click-fused ViT -> simple pyramid -> PMMD -> CAMD, with the set criterion.

    Args:
        backbone: a :class:`~adaptiveclick.modeling.backbone.ClickViTBackbone`-like module,
            ``backbone(images, coord_features) -> {"res2".."res5"}`` with ``size_divisibility``.
        pixel_decoder: ``forward_features(features) -> (mask_features, [1/32, 1/16, 1/8] maps)``.
        transformer_decoder: ``(multi_scale, mask_features, positive click map) -> outputs``.
        criterion: :class:`SetCriterion` (unweighted losses).
        loss_weights: {"loss_ce", "loss_mask", "loss_dice"} -> weight, applied to every prediction.
        pixel_mean, pixel_std: RGB normalisation on the 0..255 scale.
        click_radius: disk radius (official 5).
        merge: "weighted_logits" (official) or "best_query"; see :func:`merge_query_logits`.
        targets_mode: "official" or "clean"; see :mod:`adaptiveclick.modeling.targets`.
        outside_clicks: at inference, "error" for clicks outside the image or "draw" (official DistMaps:
            the in-image part of the disk); training always raises.
    The ``ignore_mask`` input is validated but not used by the loss (official behaviour; the official
    training sets have no ignore regions).
    """

    @configurable
    def __init__(self, *, backbone, pixel_decoder, transformer_decoder, criterion, loss_weights, pixel_mean,
                 pixel_std, click_radius=5.0, merge="weighted_logits", targets_mode="official",
                 outside_clicks="error"):
        super().__init__(backbone, pixel_mean, pixel_std, click_radius, outside_clicks)
        if merge not in MERGE_MODES:
            raise ValueError(f"merge must be one of {MERGE_MODES}, got {merge!r}")
        if targets_mode not in TARGET_MODES:
            raise ValueError(f"targets_mode must be one of {TARGET_MODES}, got {targets_mode!r}")
        missing = {"loss_ce", "loss_mask", "loss_dice"} - set(loss_weights)
        if missing:
            raise ValueError(f"loss_weights lacks {sorted(missing)}")
        self.pixel_decoder = pixel_decoder
        self.transformer_decoder = transformer_decoder
        self.criterion = criterion
        self.loss_weights = dict(loss_weights)
        self.merge = merge
        self.targets_mode = targets_mode

    @classmethod
    def from_config(cls, cfg):
        from adaptiveclick.losses import build_mask_loss, dice_loss

        a = cfg.MODEL.ADAPTIVECLICK
        backbone = build_backbone(cfg)
        pixel_decoder = build_pixel_decoder(cfg, backbone.output_shape())
        transformer_decoder = build_transformer_decoder(cfg, a.CONVS_DIM)
        m = a.MATCHER
        matcher = HungarianMatcher(cost_class=m.COST_CLASS, cost_mask=m.COST_MASK, cost_dice=m.COST_DICE,
                                   cost_mask_type=m.COST_MASK_TYPE, num_points=m.NUM_POINTS,
                                   afl_epsilon=m.AFL_EPSILON, afl_gamma=m.AFL_GAMMA, afl_delta=m.AFL_DELTA,
                                   afl_alpha=m.AFL_ALPHA, focal_alpha=m.FOCAL_ALPHA, focal_gamma=m.FOCAL_GAMMA)
        criterion = SetCriterion(matcher, build_mask_loss(cfg), dice_loss, num_classes=1,
                                 eos_coef=a.NO_OBJECT_WEIGHT, class_weights_mode=a.CLASS_WEIGHTS,
                                 deep_supervision=a.DEEP_SUPERVISION, point_sampling=a.POINT_SAMPLING,
                                 num_points=a.TRAIN_NUM_POINTS, oversample_ratio=a.OVERSAMPLE_RATIO,
                                 importance_sample_ratio=a.IMPORTANCE_SAMPLE_RATIO)
        mix_ce, mix_dice, mix_mask = a.LOSS_MIX
        w = a.INSTANCE_LOSS_WEIGHT
        loss_weights = {"loss_ce": mix_ce * a.CLASS_WEIGHT * w, "loss_dice": mix_dice * a.DICE_WEIGHT * w,
                        "loss_mask": mix_mask * a.MASK_WEIGHT * w}
        return {"backbone": backbone, "pixel_decoder": pixel_decoder, "transformer_decoder": transformer_decoder,
                "criterion": criterion, "loss_weights": loss_weights, "pixel_mean": cfg.MODEL.PIXEL_MEAN,
                "pixel_std": cfg.MODEL.PIXEL_STD, "click_radius": a.CLICK_RADIUS, "merge": a.MERGE,
                "targets_mode": a.TARGETS, "outside_clicks": a.OUTSIDE_CLICKS}

    def predict(self, data):
        """Decoder outputs for preprocessed ``data`` ({"pred_logits", "pred_masks", "aux_outputs"})."""
        features = self.backbone(data["images"], data["coord_features"])
        mask_features, multi_scale = self.pixel_decoder.forward_features(features)
        return self.transformer_decoder(multi_scale, mask_features, data["coord_features"][:, 1])

    def losses(self, batched_inputs):
        """Weighted training losses (every key starts with ``loss_``; the trainer sums them)."""
        data = self.preprocess(batched_inputs, training=True)
        outputs = self.predict(data)
        targets = build_targets(data["gt_masks"], outputs["pred_masks"].shape[-2:], self.targets_mode)
        # build_targets makes every mask by a comparison, so its values are 0 and 1: the criterion and the losses
        # need not read a flag to check them (on a GPU, a wait of the host)
        with targets_checked():
            losses = self.criterion(outputs, targets)
        for key in losses:
            losses[key] = losses[key] * self.loss_weights[key.rsplit("_", 1)[0] if key[-1].isdigit() else key]
        return losses

    def _network(self, data):
        return self.predict(data)

    def inference(self, batched_inputs):
        """Merged mask logits per input, ``[{"mask_logits": (1, H, W)}]`` (no gradient bookkeeping is changed)."""
        data = self.preprocess(batched_inputs, training=False)
        outputs = self._inference_network(data)
        return self._postprocess(merge_query_logits(outputs["pred_logits"], outputs["pred_masks"], self.merge), data)


class SimpleSegHead(nn.Module):
    """Light all-MLP segmentation head (SegFormer-style, as SimpleClick's): per-level 1x1 projection, upsample
    to the finest level, concatenate, 1x1 fuse + norm + ReLU, dropout, 1x1 to one logit channel."""

    def __init__(self, in_channels, channels=256, dropout=0.1, norm="BN"):
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(c, channels, kernel_size=1) for c in in_channels)
        self.fuse = nn.Sequential(nn.Conv2d(channels * len(in_channels), channels, kernel_size=1, bias=False),
                                  get_norm(norm, channels), nn.ReLU())
        self.dropout = nn.Dropout2d(dropout)
        self.predict = nn.Conv2d(channels, 1, kernel_size=1)

    def forward(self, features):
        size = features[0].shape[-2:]
        x = [F.interpolate(p(f), size=size, mode="bilinear", align_corners=False) if f.shape[-2:] != size else p(f)
             for p, f in zip(self.proj, features)]
        return self.predict(self.dropout(self.fuse(torch.cat(x, dim=1))))


@META_ARCH_REGISTRY.register()
class SimpleClickBaseline(_ClickModel):
    """SimpleClick-style baseline: the same click-fused backbone, a :class:`SimpleSegHead`, one pixel-wise loss.

    The head's stride-4 logits are upsampled (bilinear, align_corners=True) to the input size; the loss
    ``loss(logits (B, P), targets (B, P), num_masks=B)`` is applied at full resolution, ignored pixels
    excluded.  Returns {"loss_mask": loss_weight * loss} in training.
    """

    @configurable
    def __init__(self, *, backbone, head, loss, pixel_mean, pixel_std, loss_weight=1.0, click_radius=5.0,
                 outside_clicks="error"):
        super().__init__(backbone, pixel_mean, pixel_std, click_radius, outside_clicks)
        self.head = head
        self.loss = loss
        self.loss_weight = loss_weight
        self.in_features = ["res2", "res3", "res4", "res5"]

    @classmethod
    def from_config(cls, cfg):
        from adaptiveclick.losses import build_mask_loss

        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        h = cfg.MODEL.SIMPLE_HEAD
        head = SimpleSegHead([shapes[k].channels for k in ("res2", "res3", "res4", "res5")], h.CHANNELS,
                             h.DROPOUT, h.NORM)
        return {"backbone": backbone, "head": head, "loss": build_mask_loss(cfg), "pixel_mean": cfg.MODEL.PIXEL_MEAN,
                "pixel_std": cfg.MODEL.PIXEL_STD, "loss_weight": h.LOSS_WEIGHT,
                "click_radius": cfg.MODEL.ADAPTIVECLICK.CLICK_RADIUS,
                "outside_clicks": cfg.MODEL.ADAPTIVECLICK.OUTSIDE_CLICKS}

    def _logits(self, data):
        features = self.backbone(data["images"], data["coord_features"])
        logits = self.head([features[k] for k in self.in_features])
        return F.interpolate(logits.float(), size=tuple(data["images"].shape[-2:]), mode="bilinear",
                             align_corners=True)

    def losses(self, batched_inputs):
        data = self.preprocess(batched_inputs, training=True)
        logits = self._logits(data)[:, 0]
        per_image = []
        for b, (h, w) in enumerate(data["image_sizes"]):
            keep = ~data["ignore_masks"][b, :h, :w]
            per_image.append(self.loss(logits[b, :h, :w][keep][None], data["gt_masks"][b, :h, :w][keep][None], 1.0))
        return {"loss_mask": self.loss_weight * torch.stack(per_image).mean()}

    def _network(self, data):
        return self._logits(data)

    def inference(self, batched_inputs):
        data = self.preprocess(batched_inputs, training=False)
        logits = self._inference_network(data)
        return [{"mask_logits": logits[b, :, :h, :w]} for b, (h, w) in enumerate(data["image_sizes"])]
