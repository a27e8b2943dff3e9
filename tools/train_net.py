#!/usr/bin/env python
r"""Train (or evaluate) an AdaptiveClick model with iterative click simulation, detectron2 style.

    python tools/train_net.py --config-file configs/synthetic/quickstart.yaml
    python tools/train_net.py --config-file configs/sbd/adaptiveclick_vit_b_448.yaml --num-gpus 8 \
        MODEL.VIT.PRETRAINED pretrained/mae_pretrain_vit_base.pth
    python tools/train_net.py --config-file ... --resume          # continue from OUTPUT_DIR/last_checkpoint
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth

``--num-gpus N`` starts N processes (DistributedDataParallel; NCCL on GPUs, gloo on CPU-only machines);
``--num-machines / --machine-rank / --dist-url`` as in detectron2.  Trailing ``KEY VALUE`` pairs override
the config.  Training writes atomic checkpoints every ``SOLVER.CHECKPOINT_PERIOD`` iterations, logs and
``metrics.json`` under ``OUTPUT_DIR``, NoC results under ``OUTPUT_DIR/noc/`` (every ``TEST.EVAL_PERIOD``
iterations and at the end) and the picture ``OUTPUT_DIR/example.png``.  ``--eval-only`` runs the NoC
evaluation of ``MODEL.WEIGHTS`` (or, with ``--resume``, of the last checkpoint) and writes the same files;
with neither it stops (exit code 2) rather than evaluate random weights.

Checkpoints load strictly (``AtomicCheckpointer``): a tensor of another shape, or a model parameter the file
lacks, stops the run with ``CheckpointError`` listing the keys (keys the model lacks only warn).
``--partial-weights`` loads only the tensors of ``MODEL.WEIGHTS`` that fit at the start of training
(fine-tuning from another model); ``--resume`` and ``--eval-only`` are always strict.
"""

import os
import sys

import torch
from detectron2.engine import default_argument_parser, launch
from detectron2.utils import comm

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from adaptiveclick.config import load_config_file  # noqa: E402
from adaptiveclick.engine import AtomicCheckpointer, ClickTrainer, setup_cfg  # noqa: E402
from adaptiveclick.utils.run_info import write_json  # noqa: E402


NO_WEIGHTS = ("--eval-only has nothing to evaluate: MODEL.WEIGHTS is empty{resume}; pass "
              "MODEL.WEIGHTS path/to/model.pth (or --resume with a checkpoint in OUTPUT_DIR)")


def build_parser():
    parser = default_argument_parser()
    parser.add_argument("--partial-weights", action="store_true",
                        help="at the start of training, load only the tensors of MODEL.WEIGHTS that fit the model "
                             "(the others keep their initialisation; fine-tuning from another model). Without it, a "
                             "missing or mis-shaped parameter is an error; --resume and --eval-only are always strict")
    return parser


def weights_to_evaluate(cfg, resume: bool) -> str:
    """The checkpoint ``--eval-only`` evaluates: with ``--resume`` the last one in OUTPUT_DIR when there is one,
    else MODEL.WEIGHTS ("" when neither)."""
    if resume:
        checkpointer = AtomicCheckpointer(torch.nn.Module(), save_dir=cfg.OUTPUT_DIR, save_to_disk=False)
        if checkpointer.has_checkpoint():
            return checkpointer.get_checkpoint_file()
    return cfg.MODEL.WEIGHTS


def no_weights_message(cfg, resume: bool) -> str:
    return NO_WEIGHTS.format(resume=f" and OUTPUT_DIR {cfg.OUTPUT_DIR} has no checkpoint" if resume else "")


def check_args(parser, args) -> None:
    """Argument errors found before the processes start (``parser.error``: message and exit code 2)."""
    if not args.eval_only:
        return
    if getattr(args, "partial_weights", False):
        parser.error("--partial-weights applies to training; --eval-only loads its checkpoint strictly")
    cfg = load_config_file(args.config_file, args.opts)
    if not weights_to_evaluate(cfg, args.resume):
        parser.error(no_weights_message(cfg, args.resume))


def main(args):
    cfg = setup_cfg(args)
    import adaptiveclick.modeling  # noqa: F401  (registers the meta-architectures)
    from adaptiveclick.data.datasets import register_datasets_from_config

    # the built-in names are registered on import with the defaults; re-register them with this config's
    # DATASETS.ROOT / PASCALVOC_LABELS / SSTEM_CONNECTIVITY / SYNTHETIC.*
    register_datasets_from_config(cfg)
    if args.eval_only:
        weights = weights_to_evaluate(cfg, args.resume)
        if not weights:
            raise ValueError(no_weights_message(cfg, args.resume))
        model = ClickTrainer.build_model(cfg)
        # strict: a checkpoint that does not fit the model raises CheckpointError listing the keys
        AtomicCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(weights, resume=False)
        results = ClickTrainer.test(cfg, model, output_dir=os.path.join(cfg.OUTPUT_DIR, "noc"),
                                    example_path=os.path.join(cfg.OUTPUT_DIR, "example.png"))
    else:
        trainer = ClickTrainer(cfg)
        trainer.resume_or_load(resume=args.resume, strict=not getattr(args, "partial_weights", False))
        results = trainer.train()
        weights = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    if results and comm.is_main_process():
        write_json({"weights": weights, "results": results}, os.path.join(cfg.OUTPUT_DIR, "noc", "results.json"))
    return results


if __name__ == "__main__":
    parser = build_parser()
    args = parser.parse_args()
    check_args(parser, args)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
