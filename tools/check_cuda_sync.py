#!/usr/bin/env python
"""Does a click make the host wait for the GPU?  ``torch.cuda.set_sync_debug_mode`` on the network and the click.

After ``--warmup`` untimed clicks (the deformable-attention op reads its index tensors once, the PMMD encoder
makes them once per input size), with the debug mode set to ``"warn"``:

* ``network``: the network on preprocessed inputs (``model._network``, i.e. ``predict``: ViT, pyramid, PMMD,
  CAMD); the goal is **zero** synchronising calls;
* ``whole_click``: ``model([{"image", "clicks", "prev_mask"}])`` from host tensors, sigmoid, threshold and the
  mask copied back: at least the final device-to-host copy synchronises, by design;
* ``predictor_click``: ``InteractivePredictor.add_click`` with the config's zoom-in and flip (the protocol's
  click, as an annotation tool makes it): by design one flag of the model's input checks, with zoom-in the
  previous mask's row and column flags copied to the host for the region, and the probabilities copied back;
* ``predictor_click_graph``: the same with ``cuda_graph=True`` after warm-up clicks that record the input sizes
  (the network replayed from a CUDA graph: the operators left are those around it; ``cuda_graph`` in the JSON
  counts the recordings and the replays of the measured clicks);
* ``training_step`` and ``click_round`` (``--train-batch`` samples, default 4; 0 skips them): the trainer's step
  (``IterativeClickTrainer.run_step`` without click rounds: forward, losses, backward, optimizer, with
  ``--train-amp``, default bf16 on CUDA) and one no-grad click round, on a separate model in train mode fed mapped
  synthetic samples (``adaptiveclick.utils.bench.prepare_train_step``); by design a few per step: the input
  checks' flag, the targets' ``unique``, the matching costs and the losses copied to the host, the gradients'
  finiteness flag (docs/speed.md, "Host synchronisations of a training step").

Every synchronising call is recorded with the line of our code that made it (PyTorch reports each as a
``UserWarning``); the JSON lists them per stage and the exit status is 1 when the network made any.  Each stage
also gets the ATen operators one run dispatches (``operators``: compute = kernel launches, metadata, host reads;
``adaptiveclick.utils.op_count``), what an eager click costs the host.  On the
CPU (no CUDA) the same steps run without the debug mode, as a dry run of this script (``"sync_debug":
"unavailable"``).

    python tools/check_cuda_sync.py --device cuda                      # ViT-B/448
    python tools/check_cuda_sync.py --config-file configs/synthetic/tiny.yaml --size 128 --device cpu
"""

import os
import sys
import traceback
import warnings

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from adaptiveclick.utils.bench import (AMP_CHOICES, benchmark_parser, build_benchmark_model,  # noqa: E402
                                       check_cli_args, cli_load_config, click_batch, click_inputs, forward_only_fn,
                                       prepare_train_step, save_report, synchronize, whole_click_fn)
from adaptiveclick.utils.op_count import count_operators  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _our_frame():
    """``file:line`` of the innermost frame of this repository's package (where a sync was asked for)."""
    package = os.path.join(REPO, "adaptiveclick")
    for frame in reversed(traceback.extract_stack()[:-2]):
        if frame.filename.startswith(package):
            return f"{os.path.relpath(frame.filename, REPO)}:{frame.lineno}"
    return "outside adaptiveclick"


def record_syncs(fn, device):
    """Run ``fn()`` with the CUDA sync debug mode on "warn"; returns (result, [{"message", "where"}])."""
    events = []
    if device.type != "cuda":
        return fn(), None
    original_showwarning = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if "synchroniz" in str(message).lower():
            events.append({"message": str(message).splitlines()[0][:300], "where": _our_frame()})
        else:
            original_showwarning(message, category, filename, lineno, file, line)

    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = showwarning
        torch.cuda.set_sync_debug_mode("warn")
        try:
            result = fn()
        finally:
            torch.cuda.set_sync_debug_mode(previous)
            warnings.showwarning = original_showwarning
    return result, events


def predictor_click_fn(model, cfg, image, clicks, device, cuda_graph=False):
    """A no-argument callable adding the next click of ``clicks`` (cycled) to an ``InteractivePredictor`` on
    ``image`` with ``cfg.TEST.NOC``'s zoom-in, flip and threshold (and ``cuda_graph``).  The clicks accumulate, so
    every call after the first has a previous mask (and, with zoom-in, a region of it)."""
    from adaptiveclick.evaluation import ZoomInParams
    from adaptiveclick.inference import InteractivePredictor

    noc = cfg.TEST.NOC
    predictor = InteractivePredictor(model, device=device, flip=bool(noc.FLIP), threshold=noc.PRED_THRESHOLD,
                                     zoom_in=ZoomInParams.from_config(noc.ZOOM_IN) if noc.ZOOM_IN.ENABLED else False,
                                     cuda_graph=cuda_graph)
    predictor.set_image(image)
    state = {"n": 0}

    def click():
        row, col, positive = (int(v) for v in clicks[state["n"] % len(clicks)])
        state["n"] += 1
        return predictor.add_click(row, col, positive=bool(positive))

    return click


def measure_stage(fn, device, iters):
    """``iters`` runs of ``fn`` under the sync debug mode (CUDA), then one more counting its operators."""
    events_all = []
    for _ in range(iters):
        _, events = record_syncs(fn, device)
        if events is not None:
            events_all += events
    return {"syncs": None if device.type != "cuda" else len(events_all) / iters, "events": events_all[:50],
            # one more run, outside the debug mode: the operators it dispatches (kernel launches)
            "operators": count_operators(fn)[0]}


def main(argv=None):
    ap = benchmark_parser(__doc__, os.path.join("output", "benchmarks", "cuda_sync.json"), iters=1, warmup=2)
    ap.add_argument("--config-file", default="configs/sbd/adaptiveclick_vit_b_448.yaml", metavar="FILE")
    ap.add_argument("--size", type=int, default=448, help="square image side in pixels")
    ap.add_argument("--num-clicks", type=int, default=5, help="clicks in the input")
    ap.add_argument("--train-batch", type=int, default=4,
                    help="samples of the training_step and click_round stages (0 = skip them)")
    ap.add_argument("--train-amp", default=None, choices=sorted(AMP_CHOICES),
                    help="autocast of the training step (default: bf16 on CUDA, none on the CPU)")
    args = ap.parse_args(argv)
    device = check_cli_args(ap, args, {"--iters": 1, "--warmup": 1, "--size": 32, "--num-clicks": 1,
                                       "--train-batch": 0})
    amp = args.train_amp or ("bf16" if device.type == "cuda" else "none")
    if not os.path.isfile(args.config_file):
        ap.error(f"config file not found: {args.config_file}")
    cfg = cli_load_config(ap, args.config_file, args.opts, device)
    model = build_benchmark_model(cfg, seed=args.seed)
    image, clicks, prev = click_inputs(args.size, args.num_clicks, seed=args.seed)
    threshold = cfg.TEST.NOC.PRED_THRESHOLD

    whole_click = whole_click_fn(model, image, clicks, prev, threshold, device)
    network = forward_only_fn(model, click_batch(image, clicks, prev))  # model._network on preprocessed inputs
    predictor_click = predictor_click_fn(model, cfg, image, clicks, device)

    with torch.no_grad():
        for _ in range(args.warmup):
            whole_click()
            network()
            predictor_click()
        synchronize(device)
        stages = {}
        for name, fn in (("network", network), ("whole_click", whole_click), ("predictor_click", predictor_click)):
            stages[name] = measure_stage(fn, device, args.iters)
        # the same click with the network replayed from CUDA graphs (cuda_graph=True; eager off CUDA): the
        # warm-up records each input size (the image's at a session's first click only, the zoom-in crop's at
        # its second), so that the measured clicks replay and no capture runs under the debug or counting modes
        graphed_click = predictor_click_fn(model, cfg, image, clicks, device, cuda_graph=True)
        for _ in range(args.warmup + 3):
            graphed_click()
        synchronize(device)
        wrapper = model.compiled_network
        before = wrapper.replays
        stages["predictor_click_graph"] = measure_stage(graphed_click, device, args.iters)
        stages["predictor_click_graph"]["cuda_graph"] = {
            "captures": wrapper.captures, "replays_measured": wrapper.replays - before,
            "eager_calls": wrapper.eager_calls, "failure": wrapper.failure_repr}
        model.uncompile_network()
    if args.train_batch:
        del whole_click, network, predictor_click, graphed_click, model  # the training model's turn
        setup = prepare_train_step(cfg, args.config_file, args.train_batch, amp, device, click_rounds=1,
                                   seed=args.seed)
        for _ in range(args.warmup):
            setup.step()
            setup.rounds()
        synchronize(device)
        stages["training_step"] = measure_stage(setup.step, device, args.iters)
        stages["click_round"] = measure_stage(setup.rounds, device, args.iters)
    status = "unavailable" if device.type != "cuda" else "warn"
    for name, stage in stages.items():
        where = sorted({e["where"] for e in stage["events"]})
        ops = stage["operators"]
        print(f"{name:15s} synchronising calls per run: {stage['syncs'] if stage['syncs'] is not None else 'n/a'}"
              + (f"  at {', '.join(where)}" if where else "")
              + f"; operators: {ops['compute']} compute, {ops['metadata']} metadata, {ops['host_reads']} host reads",
              flush=True)
    report = save_report("cuda_sync", {"config_file": args.config_file, "overrides": list(args.opts),
                                       "image_size": [args.size, args.size], "num_clicks": args.num_clicks,
                                       "warmup": args.warmup, "iters": args.iters, "sync_debug": status,
                                       "train_batch": args.train_batch, "amp": amp if args.train_batch else None},
                         device, stages, args.output)
    if device.type == "cuda" and stages["network"]["syncs"]:
        print("the network's forward synchronises with the host: see 'events' in the JSON", file=sys.stderr)
        raise SystemExit(1)
    return report


if __name__ == "__main__":
    main()
