#!/usr/bin/env python
r"""Training data loading speed: mapped samples per second of the training loader; writes JSON.

Times the loader that training uses (``ClickTrainer.build_train_loader``: read the image and masks, augment,
crop, choose objects, sample the initial clicks, batch; pinned when ``--device`` is CUDA) for each
``--workers`` count (``DATALOADER.NUM_WORKERS``; 0 = mapping in the main process, one core).  It answers how
many workers a GPU needs so that it never waits: a training step that consumes R samples/s needs about
R / (samples/s of one worker) workers, plus headroom.

Data: by default ``--images`` procedural images of the built-in synthetic dataset at ``--image-size`` (PNG,
generated into a temporary folder; 500 px is about an SBD image, whose files are JPEG plus a .mat mask);
``--data config`` reads the config's own ``DATASETS.TRAIN`` instead (the real datasets, when you have them).
The augmentation and click sampling are those of ``--config-file`` (default the SBD ViT-B recipe).

    python tools/benchmark_loader.py                                       # SBD recipe, 0 1 2 workers
    python tools/benchmark_loader.py --workers 4 8 --batch 32 --device cuda
    python tools/benchmark_loader.py --data config --config-file configs/cocolvis/adaptiveclick_vit_b_448.yaml
"""

import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from adaptiveclick.utils.bench import (benchmark_parser, check_cli_args, cli_load_config,  # noqa: E402
                                       format_table, save_report, warn_few_iters)

DEFAULT_CONFIG = "configs/sbd/adaptiveclick_vit_b_448.yaml"


def time_loader(cfg, iters: int, warmup: int) -> dict:
    """Iterate the training loader of ``cfg``: ``warmup`` batches untimed (worker start-up), then ``iters``
    batches timed one by one; returns the samples/s over the timed window and per-batch statistics."""
    from adaptiveclick.engine import ClickTrainer

    loader = ClickTrainer.build_train_loader(cfg)
    batches = iter(loader)
    for _ in range(warmup):
        next(batches)
    times, samples = [], 0
    start = time.perf_counter()
    for _ in range(iters):
        t = time.perf_counter()
        batch = next(batches)
        times.append(time.perf_counter() - t)
        samples += len(batch)
    total = time.perf_counter() - start
    del batches  # stops the workers
    times_ms = np.array(times) * 1000
    return {"samples": samples, "seconds": round(total, 6), "samples_per_s": round(samples / total, 2),
            "batch_median_ms": round(float(np.median(times_ms)), 2),
            "batch_p90_ms": round(float(np.percentile(times_ms, 90)), 2)}


def main(argv=None):
    ap = benchmark_parser(__doc__, os.path.join("output", "benchmarks", "loader.json"), iters=20, warmup=3,
                          iters_help=" (batches)", warmup_help=" (batches; workers start during these)")
    ap.add_argument("--config-file", default=DEFAULT_CONFIG, metavar="FILE", help="augmentation and click recipe")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DATALOADER.NUM_WORKERS to time")
    ap.add_argument("--batch", type=int, default=16, help="samples per batch (one process)")
    ap.add_argument("--data", choices=["synthetic", "config"], default="synthetic",
                    help="synthetic images, or the config's DATASETS.TRAIN")
    ap.add_argument("--images", type=int, default=64, help="synthetic images (--data synthetic)")
    ap.add_argument("--image-size", type=int, default=500, help="side of the synthetic images (--data synthetic)")
    args = ap.parse_args(argv)
    device = check_cli_args(ap, args, {"--iters": 1, "--warmup": 0, "--batch": 1, "--images": 1,
                                       "--image-size": 32})
    if min(args.workers) < 0:
        ap.error(f"--workers must be >= 0, got {args.workers}")
    warn_few_iters(args.iters)
    if not os.path.isfile(args.config_file):
        ap.error(f"config file not found: {args.config_file}")

    from detectron2.data import DatasetCatalog

    with tempfile.TemporaryDirectory(prefix="adaptiveclick_loader_") as tmp:
        opts = list(args.opts) + ["SOLVER.IMS_PER_BATCH", args.batch, "SEED", args.seed]
        name = None
        if args.data == "synthetic":
            from adaptiveclick.data.datasets.synthetic import load_synthetic

            name = f"benchmark_loader_synthetic_{os.getpid()}"
            dicts = load_synthetic(name, args.images, args.image_size, args.seed, tmp)
            DatasetCatalog.register(name, lambda: [dict(d) for d in dicts])
            # the synthetic images have no sample-weights entries
            opts += ["DATASETS.TRAIN", (name,), "DATALOADER.SAMPLE_WEIGHTS.FILE", ""]
        try:
            results = []
            base = cli_load_config(ap, args.config_file, opts, device)
            for workers in args.workers:
                cfg = base.clone()
                cfg.defrost()
                cfg.DATALOADER.NUM_WORKERS = workers
                cfg.freeze()
                row = {"workers": workers, **time_loader(cfg, args.iters, args.warmup)}
                if workers:
                    row["samples_per_s_per_worker"] = round(row["samples_per_s"] / workers, 2)
                results.append(row)
                print(f"workers {workers:3d}: {row['samples_per_s']:8.2f} samples/s  batch median "
                      f"{row['batch_median_ms']:9.1f} ms", flush=True)
        finally:
            if name is not None:
                DatasetCatalog.remove(name)

    crop = list(base.INPUT.AUG.CROP_SIZE)
    print(format_table(results, [("workers", "workers", "d"), ("samples/s", "samples_per_s", ".2f"),
                                 ("batch median ms", "batch_median_ms", ".1f"), ("batch p90 ms", "batch_p90_ms", ".1f")]))
    config = {"config_file": args.config_file, "overrides": list(args.opts), "batch": args.batch,
              "workers": args.workers, "iters": args.iters, "warmup": args.warmup, "crop_size": crop,
              "data": (f"{args.images} synthetic images of {args.image_size} px (PNG)" if args.data == "synthetic"
                       else f"DATASETS.TRAIN {list(base.DATASETS.TRAIN)}"),
              "pin_memory": device.type == "cuda" and bool(base.DATALOADER.PIN_MEMORY), "cpu_count": os.cpu_count()}
    return save_report("loader", config, device, results, args.output)


if __name__ == "__main__":
    main()
