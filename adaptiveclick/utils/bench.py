"""Timing, peak-memory and precision helpers shared by the ``tools/benchmark_*.py`` scripts.

* :func:`time_fn` runs a callable ``warmup`` times, then ``iters`` timed times, synchronising CUDA before
  starting and after every call, and returns median / mean / 10th / 90th percentile in milliseconds.
* :func:`time_interleaved` times several callables in rotating round-robin order (one call of each per
  round), so that a machine whose speed drifts during the run (shared or throttled hosts) slows every callable
  alike; with :func:`paired_ratio` it gives the same-run comparisons of ``tools/benchmark_official.py``.
  Both report their progress on stderr (round, elapsed time, estimate of the time left) when a measurement
  runs longer than :data:`PROGRESS_EVERY_S` (a ViT-H on a CPU takes minutes per measurement).
* :func:`reset_peak_memory` and :func:`peak_memory_mb` bracket a measurement.  On CUDA they use
  ``torch.cuda.reset_peak_memory_stats`` and ``torch.cuda.max_memory_allocated`` (tensor memory of the
  caching allocator, not the CUDA context).  On the CPU the number is the *process-wide* maximum resident
  set size (``VmHWM`` of /proc/self/status, else ``resource.getrusage(RUSAGE_SELF).ru_maxrss``): it counts
  the interpreter, libraries and every earlier allocation.  Where Linux allows it, :func:`reset_peak_memory`
  writes ``5`` to
  ``/proc/self/clear_refs``, which resets that high-water mark (``VmHWM``) to the current RSS, so the value
  is then the peak since the reset; elsewhere it is the peak since the process started.  :func:`peak_memory_mb`
  says which in its ``kind``.  Before the reset, freed heap memory is handed back to the OS (glibc's
  ``malloc_trim``) so that what an earlier model of the same run left in the allocator is not counted.
* :func:`autocast` is the ``torch.autocast`` context of a precision name (``fp32`` = disabled).
* :func:`count_parameters` counts a module's parameters.
* :func:`build_benchmark_model`, :func:`click_inputs`, :func:`measure_click_model`: the inference
  measurement of ``tools/benchmark_inference.py``; its pieces (:func:`click_batch`, :func:`forward_only_fn`,
  :func:`whole_click_fn`) are what ``tools/benchmark_official.py`` times of our model, interleaved with the
  official one.
* :func:`benchmark_parser` (with :class:`HelpFormatter`: ``--help`` shows every default),
  :func:`check_cli_args` and :func:`warn_few_iters`: the command line the tools share.  The precisions timed
  by default depend on the device (:func:`default_dtypes`, :func:`default_amp`): fp32 only on the CPU (bf16
  autocast is slow on CPUs without bf16 units, ~30 s per ViT-B click on an AVX2 CPU), fp32 and bf16 on CUDA.
* :func:`synthetic_training_batch`, :func:`time_training`, :func:`measure_train_step`: the training
  measurement of ``tools/benchmark_train.py``.  ``tools/benchmark_official.py --train`` builds each
  implementation's training as a :class:`TrainingSetup` (ours: :func:`prepare_train_step`), times them
  resident side by side with :func:`time_training_interleaved` and measures peak memory with each alone
  (:func:`training_peak_memory`).
"""

import argparse
import contextlib
import ctypes
import gc
import itertools
import math
import os
import resource
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import torch

from adaptiveclick.utils.checks import cuda_device_problem

__all__ = ["DTYPES", "QUANTIZED_DTYPES", "AMP_CHOICES", "model_for_dtype", "parse_dtype", "check_device",
           "synchronize", "time_fn", "time_interleaved", "time_interleaved_stages", "paired_ratio", "reset_peak_memory",
           "peak_memory_mb",
           "autocast", "in_precision", "count_parameters", "format_table", "load_config", "benchmark_parser",
           "HelpFormatter", "default_dtypes", "default_amp", "warn_few_iters", "MIN_STEADY_ITERS",
           "cli_load_config", "check_cli_args", "check_click_rounds", "free_device_cache", "save_report",
           "build_benchmark_model", "click_inputs", "click_batch", "forward_only_fn", "whole_click_fn",
           "graphed_click_fns", "check_click_mask", "measure_click_model", "synthetic_training_batch",
           "time_training", "TrainingSetup", "time_training_interleaved", "training_peak_memory", "prepare_train_step",
           "measure_train_step"]

#: Precision names accepted by the benchmarks -> the autocast dtype (None = plain fp32, autocast off).
#: ``int8`` = fp32 activations with int8 dynamically quantised linear layers: a quantised copy of the model
#: (:func:`model_for_dtype`; CPU only, adaptiveclick.utils.quantize).
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": None}
#: the DTYPES entries that run a quantised copy of the model
QUANTIZED_DTYPES = ("int8",)

_CPU_PEAK_RESET = {"done": False}

#: a timing that has run this many seconds since its last report prints a progress line on stderr
PROGRESS_EVERY_S = 30.0


def parse_dtype(name: str) -> Optional[torch.dtype]:
    """The autocast dtype of ``fp32`` / ``bf16`` / ``fp16``; ValueError naming the value otherwise."""
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def model_for_dtype(model: torch.nn.Module, dtype_name: str) -> torch.nn.Module:
    """``model`` itself, or for ``int8`` its int8 dynamically quantised copy (ValueError off the CPU)."""
    parse_dtype(dtype_name)
    if dtype_name == "int8":
        from adaptiveclick.utils.quantize import quantize_dynamic_int8

        return quantize_dynamic_int8(model)
    return model


def check_device(device) -> torch.device:
    """``torch.device`` of ``device``; ValueError for an unknown type or CUDA without a usable GPU."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}") from e
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {str(device)!r}")
    problem = cuda_device_problem(device)
    if problem:
        raise ValueError(f"device {str(device)!r} requested but {problem}")
    return device


def synchronize(device) -> None:
    """Wait for the queued work of ``device`` (a no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _percentile(sorted_values, q):
    """Linear-interpolation percentile (numpy's default) of an ascending list."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def time_fn(fn: Callable[[], object], warmup: int, iters: int, device="cpu",
            label: Optional[str] = None) -> Dict[str, float]:
    """Time ``fn()``: ``warmup`` untimed calls, then ``iters`` calls each timed on its own.

    On CUDA the device is synchronised before the first timed call and after each call, so a time covers
    the work queued by that call.  Returns ``{"median_ms", "mean_ms", "p10", "p90", "n"}`` (percentiles in
    milliseconds, ``n`` = ``iters``).  ``label`` names the measurement in progress lines (see
    :func:`time_interleaved`).
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    stats = time_interleaved({"fn": fn}, warmup, iters, device,
                             label=label or getattr(fn, "__name__", "fn"))["fn"]
    for key in ("times_ms", "sys_ms", "minor_faults"):  # time_interleaved's per-call lists: the summary only
        del stats[key]
    return stats


def _timing_stats(times) -> Dict[str, float]:
    ordered = sorted(times)
    return {"median_ms": statistics.median(ordered), "mean_ms": statistics.fmean(ordered),
            "p10": _percentile(ordered, 10), "p90": _percentile(ordered, 90), "n": len(ordered)}


class _Progress:
    """Progress lines on stderr for a long timing: one after a round that ends :data:`PROGRESS_EVERY_S` or
    more after the start or the last line, with the time left estimated from the rounds so far."""

    def __init__(self, label: str, warmup: int, iters: int):
        self.label, self.warmup, self.iters = label, warmup, iters
        self.start = self.last = time.perf_counter()

    def round_done(self, timed: bool, k: int) -> None:
        """Round ``k`` (0-based) of the warm-up (``timed`` False) or of the timed rounds has ended."""
        now = time.perf_counter()
        if now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        done = k + 1 + (self.warmup if timed else 0)
        total = self.warmup + self.iters
        elapsed = now - self.start
        phase = f"timed round {k + 1}/{self.iters}" if timed else f"warm-up round {k + 1}/{self.warmup}"
        print(f"[bench] {self.label}: {phase} done, {elapsed:.0f} s elapsed, about "
              f"{elapsed / done * (total - done):.0f} s left", file=sys.stderr, flush=True)


def time_interleaved(fns: Dict[str, Callable[[], object]], warmup: int, iters: int,
                     device="cpu", label: Optional[str] = None) -> Dict[str, Dict[str, object]]:
    """Time several no-argument callables against each other on a machine whose speed may drift.

    ``warmup`` untimed rounds, then ``iters`` timed rounds; a round calls every callable once, each timed on
    its own (CUDA synchronised as in :func:`time_fn`), in an order rotated by one every round so that no
    callable always runs first or right after the same neighbour.  Returns ``{name: {"median_ms", "mean_ms",
    "p10", "p90", "n", "times_ms", "sys_ms", "minor_faults"}}``; ``times_ms[k]`` is the time in round k (for
    :func:`paired_ratio`), ``sys_ms[k]`` / ``minor_faults[k]`` the process's system CPU time and minor page
    faults during that call (getrusage): on the CPU, a training step that touches freshly mapped memory spends
    seconds in the kernel, which these make visible.
    A run longer than :data:`PROGRESS_EVERY_S` prints progress lines on stderr, named by ``label`` (default:
    the callables' names).
    """
    for value, name, minimum in ((warmup, "warmup", 0), (iters, "iters", 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if not fns:
        raise ValueError("time_interleaved needs at least one callable")
    bad = [k for k, fn in fns.items() if not callable(fn)]
    if bad:
        raise TypeError(f"not callable: {bad}")
    device = torch.device(device)
    names = list(fns)
    progress = _Progress(label or "+".join(names), warmup, iters)
    for k in range(warmup):
        for name in names:
            fns[name]()
        synchronize(device)
        progress.round_done(False, k)
    synchronize(device)
    times = {name: [] for name in names}
    kernel = {name: ([], []) for name in names}  # per call: system CPU ms, minor page faults
    for k in range(iters):
        for j in range(len(names)):
            name = names[(k + j) % len(names)]
            before = resource.getrusage(resource.RUSAGE_SELF)
            start = time.perf_counter()
            fns[name]()
            synchronize(device)
            times[name].append((time.perf_counter() - start) * 1000.0)
            after = resource.getrusage(resource.RUSAGE_SELF)
            kernel[name][0].append((after.ru_stime - before.ru_stime) * 1000.0)
            kernel[name][1].append(after.ru_minflt - before.ru_minflt)
        progress.round_done(True, k)
    return {name: dict(_timing_stats(t), times_ms=t, sys_ms=kernel[name][0], minor_faults=kernel[name][1])
            for name, t in times.items()}


def time_interleaved_stages(stages: Dict[str, Dict[str, Callable[[], object]]], warmup: int, iters: int,
                            device="cpu", label: Optional[str] = None) -> Dict[str, Dict[str, Dict[str, object]]]:
    """:func:`time_interleaved` of several stages of the same contestants (``{stage: {name: fn}}``, e.g. the
    forward and the whole click of each model) in the same rounds: ``{stage: {name: timing}}``.  Timed stage
    after stage instead, a drift of the machine's speed between the blocks of rounds shows up as a difference
    between the stages (a whole click measured faster or slower than the forward it contains)."""
    timed = time_interleaved({(stage, name): fn for stage, fns in stages.items() for name, fn in fns.items()},
                             warmup, iters, device, label=label or " + ".join(stages))
    return {stage: {name: timed[(stage, name)] for name in fns} for stage, fns in stages.items()}


def paired_ratio(a: Dict[str, object], b: Dict[str, object]) -> float:
    """Median over rounds of ``a``'s time / ``b``'s time in the same round (:func:`time_interleaved` results):
    a drift of the machine's speed between rounds cancels out of every term."""
    ta, tb = a["times_ms"], b["times_ms"]
    if len(ta) != len(tb) or not ta:
        raise ValueError(f"paired_ratio needs two timings of the same rounds, got {len(ta)} and {len(tb)} times")
    return statistics.median(x / y for x, y in zip(ta, tb))


def _release_freed_heap() -> None:
    """Hand back to the OS the heap memory that freed tensors left in glibc's allocator (``malloc_trim``),
    so that a peak reset to the current RSS does not start from what an earlier, larger model left behind
    (measured: after a ViT-L run, the ViT-H peaks of the same process came out ~5 GB too high)."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim this way
        pass


def _vm_hwm_bytes() -> Optional[int]:
    """The process's peak RSS from /proc/self/status (``VmHWM``, what clear_refs resets), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_cpu_peak() -> bool:
    _release_freed_heap()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def reset_peak_memory(device) -> None:
    """Start a peak-memory measurement on ``device`` (see the module docstring for the CPU caveat)."""
    device = torch.device(device)
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        _CPU_PEAK_RESET["done"] = _reset_cpu_peak()


def peak_memory_mb(device) -> Dict[str, object]:
    """``{"peak_memory_mb": float, "kind": str}``: the peak since :func:`reset_peak_memory`.

    ``kind`` is ``"cuda_max_memory_allocated"``, ``"cpu_max_rss_since_reset"`` (the process's maximum RSS,
    reset through /proc/self/clear_refs) or ``"cpu_max_rss_process"`` (the maximum RSS since the process
    started: the reset is not available here).
    """
    device = torch.device(device)
    if device.type == "cuda":
        synchronize(device)
        return {"peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2 ** 20,
                "kind": "cuda_max_memory_allocated"}
    if _CPU_PEAK_RESET["done"]:
        # VmHWM, the counter clear_refs resets (getrusage's ru_maxrss also keeps the peaks of exited threads'
        # accounting, which no reset clears)
        rss_bytes = _vm_hwm_bytes()
        if rss_bytes is not None:
            return {"peak_memory_mb": rss_bytes / 2 ** 20, "kind": "cpu_max_rss_since_reset"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_bytes = rss if sys.platform == "darwin" else rss * 1024  # macOS reports bytes, Linux kilobytes
    kind = "cpu_max_rss_process"
    return {"peak_memory_mb": rss_bytes / 2 ** 20, "kind": kind}


def autocast(device, dtype_name: str):
    """``torch.autocast(device.type, dtype)`` for ``bf16`` / ``fp16``; a null context for ``fp32`` / ``int8``."""
    dtype = parse_dtype(dtype_name)
    device = torch.device(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def count_parameters(module: torch.nn.Module) -> Dict[str, int]:
    """``{"total": all parameters, "trainable": those with requires_grad}``."""
    params = list(module.parameters())
    return {"total": sum(p.numel() for p in params),
            "trainable": sum(p.numel() for p in params if p.requires_grad)}


def format_table(rows, columns) -> str:
    """Plain-text table: ``columns`` is a list of (header, key, format spec); missing values print as '-'."""
    cells = [[h for h, _, _ in columns]]
    for row in rows:
        line = []
        for _, key, spec in columns:
            value = row.get(key)
            line.append("-" if value is None else format(value, spec))
        cells.append(line)
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    out = []
    for k, r in enumerate(cells):
        out.append("  ".join(c.rjust(w) if k and i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


# -- model inference measurement (shared by benchmark_inference and benchmark_official) ----------------------


def load_config(config_file: str, opts: Sequence = (), device="cpu"):
    """Frozen config of ``config_file`` + ``opts`` (KEY VALUE ...) with ``MODEL.DEVICE`` = ``device``.

    FileNotFoundError names a missing file; unknown keys raise as in detectron2 (naming the key).
    """
    from adaptiveclick.config import load_config_file

    cfg = load_config_file(config_file, opts)
    cfg.MODEL.DEVICE = str(torch.device(device))
    cfg.freeze()
    return cfg


def build_benchmark_model(cfg, seed: int = 0) -> torch.nn.Module:
    """``build_model(cfg)`` with random weights (torch seeded with ``seed``), in eval mode on MODEL.DEVICE."""
    from detectron2.modeling import build_model

    import adaptiveclick.modeling  # noqa: F401  (registers the meta-architectures)

    torch.manual_seed(seed)
    return build_model(cfg).eval()


def click_inputs(size, num_clicks: int = 5, seed: int = 0):
    """Inputs of one interactive click on a (H, W) image, as NumPy arrays an application would hold.

    Returns ``(image, clicks, prev_mask)``: uint8 (H, W, 3) random RGB; int64 (num_clicks, 3) rows
    (row, col, is_positive), spread over the central part of the image, alternately positive (first) and
    negative; float32 (H, W) previous probabilities (a soft disk of the image's centre).
    """
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 8 or w < 8:
        raise ValueError(f"image size must be at least 8 x 8, got {(h, w)}")
    if isinstance(num_clicks, bool) or not isinstance(num_clicks, int) or num_clicks < 1:
        raise ValueError(f"num_clicks must be an integer >= 1, got {num_clicks!r}")
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    rows = rng.integers(h // 4, 3 * h // 4, num_clicks)
    cols = rng.integers(w // 4, 3 * w // 4, num_clicks)
    clicks = np.stack([rows, cols, (np.arange(num_clicks) % 2 == 0).astype(np.int64)], axis=1).astype(np.int64)
    yy, xx = np.mgrid[:h, :w]
    dist = np.hypot((yy - h / 2) / (h / 4), (xx - w / 2) / (w / 4))
    prev = (1.0 / (1.0 + np.exp(8.0 * (dist - 1.0)))).astype(np.float32)
    return image, clicks, prev


def forward_only_fn(model, batched_inputs):
    """A no-argument callable running the network alone on the preprocessed ``batched_inputs``.

    The preprocessing (normalisation, click disks, padding) runs once here, outside the returned callable, which
    is the meta-architecture's ``_network(data)`` (what inference runs and ``compile_network`` compiles):
    ``predict`` for :class:`AdaptiveClick` (backbone, pixel decoder, transformer decoder), the backbone and head
    (with their upsampling) for the SimpleClick baseline.
    """
    if not hasattr(model, "_network"):
        raise TypeError(f"{type(model).__name__} has no _network(): cannot time its forward alone")
    with torch.no_grad():
        data = model.preprocess(batched_inputs)
    return lambda: model._network(data)


def click_batch(image: np.ndarray, clicks: np.ndarray, prev_mask: np.ndarray):
    """The model input of one click, ``[{"image": (3, H, W) uint8, "clicks": (K, 3), "prev_mask": (1, H, W)}]``,
    wrapping the NumPy arrays of :func:`click_inputs` (no copy)."""
    return [{"image": torch.from_numpy(image).permute(2, 0, 1), "clicks": torch.from_numpy(clicks),
             "prev_mask": torch.from_numpy(prev_mask)[None]}]


def whole_click_fn(model, image: np.ndarray, clicks: np.ndarray, prev_mask: np.ndarray, threshold: float,
                   device="cpu", dtype: str = "fp32") -> Callable[[], torch.Tensor]:
    """A no-argument callable doing one whole click of ``model``: :func:`click_batch`, ``model(...)`` under
    ``torch.no_grad`` and the :func:`autocast` of ``dtype``, sigmoid, ``> threshold``, and the (H, W) bool mask
    copied to host memory."""
    device = torch.device(device)

    def whole_click():
        with torch.no_grad(), autocast(device, dtype):
            logits = model(click_batch(image, clicks, prev_mask))[0]["mask_logits"]
        return (logits.float().sigmoid() > threshold)[0].cpu()

    return whole_click


def graphed_click_fns(model, image: np.ndarray, clicks: np.ndarray, prev_mask: np.ndarray, threshold: float,
                      device="cpu", dtype: str = "fp32"):
    """``(forward, whole_click, wrapper)``: :func:`forward_only_fn` and :func:`whole_click_fn` of ``model``
    with its network replayed from CUDA graphs (one :class:`adaptiveclick.utils.cuda_graph.GraphedOrEager`
    shared by both, recording at its second call of a size).  The wrapper is installed only during a
    ``whole_click()`` call, so the same model can be timed eagerly in the same rounds.  Off CUDA every call runs
    eagerly (``wrapper.eager_calls`` says so)."""
    if not hasattr(model, "network_graphs"):
        raise TypeError(f"{type(model).__name__} has no network_graphs(): cannot replay its network")
    wrapper = model.network_graphs()  # with the model's keep-alive of what the graphs read
    with torch.no_grad():
        data = model.preprocess(click_batch(image, clicks, prev_mask))
    eager_click = whole_click_fn(model, image, clicks, prev_mask, threshold, device, dtype)

    def whole_click():
        previous = model.set_network_wrapper(wrapper)
        try:
            return eager_click()
        finally:
            model.set_network_wrapper(previous)

    return in_precision(lambda: wrapper(data), device, dtype), whole_click, wrapper


def measure_click_model(model, image: np.ndarray, clicks: np.ndarray, prev_mask: np.ndarray, device, dtype: str,
                        iters: int, warmup: int, threshold: float, label: str = "ours") -> Dict[str, object]:
    """Time one of our models at batch 1: the forward alone and the whole click; peak memory over both.

    Whole click = from the NumPy uint8 (H, W, 3) image, int64 (K, 3) clicks and float32 (H, W) previous
    probabilities: tensor wrapping, ``model([{"image", "clicks", "prev_mask"}])`` (transfer to the device,
    normalisation, click disks, padding, network, merge of the queries, bilinear upsampling to (H, W)),
    sigmoid, ``> threshold`` and the copy of the binary mask back to host memory.  Everything runs under
    ``torch.no_grad`` and the :func:`autocast` of ``dtype``.  ``label`` names the model in progress lines.
    """
    device = torch.device(device)
    reset_peak_memory(device)
    forward = forward_only_fn(model, click_batch(image, clicks, prev_mask))
    whole_click = whole_click_fn(model, image, clicks, prev_mask, threshold, device, dtype)
    return time_forward_and_click(forward, whole_click, image.shape[:2], device, dtype, iters, warmup, label)


def in_precision(fn: Callable, device, dtype: str) -> Callable[[], object]:
    """``fn`` as a no-argument callable run under ``torch.no_grad`` and the :func:`autocast` of ``dtype``."""

    def run():
        with torch.no_grad(), autocast(device, dtype):
            return fn()

    return run


def check_click_mask(mask: torch.Tensor, image_shape, who: str = "the") -> None:
    """RuntimeError unless a whole click's ``mask`` has the (H, W) ``image_shape`` of its image."""
    if tuple(mask.shape) != tuple(image_shape):
        raise RuntimeError(f"{who} whole click returned a {tuple(mask.shape)} mask for a {tuple(image_shape)} image")


def time_forward_and_click(forward: Callable, whole_click: Callable, image_shape, device, dtype: str, iters: int,
                           warmup: int, label: str = "ours") -> Dict[str, object]:
    """Time ``forward()`` (under no_grad and the autocast of ``dtype``) and ``whole_click()`` (which must
    return the (H, W) mask of an ``image_shape`` image); adds the peak memory since the caller's
    :func:`reset_peak_memory`."""
    result = {"forward": time_fn(in_precision(forward, device, dtype), warmup, iters, device,
                                 label=f"{label} {dtype} forward"),
              "whole_click": time_fn(whole_click, warmup, iters, device, label=f"{label} {dtype} whole click")}
    check_click_mask(whole_click(), image_shape)
    peak = peak_memory_mb(device)
    result["peak_memory_mb"], result["peak_memory_kind"] = peak["peak_memory_mb"], peak["kind"]
    return result


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The benchmark tools' ``--help``: the description as written (its example commands line by line) and
    ``(default: ...)`` after every option whose help does not already say its default (options whose default
    is None or False, computed later or a plain switch, say it in their help or have none to say)."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        default = action.default
        if not action.option_strings or default is None or default is False or default is argparse.SUPPRESS \
                or "default" in help_text.lower():
            return help_text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{help_text} (default: {shown.replace('%', '%%')})"


#: fewer timed rounds than this make a noisy median: the tools warn (:func:`warn_few_iters`)
MIN_STEADY_ITERS = 10


def default_dtypes(device) -> list:
    """The ``--dtype`` precisions timed when none are given: fp32 on the CPU (bf16 autocast is an emulation on
    CPUs without bf16 units, e.g. ~30 s per ViT-B/448 click on a 2-core AVX2 CPU), fp32 and bf16 on CUDA."""
    return ["fp32", "bf16"] if torch.device(device).type == "cuda" else ["fp32"]


def default_amp(device) -> list:
    """The ``--amp`` settings of the training benchmarks when none are given: ``none`` (fp32) on the CPU,
    ``none`` and ``bf16`` on CUDA (see :func:`default_dtypes`)."""
    return ["none", "bf16"] if torch.device(device).type == "cuda" else ["none"]


def warn_few_iters(iters: int, flag: str = "--iters") -> bool:
    """Print a warning on stderr when ``iters`` timed rounds are fewer than :data:`MIN_STEADY_ITERS`; returns
    whether it warned.  Not an error: short runs are fine for trying a tool out."""
    if iters is not None and iters < MIN_STEADY_ITERS:
        print(f"warning: {flag} {iters}: medians of fewer than {MIN_STEADY_ITERS} rounds are noisy; use "
              f"{flag} {MIN_STEADY_ITERS} or more for numbers to compare", file=sys.stderr, flush=True)
        return True
    return False


def benchmark_parser(description: str, output: str, iters: Optional[int], warmup: Optional[int],
                     opts_help: str = "config overrides", clicks: bool = False, iters_help: str = "",
                     warmup_help: str = ""):
    """The argument parser the benchmark tools share: ``--device``, ``--iters``, ``--warmup``, ``--seed``,
    ``--output`` (default ``output``) and trailing ``KEY VALUE`` config overrides; with ``clicks``, also the
    inference arguments ``--dtype`` (autocast precisions; default None, which :func:`check_cli_args` turns
    into :func:`default_dtypes` of the device) and ``--num-clicks``.  ``--help`` shows the defaults;
    ``iters_help`` / ``warmup_help`` are added to the help of ``--iters`` / ``--warmup`` (say there what a
    default of None becomes)."""
    ap = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda[:N]")
    ap.add_argument("--iters", type=int, default=iters,
                    help="timed runs per measurement (median reported)" + iters_help)
    ap.add_argument("--warmup", type=int, default=warmup, help="untimed runs before each measurement" + warmup_help)
    if clicks:
        ap.add_argument("--dtype", nargs="+", default=None, choices=sorted(DTYPES),
                        help="autocast precisions to time (fp32 = autocast off; int8 = a copy with int8 "
                             "dynamically quantised linear layers, CPU only); default: fp32 on the CPU "
                             "(bf16 autocast is slow on CPUs without bf16 units), fp32 bf16 on CUDA")
        ap.add_argument("--num-clicks", type=int, default=5, help="clicks in the input of a timed click")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs")
    ap.add_argument("--output", default=output, help=f"JSON report (default {output})")
    ap.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help=opts_help)
    return ap


def cli_load_config(ap, config_file: str, opts: Sequence, device):
    """:func:`load_config`, reporting a bad override (unknown key, wrong type) as ``ap.error`` naming it."""
    try:
        return load_config(config_file, opts, device)
    except (AssertionError, KeyError, ValueError, TypeError) as e:  # yacs reports unknown keys by assertion
        ap.error(f"{config_file} with overrides {list(opts)}: {e}")


def check_cli_args(ap, args, minimums: Dict[str, int]):
    """Common argument checks of the benchmark tools, as ``ap.error`` (exit 2, naming the value): each
    ``--flag`` in ``minimums`` (flag -> least value; unset (None) values pass), KEY VALUE pairs in
    ``args.opts``, and ``args.device``.  An unset ``args.dtype`` / ``args.amp`` (None) becomes the device's
    default (:func:`default_dtypes`, :func:`default_amp`).  Returns the checked ``torch.device``."""
    for flag, minimum in minimums.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None and value < minimum:
            ap.error(f"{flag} must be >= {minimum}, got {value}")
    if len(getattr(args, "opts", None) or []) % 2:
        ap.error(f"config overrides must be KEY VALUE pairs, got {args.opts}")
    try:
        device = check_device(args.device)
    except ValueError as e:
        ap.error(f"--device: {e}")
    if hasattr(args, "dtype") and args.dtype is None:
        args.dtype = default_dtypes(device)
    if hasattr(args, "amp") and args.amp is None:
        args.amp = default_amp(device)
    quantized = [d for d in getattr(args, "dtype", None) or [] if d in QUANTIZED_DTYPES]
    if quantized and device.type != "cpu":
        ap.error(f"--dtype {' '.join(quantized)} runs on the CPU only (PyTorch's dynamic int8 kernels), not on "
                 f"{device}")
    if device.type == "cpu" and "fp16" in (getattr(args, "amp", None) or []):
        print("note: fp16 autocast on the CPU is slow on most CPUs; bf16 is the CPU half precision", flush=True)
    return device


def check_click_rounds(ap, click_rounds: int, cfg, config_file: str) -> None:
    """``ap.error`` if ``--click-rounds`` exceeds the clicks a training sample may get (INPUT.CLICKS.MAX_NUM_POINTS)."""
    if click_rounds > cfg.INPUT.CLICKS.MAX_NUM_POINTS:
        ap.error(f"--click-rounds ({click_rounds}) must not exceed INPUT.CLICKS.MAX_NUM_POINTS "
                 f"({cfg.INPUT.CLICKS.MAX_NUM_POINTS}) of {config_file}")


def free_device_cache(device) -> None:
    """Hand the CUDA caching allocator's free blocks back between measurements (no-op elsewhere)."""
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def save_report(benchmark: str, config: dict, device, results, output: str, complete: bool = True) -> dict:
    """Write ``{"benchmark", "complete", "config" (+ torch_threads), "run": run_info, "results"}`` as JSON
    (atomically); returns it.  The tools also save after every finished model with ``complete=False``, so
    that a run stopped by a time limit (a short GPU lease) keeps what it measured."""
    from adaptiveclick.utils.run_info import run_info, write_json

    report = {"benchmark": benchmark, "complete": bool(complete),
              "config": dict(config, torch_threads=torch.get_num_threads()), "run": run_info(device),
              "results": results}
    write_json(report, output)
    return report


# -- training measurement (shared by benchmark_train and benchmark_official --train) ---------------------------

#: ``--amp`` names of the training benchmarks -> autocast dtype of the trainer (None = fp32)
AMP_CHOICES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def synthetic_training_batch(cfg, batch: int, seed: int = 0):
    """``batch`` samples of the synthetic dataset mapped by ``ClickTrainingMapper(cfg, is_train=True)``."""
    from adaptiveclick.data.datasets.synthetic import load_synthetic
    from adaptiveclick.data.mapper import ClickTrainingMapper

    mapper = ClickTrainingMapper(cfg, is_train=True)
    size = int(max(cfg.INPUT.AUG.CROP_SIZE))
    with tempfile.TemporaryDirectory(prefix="adaptiveclick_bench_") as tmp:
        dicts = load_synthetic("benchmark_train", batch, size, seed, tmp)
        # the mapper reads the PNG now; the mapped samples hold tensors only
        return [mapper(d, rng=np.random.default_rng([seed, i])) for i, d in enumerate(dicts)]


def _throughput(row: Dict[str, object], step: Dict[str, object], rounds: Optional[Dict[str, object]],
                batch_size: int, click_rounds: int, expected_rounds: float, who: str) -> Dict[str, object]:
    """Fill ``row`` with the step timing ``step`` and, if ``click_rounds`` > 0, the timing ``rounds`` of that
    many click rounds, and what follows from them: samples/s of a step, ms per click round, and an average
    iteration (a step plus ``expected_rounds`` rounds).  RuntimeError naming ``who`` if a throughput comes out
    non-finite or non-positive."""
    row["step"] = step
    row["samples_per_s"] = batch_size / (step["median_ms"] / 1000.0)
    if click_rounds:
        row["click_rounds"] = dict(rounds, rounds=click_rounds)
        row["click_round_ms"] = rounds["median_ms"] / click_rounds
        row["expected_rounds_per_iteration"] = expected_rounds
        row["expected_iteration_ms"] = step["median_ms"] + expected_rounds * row["click_round_ms"]
        row["expected_samples_per_s"] = batch_size / (row["expected_iteration_ms"] / 1000.0)
    for key in ("samples_per_s", "expected_samples_per_s"):
        if key in row and not (math.isfinite(row[key]) and row[key] > 0):
            raise RuntimeError(f"{who}: non-finite or non-positive {key} = {row[key]!r}")
    return row


def time_training(step: Callable, rounds_fn: Optional[Callable], batch_size: int, click_rounds: int,
                  expected_rounds: float, device, iters: int, warmup: int, who: str) -> Dict[str, object]:
    """Time one implementation's training: ``step()`` (one optimisation step) and, if ``click_rounds`` > 0,
    ``rounds_fn()`` (that many no-grad click rounds), each with its peak memory.  An average iteration costs
    a step plus ``expected_rounds`` rounds: ``expected_iteration_ms`` / ``expected_samples_per_s``.
    RuntimeError (naming ``who``) if a throughput comes out non-finite or non-positive."""
    row = {}
    reset_peak_memory(device)
    step_timing = time_fn(step, warmup, iters, device, label=f"{who} training step")
    peak = peak_memory_mb(device)
    row["step_peak_memory_mb"], row["peak_memory_kind"] = peak["peak_memory_mb"], peak["kind"]
    rounds_timing = None
    if click_rounds:
        reset_peak_memory(device)
        rounds_timing = time_fn(rounds_fn, warmup, iters, device, label=f"{who} click rounds")
        row["click_rounds_peak_memory_mb"] = peak_memory_mb(device)["peak_memory_mb"]
    return _throughput(row, step_timing, rounds_timing, batch_size, click_rounds, expected_rounds, who)


class TrainingSetup:
    """One implementation's training, built and ready to time: ``step()`` runs one optimisation step,
    ``rounds()`` the no-grad click rounds (None without), an average iteration has ``expected_rounds`` of them,
    ``info`` describes the setup (goes into the report row) and ``check()`` raises if the steps so far went
    wrong (a non-finite loss)."""

    def __init__(self, step: Callable[[], object], rounds: Optional[Callable[[], object]], expected_rounds: float,
                 info: Dict[str, object], check: Optional[Callable[[], None]] = None):
        self.step, self.rounds, self.expected_rounds, self.info = step, rounds, expected_rounds, info
        self.check = check or (lambda: None)


def time_training_interleaved(setups: Dict[str, TrainingSetup], batch_size: int, click_rounds: int, device,
                              iters: int, warmup: int, label: str) -> Dict[str, Dict[str, object]]:
    """Time several resident :class:`TrainingSetup` against each other with :func:`time_interleaved`: their
    steps in rotating rounds, then (``click_rounds`` > 0) their click rounds the same way.  Returns ``{name:
    row}`` with the fields of :func:`time_training` except peak memory (several models are resident: measure it
    with :func:`training_peak_memory`, one setup alone); ``step["times_ms"]`` and ``click_rounds["times_ms"]``
    hold the per-round times for :func:`paired_ratio`.  Every setup's ``check()`` runs at the end."""
    if click_rounds and any(s.rounds is None for s in setups.values()):
        raise ValueError(f"click_rounds = {click_rounds} but a setup has no rounds()")
    steps = time_interleaved({name: s.step for name, s in setups.items()}, warmup, iters, device,
                             label=f"{label} training steps")
    rounds = time_interleaved({name: s.rounds for name, s in setups.items()}, warmup, iters, device,
                              label=f"{label} click rounds") if click_rounds else {}
    rows = {}
    for name, s in setups.items():
        s.check()
        rows[name] = _throughput({}, steps[name], rounds.get(name), batch_size, click_rounds, s.expected_rounds,
                                 f"{label}: {name}")
    return rows


def training_peak_memory(setup: TrainingSetup, click_rounds: int, device, steps: int = 2) -> Dict[str, object]:
    """Peak memory of ``steps`` training steps of ``setup`` (the first creates the optimizer state, so 2 reach
    the steady state) and of one call of its click rounds, each from its own :func:`reset_peak_memory`.
    Meant for a setup alone in memory.  Returns ``step_peak_memory_mb``, ``peak_memory_kind`` and (with click
    rounds) ``click_rounds_peak_memory_mb``; runs ``setup.check()``."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    reset_peak_memory(device)
    for _ in range(steps):
        setup.step()
    peak = peak_memory_mb(device)
    row = {"step_peak_memory_mb": peak["peak_memory_mb"], "peak_memory_kind": peak["kind"]}
    if click_rounds:
        reset_peak_memory(device)
        setup.rounds()
        row["click_rounds_peak_memory_mb"] = peak_memory_mb(device)["peak_memory_mb"]
    setup.check()
    return row


def _build_trainer(cfg, model, batch, amp):
    """The trainer's inner loop around ``model`` with the config's optimizer; no click rounds in run_step,
    no train-IoU forward; AMP as ``amp``."""
    from adaptiveclick.engine import ClickTrainer, IterativeClickTrainer

    optimizer = ClickTrainer.build_optimizer(cfg, model)
    kwargs = ClickTrainer.inner_trainer_kwargs(cfg)
    kwargs.update(max_click_rounds=0, train_iou_period=0, amp_dtype=AMP_CHOICES[amp])
    return IterativeClickTrainer(model, itertools.repeat(batch), optimizer, **kwargs)


def prepare_train_step(cfg, config_file: str, batch_size: int, amp: str, device, click_rounds: int = 0,
                       seed: int = 0, batch=None) -> TrainingSetup:
    """Our training as a :class:`TrainingSetup`: a model built with torch seeded by ``seed``, the trainer's
    inner loop (``IterativeClickTrainer.run_step`` without its random click rounds, the config's optimizer, AMP
    ``amp``) fed ``batch`` (mapped samples; default :func:`synthetic_training_batch` of ``batch_size``) at every
    step, and ``rounds()`` = ``click_rounds`` rounds of ``IterativeClickTrainer.click_rounds`` on it (None if
    ``click_rounds`` is 0)."""
    from detectron2.utils.events import EventStorage

    if amp not in AMP_CHOICES:
        raise ValueError(f"amp must be one of {sorted(AMP_CHOICES)}, got {amp!r}")
    device = torch.device(device)
    model = build_benchmark_model(cfg, seed=seed).train()
    batch = synthetic_training_batch(cfg, batch_size, seed=seed) if batch is None else list(batch)
    if len(batch) != batch_size:
        raise ValueError(f"batch has {len(batch)} samples, batch_size is {batch_size}")
    trainer = _build_trainer(cfg, model, batch, amp)
    info = {"config_file": config_file, "model": os.path.splitext(os.path.basename(config_file))[0],
            "device": str(device), "amp": amp, "batch": batch_size, "crop_size": list(cfg.INPUT.AUG.CROP_SIZE),
            "optimizer": type(trainer.optimizer).__name__, "params": count_parameters(model)}
    storage = EventStorage(0)  # run_step logs its losses to the current storage
    rng = np.random.default_rng(seed)

    def step():
        with storage:
            trainer.run_step()
        trainer.iter += 1

    def rounds():
        with storage:
            trainer.click_rounds(batch, click_rounds, rng)

    return TrainingSetup(step, rounds if click_rounds else None, cfg.INPUT.CLICKS.MAX_NUM_NEXT_CLICKS / 2.0, info)


def measure_train_step(cfg, config_file: str, batch_size: int, amp: str, device, iters: int, warmup: int,
                       click_rounds: int, seed: int = 0, batch=None) -> Dict[str, object]:
    """Our training step and ``click_rounds`` click rounds (:func:`prepare_train_step`) timed one after the
    other with their peak memory.  Returns the row of ``tools/benchmark_train.py`` (see :func:`time_training`)."""
    setup = prepare_train_step(cfg, config_file, batch_size, amp, device, click_rounds, seed, batch)
    row = dict(setup.info)
    row.update(time_training(setup.step, setup.rounds, batch_size, click_rounds, setup.expected_rounds, device,
                             iters, warmup, f"{config_file} amp={amp}"))
    return row  # the model and trainer are freed on return (call free_device_cache after it)
