#!/usr/bin/env python
"""The proxy experiment of the paper's loss comparison on the built-in synthetic dataset, in one command.

    python projects/AdaptiveClick/run_proxy.py                      # CPU, 1500 iterations per variant
    python projects/AdaptiveClick/run_proxy.py --device cuda --iters 6000 --num-val 200

Trains every variant of ``configs/proxy/`` (AdaptiveClick with AFL, BCE, FL and NFL as the mask loss, and the
SimpleClick-style baseline with NFL) with the same seed, data and number of iterations through
``tools/train_net.py``, evaluates each on ``synthetic_val`` with all 20 clicks (NoC@85/90, NoF, mIoU@k), and
writes, under ``--output``:

* ``proxy_results.json`` -- the settings, device/versions/git revision and every variant's metrics;
* ``proxy_results.md`` -- the table;
* ``iou_vs_clicks.png`` -- mIoU against the number of clicks, one curve per variant;
* ``<variant>/`` -- each run's folder (checkpoints, ``log.txt``, ``metrics.json``, ``noc/``).

The experiment can be interrupted: a variant whose evaluation exists with the same settings is reused, and
an unfinished one continues from its last checkpoint (``train_net.py --resume``).  ``--rerun`` starts over.
Trailing ``KEY VALUE`` pairs are passed to every run (e.g. ``SOLVER.IMS_PER_BATCH 16``).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)

from adaptiveclick.utils.run_info import run_info, write_json  # noqa: E402

#: (variant, config under configs/proxy/, label in the table and the plot)
VARIANTS = (
    ("adaptiveclick_afl", "adaptiveclick_afl.yaml", "AdaptiveClick + AFL"),
    ("adaptiveclick_bce", "adaptiveclick_bce.yaml", "AdaptiveClick + BCE"),
    ("adaptiveclick_fl", "adaptiveclick_fl.yaml", "AdaptiveClick + FL"),
    ("adaptiveclick_nfl", "adaptiveclick_nfl.yaml", "AdaptiveClick + NFL"),
    ("baseline_nfl", "baseline_nfl.yaml", "SimpleClick-style baseline + NFL"),
)
DATASET = "synthetic_val"
MIOU_COLUMNS = (1, 3, 5, 10, 20)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=1500, help="training iterations per variant (default 1500)")
    parser.add_argument("--num-val", type=int, default=50, help="synthetic_val images (default 50)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--output", default=os.path.join("output", "proxy"), help="results folder")
    parser.add_argument("--variants", default=",".join(v[0] for v in VARIANTS),
                        help="comma-separated subset of: " + ", ".join(v[0] for v in VARIANTS))
    parser.add_argument("--rerun", action="store_true", help="retrain variants that already have results")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides for every run")
    args = parser.parse_args(argv)
    known = {v[0] for v in VARIANTS}
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in known]
    if unknown or not args.variants:
        parser.error(f"--variants: unknown {unknown or 'empty list'}; choose from {sorted(known)}")
    if args.iters < 1:
        parser.error(f"--iters must be >= 1, got {args.iters}")
    if args.num_val < 1:
        parser.error(f"--num-val must be >= 1, got {args.num_val}")
    if len(args.opts) % 2:
        parser.error(f"config overrides come in KEY VALUE pairs, got {args.opts}")
    return args


def run_overrides(args):
    """The config overrides shared by every variant (the budget and the evaluation settings)."""
    return ["SOLVER.MAX_ITER", str(args.iters), "SOLVER.STEPS", f"({max(1, int(0.8 * args.iters))},)",
            "SOLVER.CHECKPOINT_PERIOD", str(max(1, args.iters // 4)), "MODEL.DEVICE", args.device,
            "DATASETS.SYNTHETIC.NUM_VAL", str(args.num_val), "TEST.NOC.STOP_IOU", "1.01",
            "TRAINER.EXAMPLE_CLICKS", "[]", *args.opts]


def train_and_evaluate(variant: str, config: str, out: str, overrides, rerun: bool) -> dict:
    """Run tools/train_net.py for one variant (reusing or resuming earlier work); returns its NoC json."""
    settings_path = os.path.join(out, "proxy_settings.json")
    noc_path = os.path.join(out, "noc", DATASET, f"noc_{DATASET}.json")
    settings = {"config": config, "overrides": list(overrides)}
    previous = None
    if os.path.isfile(settings_path):
        with open(settings_path) as f:
            previous = json.load(f)
    if rerun or previous != settings:
        shutil.rmtree(out, ignore_errors=True)
    elif os.path.isfile(noc_path):
        print(f"[proxy] {variant}: reusing {noc_path}", flush=True)
        with open(noc_path) as f:
            return json.load(f)
    os.makedirs(out, exist_ok=True)
    write_json(settings, settings_path)
    cmd = [sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file",
           os.path.join(HERE, "configs", "proxy", config), "--resume", "OUTPUT_DIR", out, *overrides]
    print(f"[proxy] {variant}: {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise SystemExit(f"[proxy] {variant} failed (exit code {proc.returncode}); see {out}/log.txt")
    with open(noc_path) as f:
        result = json.load(f)
    result["wall_time_s"] = time.perf_counter() - start
    return result


def summarize(variant: str, label: str, result: dict) -> dict:
    metrics = result["metrics"]
    row = {"variant": variant, "label": label, "NoC@85": metrics["NoC@85"], "NoC@90": metrics["NoC@90"],
           "NoF@85": metrics["NoF@85"], "NoF@90": metrics["NoF@90"], "num_instances": metrics["num_instances"],
           "miou_curve": [metrics[f"mIoU@{k}"] for k in range(1, result["max_clicks"] + 1)]}
    for k in MIOU_COLUMNS:
        row[f"mIoU@{k}"] = metrics[f"mIoU@{k}"]
    if "wall_time_s" in result:
        row["wall_time_s"] = result["wall_time_s"]
    return row


def markdown_table(rows) -> str:
    head = ["variant", "NoC@85 ↓", "NoC@90 ↓", "NoF@85 ↓", "NoF@90 ↓"] + [f"mIoU@{k} ↑" for k in MIOU_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["label"], f"{r['NoC@85']:.2f}", f"{r['NoC@90']:.2f}", str(r["NoF@85"]), str(r["NoF@90"])]
        cells += [f"{r[f'mIoU@{k}']:.3f}" for k in MIOU_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for r in rows:
        clicks = range(1, len(r["miou_curve"]) + 1)
        ax.plot(clicks, r["miou_curve"], marker="o", markersize=3, label=r["label"])
    ax.set_xlabel("number of clicks")
    ax.set_ylabel("mIoU")
    ax.set_xticks(range(1, len(rows[0]["miou_curve"]) + 1, 2))
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    overrides = run_overrides(args)
    rows = []
    for variant, config, label in VARIANTS:
        if variant not in args.variants:
            continue
        result = train_and_evaluate(variant, config, os.path.join(args.output, variant), overrides, args.rerun)
        rows.append(summarize(variant, label, result))
    budget = f"{args.iters} iterations per variant, {args.device}, {args.num_val} synthetic_val images"
    report = {"experiment": "proxy loss comparison on synthetic data", "budget": budget,
              "overrides": overrides, "run_info": run_info(args.device), "results": rows}
    write_json(report, os.path.join(args.output, "proxy_results.json"))
    table = markdown_table(rows)
    md_path = os.path.join(args.output, "proxy_results.md")
    with open(md_path, "w") as f:
        f.write(f"Proxy experiment ({budget}; {report['run_info']['device']}; "
                f"{report['run_info']['time'][:10]}; git {report['run_info']['git_revision']})\n\n{table}")
    plot(rows, os.path.join(args.output, "iou_vs_clicks.png"), f"synthetic_val, {budget}")
    print(table)
    print(f"[proxy] wrote {md_path} and {os.path.join(args.output, 'iou_vs_clicks.png')}")
    return rows


if __name__ == "__main__":
    main()
