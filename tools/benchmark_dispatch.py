#!/usr/bin/env python
"""How many operators a click dispatches, and what they cost on the host: ours beside the official model.

On a GPU a batch-1 click of these models is short in arithmetic (a ViT-B/448 forward is ~0.2 TFLOP, well under a
millisecond of an H100/H200's bf16 throughput), so in eager mode its time is set by the host: every operator
goes through Python and PyTorch's dispatcher and launches at least one kernel, and every host read of a device
value (``.item()``, ``.tolist()``, a tensor in an ``if``) stalls until the GPU has caught up.  This tool measures
that side on any machine, the CPU included, for each size (our SBD configs; the official model built from its
own code with the same architecture, as ``tools/benchmark_official.py`` does):

* ``operators``: every ATen operator one call dispatches (``adaptiveclick.utils.op_count``), after a warm
  call, for the network alone (``forward``) and the whole click (``whole_click``, NumPy image to host mask),
  split into ``compute`` (each launches at least one kernel on a GPU), ``metadata`` (views, in-place views,
  allocations, type queries: no kernel) and ``host_reads`` (``_local_scalar_dense``, ``nonzero``, ...: a device
  synchronisation each on a GPU), with the most frequent compute operators.  Exact, and the same on any machine
  with the same torch version and device type; counted on the config's own sizes (default 448 px, random
  weights, ``--num-clicks`` clicks).
* ``narrow``: the same two calls timed on a *narrow* copy of each model: every layer, block, head and level
  kept, the widths cut to a few channels (``narrow_overrides``: ViT 4 channels per head, pyramid, pixel decoder
  and decoder 32) and the input to one attention window (224 px), so that the same operator sequence runs on
  small tensors.  Interleaved round by round as in ``tools/benchmark_official.py``, with paired ratios; on the
  CPU one thread (``--threads``).  What it times is the per-operator work (Python, the dispatcher, each kernel's
  fixed cost) plus what is left of the arithmetic, which is not nothing on a CPU (a narrow ViT-B forward on a
  2-core AMD EPYC: 71 ms at 224 px, 272 ms at 448 px; CPU attention kernels have a large fixed cost at 4
  channels per head): read it as a comparison of the two operator sequences, not as a GPU click's time.

    python tools/benchmark_dispatch.py --sizes base huge
    python tools/benchmark_dispatch.py --config-file configs/synthetic/tiny.yaml --no-official \\
        MODEL.VIT.IMG_SIZE 224
"""

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from adaptiveclick.utils.bench import (benchmark_parser, build_benchmark_model, check_cli_args,  # noqa: E402
                                       check_click_mask, cli_load_config, click_inputs, format_table,
                                       free_device_cache, paired_ratio, save_report, time_interleaved_stages,
                                       warn_few_iters)
from adaptiveclick.utils.op_count import count_operators  # noqa: E402
from benchmark_official import SIZE_CONFIGS, click_fns  # noqa: E402

#: the narrow copy's widths (channels): see narrow_overrides
NARROW_PER_HEAD = 4
NARROW_CHANNELS = 32


def narrow_overrides(cfg):
    """Config overrides (KEY VALUE ...) for the narrow copy of ``cfg``'s model: the same depth, heads, levels,
    queries and layers, widths cut (ViT ``NARROW_PER_HEAD`` channels per head, every pyramid, pixel-decoder and
    decoder width ``NARROW_CHANNELS``, a multiple of GroupNorm's 32 groups; the encoder's FFN half the decoder's,
    as the official model ties them) and the input one attention window (or the config's size without windows).
    """
    v, a = cfg.MODEL.VIT, cfg.MODEL.ADAPTIVECLICK
    img = v.WINDOW_SIZE * v.PATCH_SIZE if v.WINDOW_SIZE > 0 else v.IMG_SIZE
    c = NARROW_CHANNELS
    for key in ("NHEADS", "ENC_NHEADS"):
        if c % a.get(key):
            raise ValueError(f"the narrow copy's width {c} is not divisible by MODEL.ADAPTIVECLICK.{key} "
                             f"{a.get(key)}")
    return ["MODEL.VIT.IMG_SIZE", str(img), "MODEL.VIT.EMBED_DIM", str(NARROW_PER_HEAD * v.NUM_HEADS),
            "MODEL.VIT.FPN_OUT_DIMS", str([c] * len(v.FPN_OUT_DIMS)), "MODEL.ADAPTIVECLICK.CONVS_DIM", str(c),
            "MODEL.ADAPTIVECLICK.MASK_DIM", str(c), "MODEL.ADAPTIVECLICK.HIDDEN_DIM", str(c),
            "MODEL.ADAPTIVECLICK.DIM_FEEDFORWARD", str(2 * c), "MODEL.ADAPTIVECLICK.ENC_DIM_FEEDFORWARD", str(c)]


def _models(cfg, args, device, official_root):
    """{"ours": model, "official": model (unless --no-official)} of ``cfg``, random weights, eval mode."""
    models = {"ours": build_benchmark_model(cfg, seed=args.seed)}
    if official_root is not None:
        from adaptiveclick.utils.official import build_official_model, official_kwargs_from_cfg

        size, img_size, overrides = official_kwargs_from_cfg(cfg)
        torch.manual_seed(args.seed)
        models["official"] = build_official_model(official_root, size, img_size, device=device, **overrides).eval()
    return models


def _calls(models, img_size, args, device, threshold):
    """{who: (forward, whole_click)} no-argument callables of each model (fp32)."""
    image, clicks, prev = click_inputs(img_size, args.num_clicks, seed=args.seed)
    return {who: click_fns(m, image, clicks, prev, device, "fp32", threshold, who == "official")
            for who, m in models.items()}


def measure(name, config_file, cfg, narrow_cfg, args, device, official_root):
    """Operator counts of ``cfg``'s models and the interleaved timing of ``narrow_cfg``'s (its narrow copy)."""
    threshold = cfg.TEST.NOC.PRED_THRESHOLD
    row = {"name": name, "config_file": config_file, "device": str(device), "num_clicks": args.num_clicks,
           "batch": 1, "dtype": "fp32", "image_size": [int(cfg.MODEL.VIT.IMG_SIZE)] * 2, "operators": {}}
    models = _models(cfg, args, device, official_root)
    with torch.no_grad():
        for who, (forward, whole_click) in _calls(models, cfg.MODEL.VIT.IMG_SIZE, args, device, threshold).items():
            forward()  # warm: size-keyed caches filled, lazy initialisation done
            whole_click()
            click_counts, mask = count_operators(whole_click)
            check_click_mask(mask, row["image_size"], "the official" if who == "official" else "our")
            row["operators"][who] = {"forward": count_operators(forward)[0], "whole_click": click_counts}
    del models
    free_device_cache(device)

    models = _models(narrow_cfg, args, device, official_root)
    calls = _calls(models, narrow_cfg.MODEL.VIT.IMG_SIZE, args, device, threshold)
    with torch.no_grad():
        timed = time_interleaved_stages({"forward": {who: c[0] for who, c in calls.items()},
                                         "whole click": {who: c[1] for who, c in calls.items()}},
                                        args.warmup, args.iters, device, label=f"{name} narrow forward + whole click")
        t_fwd, t_click = timed["forward"], timed["whole click"]
    row["narrow"] = {"overrides": narrow_overrides(cfg), "image_size": [int(narrow_cfg.MODEL.VIT.IMG_SIZE)] * 2,
                     **{who: {"forward": t_fwd[who], "whole_click": t_click[who]} for who in calls}}
    if "official" in calls:
        row["narrow"]["ratio_ours_over_official"] = {
            "forward_paired": paired_ratio(t_fwd["ours"], t_fwd["official"]),
            "whole_click_paired": paired_ratio(t_click["ours"], t_click["official"])}
    del models, calls
    free_device_cache(device)
    return row


def table(results):
    rows = []
    for r in results:
        for who, ops in r["operators"].items():
            narrow = r["narrow"][who]
            rows.append({"model": f"{r['name']} {who}", "fwd_compute": ops["forward"]["compute"],
                         "fwd_meta": ops["forward"]["metadata"], "fwd_reads": ops["forward"]["host_reads"],
                         "click_compute": ops["whole_click"]["compute"],
                         "click_reads": ops["whole_click"]["host_reads"],
                         "narrow_fwd": narrow["forward"]["median_ms"],
                         "narrow_click": narrow["whole_click"]["median_ms"]})
            if who == "ours" and "ratio_ours_over_official" in r["narrow"]:
                ratio = r["narrow"]["ratio_ours_over_official"]
                rows[-1].update(ratio_fwd=ratio["forward_paired"], ratio_click=ratio["whole_click_paired"])
    return format_table(rows, [("model", "model", "s"), ("forward compute ops", "fwd_compute", "d"),
                               ("metadata ops", "fwd_meta", "d"), ("host reads", "fwd_reads", "d"),
                               ("click compute ops", "click_compute", "d"), ("click host reads", "click_reads", "d"),
                               ("narrow forward ms", "narrow_fwd", ".2f"), ("narrow click ms", "narrow_click", ".2f"),
                               ("narrow ours/official forward (paired)", "ratio_fwd", ".3f"),
                               ("click (paired)", "ratio_click", ".3f")])


def main(argv=None):
    from adaptiveclick.utils.official import DEFAULT_OFFICIAL_ROOT, OFFICIAL_ROOT_ENV

    ap = benchmark_parser(__doc__, os.path.join("output", "benchmarks", "dispatch.json"), iters=30, warmup=3,
                          opts_help="overrides of our config(s); the official model follows them", clicks=True)
    ap.add_argument("--official-root", default=os.environ.get(OFFICIAL_ROOT_ENV, DEFAULT_OFFICIAL_ROOT),
                    help=f"checkout of github.com/lab206/AdaptiveClick (default ${OFFICIAL_ROOT_ENV} or "
                         f"{DEFAULT_OFFICIAL_ROOT})")
    ap.add_argument("--no-official", action="store_true", help="measure our model only")
    ap.add_argument("--sizes", nargs="+", default=["base"], choices=sorted(SIZE_CONFIGS),
                    help="model sizes (our SBD configs); ignored with --config-file")
    ap.add_argument("--config-file", default=None, metavar="FILE", help="one of our configs instead of --sizes")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads on the CPU (the per-operator cost is a single thread's; 0 = keep torch's)")
    args = ap.parse_args(argv)
    if args.dtype not in (None, ["fp32"]):
        ap.error(f"--dtype {' '.join(args.dtype)}: this tool counts and times fp32 only")
    args.dtype = ["fp32"]
    device = check_cli_args(ap, args, {"--iters": 1, "--warmup": 0, "--num-clicks": 1, "--threads": 0})
    warn_few_iters(args.iters)
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    runs = [(os.path.splitext(os.path.basename(args.config_file))[0], args.config_file)] if args.config_file \
        else [(s, SIZE_CONFIGS[s]) for s in dict.fromkeys(args.sizes)]
    missing = [c for _, c in runs if not os.path.isfile(c)]
    if missing:
        ap.error(f"config file(s) not found: {', '.join(missing)}")
    root = None
    cfgs = []
    for name, config_file in runs:
        cfg = cli_load_config(ap, config_file, args.opts, device)
        try:
            narrow_cfg = cli_load_config(ap, config_file, list(args.opts) + narrow_overrides(cfg), device)
            if not args.no_official:
                from adaptiveclick.utils.official import official_kwargs_from_cfg

                official_kwargs_from_cfg(cfg)
        except ValueError as e:
            ap.error(f"{config_file}: {e}")
        cfgs.append((name, config_file, cfg, narrow_cfg))
    if not args.no_official:
        from adaptiveclick.utils.official import import_official

        try:
            root = import_official(args.official_root).root
        except (ValueError, ImportError) as e:
            ap.error(f"--official-root: {e} (or --no-official)")
    config = {"runs": [{"name": n, "config_file": c} for n, c in runs], "overrides": list(args.opts),
              "official_root": root, "device": str(device), "iters": args.iters, "warmup": args.warmup,
              "statistic": "median", "weights": "random", "num_clicks": args.num_clicks, "batch": 1,
              "narrow": {"per_head": NARROW_PER_HEAD, "channels": NARROW_CHANNELS}}
    results = []
    for k, (name, config_file, cfg, narrow_cfg) in enumerate(cfgs):
        results.append(measure(name, config_file, cfg, narrow_cfg, args, device, root))
        if k + 1 < len(cfgs):  # what is measured survives a time limit
            save_report("dispatch", config, device, results, args.output, complete=False)
    print(table(results))
    return save_report("dispatch", config, device, results, args.output)


if __name__ == "__main__":
    main()
