"""The click protocol in pure NumPy (+ OpenCV distance transforms); see ``/work/shared/spec/protocol.md``.

* evaluation: :func:`next_click`, the simulated user of RITM/SimpleClick/AdaptiveClick (A.3);
* model input: :func:`encode_clicks`, disks of radius 5 (B.3);
* training: :class:`MultiPointSampler` (target choice and initial clicks, B.1-B.2) and
  :func:`next_training_click` / :func:`write_iterative_click` (iterative training, B.4);
* formats: :class:`Click` and the (max_points, 3) (row, col, is_positive) arrays of the data contract.

No torch or detectron2 import happens here.
"""

from .click import Click, array_to_clicks, clicks_to_array, training_click_array
from .encoding import encode_clicks
from .iterative import PREV_THRESHOLD, iterative_click_slot, next_training_click, write_iterative_click
from .oracle import error_masks, next_click, padded_distance_transform
from .sampler import (NEGATIVE_STRATEGIES, MultiPointSampler, SampledClicks, border_width, negative_count_probs,
                      positive_count_probs)

__all__ = [
    "Click", "clicks_to_array", "array_to_clicks", "training_click_array",
    "next_click", "error_masks", "padded_distance_transform",
    "encode_clicks",
    "MultiPointSampler", "SampledClicks", "positive_count_probs", "negative_count_probs", "border_width",
    "NEGATIVE_STRATEGIES",
    "next_training_click", "iterative_click_slot", "write_iterative_click", "PREV_THRESHOLD",
]
