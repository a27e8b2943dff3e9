#!/usr/bin/env python
"""Our AdaptiveClick next to the official implementation (lab206/AdaptiveClick), timed the same way.

For each size (our config ``configs/sbd/adaptiveclick_vit_{b,l,h}_448.yaml``; the official model is built
from its own config code with the same architecture, ``adaptiveclick.utils.official.official_kwargs_from_cfg``
+ ``build_official_model``), both with random weights in eval mode, batch 1, one (IMG_SIZE x IMG_SIZE)
random uint8 image, the same ``--num-clicks`` clicks and previous mask, for every precision (autocast dtype;
fp32 = autocast off), median over ``--iters`` synchronised runs after ``--warmup``:

* ``forward``: the network alone on inputs preprocessed once.  Ours: ``model.predict`` (click-fused ViT,
  pyramid, PMMD, CAMD).  Official: the same stages of ``AdaptiveClickModel.forward`` (coordinate patch
  embedding, ``backbone.forward_backbone``, ``pixel_decoder``, ``click_aware_decoder``) on the normalised
  image and its coordinate features, which are computed outside the timed call as ours are;
* ``whole_click``: from the NumPy image, clicks and previous probabilities to a binary mask in host memory.
  Ours: see ``adaptiveclick.utils.bench.measure_click_model``.  Official: ``official_forward`` (the official
  predictor's input tensor and points, ``model(...)["instances"]``, resize to the image, copy of the logits
  to the host), then sigmoid and threshold (``TEST.NOC.PRED_THRESHOLD``);

plus peak memory (CUDA: max allocated tensor memory; CPU: process max RSS, see adaptiveclick/utils/bench.py)
and parameter counts (the official count includes its unused ``cls_token``/``fc_norm``/``head``).  Ours is
measured first and released before the official model is built, so that neither model's memory counts in the
other's CUDA peak (the CPU peak RSS can still include memory the allocator kept from the first model).  The table
gives ours / official ratios (below 1 = ours faster / smaller).

    python tools/benchmark_official.py --official-root /tmp/official_adaptiveclick --sizes base huge --device cuda
    python tools/benchmark_official.py --config-file configs/synthetic/tiny.yaml --iters 3 --warmup 1 \\
        MODEL.VIT.IMG_SIZE 224 MODEL.VIT.WINDOW_SIZE 14 ...      # any config with an official equivalent
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from adaptiveclick.utils.bench import (check_cli_args, save_report, DTYPES, autocast, build_benchmark_model,  # noqa: E402
                                       click_inputs, count_parameters, format_table, load_config,
                                       measure_click_model, reset_peak_memory, time_forward_and_click)

SIZE_CONFIGS = {"base": "configs/sbd/adaptiveclick_vit_b_448.yaml", "large": "configs/sbd/adaptiveclick_vit_l_448.yaml",
                "huge": "configs/sbd/adaptiveclick_vit_h_448.yaml"}


def official_forward_only_fn(model, image, clicks, prev_mask, device):
    """A no-argument callable running the official network stages on inputs preprocessed here once."""
    from adaptiveclick.utils.official import official_points

    rgb = torch.from_numpy(image).permute(2, 0, 1).float().div(255)[None]
    net_input = torch.cat([rgb, torch.from_numpy(prev_mask)[None, None]], dim=1).to(device)
    points = official_points([tuple(int(v) for v in c) for c in clicks]).to(device)
    with torch.no_grad():
        normalised, prev = model.prepare_input(net_input)
        coord_features = model.get_coord_features(normalised, prev, points)
    grid = model.backbone.patch_embed.grid_size

    def forward():
        embedded = model.patch_embed_coords(coord_features)
        features = model.backbone.forward_backbone(normalised, embedded, shuffle=False)
        mask_features, _, multi_scale = model.pixel_decoder(features, grid)
        return model.click_aware_decoder(multi_scale, mask_features, coord_features[:, 1])

    return forward


def measure_official(model, image, clicks, prev_mask, device, dtype, iters, warmup, threshold):
    """The official counterpart of ``measure_click_model``: forward alone, whole click, peak memory."""
    from adaptiveclick.utils.official import official_forward

    click_list = [tuple(int(v) for v in c) for c in clicks]

    def whole_click():
        with torch.no_grad(), autocast(device, dtype):
            logits = official_forward(model, image, click_list, prev_mask)
        return logits.float().sigmoid() > threshold

    reset_peak_memory(device)
    forward = official_forward_only_fn(model, image, clicks, prev_mask, device)
    return time_forward_and_click(forward, whole_click, image.shape[:2], device, dtype, iters, warmup,
                                  who="the official")


def _ratio(a, b):
    return a / b if b else None


def compare(name, config_file, cfg, args, device, official_root):
    from adaptiveclick.utils.official import build_official_model, official_kwargs_from_cfg

    size, img_size, overrides = official_kwargs_from_cfg(cfg)  # ValueError lists what has no official form
    threshold = cfg.TEST.NOC.PRED_THRESHOLD
    image, clicks, prev = click_inputs(img_size, args.num_clicks, seed=args.seed)

    model = build_benchmark_model(cfg, seed=args.seed)
    ours = {"params": count_parameters(model)}
    ours.update({dtype: measure_click_model(model, image, clicks, prev, device, dtype, args.iters, args.warmup,
                                            threshold) for dtype in args.dtype})
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()

    torch.manual_seed(args.seed)
    model = build_official_model(official_root, size, img_size, **overrides).to(device)
    official = {"params": count_parameters(model), "build": {"size": size, "img_size": img_size,
                                                             "overrides": overrides}}
    official.update({dtype: measure_official(model, image, clicks, prev, device, dtype, args.iters, args.warmup,
                                             threshold) for dtype in args.dtype})
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()

    rows = []
    for dtype in args.dtype:
        o, f = ours[dtype], official[dtype]
        rows.append({
            "name": name, "config_file": config_file, "device": str(device), "dtype": dtype,
            "image_size": [img_size, img_size], "num_clicks": args.num_clicks, "batch": 1,
            "ours": dict(o, params=ours["params"]),
            "official": dict(f, params=official["params"], build=official["build"]),
            "ratio_ours_over_official": {
                "forward_median": _ratio(o["forward"]["median_ms"], f["forward"]["median_ms"]),
                "whole_click_median": _ratio(o["whole_click"]["median_ms"], f["whole_click"]["median_ms"]),
                "peak_memory": _ratio(o["peak_memory_mb"], f["peak_memory_mb"]),
                "params": _ratio(ours["params"]["total"], official["params"]["total"]),
            },
        })
        print(f"{name:10s} {dtype:5s} forward ours {o['forward']['median_ms']:9.2f} ms official "
              f"{f['forward']['median_ms']:9.2f} ms | whole click ours {o['whole_click']['median_ms']:9.2f} ms "
              f"official {f['whole_click']['median_ms']:9.2f} ms", flush=True)
    return rows


def main(argv=None):
    from adaptiveclick.utils.official import DEFAULT_OFFICIAL_ROOT, OFFICIAL_ROOT_ENV

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official-root", default=os.environ.get(OFFICIAL_ROOT_ENV, DEFAULT_OFFICIAL_ROOT),
                    help=f"checkout of github.com/lab206/AdaptiveClick (default ${OFFICIAL_ROOT_ENV} or "
                         f"{DEFAULT_OFFICIAL_ROOT})")
    ap.add_argument("--sizes", nargs="+", default=["base", "huge"], choices=sorted(SIZE_CONFIGS),
                    help="model sizes (our SBD configs); ignored with --config-file")
    ap.add_argument("--config-file", default=None, metavar="FILE",
                    help="one of our configs instead of --sizes (it must have an official equivalent)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda[:N]")
    ap.add_argument("--dtype", nargs="+", default=["fp32", "bf16"], choices=sorted(DTYPES),
                    help="autocast precisions to time (fp32 = autocast off)")
    ap.add_argument("--iters", type=int, default=50, help="timed runs per measurement (median reported)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed runs before each measurement")
    ap.add_argument("--num-clicks", type=int, default=5, help="clicks in the input of a timed click")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", default=os.path.join("output", "benchmarks", "official.json"))
    ap.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                    help="overrides of our config(s); the official model follows them")
    args = ap.parse_args(argv)

    device = check_cli_args(ap, args, {"--iters": 1, "--warmup": 0, "--num-clicks": 1})
    runs = [(os.path.splitext(os.path.basename(args.config_file))[0], args.config_file)] if args.config_file \
        else [(s, SIZE_CONFIGS[s]) for s in dict.fromkeys(args.sizes)]
    missing = [c for _, c in runs if not os.path.isfile(c)]
    if missing:
        ap.error(f"config file(s) not found: {', '.join(missing)}")
    from adaptiveclick.utils.official import import_official, official_kwargs_from_cfg

    cfgs = []
    for name, config_file in runs:
        try:
            cfg = load_config(config_file, args.opts, device)
        except (AssertionError, KeyError, ValueError, TypeError) as e:  # yacs reports unknown keys by assertion
            ap.error(f"{config_file} with overrides {args.opts}: {e}")
        try:
            official_kwargs_from_cfg(cfg)
        except ValueError as e:
            ap.error(f"{config_file}: {e}")
        cfgs.append((name, config_file, cfg))
    try:
        api = import_official(args.official_root)
    except (ValueError, ImportError) as e:
        ap.error(f"--official-root: {e}")

    results = []
    for name, config_file, cfg in cfgs:
        results += compare(name, config_file, cfg, args, device, api.root)

    print(format_table(
        [{"name": r["name"], "dtype": r["dtype"], "of": r["ours"]["forward"]["median_ms"],
          "ff": r["official"]["forward"]["median_ms"], "rf": r["ratio_ours_over_official"]["forward_median"],
          "ow": r["ours"]["whole_click"]["median_ms"], "fw": r["official"]["whole_click"]["median_ms"],
          "rw": r["ratio_ours_over_official"]["whole_click_median"], "om": r["ours"]["peak_memory_mb"],
          "fm": r["official"]["peak_memory_mb"], "op": r["ours"]["params"]["total"] / 1e6,
          "fp": r["official"]["params"]["total"] / 1e6} for r in results],
        [("model", "name", "s"), ("dtype", "dtype", "s"), ("fwd ours ms", "of", ".2f"),
         ("fwd official ms", "ff", ".2f"), ("ratio", "rf", ".3f"), ("click ours ms", "ow", ".2f"),
         ("click official ms", "fw", ".2f"), ("ratio", "rw", ".3f"), ("peak ours MB", "om", ".1f"),
         ("peak official MB", "fm", ".1f"), ("params ours M", "op", ".2f"), ("params official M", "fp", ".2f")]))
    return save_report("official_vs_ours", {
        "runs": [{"name": n, "config_file": c} for n, c in runs], "overrides": list(args.opts),
        "official_root": api.root, "official_stand_ins": api.stand_ins, "device": str(device),
        "dtypes": args.dtype, "num_clicks": args.num_clicks, "batch": 1, "iters": args.iters,
        "warmup": args.warmup, "statistic": "median", "weights": "random"}, device, results, args.output)


if __name__ == "__main__":
    main()
