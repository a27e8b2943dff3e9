"""Optimizer and gradient clipping of the training recipe (model.md §6.1, protocol.md B.7).

Official recipe: Adam (lr 5e-5, betas (0.9, 0.999), eps 1e-8, no weight decay), MultiStepLR x0.1 stepped per
epoch.  The schedule is detectron2's own ``build_lr_scheduler``: ``WarmupMultiStepLR`` (an ``LRMultiplier``
over a multi-step schedule, stepped per iteration) with the epoch milestones converted to iterations in
``SOLVER.STEPS``; ``WARMUP_ITERS = 0`` means no warm-up, so the LR equals the official one at every step.
"""

import logging
import re
from typing import Callable, Iterable, Optional

import torch
from detectron2.solver import get_default_optimizer_params

__all__ = ["OPTIMIZERS", "CLIP_TYPES", "vit_layer_id", "lr_factor_function", "build_optimizer",
           "clip_gradients"]

OPTIMIZERS = ("ADAM", "ADAMW", "SGD")
CLIP_TYPES = ("value", "norm", "full_model")

_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")
_EMBEDDINGS = ("patch_embed", "pos_embed", "cls_token")


def vit_layer_id(name: str, depth: int) -> int:
    """Layer index of a ViT parameter for layer-wise LR decay (the BEiT/MAE numbering).

    Embeddings (``patch_embed*``, ``pos_embed``, ``cls_token``) are layer 0, ``blocks.i.*`` is layer i + 1,
    every other parameter (final norm, pyramid, heads) is layer ``depth + 1``.
    """
    match = _BLOCK.search(name)
    if match:
        return int(match.group(1)) + 1
    if any(part.startswith(_EMBEDDINGS) for part in name.split(".")):
        return 0
    return depth + 1


def lr_factor_function(param_names: Iterable[str], backbone_multiplier: float = 1.0,
                       layer_decay: float = 1.0, backbone_prefix: str = "backbone.") -> Callable[[str], float]:
    """``name -> LR factor`` for detectron2's ``get_default_optimizer_params(lr_factor_func=...)``.

    Parameters whose name starts with ``backbone_prefix`` get ``backbone_multiplier``; with ``layer_decay``
    d < 1 they are further scaled by d^(L + 1 - layer_id) (:func:`vit_layer_id`, L = the number of ViT
    blocks found among ``param_names``), so the last block keeps factor d and the embeddings d^(L+1).
    """
    for value, key in ((backbone_multiplier, "backbone_multiplier"), (layer_decay, "layer_decay")):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{key} must be a positive number, got {value!r}")
    if layer_decay > 1:
        raise ValueError(f"layer_decay must be in (0, 1] (1 = off), got {layer_decay!r}")
    blocks = {int(m.group(1)) for n in param_names if n.startswith(backbone_prefix)
              for m in [_BLOCK.search(n)] if m}
    depth = max(blocks) + 1 if blocks else 0

    def factor(name: str) -> float:
        if not name.startswith(backbone_prefix):
            return 1.0
        return float(backbone_multiplier) * float(layer_decay) ** (depth + 1 - vit_layer_id(name, depth))

    return factor


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer of ``cfg.SOLVER`` (OPTIMIZER, BASE_LR, BETAS, EPS, WEIGHT_DECAY[_NORM/_BIAS], MOMENTUM,
    NESTEROV, BACKBONE_MULTIPLIER, LAYER_DECAY, BIAS_LR_FACTOR) over ``model``'s trainable parameters."""
    s = cfg.SOLVER
    name = str(s.OPTIMIZER).upper()
    if name not in OPTIMIZERS:
        raise ValueError(f"SOLVER.OPTIMIZER must be one of {OPTIMIZERS}, got {s.OPTIMIZER!r}")
    if not s.BASE_LR > 0:
        raise ValueError(f"SOLVER.BASE_LR must be > 0, got {s.BASE_LR!r}")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = get_default_optimizer_params(
        model, base_lr=s.BASE_LR, weight_decay=s.WEIGHT_DECAY, weight_decay_norm=s.WEIGHT_DECAY_NORM,
        bias_lr_factor=s.BIAS_LR_FACTOR, weight_decay_bias=s.WEIGHT_DECAY_BIAS,
        lr_factor_func=lr_factor_function(names, s.BACKBONE_MULTIPLIER, s.LAYER_DECAY))
    if name == "SGD":
        return torch.optim.SGD(params, lr=s.BASE_LR, momentum=s.MOMENTUM, nesterov=s.NESTEROV)
    if len(s.BETAS) != 2:
        raise ValueError(f"SOLVER.BETAS must have 2 entries, got {s.BETAS!r}")
    opt = torch.optim.Adam if name == "ADAM" else torch.optim.AdamW
    kwargs = dict(lr=s.BASE_LR, betas=tuple(float(b) for b in s.BETAS), eps=s.EPS)
    if not isinstance(s.FUSED, bool):
        raise ValueError(f"SOLVER.FUSED must be true or false, got {s.FUSED!r}")
    if s.FUSED:
        try:
            return opt(params, fused=True, **kwargs)
        except (RuntimeError, ValueError) as e:  # a device or torch without the fused kernel
            logging.getLogger(__name__).info(f"fused {name} unavailable ({e}); using the default implementation")
    return opt(params, **kwargs)


def clip_gradients(parameters: Iterable[torch.nn.Parameter], clip_type: str, clip_value: float,
                   norm_type: float = 2.0) -> Optional[torch.Tensor]:
    """Clip the gradients in place: "value" clamps each entry to [-v, v]; "norm" rescales each parameter's
    gradient to norm <= v (detectron2's per-parameter rule); "full_model" rescales all gradients together to
    total norm <= v.  Returns the total norm before clipping for "full_model", else None."""
    if clip_type not in CLIP_TYPES:
        raise ValueError(f"clip_type must be one of {CLIP_TYPES}, got {clip_type!r}")
    if not clip_value > 0:
        raise ValueError(f"clip_value must be > 0, got {clip_value!r}")
    params = [p for p in parameters if p.grad is not None]
    if clip_type == "value":
        torch.nn.utils.clip_grad_value_(params, clip_value)
        return None
    if clip_type == "norm":
        for p in params:
            torch.nn.utils.clip_grad_norm_(p, clip_value, norm_type)
        return None
    return torch.nn.utils.clip_grad_norm_(params, clip_value, norm_type)
