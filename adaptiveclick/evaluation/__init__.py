"""NoC evaluation of interactive segmentation, the RITM/SimpleClick/AdaptiveClick protocol (protocol.md A).

* :mod:`.metrics`: IoU, ``noc``, ``nof``, mIoU@k curves and :func:`summarize_noc`;
* :mod:`.zoom_in`: the SimpleClick/AdaptiveClick zoom-in (ROI state, crop, click mapping, paste);
* :mod:`.predictor`: predictor interfaces, flip/zoom-in test-time transforms, :class:`ModelPredictor`;
* :mod:`.session`: :class:`InteractiveSession`, the per-instance loop, and :class:`NoCProtocol`;
* :mod:`.evaluator`: :class:`NoCEvaluator`, a detectron2 ``DatasetEvaluator``;
* :mod:`.runner`: :class:`InteractiveEvaluationModel` for ``inference_on_dataset``, the evaluation mapper
  and loader, :func:`evaluate_noc` and the config-driven :func:`noc_test`.
"""

from .evaluator import NoCEvaluator, plot_noc_curves
from .metrics import iou_curve, mask_iou, noc, noc_list, nof, success_curve, summarize_noc
from .predictor import ModelPredictor, transformed_prediction
from .runner import (InteractiveEvaluationModel, NoCDatasetMapper, build_noc_evaluator, build_noc_test_loader,
                     evaluate_noc, format_noc_table, noc_protocol_from_config, noc_test)
from .session import InstanceResult, InteractiveSession, NoCProtocol
from .zoom_in import ZoomIn, ZoomInParams

__all__ = [
    "noc", "nof", "noc_list", "mask_iou", "iou_curve", "success_curve", "summarize_noc",
    "ZoomIn", "ZoomInParams", "ModelPredictor", "transformed_prediction",
    "NoCProtocol", "InstanceResult", "InteractiveSession",
    "NoCEvaluator", "plot_noc_curves",
    "InteractiveEvaluationModel", "NoCDatasetMapper", "evaluate_noc", "noc_protocol_from_config",
    "build_noc_test_loader", "build_noc_evaluator", "noc_test", "format_noc_table",
]
