"""The official AdaptiveClick code (``lab206/AdaptiveClick``) as a reference, and its checkpoints in our format.

Two halves:

* Importing and running the official model from a local checkout (:func:`import_official`,
  :func:`build_official_model`, :func:`official_forward`).  Nothing of the official code is copied here: the
  checkout is put on ``sys.path`` while its modules are imported.  Its model file imports the Swin/SimpleClick
  heads (``mmcv``), ``addict``, TensorBoard and matplotlib; where one of them is not installed a stand-in
  module takes its place during the import (none of them is used by ``AdaptiveClickModel.forward``; the
  ``addict`` stand-in is an attribute dict, which is all the model builder needs from it), and the
  stand-ins are removed from ``sys.modules`` again afterwards.
* Converting official checkpoints (``{"state_dict": ..., "config": ...}`` written by the official trainer)
  into state dicts of our detectron2 model (:func:`read_official_checkpoint`,
  :func:`convert_official_state_dict`).  Every official key is either mapped or on a short list of keys the
  official forward never reads; anything else, and any of our keys left without a value, raises
  ``ValueError`` naming the keys.

Key map (official -> ours), model.md §7.3:

=====================================================  ====================================================
``patch_embed_coords.proj.*``                          ``backbone.net.patch_embed_coords.proj.*``
``backbone.{patch_embed.proj,pos_embed,blocks}.*``     ``backbone.net.{...}``
``backbone.{cls_token,fc_norm.*,head.*}``              dropped (unused by the official forward)
``pixel_decoder.neck.down_{4,8,16,32}.*``              ``backbone.pyramid.down_{4,8,16,32}.*``
``pixel_decoder.{input_proj,transformer,lateral_convs,  same name
output_convs,mask_features}.*``
``pixel_decoder.adapter_{k}.*`` / ``layer_{k}.*``      duplicates of ``lateral_convs`` / ``output_convs``
                                                       (checked equal, dropped)
``click_aware_decoder.*``                              ``transformer_decoder.*``
``criterion.empty_weight``                             not copied: our buffer follows our config
                                                       (``CLASS_WEIGHTS``/``NO_OBJECT_WEIGHT``); a value that
                                                       differs from ours is reported
=====================================================  ====================================================
"""

import contextlib
import copy
import importlib
import logging
import os
import pickle
import re
import sys
import types
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "OFFICIAL_ROOT_ENV", "DEFAULT_OFFICIAL_ROOT", "OFFICIAL_SIZES", "OFFICIAL_OVERRIDES", "ConfigDict",
    "import_official", "official_model_cfg", "build_official_model", "official_points", "official_forward",
    "official_set_inference_size", "OFFICIAL_OPTIMIZER_PARAMS", "OFFICIAL_MAX_NUM_NEXT_CLICKS",
    "import_official_training", "build_official_optimizer", "official_training_batch", "official_click_rounds",
    "official_train_step",
    "official_global_blocks", "official_kwargs_from_cfg", "official_cfg_mismatches", "behaviour_differences",
    "read_official_checkpoint", "unwrap_state_dict", "convert_official_state_dict", "our_state_dict_template",
]

logger = logging.getLogger(__name__)

OFFICIAL_ROOT_ENV = "ADAPTIVECLICK_OFFICIAL_ROOT"
DEFAULT_OFFICIAL_ROOT = "/tmp/official_adaptiveclick"

# size -> (official model yaml under configs/, overrides on top of it).  The official code has no ViT-L config;
# "large" is the base config with MAE ViT-L/16 widths (the FPN dims of ViT-B, model.md §0 assumption).
OFFICIAL_SIZES = {
    "base": ("adaptiveclick_plainvit_base448.yaml", {}),
    "large": ("adaptiveclick_plainvit_base448.yaml", {"embed_dim": 1024, "depth": 24, "num_heads": 16}),
    "huge": ("adaptiveclick_plainvit_huge448.yaml", {}),
}

# keyword of build_official_model -> key paths in the official model config
OFFICIAL_OVERRIDES = {
    "patch_size": ("MODEL.BACKBONE.PATCH_SIZE",),
    "embed_dim": ("MODEL.BACKBONE.EMBED_DIM", "MODEL.SIMPLE_FEATURE_PYRAMID.IN_DIM"),
    "depth": ("MODEL.BACKBONE.DEPTH",),
    "num_heads": ("MODEL.BACKBONE.NUM_HEADS",),
    "mlp_ratio": ("MODEL.BACKBONE.MLP_RATIO",),
    "fpn_out_dims": ("MODEL.SIMPLE_FEATURE_PYRAMID.OUT_DIMS",),
    "conv_dim": ("MODEL.SEM_SEG_HEAD.CONVS_DIM",),
    "mask_dim": ("MODEL.SEM_SEG_HEAD.MASK_DIM",),
    "enc_layers": ("MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS",),
    "hidden_dim": ("MODEL.MASK_FORMER.HIDDEN_DIM",),
    "nheads": ("MODEL.MASK_FORMER.NHEADS",),
    "dim_feedforward": ("MODEL.MASK_FORMER.DIM_FEEDFORWARD",),
    "num_queries": ("MODEL.MASK_FORMER.NUM_OBJECT_QUERIES",),
    "dec_layers": ("MODEL.MASK_FORMER.DEC_LAYERS",),
}

_OFFICIAL_MEAN = (0.485, 0.456, 0.406)
_OFFICIAL_STD = (0.229, 0.224, 0.225)
_OFFICIAL_WINDOW_PIXELS = 224  # models_vit.py: windows of 224x224 input pixels


class ConfigDict(dict):
    """A dict whose items are also attributes (recursively), the shape of the official ``easydict`` configs.

    Used for the configs we build for the official model when ``easydict`` is not installed, and as the
    stand-in for ``easydict.EasyDict`` objects when official checkpoints are read.
    """

    def __init__(self, data=None, **kwargs):
        super().__init__()
        for key, value in dict(data or {}, **kwargs).items():
            self[key] = value

    @staticmethod
    def _wrap(value):
        if isinstance(value, dict) and not isinstance(value, ConfigDict):
            return ConfigDict(value)
        if isinstance(value, list):
            return [ConfigDict._wrap(v) for v in value]
        return value

    def __setitem__(self, key, value):
        super().__setitem__(key, self._wrap(value))

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}") from None

    def __setattr__(self, name, value):
        self[name] = value

    def __deepcopy__(self, memo):
        return ConfigDict({k: copy.deepcopy(v, memo) for k, v in self.items()})

    def __reduce__(self):
        return ConfigDict, (dict(self),)


# ---------------------------------------------------------------------------------------------- importing


def _normalise_root(root):
    """The absolute path of a checkout given as ``root`` (``~`` expanded), or None if none is given."""
    if root is None or not str(root).strip():
        return None
    return os.path.abspath(os.path.expanduser(str(root)))


def _check_root(root):
    root = _normalise_root(root)
    if root is None:
        raise ValueError("no official AdaptiveClick checkout given (pass its path, or set "
                         f"{OFFICIAL_ROOT_ENV})")
    needed = ["isegm/model/is_adaptiveclick_model.py", "isegm/model/modeling/models_vit.py",
              "isegm/model/modeling/mask2former_helper/msdeformattn.py", "configs/adaptiveclick_plainvit_base448.yaml"]
    if not os.path.isdir(root):
        raise ValueError(f"official AdaptiveClick checkout {root!r} does not exist (expected a clone of "
                         "github.com/lab206/AdaptiveClick)")
    missing = [p for p in needed if not os.path.isfile(os.path.join(root, p))]
    if missing:
        raise ValueError(f"{root!r} is not an official AdaptiveClick checkout (lab206/AdaptiveClick): "
                         f"missing {missing}")
    return root


class _Missing:
    """Placeholder for a name of a stand-in module; using it raises, naming the module."""

    _module = "?"

    def __init__(self, *args, **kwargs):
        raise ImportError(f"{self._module} is not installed; a stand-in was used to import the official "
                          "AdaptiveClick code, whose AdaptiveClickModel does not need it")


def _stand_in_module(name):
    module = types.ModuleType(name)
    module.__doc__ = f"stand-in for the missing module {name} (adaptiveclick.utils.official)"
    module.__path__ = []  # a package, so that submodule imports find their own stand-ins

    def __getattr__(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return type(attr, (_Missing,), {"_module": name})

    module.__getattr__ = __getattr__
    return module


def _addict_stand_in():
    module = _stand_in_module("addict")
    module.Dict = ConfigDict  # AdaptiveClickModel builds its feature-shape table with addict.Dict
    return module


# modules the official model files import, each replaced by a stand-in only if it cannot be imported.
# Their users: mmcv/timm -> Swin head (swin_transformer.py, imported by is_plainvit_model.py, unused);
# addict -> the feature-shape table of AdaptiveClickModel; tensorboard/matplotlib/PIL/scipy.io -> logging and
# I/O helpers of isegm.utils; scipy.optimize -> the Hungarian matcher (training only).
_OPTIONAL_MODULES = ["addict", "torch.utils.tensorboard", "matplotlib", "matplotlib.pyplot", "PIL", "PIL.Image",
                     "scipy.io", "scipy.optimize"]
_SWIN_MODULE = "isegm.model.modeling.swin_transformer"


def _importable(name):
    try:
        importlib.import_module(name)
        return True
    except Exception:  # noqa: BLE001 -- any failure means a stand-in is needed
        return False


_OFFICIAL_API = {}


def _import_from_checkout(root, names):
    """Import the modules ``names`` of the official checkout at ``root`` (on ``sys.path`` only meanwhile), with
    stand-ins for missing optional dependencies during the import; returns ``(modules by name, stand-in names)``."""
    stand_ins = {}
    for name in _OPTIONAL_MODULES:
        if name not in sys.modules and not _importable(name):
            stand_ins[name] = _addict_stand_in() if name == "addict" else _stand_in_module(name)
    if not (_importable("mmcv") and _importable("timm")):
        # the Swin head needs mmcv (and timm); only PlainVitModel uses it, AdaptiveClickModel never does
        stand_ins[_SWIN_MODULE] = _stand_in_module(_SWIN_MODULE)
    stand_ins = {name: module for name, module in stand_ins.items() if name not in sys.modules}
    for name in stand_ins:
        sys.modules[name] = stand_ins[name]
        parent, _, child = name.rpartition(".")
        if parent in sys.modules and parent not in ("isegm.model.modeling",):
            setattr(sys.modules[parent], child, stand_ins[name])
    added_path = root not in sys.path
    if added_path:
        sys.path.insert(0, root)
    try:
        modules = {}
        for name in names:
            try:
                modules[name] = importlib.import_module(name)
            except ImportError as e:
                raise ImportError(f"importing {name} from the official checkout {root!r} failed: {e}") from e
    finally:
        if added_path:
            with contextlib.suppress(ValueError):
                sys.path.remove(root)
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
                parent, _, child = name.rpartition(".")
                if getattr(sys.modules.get(parent), child, None) is module:
                    delattr(sys.modules[parent], child)
    return modules, sorted(stand_ins)


def import_official(root=None):
    """Import the official AdaptiveClick model code from the checkout at ``root``; returns a namespace.

    ``root`` defaults to ``$ADAPTIVECLICK_OFFICIAL_ROOT``, else ``/tmp/official_adaptiveclick``.  The returned
    namespace has ``root``, ``AdaptiveClickModel``, ``SimpleFPN``, ``VisionTransformer`` and ``modules`` (the
    imported official modules by name).  The checkout is on ``sys.path`` only during the import; stand-ins for
    missing optional dependencies are removed from ``sys.modules`` afterwards.  Raises ``ValueError`` naming
    the path if it is not an official checkout, or if a different checkout's ``isegm`` is already imported.
    """
    raw = root if root is not None else os.environ.get(OFFICIAL_ROOT_ENV, DEFAULT_OFFICIAL_ROOT)
    cached = _OFFICIAL_API.get(_normalise_root(raw))  # already imported: no file-system checks (called in loops)
    if cached is not None:
        return cached
    root = _check_root(raw)
    loaded = sys.modules.get("isegm")
    if loaded is not None:
        where = [os.path.abspath(p) for p in getattr(loaded, "__path__", [])]
        if not any(os.path.dirname(p) == root for p in where):
            raise ValueError(f"a different 'isegm' package is already imported (from {where}); cannot import the "
                             f"official AdaptiveClick code from {root!r} in the same process")

    names = ["isegm.model.is_adaptiveclick_model", "isegm.model.is_plainvit_model", "isegm.model.modeling.models_vit",
             "isegm.model.modeling.pos_embed",
             "isegm.model.modeling.mask2former_helper.msdeformattn", "isegm.model.ops", "isegm.utils.serialization"]
    modules, stand_ins = _import_from_checkout(root, names)
    api = types.SimpleNamespace(
        root=root, modules=modules, stand_ins=stand_ins,
        AdaptiveClickModel=modules["isegm.model.is_adaptiveclick_model"].AdaptiveClickModel,
        SimpleFPN=modules["isegm.model.is_plainvit_model"].SimpleFPN,
        VisionTransformer=modules["isegm.model.modeling.models_vit"].VisionTransformer)
    if stand_ins:
        logger.info("official AdaptiveClick imported from %s with stand-ins for %s", root, sorted(stand_ins))
    _OFFICIAL_API[root] = api
    return api


# ---------------------------------------------------------------------------------------------- building


def _set_path(cfg, path, value):
    node = cfg
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[part]
    if parts[-1] not in node:
        raise ValueError(f"official config has no key {path!r}")
    node[parts[-1]] = value


def _get_path(cfg, path):
    node = cfg
    for part in path.split("."):
        node = node[part]
    return node


def official_model_cfg(root=None, size="base", img_size=448, **overrides):
    """The model config the official training scripts build (``init_model`` of
    ``models/iter_mask/adaptiveclick_{size}448_*_itermask.py``): the model yaml (with its base), ``crop_size``
    (img_size, img_size), ``num_max_points`` 24, ``random_split`` False, device cpu; plus ``overrides``
    (keywords of :data:`OFFICIAL_OVERRIDES`).  Returns a :class:`ConfigDict` (or ``easydict.EasyDict``)."""
    from fvcore.common.config import CfgNode

    root = _check_root(root if root is not None else os.environ.get(OFFICIAL_ROOT_ENV, DEFAULT_OFFICIAL_ROOT))
    if size not in OFFICIAL_SIZES:
        raise ValueError(f"size must be one of {sorted(OFFICIAL_SIZES)}, got {size!r}")
    if not isinstance(img_size, int) or img_size <= 0:
        raise ValueError(f"img_size must be a positive int, got {img_size!r}")
    unknown = sorted(set(overrides) - set(OFFICIAL_OVERRIDES))
    if unknown:
        raise ValueError(f"unknown override(s) {unknown}; allowed: {sorted(OFFICIAL_OVERRIDES)}")
    yaml_name, size_overrides = OFFICIAL_SIZES[size]

    # the official loader: fvcore CfgNode.load_yaml_with_base (a plain dict, the child overriding _BASE_)
    data = CfgNode.load_yaml_with_base(os.path.join(root, "configs", yaml_name), allow_unsafe=True)
    data.update(crop_size=(img_size, img_size), num_max_points=24, random_split=False, device="cpu")
    for key, value in dict(size_overrides, **overrides).items():
        if key == "patch_size":
            value = [int(value), int(value)]
        for path in OFFICIAL_OVERRIDES[key]:
            _set_path(data, path, list(value) if isinstance(value, tuple) else value)
    try:  # the official scripts wrap the config in an easydict
        from easydict import EasyDict

        return EasyDict(data)
    except ImportError:
        return ConfigDict(data)


def build_official_model(root=None, size="base", img_size=448, device=None, **overrides):
    """The official ``AdaptiveClickModel`` with random weights, built as its training scripts do.

    ``AdaptiveClickModel(model_cfg, with_prev_mask=True, use_disks=True, norm_radius=5)`` with the config of
    :func:`official_model_cfg` (no MAE initialisation: the weights are the constructors' random init).  The
    model is put in eval mode with ``nn.Module.train(model, False)``, since the official ``train(mode)``
    override ignores ``mode`` (model.md §7.2 quirk 8).  Call :func:`official_forward` to run it.

    ``device``: where to put it.  Use this rather than ``.to(device)``: the model and its criterion also keep
    the config's device as a plain attribute (``cfg.device``, which its training scripts set to the GPU), and
    the criterion moves its class targets there; left at "cpu", its loss on CUDA outputs fails.
    """
    api = import_official(root)
    cfg = official_model_cfg(api.root, size, img_size, **overrides)
    depth = int(cfg.MODEL.BACKBONE.DEPTH)
    if depth % 4:
        raise ValueError(f"the official ViT needs a depth divisible by 4 (models_vit.py asserts it), got {depth}")
    model = api.AdaptiveClickModel(cfg, with_prev_mask=True, use_disks=True, norm_radius=5)
    torch.nn.Module.train(model, False)
    if device is not None:
        device = torch.device(device)
        model.to(device)
        model.device = model.criterion.device = device
    return model


def official_set_inference_size(model, img_size):
    """Prepare the official model for (img_size, img_size) inputs as ``scripts/evaluate_model.py`` does (e.g.
    672 for DAVIS): the official ``interpolate_pos_embed_inference`` resizes the position embedding (bicubic)
    and the token grid, in place.  Returns ``model``."""
    module = sys.modules.get("isegm.model.modeling.pos_embed")
    if module is None:
        raise ValueError("the official code is not imported; build the model with build_official_model first")
    device = next(model.parameters()).device
    module.interpolate_pos_embed_inference(model.backbone, (int(img_size), int(img_size)), device)
    return model


def official_global_blocks(depth):
    """0-based indices of the official ViT's global-attention blocks (models_vit.py ``forward_backbone``)."""
    group = 6 if depth == 12 else depth // 4
    return [i for i in range(depth) if (i + 1) % group == 0]


def official_points(clicks):
    """Clicks [(row, col, is_positive), ...] as the official predictor's points tensor (1, 2K, 3).

    ``BasePredictor.get_points_nd``: K = max(#positive, #negative, 1); rows (row, col, click index), positive
    clicks first, then negative ones, each half padded with (-1, -1, -1).
    """
    pos, neg = [], []
    for i, click in enumerate(clicks):
        if len(click) != 3 or click[2] not in (0, 1, True, False):
            raise ValueError(f"clicks[{i}] = {click!r}: expected (row, col, is_positive) with is_positive 0/1")
        (pos if click[2] else neg).append((click[0], click[1], i))
    k = max(1, len(pos), len(neg))
    rows = pos + [(-1, -1, -1)] * (k - len(pos)) + neg + [(-1, -1, -1)] * (k - len(neg))
    return torch.tensor([rows])


def official_forward(model, image, clicks, prev_mask=None):
    """One prediction of the official model, as ``BasePredictor.get_prediction`` makes it (no zoom-in, no flip).

    Args:
        model: an official ``AdaptiveClickModel`` (e.g. from :func:`build_official_model`).
        image: (H, W, 3) uint8 RGB (numpy or torch); H, W must equal the model's training size (the official
            backbone has a fixed token grid).
        clicks: [(row, col, is_positive), ...].
        prev_mask: (H, W) previous probabilities in [0, 1], or None for zeros.
    Returns:
        (H, W) float32 logits: ``model(cat(image / 255, prev), points)["instances"]`` resized bilinearly
        (align_corners=True) to (H, W) as the predictor does.
    """
    image = torch.as_tensor(np.asarray(image))
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != torch.uint8:
        raise ValueError(f"image must be an (H, W, 3) uint8 array, got {tuple(image.shape)} {image.dtype}")
    height, width = image.shape[:2]
    grid = tuple(model.backbone.patch_embed.grid_size)
    patch = tuple(model.backbone.patch_embed.patch_size)
    if (height, width) != (grid[0] * patch[0], grid[1] * patch[1]):
        raise ValueError(f"the official model was built for {grid[0] * patch[0]}x{grid[1] * patch[1]} inputs, "
                         f"got a {height}x{width} image")
    if prev_mask is None:
        prev = torch.zeros(1, 1, height, width)
    else:
        prev = torch.as_tensor(np.asarray(prev_mask), dtype=torch.float32)
        if tuple(prev.shape) != (height, width):
            raise ValueError(f"prev_mask must have shape {(height, width)}, got {tuple(prev.shape)}")
        prev = prev[None, None]
    device = next(model.parameters()).device
    rgb = image.permute(2, 0, 1).float().div(255)[None]  # torchvision ToTensor
    net_input = torch.cat([rgb, prev], dim=1).to(device)
    with torch.no_grad():
        out = model(net_input, official_points(clicks).to(device))["instances"]
        out = F.interpolate(out, size=(height, width), mode="bilinear", align_corners=True)
    return out[0, 0].float().cpu()


# ---------------------------------------------------------------------------------------------- training

# The official SBD / COCO+LVIS recipe (models/iter_mask/adaptiveclick_{base,huge}448_*_itermask.py): optimizer
# 'adam' through isegm.engine.optimizer.get_optimizer (no layer-wise decay), these parameters,
# instance_loss_weight 1.0, max_num_next_clicks 3, no mixed precision.
OFFICIAL_OPTIMIZER_PARAMS = {"lr": 5e-5, "betas": (0.9, 0.999), "eps": 1e-8}
OFFICIAL_MAX_NUM_NEXT_CLICKS = 3


def import_official_training(root=None):
    """The official trainer's helpers: a namespace with ``get_optimizer`` (isegm/engine/optimizer.py) and
    ``get_next_points`` (isegm/engine/trainer.py), imported from the checkout as :func:`import_official` does."""
    api = import_official(root)
    if getattr(api, "training", None) is None:
        modules, stand_ins = _import_from_checkout(api.root, ["isegm.engine.optimizer", "isegm.engine.trainer"])
        api.training = types.SimpleNamespace(
            get_optimizer=modules["isegm.engine.optimizer"].get_optimizer,
            get_next_points=modules["isegm.engine.trainer"].get_next_points, stand_ins=stand_ins)
    return api.training


def build_official_optimizer(model, root=None):
    """The official optimizer of ``model``: ``get_optimizer(model, "adam", OFFICIAL_OPTIMIZER_PARAMS)``."""
    return import_official_training(root).get_optimizer(model, "adam", dict(OFFICIAL_OPTIMIZER_PARAMS))


def official_training_batch(samples, device="cpu"):
    """Mapped training samples of ours (``ClickTrainingMapper`` output) as the official trainer's batch.

    Returns ``{"images": float (B, 3, H, W) in [0, 1], "instances": float (B, 1, H, W), "points": float
    (B, 2K, 3)}`` on ``device``.  Our click rows (row, col, is_positive) keep their slots (positive first,
    then negative, unused rows -1); the third column becomes the official click index, which its
    MultiPointSampler sets to 0 for the first click and 100 for the other initial ones (points_sampler.py).
    """
    samples = list(samples)
    if not samples:
        raise ValueError("official_training_batch needs at least one sample")
    shapes = {tuple(s["image"].shape) for s in samples}
    if len(shapes) != 1:
        raise ValueError(f"samples must share one image shape to form a batch, got {sorted(shapes)}")
    images, instances, points = [], [], []
    for i, sample in enumerate(samples):
        image, gt, clicks = sample["image"], sample["gt_mask"], torch.as_tensor(sample["clicks"])
        if image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
            raise ValueError(f"samples[{i}]['image'] must be uint8 (3, H, W), got {tuple(image.shape)} {image.dtype}")
        if tuple(gt.shape) != tuple(image.shape[1:]):
            raise ValueError(f"samples[{i}]['gt_mask'] has shape {tuple(gt.shape)}, image {tuple(image.shape[1:])}")
        if clicks.ndim != 2 or clicks.shape[1] != 3 or clicks.shape[0] % 2:
            raise ValueError(f"samples[{i}]['clicks'] must be (2K, 3), got {tuple(clicks.shape)}")
        valid = clicks[:, 0] >= 0
        if not bool(valid.any()):
            raise ValueError(f"samples[{i}] has no click")
        index = torch.full((clicks.shape[0],), 100.0)
        index[int(torch.nonzero(valid)[0])] = 0.0
        rows = torch.cat([clicks[:, :2].float(), index[:, None]], dim=1)
        rows[~valid] = -1.0
        images.append(image.float().div(255))
        instances.append(gt.float()[None])
        points.append(rows)
    return {"images": torch.stack(images).to(device), "instances": torch.stack(instances).to(device),
            "points": torch.stack(points).to(device)}


def official_click_rounds(model, batch, rounds, root=None):
    """``rounds`` no-grad click rounds of the official ``AdaptiveClickTrainer.batch_forward``: forward of
    image + previous probabilities, sigmoid of ``"instances"``, ``get_next_points`` (one click per sample, on
    the host).  The model is switched with ``eval()`` / ``train()`` as the official trainer does (its
    ``train`` override keeps training mode, model.md §7.2 quirk 8).  Returns ``(prev_probs, points)``."""
    get_next_points = import_official_training(root).get_next_points
    image, gt, points = batch["images"], batch["instances"], batch["points"]
    prev = torch.zeros_like(image[:, :1])
    with torch.no_grad():
        for i in range(1, rounds + 1):
            model.eval()
            prev = torch.sigmoid(model(torch.cat((image, prev), dim=1), points)["instances"])
            points = get_next_points(prev, gt, points, i)
            model.train()
    return prev, points


def official_train_step(model, optimizer, batch, prev=None):
    """One optimisation step of the official trainer after its click rounds: forward of image + ``prev``
    (zeros if None) with ``batch["points"]``, the target resized bilinearly to the predicted masks' size,
    ``model.loss_inference`` (its SetCriterion, times instance_loss_weight 1.0), ``zero_grad``, ``backward``,
    ``step``.  Returns the loss, detached (no host synchronisation here)."""
    model.train()
    image = batch["images"]
    if prev is None:
        prev = torch.zeros_like(image[:, :1])
    output = model(torch.cat((image, prev), dim=1), batch["points"])
    size = output["predictions"]["pred_masks"].shape[-2:]
    # the official trainer passes size=(shape[-1], shape[-2]); the same for the square training crops
    target = F.interpolate(batch["instances"], size=(size[1], size[0]), mode="bilinear", align_corners=False)
    # on the host: the official criterion builds its one-hot targets on the CPU and indexes them with labels
    # taken from these masks, which torch >= 1.13 refuses with CUDA labels (its recipe ran torch 1.12, where
    # the indices were moved to the CPU implicitly); its matcher and mask loss move the masks back themselves
    loss = model.loss_inference(output["predictions"], target[:, 0].cpu())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


# ---------------------------------------------------------------------------------------------- configs


def official_kwargs_from_cfg(cfg):
    """``(size, img_size, overrides)`` for :func:`build_official_model` reproducing our model of ``cfg``.

    Raises ``ValueError`` listing every setting the official model cannot express (see
    :func:`official_cfg_mismatches`).
    """
    problems = official_cfg_mismatches(cfg)
    if problems:
        raise ValueError("this config has no official AdaptiveClick equivalent: " + "; ".join(problems))
    v, a = cfg.MODEL.VIT, cfg.MODEL.ADAPTIVECLICK
    overrides = dict(patch_size=v.PATCH_SIZE, embed_dim=v.EMBED_DIM, depth=v.DEPTH, num_heads=v.NUM_HEADS,
                     mlp_ratio=v.MLP_RATIO, fpn_out_dims=list(v.FPN_OUT_DIMS), conv_dim=a.CONVS_DIM,
                     mask_dim=a.MASK_DIM, enc_layers=a.ENC_LAYERS, hidden_dim=a.HIDDEN_DIM, nheads=a.NHEADS,
                     dim_feedforward=a.DIM_FEEDFORWARD, num_queries=a.NUM_QUERIES, dec_layers=a.DEC_LAYERS)
    size = "huge" if v.PATCH_SIZE == 14 else "base"
    return size, int(v.IMG_SIZE), overrides


def official_cfg_mismatches(cfg):
    """Structural settings of our ``cfg`` that the official model cannot have (empty list = representable).

    These change the computation but not the parameter shapes, so a converted checkpoint would load and
    silently compute something else: ViT window size (official: 224 px) and global blocks, deformable
    encoder heads/points/FFN (official: decoder heads, 4 points, DIM_FEEDFORWARD // 2), pixel-decoder
    levels, stride and norm, ViT qkv bias.
    """
    v, a = cfg.MODEL.VIT, cfg.MODEL.ADAPTIVECLICK
    problems = []
    if cfg.MODEL.META_ARCHITECTURE != "AdaptiveClick":
        problems.append(f"MODEL.META_ARCHITECTURE is {cfg.MODEL.META_ARCHITECTURE!r}, not 'AdaptiveClick'")
    window = _OFFICIAL_WINDOW_PIXELS // v.PATCH_SIZE
    if v.WINDOW_SIZE != window:
        problems.append(f"MODEL.VIT.WINDOW_SIZE is {v.WINDOW_SIZE}; the official windows are 224 px = {window} "
                        f"tokens for patch {v.PATCH_SIZE}")
    grid = v.IMG_SIZE // v.PATCH_SIZE
    if v.IMG_SIZE % v.PATCH_SIZE or grid < window or grid % window:
        problems.append(f"MODEL.VIT.IMG_SIZE {v.IMG_SIZE}: the official model needs a token grid that is a "
                        f"multiple of its {window}-token window")
    if v.DEPTH % 4:
        problems.append(f"MODEL.VIT.DEPTH {v.DEPTH}: the official ViT needs a multiple of 4")
    elif sorted(v.GLOBAL_BLOCK_INDEXES) != official_global_blocks(v.DEPTH):
        problems.append(f"MODEL.VIT.GLOBAL_BLOCK_INDEXES is {list(v.GLOBAL_BLOCK_INDEXES)}; the official ViT of "
                        f"depth {v.DEPTH} has global attention in blocks {official_global_blocks(v.DEPTH)}")
    if not v.QKV_BIAS:
        problems.append("MODEL.VIT.QKV_BIAS is False (official True)")
    if a.ENC_NHEADS != a.NHEADS:
        problems.append(f"MODEL.ADAPTIVECLICK.ENC_NHEADS {a.ENC_NHEADS} != NHEADS {a.NHEADS} (the official "
                        "deformable encoder uses the decoder's head count)")
    if a.ENC_N_POINTS != 4:
        problems.append(f"MODEL.ADAPTIVECLICK.ENC_N_POINTS is {a.ENC_N_POINTS} (official 4)")
    if a.ENC_DIM_FEEDFORWARD != a.DIM_FEEDFORWARD // 2:
        problems.append(f"MODEL.ADAPTIVECLICK.ENC_DIM_FEEDFORWARD {a.ENC_DIM_FEEDFORWARD} != DIM_FEEDFORWARD // 2 "
                        f"= {a.DIM_FEEDFORWARD // 2} (official)")
    if list(a.DEFORMABLE_IN_FEATURES) != ["res3", "res4", "res5"]:
        problems.append(f"MODEL.ADAPTIVECLICK.DEFORMABLE_IN_FEATURES is {list(a.DEFORMABLE_IN_FEATURES)} "
                        "(official res3, res4, res5)")
    if a.COMMON_STRIDE != 4:
        problems.append(f"MODEL.ADAPTIVECLICK.COMMON_STRIDE is {a.COMMON_STRIDE} (official 4)")
    if a.NORM != "GN":
        problems.append(f"MODEL.ADAPTIVECLICK.NORM is {a.NORM!r} (official 'GN')")
    if a.CONVS_DIM % 32:
        problems.append(f"MODEL.ADAPTIVECLICK.CONVS_DIM {a.CONVS_DIM} is not a multiple of 32 (official GroupNorm(32))")
    return problems


def behaviour_differences(cfg):
    """Inference switches of our ``cfg`` that differ from the official behaviour (weights load either way)."""
    a = cfg.MODEL.ADAPTIVECLICK
    diffs = []
    if a.CAAM.MODE != "official":
        diffs.append(f"MODEL.ADAPTIVECLICK.CAAM.MODE is {a.CAAM.MODE!r} (official 'official')")
    if a.CAAM.POOLING != "official":
        diffs.append(f"MODEL.ADAPTIVECLICK.CAAM.POOLING is {a.CAAM.POOLING!r} (official 'official')")
    if a.MERGE != "weighted_logits":
        diffs.append(f"MODEL.ADAPTIVECLICK.MERGE is {a.MERGE!r} (official 'weighted_logits')")
    if float(a.CLICK_RADIUS) != 5.0:
        diffs.append(f"MODEL.ADAPTIVECLICK.CLICK_RADIUS is {a.CLICK_RADIUS} (official 5)")
    mean = [m / 255.0 for m in cfg.MODEL.PIXEL_MEAN]
    std = [s / 255.0 for s in cfg.MODEL.PIXEL_STD]
    if not (np.allclose(mean, _OFFICIAL_MEAN, atol=1e-6) and np.allclose(std, _OFFICIAL_STD, atol=1e-6)):
        diffs.append(f"MODEL.PIXEL_MEAN/PIXEL_STD {list(cfg.MODEL.PIXEL_MEAN)}/{list(cfg.MODEL.PIXEL_STD)} are not "
                     "the official ImageNet statistics x 255")
    if cfg.INPUT.FORMAT != "RGB":
        diffs.append(f"INPUT.FORMAT is {cfg.INPUT.FORMAT!r} (official RGB)")
    return diffs


def _official_cfg_vs_ours(model_cfg, params, cfg):
    """Differences between an official checkpoint's stored config and our ``cfg`` (list of strings)."""
    v, a = cfg.MODEL.VIT, cfg.MODEL.ADAPTIVECLICK
    diffs = []

    def cmp(what, theirs, ours):
        if theirs is not None and (list(theirs) if isinstance(theirs, (list, tuple)) else theirs) != \
                (list(ours) if isinstance(ours, (list, tuple)) else ours):
            diffs.append(f"{what}: checkpoint {theirs!r}, config {ours!r}")

    def get(path):
        try:
            return _get_path(model_cfg, path)
        except (KeyError, TypeError, AttributeError):
            return None

    patch = get("MODEL.BACKBONE.PATCH_SIZE")
    cmp("patch size (MODEL.VIT.PATCH_SIZE)", patch[0] if isinstance(patch, (list, tuple)) else patch, v.PATCH_SIZE)
    cmp("ViT heads (MODEL.VIT.NUM_HEADS)", get("MODEL.BACKBONE.NUM_HEADS"), v.NUM_HEADS)
    cmp("ViT depth (MODEL.VIT.DEPTH)", get("MODEL.BACKBONE.DEPTH"), v.DEPTH)
    cmp("decoder heads (MODEL.ADAPTIVECLICK.NHEADS)", get("MODEL.MASK_FORMER.NHEADS"), a.NHEADS)
    cmp("deformable encoder heads (MODEL.ADAPTIVECLICK.ENC_NHEADS)", get("MODEL.MASK_FORMER.NHEADS"), a.ENC_NHEADS)
    cmp("predictions (MODEL.ADAPTIVECLICK.DEC_LAYERS)", get("MODEL.MASK_FORMER.DEC_LAYERS"), a.DEC_LAYERS)
    crop = get("crop_size")
    cmp("training size (MODEL.VIT.IMG_SIZE)", crop[0] if isinstance(crop, (list, tuple)) else crop, v.IMG_SIZE)
    if model_cfg is not None and get("random_split"):
        diffs.append("the checkpoint was trained with --random-split (shuffled-token global attention), which our "
                     "ViT does not implement")
    radius = (params.get("norm_radius") or {}).get("value") if isinstance(params, dict) else None
    if radius is not None and float(radius) != float(a.CLICK_RADIUS):
        diffs.append(f"click radius (MODEL.ADAPTIVECLICK.CLICK_RADIUS): checkpoint {radius}, config {a.CLICK_RADIUS}")
    return diffs


# ---------------------------------------------------------------------------------------------- checkpoints


class _OfficialUnpickler(pickle.Unpickler):
    """Unpickler for official checkpoints that builds only an allow-list of classes.

    Besides tensors and plain containers, the official files pickle their training config: ``easydict``
    dicts (read as :class:`ConfigDict`), ``pathlib`` paths and a ``torch.device``.  Any other global raises
    ``pickle.UnpicklingError`` naming it (nothing else is constructed or called).
    """

    _ALLOWED = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch", "device"): torch.device,
        ("torch", "Size"): torch.Size,
        ("easydict", "EasyDict"): ConfigDict,
        ("addict", "Dict"): ConfigDict,
        ("addict.addict", "Dict"): ConfigDict,
        ("adaptiveclick.utils.official", "ConfigDict"): ConfigDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "slice"): slice,
    }

    def find_class(self, module, name):
        import pathlib

        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module in ("pathlib", "pathlib._local") and name in ("Path", "PosixPath", "WindowsPath", "PurePath",
                                                                 "PurePosixPath", "PureWindowsPath"):
            return pathlib.PurePosixPath if "Windows" not in name else pathlib.PureWindowsPath
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise _NotOnAllowList(f"global {module}.{name} is not on the allow-list for official checkpoints")


class _NotOnAllowList(pickle.UnpicklingError):
    """A well-formed pickle that names a class outside :class:`_OfficialUnpickler`'s allow-list."""


_OFFICIAL_PICKLE = types.SimpleNamespace(Unpickler=_OfficialUnpickler,
                                         load=lambda f, **kw: _OfficialUnpickler(f, **kw).load(),
                                         __name__="adaptiveclick_official_pickle")


def unwrap_state_dict(obj, name="checkpoint"):
    """The state dict inside ``obj``: ``{"state_dict": sd}`` (official trainer), ``{"model": sd}`` or ``sd``.

    Raises ``ValueError`` naming ``name`` if no mapping of names to tensors is found.
    """
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{name} holds no state dict (expected {{'state_dict': ...}}, {{'model': ...}} or a "
                         f"mapping of parameter names to tensors), got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{name}: entries that are not (name, tensor) pairs: {bad[:10]}")
    return obj


def read_official_checkpoint(path, trust_pickle=False):
    """Read an official AdaptiveClick checkpoint; returns ``(state_dict, config or None)``.

    Tried in order: ``torch.load(weights_only=True)`` (plain state dicts); the allow-list unpickler of
    :class:`_OfficialUnpickler` (files of the official trainer, ``{"state_dict", "config"}`` whose config holds
    easydict/pathlib/torch.device objects); with ``trust_pickle=True`` only, ``torch.load(weights_only=False)``
    (arbitrary pickles: runs code from the file; needs every pickled class importable).  ``config`` is the
    official ``_config`` ({"class", "params"}) when present.  Errors name the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"official checkpoint {path!r} does not exist")
    if os.path.getsize(path) == 0:
        raise ValueError(f"official checkpoint {path!r} is empty")
    errors = []
    obj = None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        errors.append(f"weights_only: {str(e).splitlines()[-1] if str(e) else type(e).__name__}")
    except Exception as e:  # noqa: BLE001 -- a corrupt file: reported with its name
        raise ValueError(f"cannot read official checkpoint {path!r}: {type(e).__name__}: {e}") from e
    if obj is None:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_OFFICIAL_PICKLE)
        except _NotOnAllowList as e:
            errors.append(f"allow-list: {e}")
        except Exception as e:  # noqa: BLE001 -- neither loader could parse it: not a checkpoint
            raise ValueError(f"official checkpoint {path!r} is not a valid PyTorch checkpoint (corrupt, or another "
                             f"kind of file): {type(e).__name__}: {e}") from e
    if obj is None:
        if not trust_pickle:
            raise ValueError(f"official checkpoint {path!r} holds objects outside the allow-list "
                             f"({'; '.join(errors)}); if you trust the file, load it with trust_pickle=True "
                             "(--trust-pickle), which runs arbitrary pickle code")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"cannot read official checkpoint {path!r} even as a full pickle: "
                             f"{type(e).__name__}: {e}") from e
    config = obj.get("config") if isinstance(obj, dict) and "state_dict" in obj else None
    return unwrap_state_dict(obj, f"official checkpoint {path!r}"), config


def _official_model_cfg_of(config):
    """(model cfg, params) from an official ``_config`` dict, or (None, {})."""
    if not isinstance(config, dict) or not isinstance(config.get("params"), dict):
        return None, {}
    params = config["params"]
    entry = params.get("cfg")
    value = entry.get("value") if isinstance(entry, dict) else None
    return (value if isinstance(value, dict) else None), params


def our_state_dict_template(cfg):
    """State dict (random init) of our model built from ``cfg`` on the CPU, without MAE loading."""
    from detectron2.modeling import build_model

    import adaptiveclick.modeling  # noqa: F401  (registers the meta-architecture)

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.VIT.PRETRAINED = ""
    cfg.MODEL.WEIGHTS = ""
    return build_model(cfg).state_dict()


_DROPPED = re.compile(r"^backbone\.(cls_token|fc_norm\.(weight|bias)|head\.(weight|bias))$")
_RULES = [
    (re.compile(r"^patch_embed_coords\.proj\.(weight|bias)$"), r"backbone.net.patch_embed_coords.proj.\1"),
    (re.compile(r"^backbone\.(patch_embed\.proj\.(weight|bias)|pos_embed)$"), r"backbone.net.\1"),
    (re.compile(r"^backbone\.blocks\.(\d+)\.(.+)$"), r"backbone.net.blocks.\1.\2"),
    (re.compile(r"^pixel_decoder\.neck\.(down_(4|8|16|32)\..+)$"), r"backbone.pyramid.\1"),
    (re.compile(r"^pixel_decoder\.((input_proj|transformer|lateral_convs|output_convs|mask_features)\b.*)$"),
     r"pixel_decoder.\1"),
    (re.compile(r"^click_aware_decoder\.(.+)$"), r"transformer_decoder.\1"),
]
_DUPLICATE = re.compile(r"^pixel_decoder\.(adapter|layer)_(\d+)\.(.+)$")


def refuse_mae_checkpoint(state_dict, name="checkpoint"):
    """Raise ``ValueError`` when ``state_dict`` is an MAE / timm ViT checkpoint (``blocks.*``, ``patch_embed.*``
    at the top level, nothing under ``backbone.``) rather than a whole official AdaptiveClick model."""
    keys = list(state_dict)
    if any(k.startswith(("blocks.", "patch_embed.")) for k in keys) and not any(k.startswith("backbone.")
                                                                                for k in keys):
        raise ValueError(f"{name} is a plain ViT (MAE / timm layout: blocks.*, patch_embed.*), not an official "
                         "AdaptiveClick model: pretrained ViT weights need no conversion, pass the file as "
                         "MODEL.VIT.PRETRAINED for training")


def convert_official_state_dict(official_sd, cfg=None, template=None, official_config=None):
    """Map an official AdaptiveClick state dict onto our model's parameter names; returns an ``OrderedDict``.

    Args:
        official_sd: the official state dict, or a whole checkpoint ``{"state_dict": ..., "config": ...}`` /
            ``{"model": ...}`` (see :func:`unwrap_state_dict`).
        cfg: our config (``get_cfg()`` + ``add_adaptiveclick_config`` + a config file); used to build the
            reference state dict unless ``template`` is given, and checked with
            :func:`official_cfg_mismatches` (errors) and :func:`behaviour_differences` (warnings).
        template: our model's state dict (e.g. ``model.state_dict()``), giving the expected names and shapes.
        official_config: the official ``_config`` of the checkpoint (taken from ``official_sd`` if that is a
            whole checkpoint); its architecture settings must agree with ``cfg``.
    Every official key is mapped (table in the module docstring) or known to be unused; ``ValueError`` lists
    official keys that map to nothing, our keys that receive nothing, shape mismatches, and duplicate FPN
    convs that disagree.  Buffers that follow our config (``criterion.empty_weight``) come from ``template``.
    """
    if isinstance(official_sd, dict) and "state_dict" in official_sd and official_config is None:
        official_config = official_sd.get("config")
    official_sd = unwrap_state_dict(official_sd, "official state dict")
    if all(k.startswith("module.") for k in official_sd):  # saved from a DataParallel wrapper
        official_sd = OrderedDict((k[len("module."):], v) for k, v in official_sd.items())
    refuse_mae_checkpoint(official_sd, "official state dict")
    if cfg is None and template is None:
        raise ValueError("convert_official_state_dict needs cfg or template (our model's state dict)")
    if cfg is not None:
        problems = official_cfg_mismatches(cfg)
        model_cfg, params = _official_model_cfg_of(official_config)
        problems += _official_cfg_vs_ours(model_cfg, params, cfg) if model_cfg is not None else []
        if problems:
            raise ValueError("config does not describe the official model of this checkpoint: " + "; ".join(problems))
        for diff in behaviour_differences(cfg):
            logger.warning("converted weights will not behave as the official model: %s", diff)
    if template is None:
        template = our_state_dict_template(cfg)

    out, source, unmapped, duplicates, dropped = OrderedDict(), {}, [], {}, []
    for key, value in official_sd.items():
        if _DROPPED.match(key):
            dropped.append(key)
            continue
        if key == "criterion.empty_weight":
            ours = template.get(key)
            if ours is not None and (ours.shape != value.shape or not torch.allclose(ours.float(), value.float())):
                logger.warning("official criterion.empty_weight %s differs from ours %s (set by "
                               "MODEL.ADAPTIVECLICK.CLASS_WEIGHTS / NO_OBJECT_WEIGHT); keeping ours",
                               value.tolist(), ours.tolist())
            continue
        dup = _DUPLICATE.match(key)
        if dup:
            duplicates[key] = dup
            continue
        for pattern, repl in _RULES:
            if pattern.match(key):
                ours = pattern.sub(repl, key)
                out[ours], source[ours] = value, key
                break
        else:
            unmapped.append(key)

    # adapter_k / layer_k are the same modules as lateral_convs[n - k] / output_convs[n - k]
    num_fpn = max([int(m.group(2)) for m in duplicates.values()] or [0])
    bad_dups = []
    for key, m in duplicates.items():
        kind, k, rest = m.group(1), int(m.group(2)), m.group(3)
        twin = f"pixel_decoder.{'lateral_convs' if kind == 'adapter' else 'output_convs'}.{num_fpn - k}.{rest}"
        if twin not in out:
            unmapped.append(key)
        elif out[twin].shape != official_sd[key].shape or not torch.equal(out[twin], official_sd[key]):
            bad_dups.append(f"{key} != {twin}")

    missing = [k for k in template if k not in out and k != "criterion.empty_weight"]
    unexpected = [f"{source[k]} -> {k}" for k in out if k not in template]
    mismatched = [f"{source[k]} -> {k}: official {tuple(out[k].shape)} vs ours {tuple(template[k].shape)}"
                  for k in out if k in template and out[k].shape != template[k].shape]
    if unmapped or missing or unexpected or mismatched or bad_dups:
        parts = []
        for title, items in (("official keys with no counterpart in our model", unmapped + unexpected),
                             ("our keys the official state dict does not provide", missing),
                             ("shape mismatches (is the config the right size?)", mismatched),
                             ("duplicate FPN convs that differ", bad_dups)):
            if items:
                parts.append(f"{title} ({len(items)}): {items[:20]}" + (" ..." if len(items) > 20 else ""))
        raise ValueError("cannot convert the official state dict: " + "; ".join(parts))
    if "criterion.empty_weight" in template:
        out["criterion.empty_weight"] = template["criterion.empty_weight"].clone()
    # keep our parameter order
    ordered = OrderedDict((k, out[k].detach().clone().contiguous()) for k in template if k in out)
    logger.info("converted %d official tensors (%d unused official keys dropped: %s; %d duplicate FPN keys)",
                len(ordered), len(dropped), dropped, len(duplicates))
    return ordered
