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
and parameter counts (the official count includes its unused ``cls_token``/``fc_norm``/``head``).  ``--dtype
int8`` (CPU) quantises both models' linear layers the same way (adaptiveclick.utils.quantize); with fp32 among
the ``--dtype`` values, every other precision also times the official model as it ships (fp32) in the same
rounds and gets ``ratio_ours_over_official_fp32``.  Default ``--dtype``: fp32 on the CPU (bf16 autocast is
slow on CPUs without bf16 units), fp32 and bf16 on CUDA.

The two models are timed *interleaved* (``adaptiveclick.utils.bench.time_interleaved``: one call of each per
round, the order rotating; the forward and the whole click of every contestant in the same rounds), both
resident, so that a machine whose speed drifts during the run (shared or
throttled hosts: on our 2-core CI-class VM the same code measured 0.52 to 0.80 of the official time in runs
made one after the other) slows both alike; ``*_paired`` ratios are medians over rounds of the per-round ratio,
``*_median`` the ratios of the medians.  Peak memory comes from a separate pass with each model alone in
memory (one forward and one whole click; ours is released before the official model is built; the CPU peak
RSS can still include memory the allocator kept from the first model).  The table gives the paired ours /
official ratios (below 1 = ours faster / smaller).

With ``--train``, training instead of inference: for each size, one batch of ``--batch`` synthetic samples
mapped by our ``ClickTrainingMapper`` (crop = the model's IMG_SIZE, the official model's fixed input size), then

* ours: for each ``--amp``, ``adaptiveclick.utils.bench.prepare_train_step`` (as ``tools/benchmark_train.py``:
  ``IterativeClickTrainer.run_step`` without its random click rounds, the config's optimizer);
* official: the same samples as its trainer's batch (``official_training_batch``), its optimizer
  (``get_optimizer(model, "adam", lr 5e-5)`` of its recipe), and ``official_train_step`` (forward, its
  ``loss_inference``, zero_grad, backward, step), always fp32 as its recipe trains;

both with ``--click-rounds`` no-grad click rounds timed separately (ours ``IterativeClickTrainer.click_rounds``,
official ``official_click_rounds``: forward, sigmoid, its ``get_next_points``).  Peak memory comes first, from
two steps and one call of the click rounds of each setup alone in memory; then the others are built again
beside the last one, all resident together, and their steps (then their click rounds) are timed interleaved as above
(``time_training_interleaved``).  Reported: samples/s of the step and of an average iteration (step + 1.5
rounds for both recipes' 0..3 rounds), peak memory, and ours / official ratios (above 1 = ours faster;
``samples_per_s_paired`` is 1 / the paired ratio of our step time to the official one).  All models and
optimizer states are resident during the timing (ViT-H batch 8 on a GPU: three fp32 Adam states of ~10 GB
each with ``--amp none bf16``).

    python tools/benchmark_official.py --official-root /tmp/official_adaptiveclick --sizes base huge --device cuda
    python tools/benchmark_official.py --train --sizes base --batch 16 --amp none bf16 --device cuda
    python tools/benchmark_official.py --config-file configs/synthetic/tiny.yaml --iters 3 --warmup 1 \\
        MODEL.VIT.IMG_SIZE 224 MODEL.VIT.WINDOW_SIZE 14 ...      # any config with an official equivalent
"""

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from adaptiveclick.utils.bench import (AMP_CHOICES, autocast, benchmark_parser, build_benchmark_model,  # noqa: E402
                                       check_cli_args, check_click_mask, check_click_rounds, cli_load_config,
                                       click_batch, click_inputs, count_parameters, format_table, forward_only_fn,
                                       free_device_cache, graphed_click_fns, in_precision, model_for_dtype,
                                       paired_ratio, peak_memory_mb, prepare_train_step, reset_peak_memory, save_report,
                                       synthetic_training_batch, time_interleaved_stages, time_training_interleaved,
                                       training_peak_memory, TrainingSetup, warn_few_iters, whole_click_fn)

#: default training batch per size (the issue's ViT-B 16, ViT-H 8)
TRAIN_BATCH = {"base": 16, "large": 8, "huge": 8}
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


def click_fns(model, image, clicks, prev_mask, device, dtype, threshold, official):
    """``(forward, whole_click)`` no-argument callables of one model (ours or the official one) at one
    precision: the network alone under no_grad and the autocast of ``dtype``, and the whole click returning
    the (H, W) bool mask in host memory."""
    from adaptiveclick.utils.official import official_forward

    if not official:
        forward = forward_only_fn(model, click_batch(image, clicks, prev_mask))
        whole_click = whole_click_fn(model, image, clicks, prev_mask, threshold, device, dtype)
    else:
        forward = official_forward_only_fn(model, image, clicks, prev_mask, device)
        click_list = [tuple(int(v) for v in c) for c in clicks]

        def whole_click():
            with torch.no_grad(), autocast(device, dtype):
                logits = official_forward(model, image, click_list, prev_mask)
            return logits.float().sigmoid() > threshold

    return in_precision(forward, device, dtype), whole_click


def memory_pass(model, image, clicks, prev_mask, args, device, threshold, official):
    """Parameter count, and per precision the peak memory of one forward and one whole click (the model is
    alone in memory); checks that the whole click returns a mask of the image's size."""
    who = "the official" if official else "our"
    out = {"params": count_parameters(model)}
    for dtype in args.dtype:
        reset_peak_memory(device)
        forward, whole_click = click_fns(model_for_dtype(model, dtype), image, clicks, prev_mask, device, dtype,
                                         threshold, official)
        forward()
        check_click_mask(whole_click(), image.shape[:2], who)
        peak = peak_memory_mb(device)
        out[dtype] = {"peak_memory_mb": peak["peak_memory_mb"], "peak_memory_kind": peak["kind"]}
    return out


def _ratio(a, b):
    return a / b if b else None


def compare(name, config_file, cfg, args, device, official_root):
    from adaptiveclick.utils.official import build_official_model, official_kwargs_from_cfg

    size, img_size, overrides = official_kwargs_from_cfg(cfg)  # ValueError lists what has no official form
    threshold = cfg.TEST.NOC.PRED_THRESHOLD
    image, clicks, prev = click_inputs(img_size, args.num_clicks, seed=args.seed)
    inputs = (image, clicks, prev)

    # memory: each model alone (ours is released before the official one is built)
    model = build_benchmark_model(cfg, seed=args.seed)
    ours = memory_pass(model, *inputs, args, device, threshold, official=False)
    del model
    free_device_cache(device)
    torch.manual_seed(args.seed)
    official_model = build_official_model(official_root, size, img_size, device=device, **overrides)
    official = memory_pass(official_model, *inputs, args, device, threshold, official=True)
    official["build"] = {"size": size, "img_size": img_size, "overrides": overrides}

    # time: both models resident, interleaved round by round (bench.time_interleaved_stages)
    model = build_benchmark_model(cfg, seed=args.seed)
    rows = []
    for dtype in args.dtype:
        ours_model = model_for_dtype(model, dtype)  # int8: a quantised copy, made once for both of our contestants
        o_fwd, o_click = click_fns(ours_model, *inputs, device, dtype, threshold, False)
        f_fwd, f_click = click_fns(model_for_dtype(official_model, dtype), *inputs, device, dtype, threshold, True)
        forward = {"ours": o_fwd, "official": f_fwd}
        whole = {"ours": o_click, "official": f_click}
        against_fp32 = dtype != "fp32" and "fp32" in args.dtype
        if against_fp32:  # the official model as it ships, in the same rounds
            forward["official_fp32"], whole["official_fp32"] = click_fns(official_model, *inputs, device, "fp32",
                                                                         threshold, True)
        wrapper = None
        if args.cuda_graph:  # ours again, its network replayed from CUDA graphs, in the same rounds
            forward["ours_cuda_graph"], whole["ours_cuda_graph"], wrapper = graphed_click_fns(
                ours_model, *inputs, threshold, device, dtype)
        timed = time_interleaved_stages({"forward": forward, "whole click": whole}, args.warmup, args.iters, device,
                                        label=f"{name} {dtype} forward + whole click")
        t_fwd, t_click = timed["forward"], timed["whole click"]
        o = {"forward": t_fwd["ours"], "whole_click": t_click["ours"], **ours[dtype]}
        f = {"forward": t_fwd["official"], "whole_click": t_click["official"], **official[dtype]}
        rows.append({
            "name": name, "config_file": config_file, "device": str(device), "dtype": dtype,
            "image_size": [img_size, img_size], "num_clicks": args.num_clicks, "batch": 1,
            "ours": dict(o, params=ours["params"]),
            "official": dict(f, params=official["params"], build=official["build"]),
            "ratio_ours_over_official": {
                "forward_median": _ratio(o["forward"]["median_ms"], f["forward"]["median_ms"]),
                "whole_click_median": _ratio(o["whole_click"]["median_ms"], f["whole_click"]["median_ms"]),
                "forward_paired": paired_ratio(t_fwd["ours"], t_fwd["official"]),
                "whole_click_paired": paired_ratio(t_click["ours"], t_click["official"]),
                "peak_memory": _ratio(o["peak_memory_mb"], f["peak_memory_mb"]),
                "params": _ratio(ours["params"]["total"], official["params"]["total"]),
            },
        })
        if against_fp32:
            # ours in this precision against the official model as it ships (fp32), as the targets read
            rows[-1]["official_fp32_same_rounds"] = {"forward": t_fwd["official_fp32"],
                                                     "whole_click": t_click["official_fp32"]}
            rows[-1]["ratio_ours_over_official_fp32"] = {
                "forward_median": _ratio(o["forward"]["median_ms"], t_fwd["official_fp32"]["median_ms"]),
                "whole_click_median": _ratio(o["whole_click"]["median_ms"], t_click["official_fp32"]["median_ms"]),
                "forward_paired": paired_ratio(t_fwd["ours"], t_fwd["official_fp32"]),
                "whole_click_paired": paired_ratio(t_click["ours"], t_click["official_fp32"])}
        if wrapper is not None:
            g = {"forward": t_fwd["ours_cuda_graph"], "whole_click": t_click["ours_cuda_graph"], **wrapper.counters()}
            g["ratio_over_official"] = {"forward_paired": paired_ratio(t_fwd["ours_cuda_graph"], t_fwd["official"]),
                                        "whole_click_paired": paired_ratio(t_click["ours_cuda_graph"],
                                                                           t_click["official"])}
            if against_fp32:
                g["ratio_over_official_fp32"] = {
                    "forward_paired": paired_ratio(t_fwd["ours_cuda_graph"], t_fwd["official_fp32"]),
                    "whole_click_paired": paired_ratio(t_click["ours_cuda_graph"], t_click["official_fp32"])}
            g["ratio_over_ours_eager"] = {"forward_paired": paired_ratio(t_fwd["ours_cuda_graph"], t_fwd["ours"]),
                                          "whole_click_paired": paired_ratio(t_click["ours_cuda_graph"],
                                                                             t_click["ours"])}
            rows[-1]["ours_cuda_graph"] = g
            print(f"{name:10s} {dtype:5s} ours with CUDA graphs: forward {g['forward']['median_ms']:9.2f} ms, whole "
                  f"click {g['whole_click']['median_ms']:9.2f} ms ({wrapper.captures} recorded, {wrapper.replays} "
                  f"replays, {wrapper.eager_calls} eager calls)", flush=True)
        r = rows[-1]["ratio_ours_over_official"]
        print(f"{name:10s} {dtype:5s} forward ours {o['forward']['median_ms']:9.2f} ms official "
              f"{f['forward']['median_ms']:9.2f} ms (paired ratio {r['forward_paired']:.3f}) | whole click ours "
              f"{o['whole_click']['median_ms']:9.2f} ms official {f['whole_click']['median_ms']:9.2f} ms "
              f"(paired ratio {r['whole_click_paired']:.3f})", flush=True)
    del model, official_model
    free_device_cache(device)
    return rows


def prepare_official_train(cfg, batch, args, device, official_root, who):
    """The official model's training (fp32) on our mapped ``batch`` as a ``TrainingSetup``: its model built
    with torch seeded by ``--seed``, its optimizer, ``official_train_step`` and ``--click-rounds`` rounds of
    ``official_click_rounds``; ``check()`` raises FloatingPointError on a non-finite loss."""
    from adaptiveclick.utils.official import (OFFICIAL_MAX_NUM_NEXT_CLICKS, build_official_model,
                                              build_official_optimizer, official_click_rounds,
                                              official_kwargs_from_cfg, official_train_step, official_training_batch)

    size, img_size, overrides = official_kwargs_from_cfg(cfg)
    torch.manual_seed(args.seed)
    model = build_official_model(official_root, size, img_size, device=device, **overrides).train()
    optimizer = build_official_optimizer(model, official_root)
    official_batch = official_training_batch(batch, device)
    losses = []

    def step():
        losses.append(official_train_step(model, optimizer, official_batch))

    def rounds():
        official_click_rounds(model, official_batch, args.click_rounds, official_root)

    def check():
        bad = [i for i, loss in enumerate(losses) if not torch.isfinite(loss)]
        if bad:
            raise FloatingPointError(f"{who}: non-finite training loss at step(s) {bad}")

    info = {"amp": "none", "optimizer": type(optimizer).__name__, "params": count_parameters(model),
            "param_groups": len(optimizer.param_groups),
            "build": {"size": size, "img_size": img_size, "overrides": overrides}}
    return TrainingSetup(step, rounds if args.click_rounds else None, OFFICIAL_MAX_NUM_NEXT_CLICKS / 2.0, info,
                         check)


def compare_train(name, config_file, cfg, batch_size, args, device, official_root):
    """Training of ours (each ``--amp``) and of the official model (fp32) on the same mapped batch: peak memory
    with each alone, then the steps (and click rounds) of all of them resident, timed interleaved."""
    img_size = int(cfg.MODEL.VIT.IMG_SIZE)
    batch = synthetic_training_batch(cfg, batch_size, seed=args.seed)

    def build(key):
        if key == "official":
            return prepare_official_train(cfg, batch, args, device, official_root, f"official {name}")
        return prepare_train_step(cfg, config_file, batch_size, key, device, args.click_rounds, args.seed, batch)

    keys = list(dict.fromkeys(args.amp)) + ["official"]
    memory = {}
    for key in keys:  # each alone in memory; the last one stays for the timing (one build fewer)
        setup = build(key)
        memory[key] = training_peak_memory(setup, args.click_rounds, device)
        if key != keys[-1]:
            del setup
            free_device_cache(device)
    setups = {key: build(key) for key in keys[:-1]}
    setups[keys[-1]] = setup
    del setup
    timed = time_training_interleaved(setups, batch_size, args.click_rounds, device, args.iters, args.warmup,
                                      f"{name} batch {batch_size}")
    sides = {key: dict(setups[key].info, **memory[key], **timed[key]) for key in keys}
    del setups
    free_device_cache(device)

    official = sides.pop("official")
    rows = []
    for amp, o in sides.items():
        # samples/s is batch / step time: the ratio of throughputs is official time / our time
        ratio = {"samples_per_s": o["samples_per_s"] / official["samples_per_s"],
                 "samples_per_s_paired": 1.0 / paired_ratio(o["step"], official["step"])}
        if args.click_rounds:
            ratio["expected_samples_per_s"] = o["expected_samples_per_s"] / official["expected_samples_per_s"]
            ratio["click_round_ms"] = _ratio(o["click_round_ms"], official["click_round_ms"])
            ratio["click_round_ms_paired"] = paired_ratio(o["click_rounds"], official["click_rounds"])
        ratio["step_peak_memory"] = _ratio(o["step_peak_memory_mb"], official["step_peak_memory_mb"])
        rows.append({"name": name, "config_file": config_file, "device": str(device), "amp": amp, "batch": batch_size,
                     "crop_size": [img_size, img_size], "ours": o, "official": official,
                     "ratio_ours_over_official": ratio})
        print(f"{name:10s} batch {batch_size:3d} ours amp {amp:4s} {o['samples_per_s']:8.3f} samples/s | official fp32 "
              f"{official['samples_per_s']:8.3f} samples/s | ratio {ratio['samples_per_s']:.3f} "
              f"(paired {ratio['samples_per_s_paired']:.3f})", flush=True)
    return rows


def train_table(results):
    return format_table(
        [{"name": r["name"], "batch": r["batch"], "amp": r["amp"], "os": r["ours"]["step"]["median_ms"],
          "fs": r["official"]["step"]["median_ms"], "osps": r["ours"]["samples_per_s"],
          "fsps": r["official"]["samples_per_s"], "r": r["ratio_ours_over_official"]["samples_per_s_paired"],
          "oe": r["ours"].get("expected_samples_per_s"), "fe": r["official"].get("expected_samples_per_s"),
          "re": r["ratio_ours_over_official"].get("expected_samples_per_s"), "om": r["ours"]["step_peak_memory_mb"],
          "fm": r["official"]["step_peak_memory_mb"]} for r in results],
        [("model", "name", "s"), ("batch", "batch", "d"), ("ours amp", "amp", "s"), ("step ours ms", "os", ".1f"),
         ("step official ms", "fs", ".1f"), ("samples/s ours", "osps", ".3f"), ("samples/s official", "fsps", ".3f"),
         ("paired ratio", "r", ".3f"), ("incl. rounds ours", "oe", ".3f"), ("incl. rounds official", "fe", ".3f"),
         ("ratio", "re", ".3f"), ("peak ours MB", "om", ".1f"), ("peak official MB", "fm", ".1f")])


def inference_table(results):
    return format_table(
        [{"name": r["name"], "dtype": r["dtype"], "of": r["ours"]["forward"]["median_ms"],
          "ff": r["official"]["forward"]["median_ms"], "rf": r["ratio_ours_over_official"]["forward_paired"],
          "ow": r["ours"]["whole_click"]["median_ms"], "fw": r["official"]["whole_click"]["median_ms"],
          "rw": r["ratio_ours_over_official"]["whole_click_paired"], "om": r["ours"]["peak_memory_mb"],
          "rw32": r.get("ratio_ours_over_official_fp32", {}).get("whole_click_paired"),
          "fm": r["official"]["peak_memory_mb"], "op": r["ours"]["params"]["total"] / 1e6,
          "fp": r["official"]["params"]["total"] / 1e6} for r in results],
        [("model", "name", "s"), ("dtype", "dtype", "s"), ("fwd ours ms", "of", ".2f"),
         ("fwd official ms", "ff", ".2f"), ("paired ratio", "rf", ".3f"), ("click ours ms", "ow", ".2f"),
         ("click official ms", "fw", ".2f"), ("paired ratio", "rw", ".3f"),
         ("click vs official fp32", "rw32", ".3f"), ("peak ours MB", "om", ".1f"),
         ("peak official MB", "fm", ".1f"), ("params ours M", "op", ".2f"), ("params official M", "fp", ".2f")])


def main(argv=None):
    from adaptiveclick.utils.official import DEFAULT_OFFICIAL_ROOT, OFFICIAL_ROOT_ENV

    ap = benchmark_parser(__doc__, os.path.join("output", "benchmarks", "official.json"), iters=None, warmup=None,
                          opts_help="overrides of our config(s); the official model follows them", clicks=True,
                          iters_help="; default 50, 10 with --train", warmup_help="; default 5, 2 with --train")
    ap.add_argument("--official-root", default=os.environ.get(OFFICIAL_ROOT_ENV, DEFAULT_OFFICIAL_ROOT),
                    help=f"checkout of github.com/lab206/AdaptiveClick (default ${OFFICIAL_ROOT_ENV} or "
                         f"{DEFAULT_OFFICIAL_ROOT})")
    ap.add_argument("--sizes", nargs="+", default=["base", "huge"], choices=sorted(SIZE_CONFIGS),
                    help="model sizes (our SBD configs); ignored with --config-file")
    ap.add_argument("--config-file", default=None, metavar="FILE",
                    help="one of our configs instead of --sizes (it must have an official equivalent)")
    ap.add_argument("--train", action="store_true", help="compare training steps instead of inference clicks")
    ap.add_argument("--batch", type=int, default=None,
                    help="training batch (--train; default 16 for ViT-B, 8 for ViT-L/H and other configs)")
    ap.add_argument("--amp", nargs="+", default=None, choices=sorted(AMP_CHOICES),
                    help="our mixed-precision settings (--train; default none bf16 on CUDA, none on the CPU); "
                         "the official model always trains in fp32 as its recipe does")
    ap.add_argument("--cuda-graph", action="store_true",
                    help="inference: also time ours with its network replayed from CUDA graphs "
                         "(model.graph_network), in the same rounds; recorded at the second call, so use "
                         "--warmup >= 2; on the CPU it runs eagerly (a check of the tool, not of speed)")
    ap.add_argument("--click-rounds", type=int, default=3,
                    help="no-grad click rounds timed together (--train; 0 = skip)")
    args = ap.parse_args(argv)
    # inference: median of 50 after 5; training: median of 10 after 2
    args.iters = args.iters if args.iters is not None else (10 if args.train else 50)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.train else 5)
    # an unset --dtype / --amp becomes the device's default here (fp32 / none only on the CPU)
    device = check_cli_args(ap, args, {"--iters": 1, "--warmup": 0, "--num-clicks": 1, "--batch": 1,
                                       "--click-rounds": 0})
    warn_few_iters(args.iters)
    if args.cuda_graph and args.train:
        ap.error("--cuda-graph times inference clicks; it does not apply to --train")
    if args.cuda_graph and device.type != "cuda":
        print("note: --cuda-graph on the CPU runs our network eagerly (CUDA graphs need a CUDA device)", flush=True)
    runs = [(os.path.splitext(os.path.basename(args.config_file))[0], args.config_file)] if args.config_file \
        else [(s, SIZE_CONFIGS[s]) for s in dict.fromkeys(args.sizes)]
    missing = [c for _, c in runs if not os.path.isfile(c)]
    if missing:
        ap.error(f"config file(s) not found: {', '.join(missing)}")
    from adaptiveclick.utils.official import import_official, import_official_training, official_kwargs_from_cfg

    cfgs = []
    for name, config_file in runs:
        cfg = cli_load_config(ap, config_file, args.opts, device)
        try:
            official_kwargs_from_cfg(cfg)
        except ValueError as e:
            ap.error(f"{config_file}: {e}")
        if args.train:
            # the official model takes inputs of exactly its IMG_SIZE: train both at that crop
            size = int(cfg.MODEL.VIT.IMG_SIZE)
            cfg = cfg.clone()
            cfg.defrost()
            cfg.INPUT.AUG.CROP_SIZE = [size, size]
            cfg.freeze()
            check_click_rounds(ap, args.click_rounds, cfg, config_file)
        cfgs.append((name, config_file, cfg))
    try:
        api = import_official(args.official_root)
        stand_ins = set(api.stand_ins) | set(import_official_training(api.root).stand_ins if args.train else ())
        root = api.root
    except (ValueError, ImportError) as e:
        ap.error(f"--official-root: {e}")

    config = {"runs": [{"name": n, "config_file": c} for n, c in runs], "overrides": list(args.opts),
              "official_root": root, "official_stand_ins": sorted(stand_ins),
              "device": str(device), "iters": args.iters, "warmup": args.warmup, "statistic": "median",
              "weights": "random"}
    if args.train:
        benchmark = "official_vs_ours_train"
        config.update(mode="train", amp=args.amp, official_amp="none", click_rounds=args.click_rounds,
                      data="synthetic dataset images mapped once by ClickTrainingMapper, same batch every step")
    else:
        benchmark = "official_vs_ours"
        config.update(mode="inference", dtypes=args.dtype, num_clicks=args.num_clicks, batch=1,
                      cuda_graph=args.cuda_graph)
    results = []
    for k, (name, config_file, cfg) in enumerate(cfgs):
        if args.train:
            batch = args.batch or TRAIN_BATCH.get(name, 8)
            results += compare_train(name, config_file, cfg, batch, args, device, root)
        else:
            results += compare(name, config_file, cfg, args, device, root)
        if k + 1 < len(cfgs):  # what is measured survives a time limit
            save_report(benchmark, config, device, results, args.output, complete=False)
    print(train_table(results) if args.train else inference_table(results))
    return save_report(benchmark, config, device, results, args.output)


if __name__ == "__main__":
    main()
