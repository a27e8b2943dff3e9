#!/usr/bin/env python
"""Speed of the NoC protocol alone (oracle, IoU, thresholds, transforms) with instant fake predictors.

100 instances of 512 x 512 (random ellipses), 20 clicks each (no early stop), in two settings:
* ``plain``: a probability predictor that returns a precomputed map (no test-time transform);
* ``zoom_in+flip``: the official transforms (zoom-in 448, flip) around a logit network whose output is
  one elementwise operation on its (cropped) input.
Reports clicks per second of the whole loop and the share spent in the fake model, and writes JSON:

    python tools/benchmark_noc_protocol.py [--device cpu] [--instances 100] [--size 512]
"""

import argparse
import os
import sys
import time

import cv2
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from adaptiveclick.evaluation import InteractiveSession, NoCProtocol, ZoomInParams  # noqa: E402
from adaptiveclick.utils.bench import HelpFormatter  # noqa: E402
from adaptiveclick.utils.run_info import run_info, write_json  # noqa: E402


def make_instances(n, size, seed=0):
    """(image, gt, imperfect prediction) triples; the prediction is the object shifted and enlarged."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        gt = np.zeros((size, size), dtype=np.uint8)
        centre = tuple(int(v) for v in rng.integers(size // 4, 3 * size // 4, 2))
        axes = tuple(int(v) for v in rng.integers(size // 16, size // 4, 2))
        cv2.ellipse(gt, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        pred = np.roll(cv2.dilate(gt, np.ones((9, 9), np.uint8)), (7, -5), axis=(0, 1))
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        image[..., 0] = pred * 255  # what the fake logit network "sees"
        out.append((image, gt.astype(bool), pred.astype(np.float32)))
    return out


class InstantLogitNetwork:
    """Logits from the red channel of its input: one elementwise operation, no learning."""

    def __init__(self, device):
        self.device = torch.device(device)

    def predict_logits(self, images, prev_masks, clicks):
        return (images[:, :1] - 127.5) * 0.1


def run(instances, protocol, make_predictor):
    clicks = 0
    model_time = 0.0
    start = time.perf_counter()
    for image, gt, pred in instances:
        result = InteractiveSession(make_predictor(pred), image, gt, protocol=protocol).run()
        clicks += len(result.ious)
        model_time += result.model_time
    wall = time.perf_counter() - start
    return {"clicks": clicks, "seconds": round(wall, 3), "clicks_per_second": round(clicks / wall, 1),
            "ms_per_click": round(1000 * wall / clicks, 3),
            "model_ms_per_click": round(1000 * model_time / clicks, 3),
            "protocol_ms_per_click": round(1000 * (wall - model_time) / clicks, 3)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--device", default="cpu", help="device of the zoom-in/flip tensors")
    ap.add_argument("--instances", type=int, default=100, help="random ellipse instances per setting")
    ap.add_argument("--size", type=int, default=512, help="square image side in pixels")
    ap.add_argument("--max-clicks", type=int, default=20, help="clicks per instance (no early stop)")
    ap.add_argument("--output", default=None,
                    help="JSON path (default output/benchmarks/noc_protocol_<device>.json)")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    instances = make_instances(args.instances, args.size)
    settings = {
        "plain": (NoCProtocol(max_clicks=args.max_clicks, stop_iou=1.01), lambda pred: (lambda im, c, p: pred)),
        "zoom_in+flip": (NoCProtocol(max_clicks=args.max_clicks, stop_iou=1.01, zoom_in=ZoomInParams(), flip=True),
                         lambda pred: InstantLogitNetwork(device)),
    }
    results = {}
    for name, (protocol, make_predictor) in settings.items():
        run(instances[:2], protocol, make_predictor)  # warm-up
        results[name] = run(instances, protocol, make_predictor)
        r = results[name]
        print(f"{name:14s} {r['clicks']} clicks in {r['seconds']:.2f} s: {r['clicks_per_second']:.1f} clicks/s "
              f"({r['protocol_ms_per_click']:.2f} ms protocol + {r['model_ms_per_click']:.2f} ms fake model per click)",
              flush=True)

    report = {
        "benchmark": "noc_protocol",
        "config": {"instances": args.instances, "image_size": [args.size, args.size], "max_clicks": args.max_clicks,
                   "stop_iou": 1.01, "zoom_in_target": list(ZoomInParams().target_size), "device": str(device),
                   "torch_threads": torch.get_num_threads()},
        "run": run_info(device),
        "results": results,
    }
    write_json(report, args.output or os.path.join("output", "benchmarks", f"noc_protocol_{device.type}.json"))
    return report


if __name__ == "__main__":
    main()
