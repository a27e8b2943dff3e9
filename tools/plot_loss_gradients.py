#!/usr/bin/env python
"""Per-pixel loss and |dL/dlogit| against p_t for BCE, focal, poly-1 and AFL, for several difficulty
distributions -- the intuition of the paper's Fig. 4.

BCE's gradient (1 - p_t) treats pixels "difficulty-equally"; focal loss concentrates on the hardest pixels and
starves easy-but-unsure ones; AFL's gamma (ADA) and its re-normalisation (AGR) depend on the difficulty
distribution of the whole mask, so its curves move with the distribution while the others stay put.

For each distribution one mask of P foreground pixels (y = 1) is drawn whose p_t follow a Beta law; a grid of
p_t values is appended (a small share of the row) and read off: the per-pixel loss term (the ``*_map`` form
of each loss) and P * |dL/dx|, the gradient of the row-mean loss scaled back to one pixel.

    python tools/plot_loss_gradients.py [--output docs/images/loss_gradients.png] [--points 4096]
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from adaptiveclick import losses as L  # noqa: E402

# (title, Beta(a, b) parameters of p_t)
DISTRIBUTIONS = [
    ("mostly easy pixels, p_t ~ Beta(6, 1)", (6.0, 1.0)),
    ("uniform difficulty, p_t ~ U(0, 1)", (1.0, 1.0)),
    ("mostly hard pixels, p_t ~ Beta(1, 4)", (1.0, 4.0)),
]

# (label, per-point map) -- official defaults for AFL, gamma 2 without alpha-balancing for focal and poly-1
LOSSES = [
    ("BCE", lambda x, y: L.bce_map(x, y)),
    ("focal, gamma 2", lambda x, y: L.focal_map(x, y, alpha=-1.0)),
    ("poly-1, gamma 2", lambda x, y: L.poly_map(x, y)),
    ("AFL (official defaults)", lambda x, y: L.adaptive_focal_loss_map(x, y)),
]


def loss_and_gradient(loss_map, p_t):
    """Per-pixel loss and P * |dL/dx| for foreground pixels with probabilities ``p_t`` (one mask)."""
    p_t = torch.as_tensor(p_t, dtype=torch.float64)
    x = torch.log(p_t / (1 - p_t))[None].requires_grad_(True)
    values = loss_map(x, torch.ones_like(x))
    values.mean().backward()
    n = x.shape[1]
    return values.detach()[0].numpy(), (x.grad[0].abs() * n).numpy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="docs/images/loss_gradients.png")
    parser.add_argument("--points", type=int, default=4096, help="pixels of the simulated mask")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(args.seed)
    grid = np.linspace(0.01, 0.99, 99)
    fig, axes = plt.subplots(2, len(DISTRIBUTIONS), figsize=(5.2 * len(DISTRIBUTIONS), 8), squeeze=False)
    for col, (title, (a, b)) in enumerate(DISTRIBUTIONS):
        sample = np.clip(rng.beta(a, b, size=args.points), 1e-4, 1 - 1e-4)
        p_t = np.concatenate([sample, grid])
        top, bottom = axes[0, col], axes[1, col]
        hist = top.twinx()
        hist.hist(sample, bins=40, range=(0, 1), density=True, color="0.85", zorder=0)
        hist.set_yticks([])
        top.set_zorder(hist.get_zorder() + 1)
        top.patch.set_visible(False)
        for name, loss_map in LOSSES:
            values, grads = loss_and_gradient(loss_map, p_t)
            top.plot(grid, values[args.points:], label=name)
            bottom.plot(grid, grads[args.points:], label=name)
        top.set_title(title, fontsize=10)
        top.set_ylabel("per-pixel loss")
        top.set_yscale("log")
        bottom.set_xlabel("p_t (grey: histogram of the mask's p_t)")
        bottom.set_ylabel("P x |dL/dlogit|")
        bottom.set_yscale("log")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="lower left")
    fig.suptitle("Loss and gradient per foreground pixel against p_t, for three difficulty distributions",
                 fontsize=12)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    fig.savefig(args.output, dpi=100)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
