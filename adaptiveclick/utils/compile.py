"""Opt-in ``torch.compile`` of a model's inference network, with a clean fallback to eager execution.

:class:`CompiledOrEager` wraps a callable: the first call goes through ``torch.compile(fn, mode=...)``; if
compiling fails (a Dynamo/Inductor error: no C++ compiler, an unsupported operator, a backend crash), it logs
one warning naming the error and runs ``fn`` eagerly from then on.  Errors of the inputs themselves (the
model's own ValueError/TypeError checks) are not compile failures: they propagate unchanged, and compilation
stays in use.

Modes (``torch.compile``'s): ``"reduce-overhead"`` records CUDA graphs, which pays off on a GPU for a fixed
input size (an interactive session on one image, zoom-in crops of one target size); ``"default"`` fuses
element-wise work only.  :func:`default_compile_mode` picks ``"reduce-overhead"`` on CUDA and ``"default"``
elsewhere.  Each new input shape compiles anew (Dynamo's recompilation limit then falls back to eager by
itself).  Measured on the 2-core AVX2 CPU (ViT-B/448, fp32, 2026-12-01): compiling the backbone took 55 s and
ran at the eager speed (1234 vs 1217 ms); the whole network compiled in 137 s and ran at 0.97 of the eager
time (paired), also with Inductor's ``freezing`` (weights folded as constants, 92 s): the time there is in
matrix products already near the CPU's peak, so compiling is for GPUs, where it is untested here for want of
one.
"""

import logging
from typing import Callable, Optional

import torch

__all__ = ["FallbackToEager", "CompiledOrEager", "COMPILE_MODES", "default_compile_mode", "compile_failure_types"]

logger = logging.getLogger(__name__)

#: the ``mode`` values of torch.compile accepted here
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def default_compile_mode(device) -> str:
    """``"reduce-overhead"`` (CUDA graphs) on CUDA, ``"default"`` elsewhere."""
    return "reduce-overhead" if torch.device(device).type == "cuda" else "default"


def compile_failure_types():
    """The exception types that mean "compiling failed" (not "the inputs are wrong")."""
    types = []
    try:
        from torch._dynamo.exc import TorchDynamoException

        types.append(TorchDynamoException)
    except ImportError:  # pragma: no cover - every torch >= 2.0 has it
        pass
    try:
        from torch._inductor.exc import InductorError

        types.append(InductorError)
    except ImportError:  # pragma: no cover - older torch
        pass
    return tuple(types)


class FallbackToEager:
    """What a wrapper that falls back to eager execution reports: ``failure`` (None, or the exception after
    which every call is eager), :attr:`active` and :attr:`failure_repr`.  Shared by :class:`CompiledOrEager` and
    ``adaptiveclick.utils.cuda_graph.GraphedOrEager``."""

    failure: Optional[BaseException] = None

    @property
    def active(self) -> bool:
        """True until the wrapper has fallen back (every call is then eager)."""
        return self.failure is None

    @property
    def failure_repr(self) -> Optional[str]:
        """``repr`` of :attr:`failure` cut to 500 characters (for reports), or None."""
        return None if self.failure is None else repr(self.failure)[:500]


class CompiledOrEager(FallbackToEager):
    """``fn`` run through ``torch.compile`` (mode ``mode``), or eagerly once compiling has failed.

    Attributes: ``fn`` (the eager callable), ``mode``, ``failure`` (None, or the exception that made it fall
    back), ``compiled_calls`` / ``eager_calls`` (counters, for tests and benchmarks).
    """

    def __init__(self, fn: Callable, mode: str = "default", compiler: Optional[Callable] = None):
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        if mode not in COMPILE_MODES:
            raise ValueError(f"compile mode must be one of {list(COMPILE_MODES)}, got {mode!r}")
        self.fn = fn
        self.mode = mode
        self.failure: Optional[BaseException] = None
        self.compiled_calls = 0
        self.eager_calls = 0
        self._compiled = (compiler or torch.compile)(fn, mode=mode)
        self._failure_types = compile_failure_types()

    def __call__(self, *args, **kwargs):
        if self.failure is None:
            try:
                if self.mode in _CUDA_GRAPH_MODES:
                    # each call is a new inference step: CUDA graphs may reuse the previous call's output memory
                    # (the callers here consume an output before the next call)
                    torch.compiler.cudagraph_mark_step_begin()
                out = self._compiled(*args, **kwargs)
                self.compiled_calls += 1
                return out
            except self._failure_types as e:
                self.failure = e
                logger.warning("torch.compile(mode=%r) of %s failed (%s: %s); running it eagerly from now on",
                               self.mode, getattr(self.fn, "__qualname__", self.fn), type(e).__name__,
                               str(e).splitlines()[0] if str(e) else "")
        self.eager_calls += 1
        return self.fn(*args, **kwargs)
