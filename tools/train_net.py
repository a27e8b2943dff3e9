#!/usr/bin/env python
"""Train (or evaluate) an AdaptiveClick model with iterative click simulation, detectron2 style.

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
evaluation of ``MODEL.WEIGHTS`` (or, with ``--resume``, of the last checkpoint) and writes the same files.
"""

import os
import sys

from detectron2.engine import default_argument_parser, launch
from detectron2.utils import comm

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from adaptiveclick.engine import AtomicCheckpointer, ClickTrainer, setup_cfg  # noqa: E402
from adaptiveclick.utils.run_info import write_json  # noqa: E402


def main(args):
    cfg = setup_cfg(args)
    import adaptiveclick.modeling  # noqa: F401  (registers the meta-architectures)
    from adaptiveclick.data.datasets import register_datasets_from_config

    # the built-in names are registered on import with the defaults; re-register them with this config's
    # DATASETS.ROOT / PASCALVOC_LABELS / SSTEM_CONNECTIVITY / SYNTHETIC.*
    register_datasets_from_config(cfg)
    if args.eval_only:
        model = ClickTrainer.build_model(cfg)
        checkpointer = AtomicCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
        resume = args.resume and checkpointer.has_checkpoint()
        weights = checkpointer.get_checkpoint_file() if resume else cfg.MODEL.WEIGHTS
        checkpointer.resume_or_load(weights, resume=False)
        results = ClickTrainer.test(cfg, model, output_dir=os.path.join(cfg.OUTPUT_DIR, "noc"),
                                    example_path=os.path.join(cfg.OUTPUT_DIR, "example.png"))
    else:
        trainer = ClickTrainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        results = trainer.train()
        weights = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    if results and comm.is_main_process():
        write_json({"weights": weights, "results": results}, os.path.join(cfg.OUTPUT_DIR, "noc", "results.json"))
    return results


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
