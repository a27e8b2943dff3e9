"""Opt-in CUDA graphs for the inference network, recorded from the eager network (no compiler), with a clean
fallback to eager execution.

Why: a batch-1 click is a few hundred small kernels.  Eager, each goes through Python and the dispatcher before
it is launched, so on a fast GPU the host, not the GPU, sets the time of a click (docs/speed.md, "Operators per
click").  A CUDA graph records the launches of one call once and replays them all with one host call.  Our
network reads no device value on the host (a test traps every such read), its inputs for one image size have
fixed shapes (the clicks reach it as maps, not as a list), and what depends only on the size is cached
(``shape_cache``), so its eager code can be recorded as it is.  Unlike ``torch.compile(mode="reduce-overhead")``
(``compile.py``) nothing is compiled: a size is recorded at its second call, which costs about two more
eager runs (the warm-up and the capture) instead of minutes of compiling, and no Triton is needed.

:class:`GraphedOrEager` wraps ``fn(data)`` (a pytree of dicts / lists / tuples with tensor and constant
leaves; the result likewise):

* a call is recorded only where that can work: every tensor of the input on one CUDA device, no gradient
  recording (``torch.is_grad_enabled()`` is False: inference under ``no_grad`` / ``inference_mode``), and no
  capture already under way; anything else runs eagerly, every time;
* graphs are keyed by the input's structure, constants, tensor shapes/dtypes/strides/device, the autocast state
  and inference mode; a key is recorded at its ``capture_after``-th call (default 2: a size seen once, e.g. one
  odd image, never pays for a recording) and replayed from then on; at most ``max_graphs`` graphs are kept
  (least recently used dropped, freeing their memory);
* recording = one eager warm-up run on a side stream (lazy initialisation, cuDNN/cuBLAS choices, the shape
  caches: what must not happen during capture), then the capture (autocast's weight cache off, as CUDA graphs
  need); an error of the warm-up run is the caller's error and propagates; an error of the capture itself (an
  operator that cannot be recorded) logs one warning and makes the wrapper run eagerly from then on;
* a replay copies the inputs into the recorded input tensors, replays, and returns clones of the recorded
  outputs (the caller owns them; the next replay overwrites the recorded ones).  Calls hold a lock, so threads
  sharing a wrapper take turns.

A recorded graph keeps the addresses of the module's weights: changing weights in place (``load_state_dict``,
an optimizer step) is seen by the next replay; moving or converting the module (``.to``, ``.half()``) makes new
tensors, so call :meth:`GraphedOrEager.reset` then (our meta-architectures do it in ``_apply``).  Global
settings read while recording (TF32 switches, SDPA backend choice) stay as they were when a graph was recorded.
"""

import collections
import contextlib
import logging
import threading
from typing import Any, Callable, List, Optional, Tuple

import torch

from adaptiveclick.utils.compile import FallbackToEager

__all__ = ["GraphedOrEager", "CudaGraphBackend", "flatten", "unflatten"]

logger = logging.getLogger(__name__)

_CONSTANTS = (type(None), bool, int, float, str)


# -- pytrees of dicts / lists / tuples ----------------------------------------------------------------------

def flatten(obj) -> Tuple[List[torch.Tensor], Any]:
    """``(tensors, spec)``: the tensor leaves in order and a hashable description of everything else (the
    structure and the constant leaves).  Raises TypeError for a leaf that is neither a tensor nor a constant
    (None, bool, int, float, str)."""
    tensors: List[torch.Tensor] = []

    def walk(x):
        if isinstance(x, torch.Tensor):
            tensors.append(x)
            return ("T",)
        if isinstance(x, dict):
            return ("D",) + tuple((k, walk(v)) for k, v in x.items())
        if isinstance(x, (list, tuple)):
            return ("L" if isinstance(x, list) else "U",) + tuple(walk(v) for v in x)
        if isinstance(x, _CONSTANTS):
            return ("C", type(x).__name__, x)
        raise TypeError(f"cannot record a {type(x).__name__} leaf in a CUDA graph's input or output")

    spec = walk(obj)
    return tensors, spec


def unflatten(spec, tensors) -> Any:
    """Inverse of :func:`flatten`: the structure of ``spec`` with ``tensors`` in the tensor leaves."""
    it = iter(tensors)

    def build(s):
        kind = s[0]
        if kind == "T":
            return next(it)
        if kind == "D":
            return {k: build(v) for k, v in s[1:]}
        if kind in ("L", "U"):
            items = [build(v) for v in s[1:]]
            return items if kind == "L" else tuple(items)
        return s[2]

    return build(spec)


def _autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The autocast dtype in force for ``device_type``, or None when autocast is off there."""
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


# -- the CUDA side --------------------------------------------------------------------------------------------

class CudaGraphBackend:
    """Records and replays with ``torch.cuda.CUDAGraph`` (the one real backend; tests substitute a stand-in
    that follows the same contract on the CPU)."""

    def eligible(self, tensors: List[torch.Tensor]) -> bool:
        """True where a call on these input tensors can be recorded: all on one CUDA device, none recording."""
        if not tensors:
            return False
        device = tensors[0].device
        if device.type != "cuda" or any(t.device != device for t in tensors):
            return False
        return not torch.cuda.is_current_stream_capturing()

    @staticmethod
    def _amp(autocast_dtype):
        # autocast's cache of cast weights must be off while a graph is recorded: a cached cast made before the
        # capture would be read by the graph after the cache is cleared (torch.cuda.graph's documentation)
        if autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=autocast_dtype, cache_enabled=False)

    def warm_up(self, run: Callable[[], Any], device: torch.device, autocast_dtype) -> None:
        """One eager run on a side stream (as torch.cuda.graph's documentation asks before a capture)."""
        current = torch.cuda.current_stream(device)
        side = torch.cuda.Stream(device=device)
        side.wait_stream(current)
        with torch.cuda.device(device), torch.cuda.stream(side), self._amp(autocast_dtype):
            run()
        current.wait_stream(side)

    def capture(self, run: Callable[[], Any], device: torch.device, autocast_dtype):
        """``(graph, output)``: ``run()`` recorded into a new CUDA graph (its own memory pool)."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(device), self._amp(autocast_dtype):
            # thread_local: another thread's CUDA calls (a web server's) do not invalidate this capture
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                out = run()
        return graph, out

    def replay(self, graph) -> None:
        graph.replay()


class _Entry:
    __slots__ = ("graph", "inputs", "out_tensors", "out_spec", "kept")

    def __init__(self, graph, inputs, out_tensors, out_spec, kept):
        self.graph, self.inputs, self.out_tensors, self.out_spec = graph, inputs, out_tensors, out_spec
        self.kept = kept  # what the keep_alive context collected during the capture: alive as long as the graph


class GraphedOrEager(FallbackToEager):
    """``fn`` replayed from recorded CUDA graphs where it can be, else run eagerly (module docstring).

    ``keep_alive``: optional factory of a context manager entered around each capture; what it yields is kept
    with the graph.  A graph reads every tensor of its call by address, also those the module keeps in caches
    (our shape caches: :func:`adaptiveclick.modeling.shape_cache.collecting_constants`): they must outlive
    the graph even if their cache drops them, or the replay would read freed memory.

    Attributes: ``fn``; ``failure`` (None, or the exception of a capture that failed, after which every call
    is eager); counters ``replays``, ``captures``, ``eager_calls``; ``max_graphs``, ``capture_after``.
    """

    def __init__(self, fn: Callable, max_graphs: int = 4, capture_after: int = 2, backend=None,
                 keep_alive: Optional[Callable[[], Any]] = None):
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        for name, value in (("max_graphs", max_graphs), ("capture_after", capture_after)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.fn = fn
        self.max_graphs = max_graphs
        self.capture_after = capture_after
        self.backend = backend if backend is not None else CudaGraphBackend()
        self.keep_alive = keep_alive
        self.failure: Optional[BaseException] = None
        self.replays = self.captures = self.eager_calls = 0
        self._graphs: "collections.OrderedDict[Any, _Entry]" = collections.OrderedDict()
        self._seen: "collections.OrderedDict[Any, int]" = collections.OrderedDict()
        self._lock = threading.RLock()

    @property
    def num_graphs(self) -> int:
        return len(self._graphs)

    def counters(self) -> dict:
        """How the calls ran, for reports: ``captures``, ``replays``, ``eager_calls`` and ``failure``
        (:attr:`failure_repr`)."""
        return {"captures": self.captures, "replays": self.replays, "eager_calls": self.eager_calls,
                "failure": self.failure_repr}

    def reset(self) -> None:
        """Drop every recorded graph and call count (after the module's tensors were replaced)."""
        with self._lock:
            self._graphs.clear()
            self._seen.clear()

    def __deepcopy__(self, memo):
        # recorded graphs belong to the original's tensors: a copy starts with none (and its fn is the copy's)
        import copy

        return GraphedOrEager(copy.deepcopy(self.fn, memo), self.max_graphs, self.capture_after,
                              copy.deepcopy(self.backend, memo), copy.deepcopy(self.keep_alive, memo))

    def _eager(self, args, kwargs):
        self.eager_calls += 1
        return self.fn(*args, **kwargs)

    def __call__(self, *args, **kwargs):
        if self.failure is not None or torch.is_grad_enabled():
            return self._eager(args, kwargs)
        try:
            tensors, spec = flatten((args, kwargs))
        except TypeError:
            return self._eager(args, kwargs)
        if not self.backend.eligible(tensors):
            return self._eager(args, kwargs)
        device = tensors[0].device
        autocast_dtype = _autocast_dtype(device.type)
        key = (spec, tuple((tuple(t.shape), t.stride(), t.dtype, t.device) for t in tensors), autocast_dtype,
               torch.is_inference_mode_enabled())
        with self._lock:
            entry = self._graphs.get(key)
            if entry is None:
                count = self._seen.pop(key, 0) + 1
                self._seen[key] = count
                while len(self._seen) > 64 * self.max_graphs:
                    self._seen.popitem(last=False)
                if count < self.capture_after:
                    return self._eager(args, kwargs)
                entry = self._record(key, spec, tensors, device, autocast_dtype)
                if entry is None:  # the capture failed: eager from now on
                    return self._eager(args, kwargs)
            else:
                self._graphs.move_to_end(key)
            for recorded, given in zip(entry.inputs, tensors):
                recorded.copy_(given)
            self.backend.replay(entry.graph)
            self.replays += 1
            return unflatten(entry.out_spec, [t.clone() for t in entry.out_tensors])

    def _record(self, key, spec, tensors, device, autocast_dtype) -> Optional[_Entry]:
        inputs = [t.clone() for t in tensors]  # the graph's own input tensors, refilled before each replay

        def run():
            call_args, call_kwargs = unflatten(spec, inputs)
            return self.fn(*call_args, **call_kwargs)

        self.backend.warm_up(run, device, autocast_dtype)  # an error here is the call's own: it propagates
        try:
            with (self.keep_alive() if self.keep_alive is not None else contextlib.nullcontext()) as kept:
                graph, out = self.backend.capture(run, device, autocast_dtype)
            out_tensors, out_spec = flatten(out)
        except Exception as e:  # an operator that cannot be recorded (or an output that cannot be kept)
            self.failure = e
            self._graphs.clear()
            logger.warning("recording a CUDA graph of %s failed (%s: %s); running it eagerly from now on",
                           getattr(self.fn, "__qualname__", self.fn), type(e).__name__,
                           str(e).splitlines()[0] if str(e) else "")
            return None
        self._seen.pop(key, None)
        entry = _Entry(graph, inputs, out_tensors, out_spec, kept)
        self._graphs[key] = entry
        self.captures += 1
        while len(self._graphs) > self.max_graphs:
            self._graphs.popitem(last=False)
        return entry
