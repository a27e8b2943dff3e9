#!/usr/bin/env python
"""Training throughput of AdaptiveClick: samples/s and peak memory of one optimisation step; writes JSON.

The step is the trainer's own: :class:`adaptiveclick.engine.IterativeClickTrainer` ``run_step`` (forward
with the losses, non-finite check, backward through the gradient scaler, optional clipping, optimizer step)
with the optimizer of ``ClickTrainer.build_optimizer`` (the config's SOLVER recipe), under the AMP setting
``--amp`` (none = fp32; fp16 uses the gradient scaler; default none on the CPU, where bf16 autocast is slow
without bf16 units, none and bf16 on CUDA).  Its random click rounds are switched off for this
measurement; they are timed separately: ``--click-rounds`` rounds of ``IterativeClickTrainer.click_rounds``
(no-grad eval-mode forward of the batch, probabilities fed back as ``prev_mask``, one new click per sample),
reported per round.  Since the trainer draws the number of rounds uniformly from {0, ..., N}
(N = ``INPUT.CLICKS.MAX_NUM_NEXT_CLICKS``), an average iteration costs step + N/2 rounds: that is
``expected_iteration_ms`` and ``expected_samples_per_s``.

Batches: ``--batch`` procedural images of the built-in synthetic dataset (generated into a temporary
folder), each mapped once by ``ClickTrainingMapper`` (the training augmentation, crop ``INPUT.AUG.CROP_SIZE``
or ``--size``, and the initial clicks of the multi-point sampler); the same mapped batch is fed at every
iteration, so data loading is not part of the time, but the copy of the batch to the device is.  The model
has random weights.  Peak memory: CUDA max allocated tensor memory; CPU process-wide max RSS (see
adaptiveclick/utils/bench.py).

    python tools/benchmark_train.py --device cuda                       # ViT-B batch 16, ViT-H batch 8, fp32 + bf16
    python tools/benchmark_train.py --config-file configs/sbd/adaptiveclick_vit_b_448.yaml --batch 16 --amp bf16
    python tools/benchmark_train.py --config-file configs/synthetic/tiny.yaml --batch 2 --iters 2 --warmup 1 \\
        --click-rounds 1 --device cpu --output /tmp/train.json [KEY VALUE ...]
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from adaptiveclick.utils.bench import (AMP_CHOICES, benchmark_parser, check_cli_args,  # noqa: E402
                                       check_click_rounds, cli_load_config, format_table, free_device_cache,
                                       measure_train_step, save_report, warn_few_iters)

#: (config, batch) of the default run
DEFAULT_RUNS = [("configs/sbd/adaptiveclick_vit_b_448.yaml", 16), ("configs/sbd/adaptiveclick_vit_h_448.yaml", 8)]


def main(argv=None):
    ap = benchmark_parser(__doc__, os.path.join("output", "benchmarks", "train.json"), iters=20, warmup=3)
    ap.add_argument("--config-file", default=None, metavar="FILE",
                    help="config to time (default: ViT-B at batch 16 and ViT-H at batch 8, SBD configs)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default 16 with --config-file)")
    ap.add_argument("--amp", nargs="+", default=None, choices=sorted(AMP_CHOICES),
                    help="mixed-precision settings to time (none = fp32); default: none on the CPU (bf16 "
                         "autocast is slow on CPUs without bf16 units), none bf16 on CUDA")
    ap.add_argument("--click-rounds", type=int, default=3, help="no-grad click rounds timed together (0 = skip)")
    ap.add_argument("--size", type=int, default=None, help="square crop side (default INPUT.AUG.CROP_SIZE)")
    args = ap.parse_args(argv)

    device = check_cli_args(ap, args, {"--iters": 1, "--warmup": 0, "--click-rounds": 0, "--batch": 1,
                                       "--size": 32})
    warn_few_iters(args.iters)
    runs = [(args.config_file, args.batch or 16)] if args.config_file else \
        [(c, args.batch or b) for c, b in DEFAULT_RUNS]
    missing = [c for c, _ in runs if not os.path.isfile(c)]
    if missing:
        ap.error(f"config file(s) not found: {', '.join(missing)}")

    opts = list(args.opts) + (["INPUT.AUG.CROP_SIZE", [args.size, args.size]] if args.size else [])
    cfgs = []
    for config_file, batch in runs:
        cfg = cli_load_config(ap, config_file, opts, device)
        check_click_rounds(ap, args.click_rounds, cfg, config_file)
        cfgs.append((config_file, batch, cfg))
    config = {
        "runs": [{"config_file": c, "batch": b} for c, b in runs], "overrides": opts, "device": str(device),
        "amp": args.amp, "iters": args.iters, "warmup": args.warmup, "click_rounds": args.click_rounds,
        "statistic": "median", "weights": "random",
        "data": "synthetic dataset images mapped once by ClickTrainingMapper, same batch every step"}
    results = []
    for config_file, batch, cfg in cfgs:
        for amp in args.amp:
            row = measure_train_step(cfg, config_file, batch, amp, device, args.iters, args.warmup,
                                     args.click_rounds, args.seed)
            free_device_cache(device)
            results.append(row)
            print(f"{row['model']:28s} batch {batch:3d} amp {amp:4s} step {row['step']['median_ms']:10.1f} ms  "
                  f"{row['samples_per_s']:8.2f} samples/s  peak {row['step_peak_memory_mb']:9.1f} MB", flush=True)
            if len(results) < len(cfgs) * len(args.amp):  # what is measured survives a time limit
                save_report("train", config, device, results, args.output, complete=False)

    print(format_table([{"model": r["model"], "batch": r["batch"], "amp": r["amp"], "step": r["step"]["median_ms"],
                         "sps": r["samples_per_s"], "peak": r["step_peak_memory_mb"],
                         "round": r.get("click_round_ms"), "exp": r.get("expected_samples_per_s")}
                        for r in results],
                       [("model", "model", "s"), ("batch", "batch", "d"), ("amp", "amp", "s"),
                        ("step ms", "step", ".1f"), ("samples/s", "sps", ".2f"), ("peak MB", "peak", ".1f"),
                        ("click round ms", "round", ".1f"), ("samples/s incl. rounds", "exp", ".2f")]))
    return save_report("train", config, device, results, args.output)


if __name__ == "__main__":
    main()
