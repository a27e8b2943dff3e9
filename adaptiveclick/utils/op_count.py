"""Count the ATen operators a call dispatches: what an eager click costs the host on a GPU.

Each *compute* operator goes through Python and PyTorch's dispatcher and launches at least one kernel on a GPU;
*metadata* operators (views, in-place views, allocations, type queries) launch none; a *host read* (the scalar
read behind ``.item()`` / ``.tolist()`` / ``bool(tensor)``, or an operator whose output shape depends on values)
makes the host wait for the GPU when the tensor is on it.  Used by ``tools/benchmark_dispatch.py`` and
``tools/check_cuda_sync.py``.
"""

import collections
from typing import Callable, Dict, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["HOST_READ_OPS", "METADATA_OPS", "operator_kind", "count_operators"]

#: operators whose values the host reads: the scalar read behind ``.item()`` and friends, and operators whose
#: output shape depends on values
HOST_READ_OPS = frozenset({"_local_scalar_dense", "is_nonzero", "nonzero", "masked_select", "_unique", "_unique2",
                           "unique_dim", "unique_consecutive", "repeat_interleave", "equal", "allclose"})
#: operators that launch no kernel besides views: allocations and type/shape queries
METADATA_OPS = frozenset({"empty", "empty_like", "empty_strided", "_unsafe_view", "promote_types", "result_type",
                          "is_same_size", "size", "stride", "sym_size", "sym_stride", "sym_numel", "dim",
                          "is_contiguous", "can_cast"})


def operator_kind(func) -> str:
    """``"host_read"``, ``"metadata"`` or ``"compute"`` for an ATen ``OpOverload`` (see the module docstring)."""
    name = func.overloadpacket.__name__
    if name in HOST_READ_OPS:
        return "host_read"
    if func.is_view or torch.Tag.inplace_view in func.tags or name in METADATA_OPS:
        return "metadata"
    return "compute"


class _OperatorCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = collections.Counter()  # (kind, name) -> calls

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls[(operator_kind(func), func.overloadpacket.__name__)] += 1
        return func(*args, **(kwargs or {}))


def count_operators(fn: Callable[[], object], top: int = 15) -> Tuple[Dict[str, object], object]:
    """Run ``fn()`` once and count the ATen operators it dispatches.

    Returns ``(counts, result of fn)``; ``counts`` = ``{"total", "compute", "metadata", "host_reads",
    "top_compute": [[name, calls], ...]}`` (the ``top`` most frequent compute operators, ties by name)."""
    with _OperatorCounter() as counter:
        result = fn()
    by_kind = collections.Counter()
    compute = collections.Counter()
    for (kind, name), n in counter.calls.items():
        by_kind[kind] += n
        if kind == "compute":
            compute[name] += n
    counts = {"total": sum(by_kind.values()), "compute": by_kind["compute"], "metadata": by_kind["metadata"],
              "host_reads": by_kind["host_read"],
              "top_compute": [[name, n] for name, n in sorted(compute.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]}
    return counts, result
