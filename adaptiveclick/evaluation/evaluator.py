"""``NoCEvaluator``: detectron2 ``DatasetEvaluator`` gathering per-instance IoU sequences into NoC metrics."""

import itertools
import json
import logging
import os
import time
from collections import OrderedDict
from typing import Optional, Sequence

import numpy as np
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from .metrics import _check_max_clicks, check_thresholds, iou_curve, success_curve, summarize_noc, threshold_name

__all__ = ["NoCEvaluator", "plot_noc_curves", "RECORDS_KEY"]

logger = logging.getLogger(__name__)

#: Key of each model output (of :class:`~adaptiveclick.evaluation.runner.InteractiveEvaluationModel`) holding
#: the list of per-instance records: dicts with "ious", "clicks", "model_time", "total_time" and identifiers.
RECORDS_KEY = "noc_instances"


def plot_noc_curves(sequences, thresholds: Sequence[float], max_clicks: int, path: str, title: str = "") -> None:
    """Write a PNG: mIoU vs clicks (only when every sequence is full) and, per threshold, the fraction of
    instances that reached it within k clicks.  Uses matplotlib's Agg canvas (no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    ks = np.arange(1, max_clicks + 1)
    full = all(len(s) == max_clicks for s in sequences)
    fig = Figure(figsize=(10 if full else 5.5, 4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if full else 1, squeeze=False)[0]
    if full:
        curve = iou_curve(sequences, max_clicks)
        axes[0].plot(ks, curve, marker="o", markersize=3)
        axes[0].set(xlabel="number of clicks", ylabel="mIoU", xlim=(1, max_clicks), title="mIoU vs clicks")
        axes[0].grid(alpha=0.3)
    ax = axes[-1]
    for t in thresholds:
        ax.step(ks, success_curve(sequences, t, max_clicks), where="post", label=f"IoU >= {t:.2f}")
    ax.set(xlabel="number of clicks", ylabel="fraction of instances", xlim=(1, max_clicks), ylim=(0, 1.02),
           title="instances reaching the IoU")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    for a in axes:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with PathManager.open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)


class NoCEvaluator(DatasetEvaluator):
    """Collects per-instance IoU sequences and reports NoC@t, NoF@t, mIoU@k and seconds per click.

    :meth:`process` reads ``output["noc_instances"]`` (a list of records, one per evaluated object)
    from each model output.  :meth:`evaluate` gathers the records of all processes on the main one
    (``detectron2.utils.comm``) and returns ``OrderedDict(noc={...})`` (see
    :func:`~adaptiveclick.evaluation.metrics.summarize_noc` for the keys) plus ``SPC`` (wall seconds per
    click, ``reset`` to ``evaluate``, data loading included, summed over processes), ``SPC_model`` and
    ``SPC_protocol`` (time inside the predictor and the rest of the loop).  With ``output_dir`` it writes
    ``noc_<dataset>.json`` (metrics, curves, protocol, every instance's IoUs and clicks) and
    ``noc_<dataset>.png``.

    Args:
        dataset_name: used in file names, logs and the JSON.
        thresholds: IoU thresholds of NoC/NoF (0.85, 0.90).
        max_clicks: clicks per instance (20).
        stop_iou: the early-stop IoU of the runs; thresholds above it are refused.
        output_dir: where to write the files (None: nothing is written).
        distributed: gather across processes (True) or evaluate only this process's records.
        metadata: JSON-serialisable dict copied into the JSON file (protocol, run info, config...).
    """

    def __init__(self, dataset_name: Optional[str] = None, *, thresholds: Sequence[float] = (0.85, 0.90),
                 max_clicks: int = 20, stop_iou: Optional[float] = None, output_dir: Optional[str] = None,
                 distributed: bool = True, metadata: Optional[dict] = None):
        self.dataset_name = dataset_name
        # validated now rather than after a long run
        self.thresholds = check_thresholds(thresholds, stop_iou)
        self.max_clicks = _check_max_clicks(max_clicks)
        self.stop_iou = stop_iou
        self.output_dir = output_dir
        self.distributed = distributed
        self.metadata = dict(metadata or {})
        self.reset()

    def reset(self):
        self._records = []
        self._start = time.perf_counter()

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            if not isinstance(out, dict) or RECORDS_KEY not in out:
                raise ValueError(f"each model output must be a dict with key {RECORDS_KEY!r} (a list of "
                                 "per-instance records), as InteractiveEvaluationModel returns")
            for record in out[RECORDS_KEY]:
                if not isinstance(record, dict) or "ious" not in record:
                    raise ValueError(f"a record of {RECORDS_KEY!r} must be a dict with key 'ious'")
                self._records.append(record)

    def evaluate(self):
        wall = time.perf_counter() - self._start
        if self.distributed:
            comm.synchronize()
            records = list(itertools.chain(*comm.gather(self._records, dst=0)))
            walls = comm.gather(wall, dst=0)
            if not comm.is_main_process():
                return {}
        else:
            records, walls = self._records, [wall]
        name = self.dataset_name or "dataset"
        if not records:
            logger.warning(f"NoCEvaluator on {name}: no instance was evaluated")
            return {}
        sequences = [np.asarray(r["ious"], dtype=np.float32) for r in records]
        metrics = summarize_noc(sequences, self.thresholds, self.max_clicks, self.stop_iou)
        clicks = metrics["num_clicks"]
        model_time = sum(float(r.get("model_time", 0.0)) for r in records)
        loop_time = sum(float(r.get("total_time", 0.0)) for r in records)
        metrics["SPC"] = float(sum(walls)) / clicks
        metrics["SPC_model"] = model_time / clicks
        metrics["SPC_protocol"] = (loop_time - model_time) / clicks
        if self.output_dir:
            self._write(name, metrics, records, sequences)
        shown = ", ".join(f"{k}={metrics[k]:.3f}" if isinstance(metrics[k], float) else f"{k}={metrics[k]}"
                          for k in metrics if not k.startswith("mIoU@") and not k.endswith("_std"))
        logger.info(f"NoC evaluation on {name} ({len(records)} instances): {shown}")
        return OrderedDict(noc=metrics)

    def _write(self, name, metrics, records, sequences):
        PathManager.mkdirs(self.output_dir)
        curves = OrderedDict((f"reached@{threshold_name(t)}", success_curve(sequences, t, self.max_clicks).tolist())
                             for t in self.thresholds)
        if all(len(s) == self.max_clicks for s in sequences):
            curves["mIoU"] = iou_curve(sequences, self.max_clicks).tolist()
        payload = OrderedDict(dataset=self.dataset_name, max_clicks=self.max_clicks, thresholds=self.thresholds,
                              stop_iou=self.stop_iou, metrics=metrics, curves=curves, metadata=self.metadata,
                              instances=records)
        json_path = os.path.join(self.output_dir, f"noc_{name}.json")
        with PathManager.open(json_path, "w") as f:
            json.dump(payload, f, indent=1)
        png_path = os.path.join(self.output_dir, f"noc_{name}.png")
        plot_noc_curves(sequences, self.thresholds, self.max_clicks, png_path,
                        title=f"{name}, {len(records)} instances")
        logger.info(f"NoC results written to {json_path} and {png_path}")
