"""Config keys of adaptiveclick, added to a detectron2 config by :func:`add_adaptiveclick_config`.

Every key carries its default and a comment.  Paper/official defaults are the defaults; the synthetic
configs under ``configs/synthetic/`` override values for speed only.  Sections are grouped by the part of
the library that reads them, one helper function per section.
"""

from detectron2.config import CfgNode as CN

__all__ = ["add_adaptiveclick_config"]


def _add_msda_config(cfg):
    # Multi-scale deformable attention operator (adaptiveclick.layers.ms_deform_attn).
    cfg.MODEL.MSDA = CN()
    # "" = automatic (CUDA kernel for CUDA tensors if built, else the C++ CPU kernel if built, else the
    # pure-PyTorch reference); or one of "cuda", "cpu", "pytorch" to force an implementation.  The
    # environment variable ADAPTIVECLICK_MSDA_IMPL takes precedence over this key.
    cfg.MODEL.MSDA.IMPL = ""


def _add_model_config(cfg):
    # The AdaptiveClick model (adaptiveclick.modeling). Filled in by the model issue.
    pass


def _add_loss_config(cfg):
    # Adaptive Focal Loss and loss zoo (adaptiveclick.losses). Filled in by the losses issue.
    pass


def _add_clicks_config(cfg):
    # Click simulation and datasets (adaptiveclick.clicks, adaptiveclick.data). Filled in by the data issue.
    pass


def add_adaptiveclick_config(cfg):
    """Add every adaptiveclick key (with its default) to a detectron2 ``CfgNode``, in place."""
    _add_msda_config(cfg)
    _add_model_config(cfg)
    _add_loss_config(cfg)
    _add_clicks_config(cfg)
    return cfg
