"""Tensors that depend only on feature-map sizes (position encodings, reference points, level indices), made once
per size and reused.

On a GPU every small operator of such a computation is a kernel launch per forward (the sine encodings of the
PMMD and the CAMD and the encoder's reference points were 166 of a ViT-B forward's 838 compute operators, counted
by ``tools/benchmark_dispatch.py``); issue 10's lever "precompute what depends only on the image size".
"""

import contextlib
import contextvars
from typing import Callable, Dict, Hashable, Iterator, List, Optional

import torch

__all__ = ["shape_constant", "collecting_constants"]

# the list that collects the values handed out inside ``collecting_constants`` (None outside)
_COLLECTED: "contextvars.ContextVar[Optional[List[object]]]" = contextvars.ContextVar("shape_constants",
                                                                                    default=None)


@contextlib.contextmanager
def collecting_constants() -> Iterator[List[object]]:
    """Yield a list that receives every value :func:`shape_constant` hands out inside the block.

    A CUDA graph recorded inside the block reads those tensors by address at every replay; its owner keeps the
    list (``adaptiveclick.utils.cuda_graph``), so that a cache starting over (``MAX_ENTRIES``) or replaced
    frees none of them while the graph lives.
    """
    token = _COLLECTED.set([])
    try:
        yield _COLLECTED.get()
    finally:
        _COLLECTED.reset(token)

#: entries kept per cache: a handful of input sizes in practice (a predictor's one size, training's crop);
#: past it the cache starts over rather than grow without bound
MAX_ENTRIES = 16


def shape_constant(cache: Dict[Hashable, object], key: Hashable, make: Callable[[], object]):
    """``cache[key]``, made by ``make()`` on first use.

    ``cache`` is a plain dict attribute of the module (not in its state dict; ``key`` must name everything the
    value depends on, device and dtype included).  The value is made outside inference mode even when called
    inside it, so that it is a normal tensor that training may use later (an inference tensor cannot be saved
    for backward) and that keeps a version counter.  Callers must not modify it in place.

    Under ``torch.compile`` the cache is neither read nor written: the traced graph makes the value (constants of
    the graph); written into the cache there, it would be an output of the compiled graph, which CUDA graphs may
    overwrite at the next replay while the cache still hands it out.
    """
    if torch.compiler.is_compiling():
        return make()
    value = cache.get(key)
    if value is None:
        if len(cache) >= MAX_ENTRIES:
            cache.clear()
        with torch.inference_mode(False):
            value = make()
        cache[key] = value
    collected = _COLLECTED.get()
    if collected is not None:
        collected.append(value)
    return value
