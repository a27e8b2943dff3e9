#!/usr/bin/env python
"""Write PNGs of mapped training samples (ClickTrainingMapper) for inspection.

Each PNG shows the augmented crop with the target mask (blue), ignored pixels (grey), positive clicks
(green) and negative clicks (red).  Without ``--config-file`` the defaults of ``add_adaptiveclick_config``
are used; trailing ``KEY VALUE`` pairs override config keys.

    python tools/visualize_data.py --dataset synthetic_train --num 8 --output output/vis_data
    python tools/visualize_data.py --config-file configs/sbd/adaptiveclick_vit_b_448.yaml \\
        --dataset sbd_train --num 16 --output output/vis_sbd INPUT.AUG.CROP_SIZE "[320, 320]"
"""

import argparse
import os
import re
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from detectron2.config import get_cfg  # noqa: E402
from detectron2.data import DatasetCatalog  # noqa: E402
from detectron2.utils.visualizer import Visualizer  # noqa: E402

import adaptiveclick.data  # noqa: E402,F401  (registers the built-in datasets)
from adaptiveclick.clicks import array_to_clicks  # noqa: E402
from adaptiveclick.config import add_adaptiveclick_config  # noqa: E402
from adaptiveclick.data.mapper import ClickTrainingMapper  # noqa: E402

POSITIVE_COLOR, NEGATIVE_COLOR = (0.0, 0.85, 0.0), (0.95, 0.0, 0.0)
TARGET_COLOR, IGNORE_COLOR = (0.1, 0.35, 1.0), (0.6, 0.6, 0.6)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default="", help="config YAML (optional; defaults when absent)")
    parser.add_argument("--dataset", required=True, help="name registered in detectron2's DatasetCatalog")
    parser.add_argument("--num", type=int, default=8, help="number of samples to draw")
    parser.add_argument("--output", required=True, help="folder for the PNGs (created)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the dict choice and of the mapper")
    parser.add_argument("--no-augment", action="store_true", help="map with is_train=False (full image)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    return parser.parse_args(argv)


def setup_cfg(args):
    cfg = get_cfg()
    add_adaptiveclick_config(cfg)
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    return cfg


def draw_sample(sample: dict) -> np.ndarray:
    """RGB uint8 (H, W, 3) rendering of one mapped sample."""
    image = sample["image"].permute(1, 2, 0).numpy()
    vis = Visualizer(image)
    ignore = sample["ignore_mask"].numpy()
    if ignore.any():
        vis.draw_binary_mask(ignore, color=IGNORE_COLOR, alpha=0.5)
    gt = sample["gt_mask"].numpy()
    if gt.any():
        vis.draw_binary_mask(gt, color=TARGET_COLOR, edge_color=TARGET_COLOR, alpha=0.4)
    radius = max(2.0, 0.008 * max(image.shape[:2]))
    for click in array_to_clicks(sample["clicks"].numpy()):
        color = POSITIVE_COLOR if click.is_positive else NEGATIVE_COLOR
        vis.draw_circle((click.col, click.row), color=color, radius=radius)
    return vis.get_output().get_image()


def main(argv=None):
    """Map ``--num`` random dicts of ``--dataset`` and write one PNG each; returns the written paths."""
    args = parse_args(argv)
    if args.num < 1:
        raise ValueError(f"--num must be >= 1, got {args.num}")
    cfg = setup_cfg(args)
    dicts = DatasetCatalog.get(args.dataset)
    if not dicts:
        raise ValueError(f"dataset {args.dataset!r} is empty")
    mapper = ClickTrainingMapper(cfg, is_train=not args.no_augment)
    rng = np.random.default_rng(args.seed)
    indices = rng.choice(len(dicts), size=min(args.num, len(dicts)), replace=False)
    os.makedirs(args.output, exist_ok=True)
    paths = []
    for k, index in enumerate(indices):
        sample = mapper(dicts[int(index)], rng=rng)
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(sample.get("image_id", index)))
        path = os.path.join(args.output, f"{k:04d}_{stem}.png")
        Image.fromarray(draw_sample(sample)).save(path)
        paths.append(path)
    print(f"wrote {len(paths)} images to {args.output}")
    return paths


if __name__ == "__main__":
    main()
