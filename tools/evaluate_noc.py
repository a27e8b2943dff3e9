#!/usr/bin/env python
r"""NoC evaluation of a trained model on registered datasets (protocol.md A), printing the NoC table.

    python tools/evaluate_noc.py --config-file configs/synthetic/quickstart.yaml --weights output/quickstart/model_final.pth \
        --datasets grabcut,berkeley,davis [--num-gpus 2] [KEY VALUE ...]

Protocol settings come from ``TEST.NOC.*`` (20 clicks, stop at IoU 0.90, threshold 0.49, zoom-in 448 /
672 for DAVIS, flip); e.g. ``TEST.NOC.STOP_IOU 1.01`` runs all 20 clicks for mIoU@k and the IoU curve.
Per dataset, ``<OUTPUT_DIR>/noc/<dataset>/noc_<dataset>.json`` (metrics, every instance's IoUs and clicks,
protocol, device and versions) and ``noc_<dataset>.png`` are written, and ``<OUTPUT_DIR>/noc/results.json``
holds all metrics.

``--int8`` evaluates a copy of the model with int8 dynamically quantised linear layers (CPU only,
adaptiveclick.utils.quantize): the way to measure what the predictor's ``quantize="int8"`` costs in NoC.
``--cuda-graph`` (CUDA only) replays the network from CUDA graphs (``model.graph_network``): each image's size is
recorded at its second click and replayed for the rest of its clicks (results.json counts the recordings, replays
and eager calls).

The checkpoint loads strictly: a tensor of another shape, or a model parameter the file lacks, stops with
``CheckpointError`` listing the keys.  Without ``--weights`` / ``MODEL.WEIGHTS`` the script stops (exit code
2, as ``tools/train_net.py --eval-only``) unless ``--random-weights`` asks for the random initialisation.
"""

import logging
import os
import sys

from detectron2.engine import default_argument_parser, launch
from detectron2.modeling import build_model
from detectron2.utils import comm

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from adaptiveclick.config import load_config_file  # noqa: E402
from adaptiveclick.engine import AtomicCheckpointer, setup_cfg  # noqa: E402
from adaptiveclick.evaluation import noc_test  # noqa: E402
from adaptiveclick.utils.run_info import write_json  # noqa: E402


NO_WEIGHTS = ("nothing to evaluate: --weights and MODEL.WEIGHTS are empty; pass --weights path/to/model.pth "
              "(or --random-weights to evaluate the random initialisation on purpose)")


def check_args(parser, args) -> None:
    """Argument errors found before the processes start (``parser.error``: message and exit code 2)."""
    if args.resume or args.eval_only:
        parser.error("--resume and --eval-only belong to tools/train_net.py; evaluate_noc.py always evaluates "
                     "--weights / MODEL.WEIGHTS")
    cfg = load_config_file(args.config_file, args.opts)
    if not (args.weights or args.random_weights or cfg.MODEL.WEIGHTS):
        parser.error(NO_WEIGHTS)
    if args.cuda_graph and args.int8:
        parser.error("--cuda-graph needs a CUDA device and --int8 runs on the CPU only: choose one")
    if args.cuda_graph and not str(cfg.MODEL.DEVICE).startswith("cuda"):
        parser.error(f"--cuda-graph needs a CUDA device; MODEL.DEVICE is {cfg.MODEL.DEVICE!r} (add MODEL.DEVICE cuda)")


def setup(args):
    extra = []
    if args.weights:
        extra += ["MODEL.WEIGHTS", args.weights]
    if args.datasets:
        extra += ["TEST.NOC.DATASETS", [d.strip() for d in args.datasets.split(",") if d.strip()]]
    return setup_cfg(args, extra)


def main(args):
    cfg = setup(args)
    # registration of the meta-architecture and of the datasets happens on import (detectron2 idiom)
    import adaptiveclick.modeling  # noqa: F401
    from adaptiveclick.data.datasets import register_datasets_from_config

    register_datasets_from_config(cfg)  # DATASETS.ROOT / SYNTHETIC.* of this config
    if not cfg.MODEL.WEIGHTS:
        if not getattr(args, "random_weights", False):
            raise ValueError(NO_WEIGHTS)
        logging.getLogger("adaptiveclick").warning("--random-weights: evaluating the random initialisation")
    model = build_model(cfg)
    # a missing or unreadable file, or one whose tensors do not fit the model, raises an error naming it
    AtomicCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=False)
    model.eval()
    out_dir = os.path.join(cfg.OUTPUT_DIR, "noc")
    if args.int8:
        from adaptiveclick.utils.quantize import count_quantized_linears, quantize_dynamic_int8

        if model.device.type != "cpu":
            raise SystemExit("--int8 runs on the CPU only: add MODEL.DEVICE cpu")
        model = quantize_dynamic_int8(model)
        logging.getLogger("adaptiveclick").info("evaluating the int8 dynamically quantised model (%d linear layers)",
                                                count_quantized_linears(model))
        out_dir = os.path.join(cfg.OUTPUT_DIR, "noc_int8")
    graphs = model.graph_network() if args.cuda_graph else None
    results = noc_test(cfg, model, output_dir=out_dir)  # logs the NoC table on the main process
    run = {"weights": cfg.MODEL.WEIGHTS, "quantize": "int8" if args.int8 else None, "cuda_graph": args.cuda_graph}
    if graphs is not None:
        run["cuda_graph_calls"] = graphs.counters()  # as benchmark_official.py reports them
        logging.getLogger("adaptiveclick").info("CUDA graphs: %d recorded, %d replays, %d eager network calls%s",
                                                graphs.captures, graphs.replays, graphs.eager_calls,
                                                "" if graphs.failure is None else f" (fell back: {graphs.failure})")
    if comm.is_main_process():
        write_json(dict(run, results=results), os.path.join(out_dir, "results.json"))
    return results


EPILOG = """
Examples:
    $ tools/evaluate_noc.py --config-file cfg.yaml --weights model.pth --datasets grabcut,davis
    $ tools/evaluate_noc.py --num-gpus 8 --config-file cfg.yaml --weights model.pth TEST.NOC.MAX_CLICKS 20
(--resume and --eval-only are tools/train_net.py's: this script always evaluates --weights / MODEL.WEIGHTS)
"""


def build_parser():
    parser = default_argument_parser(epilog=EPILOG)
    parser.add_argument("--weights", default="", help="checkpoint to evaluate (sets MODEL.WEIGHTS)")
    parser.add_argument("--datasets", default="",
                        help="comma-separated registered dataset names (default TEST.NOC.DATASETS or DATASETS.TEST)")
    parser.add_argument("--random-weights", action="store_true",
                        help="without --weights / MODEL.WEIGHTS, evaluate the random initialisation (e.g. to time "
                             "the protocol) instead of stopping")
    parser.add_argument("--int8", action="store_true",
                        help="evaluate the int8 dynamically quantised model (CPU only; results in OUTPUT_DIR/noc_int8)")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="replay the network from CUDA graphs (model.graph_network: each image size recorded at "
                             "its second click); CUDA only; the NoC is that of the eager model up to rounding")
    return parser


if __name__ == "__main__":
    parser = build_parser()
    args = parser.parse_args()
    check_args(parser, args)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
