"""A picture of one interactive session: the image, its object, and the predicted mask after k clicks."""

import dataclasses
import logging
import os
from typing import Optional, Sequence

import numpy as np
import torch
from detectron2.data import DatasetCatalog

__all__ = ["run_example_session", "draw_example", "write_example_figure"]

logger = logging.getLogger(__name__)


def run_example_session(predictor, image: np.ndarray, gt: np.ndarray, protocol, click_counts: Sequence[int],
                        ignore: Optional[np.ndarray] = None) -> list:
    """Run the NoC loop (``protocol``, never stopping early) for ``max(click_counts)`` clicks.

    Returns one dict per k in ``click_counts``: ``{"clicks": k, "click_list": the first k clicks,
    "mask": bool (H, W) prediction after k clicks, "iou": its IoU}``.
    """
    from adaptiveclick.evaluation import InteractiveSession

    counts = sorted({int(k) for k in click_counts})
    if not counts or counts[0] < 1:
        raise ValueError(f"click_counts must be positive integers, got {list(click_counts)!r}")
    protocol = dataclasses.replace(protocol, max_clicks=counts[-1], stop_iou=1.01)
    session = InteractiveSession(predictor, image, gt, ignore, protocol)
    snapshots = []
    for k in range(1, counts[-1] + 1):
        iou = session.step()
        if k in counts:
            snapshots.append({"clicks": k, "click_list": list(session.clicks), "mask": session.prediction.copy(),
                              "iou": float(iou)})
    return snapshots


def draw_example(image: np.ndarray, gt: np.ndarray, snapshots: Sequence[dict], path: str, title: str = "") -> None:
    """Write a PNG: the image with its object, then one panel per snapshot (mask overlay, clicks, IoU).

    Positive clicks are green dots, negative clicks red; uses matplotlib's Agg canvas (no global state).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = 1 + len(snapshots)
    fig = Figure(figsize=(3.2 * panels, 3.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)[0]

    def overlay(mask, colour):
        out = image.astype(np.float32).copy()
        out[mask] = 0.45 * out[mask] + 0.55 * np.asarray(colour, dtype=np.float32)
        return out.astype(np.uint8)

    axes[0].imshow(overlay(np.asarray(gt, dtype=bool), (40, 200, 40)))
    axes[0].set_title("object (ground truth)")
    for ax, snap in zip(axes[1:], snapshots):
        ax.imshow(overlay(snap["mask"], (30, 110, 255)))
        for c in snap["click_list"]:
            ax.plot(c.col, c.row, "o", markersize=7, markeredgecolor="white",
                    markerfacecolor=(0.1, 0.8, 0.1) if c.is_positive else (0.9, 0.1, 0.1))
        ax.set_title(f"{snap['clicks']} click{'s' if snap['clicks'] > 1 else ''}: IoU {snap['iou']:.3f}")
    for ax in axes:
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, format="png", dpi=90)


def write_example_figure(cfg, model: torch.nn.Module, path: str, dataset_name: Optional[str] = None) -> list:
    """Picture of ``model`` on the first object of ``dataset_name`` (default: the first dataset of
    ``TEST.NOC.DATASETS`` or ``DATASETS.TEST``) after each of ``TRAINER.EXAMPLE_CLICKS`` clicks, with the
    evaluation protocol of ``TEST.NOC`` (zoom-in, flip).  Returns the snapshots (see
    :func:`run_example_session`); the model's train/eval mode is restored afterwards.
    """
    from adaptiveclick.evaluation import ModelPredictor, NoCDatasetMapper, noc_protocol_from_config

    name = dataset_name or next(iter(list(cfg.TEST.NOC.DATASETS) + list(cfg.DATASETS.TEST)), None)
    if not name:
        raise ValueError("no dataset for the example: pass dataset_name or set TEST.NOC.DATASETS / DATASETS.TEST")
    mapper = NoCDatasetMapper(cfg.INPUT.FORMAT)
    for record in DatasetCatalog.get(name):
        sample = mapper(record)
        ignore = sample["ignore_mask"].numpy()
        usable = [m for m in sample["gt_masks"].numpy() if (m & ~ignore).any()]
        if usable:
            break
    else:
        raise ValueError(f"dataset {name!r} has no object to show")
    image = sample["image"].permute(1, 2, 0).numpy()
    was_training = model.training
    model.eval()
    try:
        snapshots = run_example_session(ModelPredictor(model), image, usable[0], noc_protocol_from_config(cfg, name),
                                        cfg.TRAINER.EXAMPLE_CLICKS, ignore if ignore.any() else None)
    finally:
        model.train(was_training)
    draw_example(image, usable[0], snapshots, path, title=f"{name}: {os.path.basename(sample['file_name'])}")
    logger.info(f"Example picture written to {path} (IoU after "
                + ", ".join(f"{s['clicks']}: {s['iou']:.3f}" for s in snapshots) + " clicks)")
    return snapshots
