#!/usr/bin/env python
"""Read what tools/device/gpu_check.sh brought back and check it against issue 10's targets.

    python tools/device/summarize.py FOLDER [--json verdicts.json]

FOLDER holds the run's files (the device tool's ``files_at``): log.txt, official.json, official_train.json (or
train.json), cuda_sync.json, inference.json, compile.json, loader.json, msda.json; a missing or incomplete one
is reported as such.  Prints Markdown (the device and versions, one table per report, the verdicts) ready for
the README's speed section, docs/speed.md and the closing note, and optionally writes the verdicts as JSON.
Exit status 0 whatever the verdicts (it reads, it does not judge the run); 2 if FOLDER has none of these files.

Targets (issue 10, benchmarks, not tests): ViT-B bf16 whole click <= 5 ms and <= 1/3 of the official fp32
click; ViT-H bf16 <= 1/3 of the official fp32 click (each also judged for our network replayed from CUDA graphs,
``benchmark_official.py --cuda-graph``); training samples/s >= 2x the official at the same batch;
no host synchronisation in the network's forward.
"""

import argparse
import json
import os
import sys

REPORTS = ("official.json", "official_train.json", "train.json", "cuda_sync.json", "inference.json",
           "compile.json", "loader.json", "msda.json")
CLICK_MS_TARGET = 5.0  # issue 10: ViT-B bf16, ms per click
CLICK_RATIO_TARGET = 1.0 / 3.0  # issue 10: ours bf16 / official fp32, ViT-B and ViT-H
TRAIN_RATIO_TARGET = 2.0  # issue 10: samples/s ours / official, same batch


def _load(folder, name):
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise SystemExit(f"{path} is not valid JSON ({e})")


def _fmt(v, spec=".2f"):
    return "n/a" if v is None else format(v, spec)


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _verdict(name, value, target, ok):
    return {"target": name, "value": value, "limit": target, "met": None if value is None else bool(ok(value))}


def click_section(report):
    rows = []
    for r in report["results"]:
        vs32 = r.get("ratio_ours_over_official_fp32", {})
        rows.append([r["name"], r["dtype"], _fmt(r["ours"]["forward"]["median_ms"]),
                     _fmt(r["official"]["forward"]["median_ms"]),
                     _fmt(r["ratio_ours_over_official"]["forward_paired"], ".3f"),
                     _fmt(r["ours"]["whole_click"]["median_ms"]), _fmt(r["official"]["whole_click"]["median_ms"]),
                     _fmt(r["ratio_ours_over_official"]["whole_click_paired"], ".3f"),
                     _fmt(vs32.get("whole_click_paired"), ".3f"),
                     _fmt(r["ours"]["peak_memory_mb"], ".0f"), _fmt(r["official"]["peak_memory_mb"], ".0f")])
    return _table(["model", "dtype", "fwd ours ms", "fwd official ms", "ratio", "click ours ms",
                   "click official ms", "ratio", "vs official fp32", "peak ours MB", "peak official MB"], rows)


def click_verdicts(report):
    """The per-click targets from official.json (None: not measured)."""
    by = {(r["name"], r["dtype"]): r for r in (report or {}).get("results", [])}
    base, huge = by.get(("base", "bf16")), by.get(("huge", "bf16"))

    def vs_fp32(r):
        return (r or {}).get("ratio_ours_over_official_fp32", {}).get("whole_click_paired")

    def graphed(r):
        return (r or {}).get("ours_cuda_graph") or {}

    return [_verdict("ViT-B bf16 whole click / official fp32 <= 1/3", vs_fp32(base), CLICK_RATIO_TARGET,
                     lambda v: v <= CLICK_RATIO_TARGET),
            _verdict("ViT-B bf16 whole click <= 5 ms", base["ours"]["whole_click"]["median_ms"] if base else None,
                     CLICK_MS_TARGET, lambda v: v <= CLICK_MS_TARGET),
            _verdict("ViT-H bf16 whole click / official fp32 <= 1/3", vs_fp32(huge), CLICK_RATIO_TARGET,
                     lambda v: v <= CLICK_RATIO_TARGET),
            # the same targets with our network replayed from CUDA graphs (benchmark_official.py --cuda-graph)
            _verdict("ViT-B bf16 whole click, CUDA graphs <= 5 ms",
                     graphed(base).get("whole_click", {}).get("median_ms"), CLICK_MS_TARGET,
                     lambda v: v <= CLICK_MS_TARGET),
            _verdict("ViT-B bf16 whole click, CUDA graphs / official fp32 <= 1/3",
                     graphed(base).get("ratio_over_official_fp32", {}).get("whole_click_paired"),
                     CLICK_RATIO_TARGET, lambda v: v <= CLICK_RATIO_TARGET),
            _verdict("ViT-H bf16 whole click, CUDA graphs / official fp32 <= 1/3",
                     graphed(huge).get("ratio_over_official_fp32", {}).get("whole_click_paired"),
                     CLICK_RATIO_TARGET, lambda v: v <= CLICK_RATIO_TARGET)]


def graph_section(report):
    """Ours with CUDA graphs (``benchmark_official.py --cuda-graph``), beside our eager figures of the same rounds."""
    rows = []
    for r in report["results"]:
        g = r.get("ours_cuda_graph")
        if not g:
            continue
        vs32 = g.get("ratio_over_official_fp32", {})
        eager = g.get("ratio_over_ours_eager", {})
        note = f"{g.get('captures')} recorded, {g.get('replays')} replays, {g.get('eager_calls')} eager"
        if g.get("failure"):
            note += f", fell back: {g['failure'][:80]}"
        rows.append([r["name"], r["dtype"], _fmt(g["forward"]["median_ms"]), _fmt(g["whole_click"]["median_ms"]),
                     _fmt(eager.get("whole_click_paired"), ".3f"),
                     _fmt(g.get("ratio_over_official", {}).get("whole_click_paired"), ".3f"),
                     _fmt(vs32.get("whole_click_paired"), ".3f"), note])
    if not rows:
        return "not measured (no --cuda-graph rows)"
    return _table(["model", "dtype", "fwd ms", "click ms", "click / ours eager", "click / official",
                   "click / official fp32", "note"], rows)


def train_section(report, side_by_side):
    rows = []
    for r in report["results"]:
        if side_by_side:
            o, f, ratio = r["ours"], r["official"], r["ratio_ours_over_official"]
            rows.append([r["name"], r["batch"], r["amp"], _fmt(o["samples_per_s"], ".2f"),
                         _fmt(f["samples_per_s"], ".2f"), _fmt(ratio.get("samples_per_s_paired"), ".2f"),
                         _fmt(ratio.get("expected_samples_per_s"), ".2f"), _fmt(o["step_peak_memory_mb"], ".0f"),
                         _fmt(f["step_peak_memory_mb"], ".0f")])
        else:
            rows.append([r.get("model", r.get("name")), r["batch"], r["amp"], _fmt(r["samples_per_s"], ".2f"),
                         "n/a", "n/a", "n/a", _fmt(r["step_peak_memory_mb"], ".0f"), "n/a"])
    return _table(["model", "batch", "ours amp", "samples/s ours", "samples/s official", "ratio (paired)",
                   "ratio incl. click rounds", "peak ours MB", "peak official MB"], rows)


def train_verdicts(report):
    """The training target per model from official_train.json: the best of our precisions (None: not
    measured; ours alone, train.json, has no official figure to compare with)."""
    best = {}
    for r in (report or {}).get("results", []):
        ratio = r["ratio_ours_over_official"]
        value = ratio.get("samples_per_s_paired", ratio.get("samples_per_s"))
        if value is not None:
            best[r["name"]] = max(best.get(r["name"], value), value)
    if not best:
        return [_verdict("training: samples/s ours / official >= 2 (no side-by-side report)", None,
                         TRAIN_RATIO_TARGET, None)]
    return [_verdict(f"training {name}: samples/s ours / official >= 2", value, TRAIN_RATIO_TARGET,
                     lambda v: v >= TRAIN_RATIO_TARGET) for name, value in best.items()]


def sync_section(report):
    rows = []
    for name, stage in report["results"].items():
        ops = stage.get("operators") or {}
        graph = stage.get("cuda_graph")
        note = "" if not graph else (f"CUDA graphs: {graph.get('captures')} recorded, {graph.get('replays_measured')} "
                                     f"replays measured" + (f", fell back: {graph['failure'][:80]}"
                                                            if graph.get("failure") else ""))
        rows.append([name, _fmt(stage.get("syncs"), "g"), _fmt(ops.get("compute"), "d"), _fmt(ops.get("metadata"), "d"),
                     ", ".join(sorted({e["where"] for e in stage.get("events", [])})), note])
    return _table(["stage", "syncs per run", "compute operators", "metadata operators", "where", "note"], rows)


def sync_verdicts(report):
    network = (report or {}).get("results", {}).get("network", {}).get("syncs")
    return [_verdict("host synchronisations in the network's forward == 0", network, 0, lambda v: v == 0)]


def predictor_section(report):
    rows = []
    for r in report["results"]:
        for setting, t in (r.get("predictor_add_click") or {}).items():
            note = ""
            if t.get("compile"):
                note = f"compiled {t.get('compiled_calls')} / eager {t.get('eager_calls')}"
                if t.get("compile_failure"):
                    note += f", fell back: {t['compile_failure'][:80]}"
            if t.get("cuda_graph"):
                note = (f"CUDA graphs: {t.get('graph_captures')} recorded, {t.get('graph_replays')} replays, "
                        f"{t.get('eager_calls')} eager")
                if t.get("graph_failure"):
                    note += f", fell back: {t['graph_failure'][:80]}"
            rows.append([r["model"], r["dtype"], setting, _fmt(t["median_ms"]), _fmt(t.get("peak_memory_mb"), ".0f"),
                         note])
        if not r.get("predictor_add_click"):
            rows.append([r["model"], r["dtype"], "network / whole click", f"{_fmt(r['forward']['median_ms'])} / "
                         f"{_fmt(r['whole_click']['median_ms'])}", _fmt(r.get("peak_memory_mb"), ".0f"), ""])
    return _table(["model", "dtype", "add_click setting", "ms (median)", "peak MB", "note"], rows)


def loader_section(report):
    return _table(["workers", "samples/s", "per worker"],
                  [[r["workers"], _fmt(r["samples_per_s"]), _fmt(r.get("samples_per_s_per_worker"))]
                   for r in report["results"]])


def msda_section(report):
    rows = []
    for r in report["results"]:
        impls = [k for k, v in r.items() if isinstance(v, dict) and "forward_ms" in v and not k.startswith("speedup_")]
        for impl in impls:
            speed = r.get(f"speedup_{impl}_vs_pytorch", {})
            rows.append([r["batch"], r["queries"], impl, _fmt(r[impl]["forward_ms"]),
                         _fmt(r[impl]["forward_backward_ms"]), _fmt(speed.get("forward_ms")),
                         _fmt(speed.get("forward_backward_ms"))])
    return _table(["batch", "queries", "impl", "forward ms", "forward+backward ms", "speedup fwd",
                   "speedup fwd+bwd"], rows)


def summarize(folder):
    found = {name: _load(folder, name) for name in REPORTS}
    log_path = os.path.join(folder, "log.txt")
    if not any(found.values()) and not os.path.isfile(log_path):
        raise FileNotFoundError(f"{folder}: none of log.txt, {', '.join(REPORTS)}")
    out = []
    first = next((r for r in found.values() if r), None)
    if first is not None:
        run = first.get("run", {})
        fp32 = run.get("cuda_fp32") or {}
        tf32 = (f"; fp32 convolutions in TF32: {fp32.get('cudnn_allow_tf32')}, fp32 matmuls in TF32: "
                f"{fp32.get('matmul_allow_tf32')}") if fp32 else ""
        out.append(f"Device: {run.get('device')}; torch {run.get('torch')} (CUDA {run.get('torch_cuda')}), Python "
                   f"{run.get('python')}, revision {run.get('git_revision')}, {run.get('time')}{tf32}.")
    if os.path.isfile(log_path):
        with open(log_path) as f:
            done = [line.strip() for line in f if line.startswith("=== done")]
        out.append(done[-1] if done else "log.txt: the script did not reach its end (no '=== done' line).")
    sections = [("Per click, ours vs official (official.json)", "official.json", click_section),
                ("Per click, ours with CUDA graphs (official.json)", "official.json", graph_section),
                ("Training, side by side (official_train.json)", "official_train.json",
                 lambda r: train_section(r, side_by_side=True)),
                ("Training, ours alone (train.json)", "train.json", lambda r: train_section(r, side_by_side=False)),
                ("Host synchronisation (cuda_sync.json)", "cuda_sync.json", sync_section),
                ("Predictor, eager (inference.json)", "inference.json", predictor_section),
                ("Predictor, compile=True (compile.json)", "compile.json", predictor_section),
                ("Training loader (loader.json)", "loader.json", loader_section),
                ("MSDeformAttn operator (msda.json)", "msda.json", msda_section)]
    for title, name, fn in sections:
        report = found[name]
        if report is None:
            if name != "train.json":
                out.append(f"\n### {title}\n\nmissing")
            continue
        status = "" if report.get("complete", True) else " — INCOMPLETE (stopped by its time limit)"
        out.append(f"\n### {title}{status}\n\n" + fn(report))
    verdicts = (click_verdicts(found["official.json"]) + train_verdicts(found["official_train.json"])
                + sync_verdicts(found["cuda_sync.json"]))
    out.append("\n### Issue 10 targets\n\n" + _table(
        ["target", "measured", "met"],
        [[v["target"], _fmt(v["value"], ".3g") if isinstance(v["value"], (int, float)) else "n/a",
          {True: "yes", False: "no", None: "not measured"}[v["met"]]] for v in verdicts]))
    return "\n".join(out), verdicts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="the files the GPU run brought back")
    ap.add_argument("--json", default=None, help="also write the verdicts here")
    args = ap.parse_args(argv)
    try:
        text, verdicts = summarize(args.folder)
    except FileNotFoundError as e:
        print(f"summarize: {e}", file=sys.stderr)
        return 2
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(verdicts, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
