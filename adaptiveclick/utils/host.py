"""Tensors to host memory with as few waits as possible.

On a GPU each copy of a device tensor to the host (and each read of a value) makes the host wait until the GPU
has finished the work queued before it; a batch of B small results copied one by one costs B waits.
"""

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

__all__ = ["host_arrays"]


def host_arrays(tensors: Sequence[torch.Tensor]) -> List[np.ndarray]:
    """``tensors`` as NumPy arrays in host memory, each device's tensors in one copy (a GPU batch of B maps:
    one wait of the host instead of B).  CPU tensors are viewed, not copied: do not write to the arrays.
    bfloat16, which NumPy lacks, comes back as float32."""
    tensors = [t.float() if t.dtype == torch.bfloat16 else t for t in tensors]
    out: List[Optional[np.ndarray]] = [None] * len(tensors)
    by_device: Dict[tuple, List[int]] = {}  # (device, dtype) -> indices
    for i, t in enumerate(tensors):
        if t.device.type == "cpu":
            out[i] = t.detach().numpy()
        else:
            by_device.setdefault((t.device, t.dtype), []).append(i)
    for index in by_device.values():
        flat = torch.cat([tensors[i].detach().reshape(-1) for i in index]).cpu().numpy()
        start = 0
        for i in index:
            n = tensors[i].numel()
            out[i] = flat[start:start + n].reshape(tuple(tensors[i].shape))
            start += n
    return out
