"""``LOSS_REGISTRY`` and :func:`build_mask_loss`: the mask loss of the criterion, chosen by
``MODEL.LOSS.NAME``.

Registered names: adaptive_focal_loss (alias afl), bce, weighted_bce (wbce), balanced_ce, soft_iou,
focal (fl), normalized_focal (nfl), poly, dice.  Each registered object is a builder ``cfg -> loss module``;
the module is called as ``loss(logits (K, P), targets (K, P), num_masks)``.
"""

from torch import nn

from detectron2.utils.registry import Registry

from . import zoo
from .afl import AdaptiveFocalLoss

__all__ = ["LOSS_REGISTRY", "ALIASES", "MaskLoss", "build_mask_loss", "build_loss"]

LOSS_REGISTRY = Registry("LOSS")
LOSS_REGISTRY.__doc__ = "Mask losses of adaptiveclick: builders cfg -> module(logits, targets, num_masks)."

ALIASES = {"afl": "adaptive_focal_loss", "wbce": "weighted_bce", "fl": "focal", "nfl": "normalized_focal"}


class MaskLoss(nn.Module):
    """A loss function of :mod:`.zoo` with its keyword parameters bound."""

    def __init__(self, fn, **kwargs):
        super().__init__()
        self.fn = fn
        self.kwargs = kwargs

    def forward(self, logits, targets, num_masks):
        return self.fn(logits, targets, num_masks, **self.kwargs)

    def extra_repr(self):
        return ", ".join([self.fn.__name__] + [f"{k}={v}" for k, v in self.kwargs.items()])


@LOSS_REGISTRY.register()
def adaptive_focal_loss(cfg):
    return AdaptiveFocalLoss(cfg)


@LOSS_REGISTRY.register()
def bce(cfg):
    return MaskLoss(zoo.bce)


@LOSS_REGISTRY.register()
def weighted_bce(cfg):
    return MaskLoss(zoo.weighted_bce, pos_weight=cfg.MODEL.LOSS.WBCE.POS_WEIGHT)


@LOSS_REGISTRY.register()
def balanced_ce(cfg):
    return MaskLoss(zoo.balanced_ce)


@LOSS_REGISTRY.register()
def soft_iou(cfg):
    return MaskLoss(zoo.soft_iou)


@LOSS_REGISTRY.register()
def focal(cfg):
    c = cfg.MODEL.LOSS.FOCAL
    return MaskLoss(zoo.focal, alpha=c.ALPHA, gamma=c.GAMMA)


@LOSS_REGISTRY.register()
def normalized_focal(cfg):
    c = cfg.MODEL.LOSS.NFL
    return MaskLoss(zoo.normalized_focal, alpha=c.ALPHA, gamma=c.GAMMA)


@LOSS_REGISTRY.register()
def poly(cfg):
    c = cfg.MODEL.LOSS.POLY
    return MaskLoss(zoo.poly, alpha=c.ALPHA, gamma=c.GAMMA, epsilon=c.EPSILON)


@LOSS_REGISTRY.register()
def dice(cfg):
    return MaskLoss(zoo.dice)


def build_loss(cfg, name):
    """The loss module registered as ``name`` (or one of :data:`ALIASES`), configured from ``cfg``."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in LOSS_REGISTRY:
        known = sorted(list(dict(LOSS_REGISTRY).keys()) + list(ALIASES))
        raise KeyError(f"unknown loss {name!r}; known: {', '.join(known)}")
    return LOSS_REGISTRY.get(key)(cfg)


def build_mask_loss(cfg):
    """The criterion's mask loss: ``build_loss(cfg, cfg.MODEL.LOSS.NAME)``."""
    return build_loss(cfg, cfg.MODEL.LOSS.NAME)
