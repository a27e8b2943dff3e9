#!/usr/bin/env python
"""Time the MSDeformAttn implementations on the PMMD encoder shapes and write JSON.

Shapes (model.md §3): a 448 input gives levels at strides 32/16/8 = 14x14, 28x28, 56x56 (S = Lq = 4116 tokens,
every token queries), hidden 256 split into 8 heads of 32, 3 levels, 4 points.  For each implementation usable
on the device: forward time, and forward+backward time, median over repeated synchronised runs.

    python tools/benchmark_msda.py --device cpu --batch-sizes 1 16 --output output/benchmarks/msda_cpu.json
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from adaptiveclick.layers.ms_deform_attn import IMPLS, extension_status, ms_deform_attn, resolve_impl  # noqa: E402
from adaptiveclick.utils.bench import HelpFormatter, time_fn  # noqa: E402
from adaptiveclick.utils.run_info import run_info, write_json  # noqa: E402


def make_inputs(batch, image_size, device, dtype, heads=8, head_dim=32, points=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor([[image_size // s, image_size // s] for s in (32, 16, 8)], dtype=torch.long)
    areas = shapes.prod(1)
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    s = int(areas.sum())
    levels = shapes.shape[0]
    value = torch.randn(batch, s, heads, head_dim, generator=g)
    # reference point plus a few pixels of offset, as after training; some land outside the map
    loc = torch.rand(batch, s, heads, levels, points, 2, generator=g) * 1.1 - 0.05
    weights = torch.randn(batch, s, heads, levels * points, generator=g).softmax(-1)
    weights = weights.view(batch, s, heads, levels, points)
    cast = dict(device=device, dtype=dtype)
    return value.to(**cast), shapes.to(device), starts.to(device), loc.to(**cast), weights.to(**cast)


def bench_one(impl, inputs, device, repeats, warmup):
    value, shapes, starts, loc, weights = inputs

    def forward():
        with torch.no_grad():
            ms_deform_attn(value, shapes, starts, loc, weights, impl=impl)

    leaves = [t.detach().clone().requires_grad_(True) for t in (value, loc, weights)]
    grad_out = None

    def forward_backward():
        nonlocal grad_out
        out = ms_deform_attn(leaves[0], shapes, starts, leaves[1], leaves[2], impl=impl)
        if grad_out is None:
            grad_out = torch.randn_like(out)
        torch.autograd.grad(out, leaves, grad_out)

    fwd = time_fn(forward, warmup, repeats, device)["median_ms"]
    fwd_bwd = time_fn(forward_backward, warmup, repeats, device)["median_ms"]
    return {"forward_ms": round(fwd, 3), "forward_backward_ms": round(fwd_bwd, 3)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda[:N]")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16], help="batch sizes to time")
    ap.add_argument("--image-size", type=int, default=448,
                    help="input side in pixels the PMMD shapes derive from (a multiple of 32)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                    help="dtype of the operator's inputs")
    ap.add_argument("--impls", nargs="+", default=None, choices=IMPLS, help="default: all usable on the device")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs (default 50 on CUDA, 7 on CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 10 on CUDA, 1 on CPU)")
    ap.add_argument("--output", default=None, help="JSON path (default output/benchmarks/msda_<device>.json)")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    repeats = args.repeats or (50 if device.type == "cuda" else 7)
    warmup = args.warmup if args.warmup is not None else (10 if device.type == "cuda" else 1)
    impls = args.impls or [i for i in IMPLS if _usable(i, device)]
    if args.image_size % 32:
        ap.error("--image-size must be a multiple of 32")

    results = []
    for batch in args.batch_sizes:
        inputs = make_inputs(batch, args.image_size, device, dtype)
        row = {"batch": batch, "queries": inputs[3].shape[1]}
        for impl in impls:
            row[impl] = bench_one(impl, inputs, device, repeats, warmup)
            print(f"batch {batch:3d}  {impl:8s} forward {row[impl]['forward_ms']:10.2f} ms   "
                  f"forward+backward {row[impl]['forward_backward_ms']:10.2f} ms", flush=True)
        if "pytorch" in row:
            for impl in impls:
                if impl != "pytorch":
                    row[f"speedup_{impl}_vs_pytorch"] = {
                        k: round(row["pytorch"][k] / row[impl][k], 2) for k in row[impl]}
        results.append(row)

    report = {
        "benchmark": "ms_deform_attn",
        "config": {"image_size": args.image_size, "levels_strides": [32, 16, 8], "hidden": 256, "heads": 8,
                   "points": 4, "dtype": args.dtype, "repeats": repeats, "warmup": warmup,
                   "statistic": "median"},
        "extension": extension_status(),
        "run": run_info(device),
        "results": results,
    }
    write_json(report, args.output or os.path.join("output", "benchmarks", f"msda_{device.type}.json"))
    return report


def _usable(impl, device):
    try:
        return resolve_impl(impl, device) == impl
    except RuntimeError:
        return False


if __name__ == "__main__":
    main()
