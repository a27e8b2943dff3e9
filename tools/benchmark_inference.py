#!/usr/bin/env python
"""Milliseconds per click of AdaptiveClick at batch 1, random weights, eval mode; writes JSON and a table.

For every config and precision (autocast dtype; fp32 = autocast off), median over ``--iters`` synchronised
runs after ``--warmup`` untimed ones, of

* ``forward``: the network alone on preprocessed inputs (``model.predict``: ViT, pyramid, PMMD, CAMD);
* ``whole_click``: one click as an application sees it, from a uint8 (H, W, 3) image, ``--num-clicks``
  clicks and the previous probabilities: ``model([{"image", "clicks", "prev_mask"}])`` (click disks,
  normalisation, padding, network, query merge, upsampling to the image size), sigmoid, threshold
  (``TEST.NOC.PRED_THRESHOLD``) and the binary mask back in host memory;
* with ``--predictor``: ``InteractivePredictor.add_click`` (adaptiveclick.inference) on a ``--size`` image,
  zoom-in and flip off (``plain``) and on (``zoom_in+flip``); the click history is reset (inside the timed
  call) after every ``--predictor-clicks`` clicks; with ``--compile`` also both settings with
  ``compile=True`` (``plain+compile``, ``zoom_in+flip+compile``: torch.compile of the network, CUDA graphs on
  CUDA, compiled during the warm-up; the JSON says whether compiling fell back to eager); with
  ``--cuda-graph`` also both with ``cuda_graph=True`` (``plain+graph``, ``zoom_in+flip+graph``: the eager
  network recorded as CUDA graphs at the second click of each input size and replayed; the JSON counts the
  recordings, replays and eager calls);

plus the peak memory (CUDA: max allocated tensor memory; CPU: process-wide max RSS, see
adaptiveclick/utils/bench.py) and the parameter count.  Default precisions: fp32 on the CPU (bf16 autocast is
slow on CPUs without bf16 units: ~30 s per ViT-B click on an AVX2 CPU), fp32 and bf16 on CUDA.  The JSON's
``run`` records the device, the CPU model and the load average (see adaptiveclick/utils/run_info.py).

    python tools/benchmark_inference.py --device cuda --dtype fp32 bf16            # ViT-B/L/H, 448 px
    python tools/benchmark_inference.py --configs configs/sbd/adaptiveclick_vit_b_448.yaml --device cuda \\
        --dtype bf16 --predictor --compile --warmup 10
    python tools/benchmark_inference.py --config-file configs/synthetic/tiny.yaml --size 128 --iters 3 \\
        --warmup 1 --device cpu --output /tmp/inference.json [KEY VALUE ...]
"""

import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from adaptiveclick.utils.bench import (  # noqa: E402
    autocast, benchmark_parser, build_benchmark_model, check_cli_args, cli_load_config, click_inputs,
    count_parameters, format_table, free_device_cache, load_config, measure_click_model, model_for_dtype,
    peak_memory_mb, reset_peak_memory, save_report, time_fn, warn_few_iters)

DEFAULT_CONFIGS = [f"configs/sbd/adaptiveclick_vit_{s}_448.yaml" for s in ("b", "l", "h")]
PREDICTOR_SETTINGS = {"plain": (False, False), "zoom_in+flip": (True, True)}


def check_common_args(ap, args):
    """argparse errors (exit 2, message naming the value) for the measurement arguments (an unset --dtype
    becomes the device's default); returns the device."""
    return check_cli_args(ap, args, {"--iters": 1, "--warmup": 0, "--size": 32, "--num-clicks": 1})


def import_interactive_predictor():
    """``adaptiveclick.inference.InteractivePredictor``, or RuntimeError saying that it is not available."""
    try:
        from adaptiveclick.inference import InteractivePredictor
    except ImportError as e:
        raise RuntimeError(f"--predictor needs adaptiveclick.inference.InteractivePredictor, which cannot be "
                           f"imported here ({e})") from e
    return InteractivePredictor


def zoom_in_params(cfg):
    """The protocol's zoom-in parameters of ``cfg.TEST.NOC.ZOOM_IN``."""
    from adaptiveclick.evaluation import ZoomInParams

    z = cfg.TEST.NOC.ZOOM_IN
    return ZoomInParams.from_config(z)


def predictor_settings(compile_too, graph_too=False):
    """(name, zoom_in, flip, compile, cuda_graph) of the timed predictor settings; ``+compile`` variants with
    ``--compile``, ``+graph`` variants (``cuda_graph=True``) with ``--cuda-graph``."""
    out = [(name, z, f, False, False) for name, (z, f) in PREDICTOR_SETTINGS.items()]
    if compile_too:
        out += [(name + "+compile", z, f, True, False) for name, (z, f) in PREDICTOR_SETTINGS.items()]
    if graph_too:
        out += [(name + "+graph", z, f, False, True) for name, (z, f) in PREDICTOR_SETTINGS.items()]
    return out


def measure_predictor(model, cfg, image, device, dtype, iters, warmup, clicks_per_session, seed, compile_too=False,
                      graph_too=False):
    """ms per ``add_click`` of ``InteractivePredictor`` in each setting of :func:`predictor_settings` (zoom-in
    parameters and threshold of ``cfg.TEST.NOC``).  Compiled settings compile during the warm-up clicks (one
    compilation per input shape: the full image, then the zoom-in target size); graphed settings record each
    shape at its second click."""
    InteractivePredictor = import_interactive_predictor()
    out = {}
    h, w = image.shape[:2]
    for name, zoom_in, flip, compiled, graphed in predictor_settings(compile_too, graph_too):
        predictor = InteractivePredictor(model, device=device, zoom_in=zoom_in_params(cfg) if zoom_in else False,
                                         flip=flip, threshold=cfg.TEST.NOC.PRED_THRESHOLD, compile=compiled,
                                         cuda_graph=graphed)
        predictor.set_image(image)
        rng = np.random.default_rng(seed)
        points = [(int(r), int(c)) for r, c in zip(rng.integers(h // 4, 3 * h // 4, 64),
                                                   rng.integers(w // 4, 3 * w // 4, 64))]
        state = {"n": 0}

        def add_click():
            if state["n"] and state["n"] % clicks_per_session == 0:
                predictor.reset()
            row, col = points[state["n"] % len(points)]
            positive = state["n"] % clicks_per_session == 0 or bool(state["n"] % 2)
            state["n"] += 1
            with torch.no_grad(), autocast(device, dtype):
                return predictor.add_click(row, col, positive=positive)

        reset_peak_memory(device)
        timing = time_fn(add_click, warmup, iters, device, label=f"predictor {name} {dtype}")
        peak = peak_memory_mb(device)
        out[name] = dict(timing, zoom_in=zoom_in, flip=flip, compile=compiled, cuda_graph=graphed,
                         peak_memory_mb=peak["peak_memory_mb"], peak_memory_kind=peak["kind"])
        wrapper = model.compiled_network  # compile=True / cuda_graph=True: how its calls ran
        if wrapper is not None:
            if compiled:
                out[name].update(compile_mode=wrapper.mode, compiled_calls=wrapper.compiled_calls,
                                 compile_failure=wrapper.failure_repr)
            else:
                out[name].update(graph_captures=wrapper.captures, graph_replays=wrapper.replays,
                                 graph_failure=wrapper.failure_repr)
            out[name]["eager_calls"] = wrapper.eager_calls
            model.uncompile_network()
    return out


def model_name(config_file):
    return os.path.splitext(os.path.basename(config_file))[0]


def _finite_or_error(value, where):
    if not (isinstance(value, float) and math.isfinite(value)):
        raise RuntimeError(f"{where}: non-finite measurement {value!r}")
    return value


def run(args, device, configs, save_partial=None):
    """Rows of every config x dtype; ``save_partial(results)`` after each row but the last."""
    results = []
    for k, config_file in enumerate(configs):
        cfg = load_config(config_file, args.opts, device)
        model = build_benchmark_model(cfg, seed=args.seed)
        params = count_parameters(model)
        image, clicks, prev = click_inputs(args.size, args.num_clicks, seed=args.seed)
        for j, dtype in enumerate(args.dtype):
            net = model_for_dtype(model, dtype)  # int8: a quantised copy
            r = measure_click_model(net, image, clicks, prev, device, dtype, args.iters, args.warmup,
                                    cfg.TEST.NOC.PRED_THRESHOLD, label=model_name(config_file))
            row = {"config_file": config_file, "model": model_name(config_file),
                   "meta_architecture": cfg.MODEL.META_ARCHITECTURE, "device": str(device), "dtype": dtype,
                   "image_size": [args.size, args.size], "num_clicks": args.num_clicks, "batch": 1,
                   "params": params, **r}
            if args.predictor:
                row["predictor_add_click"] = measure_predictor(net, cfg, image, device, dtype, args.iters,
                                                               args.warmup, args.predictor_clicks, args.seed,
                                                               compile_too=args.compile,
                                                               graph_too=args.cuda_graph)
            for key in ("forward", "whole_click"):
                _finite_or_error(row[key]["median_ms"], f"{config_file} {dtype} {key}")
            results.append(row)
            if save_partial is not None and (k + 1 < len(configs) or j + 1 < len(args.dtype)):
                save_partial(results)  # what is measured survives a time limit (compiling can take minutes)
            print(f"{row['model']:28s} {dtype:5s} forward {r['forward']['median_ms']:9.2f} ms   whole click "
                  f"{r['whole_click']['median_ms']:9.2f} ms   peak {r['peak_memory_mb']:9.1f} MB", flush=True)
        del model
        free_device_cache(device)
    return results


def table_rows(results):
    rows = []
    for r in results:
        row = {"model": r["model"], "dtype": r["dtype"], "params_m": r["params"]["total"] / 1e6,
               "forward": r["forward"]["median_ms"], "whole": r["whole_click"]["median_ms"],
               "peak": r["peak_memory_mb"]}
        for name, p in r.get("predictor_add_click", {}).items():
            row[f"pred_{name}"] = p["median_ms"]
        rows.append(row)
    return rows


TABLE_COLUMNS = [("model", "model", "s"), ("dtype", "dtype", "s"), ("params (M)", "params_m", ".2f"),
                 ("forward ms", "forward", ".2f"), ("whole click ms", "whole", ".2f"),
                 ("peak MB", "peak", ".1f")]


def main(argv=None):
    ap = benchmark_parser(__doc__, os.path.join("output", "benchmarks", "inference.json"), iters=50, warmup=5,
                          opts_help="config overrides applied to every config", clicks=True)
    ap.add_argument("--size", type=int, default=448, help="square image side in pixels")
    ap.add_argument("--config-file", default=None, metavar="FILE", help="one config to time")
    ap.add_argument("--configs", nargs="+", default=None, metavar="FILE",
                    help="configs to time (with --config-file: both); default: "
                         + " ".join(DEFAULT_CONFIGS))
    ap.add_argument("--predictor", action="store_true",
                    help="also time InteractivePredictor.add_click, zoom-in/flip off and on")
    ap.add_argument("--predictor-clicks", type=int, default=20,
                    help="clicks per predictor session before reset() (with --predictor)")
    ap.add_argument("--cuda-graph", action="store_true",
                    help="with --predictor, also time the predictor with cuda_graph=True (the eager network recorded "
                         "as CUDA graphs, each input size at its second click; CUDA only, eager elsewhere)")
    ap.add_argument("--compile", action="store_true",
                    help="with --predictor, also time the predictor with compile=True (torch.compile of the "
                         "network; CUDA graphs on CUDA); use --warmup >= 2, compilation happens in the warm-up")
    args = ap.parse_args(argv)

    device = check_common_args(ap, args)
    warn_few_iters(args.iters)
    configs = ([args.config_file] if args.config_file else []) + (args.configs or [])
    configs = configs or DEFAULT_CONFIGS
    missing = [c for c in configs if not os.path.isfile(c)]
    if missing:
        ap.error(f"config file(s) not found: {', '.join(missing)}")
    for config_file in configs:
        cli_load_config(ap, config_file, args.opts, device)
    if args.compile and not args.predictor:
        ap.error("--compile times the predictor: add --predictor")
    if args.cuda_graph and not args.predictor:
        ap.error("--cuda-graph times the predictor: add --predictor")
    if args.predictor_clicks < 1:
        ap.error(f"--predictor-clicks must be >= 1, got {args.predictor_clicks}")
    if args.predictor:
        try:
            import_interactive_predictor()
        except RuntimeError as e:
            ap.exit(1, f"{ap.prog}: error: {e}\n")
    if device.type == "cpu":
        for dtype in args.dtype:
            if dtype == "fp16":
                print("note: fp16 autocast on the CPU is slow on most CPUs; bf16 is the CPU half precision",
                      flush=True)

    config = {
        "configs": configs, "overrides": list(args.opts), "device": str(device), "dtypes": args.dtype,
        "image_size": [args.size, args.size], "num_clicks": args.num_clicks, "batch": 1, "iters": args.iters,
        "warmup": args.warmup, "statistic": "median", "weights": "random", "predictor": args.predictor,
        "predictor_clicks_per_session": args.predictor_clicks, "compile": args.compile,
        "cuda_graph": args.cuda_graph}
    results = run(args, device, configs,
                  lambda partial: save_report("inference", config, device, partial, args.output, complete=False))
    columns = list(TABLE_COLUMNS)
    if args.predictor:
        columns += [(f"add_click {n} ms", f"pred_{n}", ".2f")
                    for n, *_ in predictor_settings(args.compile, args.cuda_graph)]
    print(format_table(table_rows(results), columns))
    return save_report("inference", config, device, results, args.output)


if __name__ == "__main__":
    main()
