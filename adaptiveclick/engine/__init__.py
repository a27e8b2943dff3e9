"""Training: :class:`ClickTrainer` (detectron2 ``DefaultTrainer`` with iterative click rounds, AMP, atomic
checkpoints and NoC evaluation), the optimizer recipe, and the example picture of a session.

* :mod:`.trainer`: :class:`ClickTrainer`, :class:`IterativeClickTrainer`, :func:`add_training_clicks`;
* :mod:`.solver`: :func:`build_optimizer` (Adam + backbone multiplier / layer decay), :func:`clip_gradients`;
* :mod:`.checkpoint`: :class:`AtomicCheckpointer`, :func:`atomic_write`;
* :mod:`.example`: :func:`write_example_figure`;
* :mod:`.defaults`: :func:`setup_cfg`, the config set-up of the command-line tools.
"""

from .checkpoint import AtomicCheckpointer, CheckpointError, atomic_write
from .defaults import setup_cfg
from .example import draw_example, run_example_session, write_example_figure
from .solver import CLIP_TYPES, OPTIMIZERS, build_optimizer, clip_gradients, lr_factor_function, vit_layer_id
from .trainer import (AMP_DTYPES, ClickTrainer, IterativeClickTrainer, NoCEvalHook, add_training_clicks,
                      random_init_warning, training_iou, unwrap_model)

__all__ = [
    "ClickTrainer", "IterativeClickTrainer", "NoCEvalHook", "add_training_clicks", "training_iou", "unwrap_model",
    "random_init_warning",
    "AMP_DTYPES", "build_optimizer", "clip_gradients", "lr_factor_function", "vit_layer_id", "OPTIMIZERS",
    "CLIP_TYPES", "AtomicCheckpointer", "CheckpointError", "atomic_write", "write_example_figure", "run_example_session",
    "draw_example", "setup_cfg",
]
