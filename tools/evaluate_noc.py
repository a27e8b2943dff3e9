#!/usr/bin/env python
"""NoC evaluation of a trained model on registered datasets (protocol.md A), printing the NoC table.

    python tools/evaluate_noc.py --config-file configs/synthetic/tiny.yaml --weights output/model_final.pth \
        --datasets grabcut,berkeley,davis [--num-gpus 2] [KEY VALUE ...]

Protocol settings come from ``TEST.NOC.*`` (20 clicks, stop at IoU 0.90, threshold 0.49, zoom-in 448 /
672 for DAVIS, flip); e.g. ``TEST.NOC.STOP_IOU 1.01`` runs all 20 clicks for mIoU@k and the IoU curve.
Per dataset, ``<OUTPUT_DIR>/noc/<dataset>/noc_<dataset>.json`` (metrics, every instance's IoUs and clicks,
protocol, device and versions) and ``noc_<dataset>.png`` are written, and ``<OUTPUT_DIR>/noc/results.json``
holds all metrics.
"""

import json
import os
import sys

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.modeling import build_model
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from adaptiveclick.config import add_adaptiveclick_config  # noqa: E402
from adaptiveclick.evaluation import noc_test  # noqa: E402


def setup(args):
    cfg = get_cfg()
    add_adaptiveclick_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if args.weights:
        cfg.MODEL.WEIGHTS = args.weights
    if args.datasets:
        cfg.TEST.NOC.DATASETS = [d.strip() for d in args.datasets.split(",") if d.strip()]
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="adaptiveclick")
    return cfg


def main(args):
    cfg = setup(args)
    # registration of the meta-architecture and of the datasets happens on import (detectron2 idiom)
    import adaptiveclick.data  # noqa: F401
    import adaptiveclick.modeling  # noqa: F401

    model = build_model(cfg)
    DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=False)
    model.eval()
    out_dir = os.path.join(cfg.OUTPUT_DIR, "noc")
    results = noc_test(cfg, model, output_dir=out_dir)  # logs the NoC table on the main process
    if comm.is_main_process():
        with open(os.path.join(out_dir, "results.json"), "w") as f:
            json.dump({"weights": cfg.MODEL.WEIGHTS, "results": results}, f, indent=2)
    return results


def build_parser():
    parser = default_argument_parser()
    parser.add_argument("--weights", default="", help="checkpoint to evaluate (sets MODEL.WEIGHTS)")
    parser.add_argument("--datasets", default="",
                        help="comma-separated registered dataset names (default TEST.NOC.DATASETS or DATASETS.TEST)")
    return parser


if __name__ == "__main__":
    args = build_parser().parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
