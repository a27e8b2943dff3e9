"""Running the NoC protocol over datasets with detectron2's ``inference_on_dataset``.

``inference_on_dataset(model, data_loader, evaluator)`` calls ``model(inputs)`` once per batch and then
``evaluator.process(inputs, outputs)``, logging progress and ETA.  :class:`InteractiveEvaluationModel` is
the ``model`` of that loop: its forward runs an :class:`InteractiveSession` for every object of every
input and returns the per-instance records that :class:`NoCEvaluator` consumes.
"""

import logging
import os
from collections import OrderedDict
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.data import detection_utils as utils
from detectron2.evaluation import inference_on_dataset
from detectron2.utils import comm
from tabulate import tabulate
from torch import nn

from .evaluator import RECORDS_KEY, NoCEvaluator
from .metrics import threshold_name
from .predictor import ModelPredictor
from .session import InteractiveSession, NoCProtocol
from .zoom_in import ZoomInParams

__all__ = ["NoCDatasetMapper", "InteractiveEvaluationModel", "evaluate_noc", "noc_protocol_from_config",
           "build_noc_test_loader", "build_noc_evaluator", "noc_test", "format_noc_table"]

logger = logging.getLogger(__name__)


class NoCDatasetMapper:
    """Dataset dict -> evaluation sample: the image and every object's mask, no augmentation.

    Returns ``{"image": uint8 (3, H, W) RGB tensor, "gt_masks": bool (N, H, W) tensor (objects in the
    order of "annotations"), "ignore_mask": bool (H, W) tensor (all False without an ignore region),
    "height", "width", "file_name", "image_id"}``.  Masks are decoded by
    ``load_masks(dataset_dict) -> (list of bool (H, W) masks, bool (H, W) ignore or None)``, by default
    ``adaptiveclick.data.datasets.common.load_instance_masks`` (data contract).
    """

    def __init__(self, image_format: str = "RGB", load_masks: Optional[Callable] = None):
        if image_format != "RGB":
            raise ValueError(f"image_format must be 'RGB' (images are RGB throughout), got {image_format!r}")
        if load_masks is not None and not callable(load_masks):
            raise TypeError(f"load_masks must be callable, got {type(load_masks).__name__}")
        self.image_format = image_format
        self.load_masks = load_masks

    def __call__(self, dataset_dict: dict) -> dict:
        load_masks = self.load_masks
        if load_masks is None:
            from adaptiveclick.data.datasets.common import load_instance_masks as load_masks

        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        masks, ignore = load_masks(dataset_dict)
        h, w = image.shape[:2]
        for i, m in enumerate(masks):
            if m.shape != (h, w):
                raise ValueError(f"{dataset_dict['file_name']}: mask {i} has shape {m.shape}, image is {(h, w)}")
        gt_masks = np.stack(masks).astype(bool) if masks else np.zeros((0, h, w), dtype=bool)
        ignore = np.zeros((h, w), dtype=bool) if ignore is None else np.asarray(ignore, dtype=bool)
        return {"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                "gt_masks": torch.from_numpy(gt_masks), "ignore_mask": torch.from_numpy(ignore),
                "height": h, "width": w, "file_name": dataset_dict["file_name"],
                "image_id": dataset_dict.get("image_id")}


class InteractiveEvaluationModel(nn.Module):
    """An ``nn.Module`` whose forward runs the NoC protocol, for ``inference_on_dataset``.

    Input: a list of samples as :class:`NoCDatasetMapper` returns them.  Output: one dict per sample,
    ``{"noc_instances": [record, ...]}`` with one record per object: ``{"image_id", "file_name",
    "instance" (index in the sample), "ious", "clicks", "model_time", "total_time"}``.
    If the predictor wraps an ``nn.Module`` (``predictor.model``), it is registered as a submodule so that
    ``inference_on_dataset`` switches it to eval mode (and afterwards back to the mode it had).
    """

    def __init__(self, predictor, protocol: NoCProtocol):
        super().__init__()
        if not isinstance(protocol, NoCProtocol):
            raise TypeError(f"protocol must be a NoCProtocol, got {type(protocol).__name__}")
        self.predictor = predictor
        self.protocol = protocol
        inner = getattr(predictor, "model", None)
        self.model = inner if isinstance(inner, nn.Module) else None
        if self.model is not None:
            # start in the wrapped model's mode, so that inference_on_dataset restores exactly that mode
            self.training = self.model.training

    def forward(self, batched_inputs):
        outputs = []
        for sample in batched_inputs:
            image = sample["image"]
            if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
                raise ValueError("sample['image'] must be a (3, H, W) tensor")
            image = image.permute(1, 2, 0).cpu().numpy()
            ignore = sample.get("ignore_mask")
            if ignore is not None and not bool(ignore.any()):
                ignore = None
            records = []
            for j, gt in enumerate(sample["gt_masks"]):
                try:
                    result = InteractiveSession(self.predictor, image, gt, ignore, self.protocol).run()
                except ValueError as e:
                    raise ValueError(f"{sample.get('file_name')}, object {j}: {e}") from e
                record = {"image_id": sample.get("image_id"), "file_name": sample.get("file_name"), "instance": j}
                record.update(result.to_dict())
                records.append(record)
            outputs.append({RECORDS_KEY: records})
        return outputs


def evaluate_noc(predictor, dataset_dicts: Sequence[dict], protocol: Optional[NoCProtocol] = None, *,
                 thresholds: Sequence[float] = (0.85, 0.90), dataset_name: Optional[str] = None,
                 output_dir: Optional[str] = None, mapper: Optional[Callable[[dict], dict]] = None,
                 num_workers: int = 0, metadata: Optional[dict] = None) -> "OrderedDict[str, dict]":
    """Evaluate ``predictor`` on ``dataset_dicts`` and return ``OrderedDict(noc={...})``.

    ``mapper`` turns a dict into a sample (default :class:`NoCDatasetMapper`; pass ``lambda d: d`` for
    samples already in that format).  In a distributed run each process evaluates its share and the main
    process returns the metrics (the others return ``{}``).
    """
    protocol = NoCProtocol() if protocol is None else protocol
    loader = build_detection_test_loader(list(dataset_dicts), mapper=mapper or NoCDatasetMapper(),
                                         num_workers=num_workers)
    evaluator = NoCEvaluator(dataset_name, thresholds=thresholds, max_clicks=protocol.max_clicks,
                             stop_iou=protocol.stop_iou, output_dir=output_dir,
                             metadata={"protocol": protocol.to_dict(), **(metadata or {})})
    return inference_on_dataset(InteractiveEvaluationModel(predictor, protocol), loader, evaluator)


def noc_protocol_from_config(cfg, dataset_name: Optional[str] = None) -> NoCProtocol:
    """The :class:`NoCProtocol` of ``cfg.TEST.NOC`` for a dataset (DAVIS-like datasets get the large zoom)."""
    noc = cfg.TEST.NOC
    zoom = None
    if noc.ZOOM_IN.ENABLED:
        large = {n.lower() for n in noc.ZOOM_IN.LARGE_TARGET_DATASETS}
        size = noc.ZOOM_IN.LARGE_TARGET_SIZE if (dataset_name or "").lower() in large else noc.ZOOM_IN.TARGET_SIZE
        zoom = ZoomInParams.from_config(noc.ZOOM_IN, target_size=size)
    return NoCProtocol(max_clicks=noc.MAX_CLICKS, stop_iou=noc.STOP_IOU, pred_threshold=noc.PRED_THRESHOLD,
                       zoom_in=zoom, flip=bool(noc.FLIP))


def build_noc_test_loader(cfg, dataset_name: str, mapper: Optional[Callable[[dict], dict]] = None):
    """Batch-size-1 loader of a registered dataset (sharded per process), mapped by ``mapper`` (default
    :class:`NoCDatasetMapper`)."""
    dicts = DatasetCatalog.get(dataset_name)
    if all("annotations" in d and not d["annotations"] for d in dicts):  # also true for no dicts
        root = getattr(MetadataCatalog.get(dataset_name), "dataset_root", None)
        where = f" in {root}" if root else ""
        raise ValueError(f"dataset {dataset_name!r}: nothing to evaluate: {len(dicts)} images, none with an object"
                         f"{where} (empty image / mask folders? see datasets/README.md)")
    return build_detection_test_loader(dicts, mapper=mapper or NoCDatasetMapper(cfg.INPUT.FORMAT),
                                       num_workers=cfg.DATALOADER.NUM_WORKERS)


def build_noc_evaluator(cfg, dataset_name: str, output_dir: Optional[str] = None,
                        metadata: Optional[dict] = None) -> NoCEvaluator:
    """A :class:`NoCEvaluator` configured by ``cfg.TEST.NOC``."""
    noc = cfg.TEST.NOC
    return NoCEvaluator(dataset_name, thresholds=noc.IOU_THRESHOLDS, max_clicks=noc.MAX_CLICKS,
                        stop_iou=noc.STOP_IOU, output_dir=output_dir, metadata=metadata)


def noc_test(cfg, model, dataset_names: Optional[Sequence[str]] = None, output_dir: Optional[str] = None,
             mapper: Optional[Callable[[dict], dict]] = None) -> "OrderedDict[str, OrderedDict]":
    """Evaluate a built meta-architecture on datasets; returns ``{dataset: {"noc": metrics}}`` (detectron2's
    ``DefaultTrainer.test`` format) and logs the NoC table on the main process.

    Datasets: ``dataset_names``, else ``cfg.TEST.NOC.DATASETS``, else ``cfg.DATASETS.TEST``.  Files go to
    ``output_dir/<dataset>/`` when ``output_dir`` is given.  ``mapper``: see :func:`build_noc_test_loader`.
    """
    from adaptiveclick.utils.run_info import run_info

    names = list(dataset_names or cfg.TEST.NOC.DATASETS or cfg.DATASETS.TEST)
    if not names:
        raise ValueError("no dataset to evaluate: pass dataset_names or set TEST.NOC.DATASETS / DATASETS.TEST")
    predictor = ModelPredictor(model)
    info = run_info(predictor.device)
    results = OrderedDict()
    for name in names:
        protocol = noc_protocol_from_config(cfg, name)
        metadata = {"protocol": protocol.to_dict(), "weights": cfg.MODEL.WEIGHTS, "run_info": info}
        evaluator = build_noc_evaluator(cfg, name, os.path.join(output_dir, name) if output_dir else None, metadata)
        logger.info(f"NoC evaluation on {name}: {protocol}")
        results[name] = inference_on_dataset(InteractiveEvaluationModel(predictor, protocol),
                                             build_noc_test_loader(cfg, name, mapper), evaluator)
    if comm.is_main_process():
        logger.info("NoC results:\n" + format_noc_table(results, cfg.TEST.NOC.IOU_THRESHOLDS, cfg.TEST.NOC.MAX_CLICKS))
    return results


def format_noc_table(results, thresholds: Sequence[float] = (0.85, 0.90), max_clicks: int = 20) -> str:
    """The familiar table: one row per dataset with NoC@t, >=max_clicks@t (NoF), SPC and the instance count."""
    labels = [threshold_name(t) for t in thresholds]
    headers = (["Dataset"] + [f"NoC@{n}" for n in labels] + [f">={max_clicks}@{n}" for n in labels]
               + ["SPC (s)", "#instances"])
    rows = []
    for name, res in results.items():
        m = res.get("noc") if isinstance(res, dict) else None
        if not m:
            continue
        rows.append([name] + [f"{m[f'NoC@{n}']:.2f}" for n in labels] + [m[f"NoF@{n}"] for n in labels]
                    + [f"{m['SPC']:.3f}", m["num_instances"]])
    return tabulate(rows, headers=headers, tablefmt="pipe", stralign="right", disable_numparse=True)
