"""Training-time target choice and initial clicks: the multi-point sampler of protocol.md B.1-B.2.

Behaviour of RITM's ``MultiPointSampler`` with the settings AdaptiveClick trains with (max 24 points,
prob_gamma 0.8, merge_objects_prob 0.15, max 2 merged objects, no hierarchy), re-derived from the spec and
driven by a ``numpy.random.Generator``.  Every object passed in is a root object (our dataset dicts carry
no hierarchy).  Distributions match the official sampler; the random streams do not.
"""

import math
from numbers import Real
from typing import List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np

from adaptiveclick.utils.checks import check_int

from .click import Click, as_mask, as_optional_mask, check_rng, training_click_array

__all__ = ["MultiPointSampler", "SampledClicks", "positive_count_probs", "negative_count_probs",
           "border_width", "NEGATIVE_STRATEGIES"]

#: Negative-click regions, in the order of ``negative_strategy_probs``.
NEGATIVE_STRATEGIES = ("bg", "other", "border")
_KERNEL_3x3 = np.ones((3, 3), dtype=np.uint8)


def positive_count_probs(max_num_points: int = 24, gamma: float = 0.8) -> np.ndarray:
    """P(n+ = 1 + j) for j = 0..max_num_points-1, proportional to gamma^j (protocol.md B.2, C11)."""
    p = gamma ** np.arange(max_num_points, dtype=np.float64)
    return p / p.sum()


def negative_count_probs(max_num_points: int = 24, gamma: float = 0.8) -> np.ndarray:
    """P(n- = j) for j = 0..max_num_points, proportional to gamma^j (protocol.md B.2, C11)."""
    p = gamma ** np.arange(max_num_points + 1, dtype=np.float64)
    return p / p.sum()


def border_width(area: int, expand_ratio: float = 0.1) -> int:
    """Width r = ceil(expand_ratio * sqrt(area)) of the "border" negative region (protocol.md B.2, C11)."""
    return int(math.ceil(expand_ratio * math.sqrt(area)))


class SampledClicks(NamedTuple):
    """Result of :meth:`MultiPointSampler.sample`."""

    target: np.ndarray          # (H, W) bool: union of the chosen objects (all False for an empty sample)
    object_ids: Tuple[int, ...]  # indices of the chosen objects in the input
    positives: List[Click]
    negatives: List[Click]
    max_num_points: int

    def to_array(self) -> np.ndarray:
        """The (2K, 3) int64 training layout (positives in rows 0..K-1, negatives in K..2K-1)."""
        return training_click_array(self.positives, self.negatives, self.max_num_points)


def _check_prob(value, name):
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


class MultiPointSampler:
    """Chooses the target object(s) of a training sample and samples its initial clicks.

    Args (defaults = AdaptiveClick's training settings, protocol.md B.2):
        max_num_points: K, the most clicks of each polarity (24).
        prob_gamma: geometric ratio of the click-count distributions (0.8).
        merge_objects_prob: probability of merging objects into one target when >= 2 exist (0.15).
        max_num_merged_objects: the most objects merged (2).
        expand_ratio: border width factor, r = ceil(expand_ratio * sqrt(target area)) (0.1).
        positive_erode_prob: probability of eroding an object before sampling positives (0.9).
        positive_erode_iters: 3x3 erosion iterations (3); the eroded mask is used only if > 10 px remain.
        negative_strategy_probs: probabilities of the bg / other / border regions per negative (0.1, 0.4, 0.5).
    """

    def __init__(self, max_num_points: int = 24, prob_gamma: float = 0.8, merge_objects_prob: float = 0.15,
                 max_num_merged_objects: int = 2, expand_ratio: float = 0.1, positive_erode_prob: float = 0.9,
                 positive_erode_iters: int = 3,
                 negative_strategy_probs: Sequence[float] = (0.1, 0.4, 0.5)):
        self.max_num_points = check_int(max_num_points, "max_num_points", 1)
        if isinstance(prob_gamma, bool) or not isinstance(prob_gamma, Real) or not 0.0 < prob_gamma <= 1.0:
            raise ValueError(f"prob_gamma must be in (0, 1], got {prob_gamma!r}")
        self.prob_gamma = float(prob_gamma)
        self.merge_objects_prob = _check_prob(merge_objects_prob, "merge_objects_prob")
        self.max_num_merged_objects = check_int(max_num_merged_objects, "max_num_merged_objects", 1)
        if self.max_num_merged_objects > self.max_num_points:
            raise ValueError(f"max_num_merged_objects ({max_num_merged_objects}) must not exceed max_num_points "
                             f"({max_num_points}): each merged object gets one positive click")
        if isinstance(expand_ratio, bool) or not isinstance(expand_ratio, Real) or expand_ratio < 0:
            raise ValueError(f"expand_ratio must be a number >= 0, got {expand_ratio!r}")
        self.expand_ratio = float(expand_ratio)
        self.positive_erode_prob = _check_prob(positive_erode_prob, "positive_erode_prob")
        self.positive_erode_iters = check_int(positive_erode_iters, "positive_erode_iters", 0)
        probs = [_check_prob(p, f"negative_strategy_probs[{i}]") for i, p in enumerate(negative_strategy_probs)]
        if len(probs) != len(NEGATIVE_STRATEGIES) or not math.isclose(sum(probs), 1.0, abs_tol=1e-6):
            raise ValueError(f"negative_strategy_probs must be {len(NEGATIVE_STRATEGIES)} probabilities "
                             f"{NEGATIVE_STRATEGIES} summing to 1, got {tuple(negative_strategy_probs)}")
        self.negative_strategy_probs = np.asarray(probs) / sum(probs)
        self._pos_probs = positive_count_probs(self.max_num_points, self.prob_gamma)
        self._neg_probs = negative_count_probs(self.max_num_points, self.prob_gamma)

    # -- pieces -------------------------------------------------------------------------------------------

    def num_positive(self, rng: np.random.Generator) -> int:
        return 1 + int(rng.choice(self.max_num_points, p=self._pos_probs))

    def num_negative(self, rng: np.random.Generator) -> int:
        return int(rng.choice(self.max_num_points + 1, p=self._neg_probs))

    def choose_objects(self, num_objects: int, rng: np.random.Generator) -> Tuple[int, ...]:
        """Indices of the target objects: with >= 2 objects and probability merge_objects_prob, k objects
        with k uniform in [2, min(num_objects, max_num_merged_objects)]; else one uniform object (B.1.3)."""
        if num_objects < 1:
            raise ValueError(f"num_objects must be >= 1, got {num_objects}")
        max_k = min(num_objects, self.max_num_merged_objects)
        if max_k >= 2 and rng.random() < self.merge_objects_prob:
            k = int(rng.integers(2, max_k + 1))
            return tuple(int(i) for i in rng.choice(num_objects, size=k, replace=False))
        return (int(rng.integers(num_objects)),)

    def positive_region(self, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """With probability positive_erode_prob the 3x3-eroded mask if it keeps > 10 pixels, else ``mask``."""
        if rng.random() < self.positive_erode_prob:
            eroded = cv2.erode(mask.astype(np.uint8), _KERNEL_3x3, iterations=self.positive_erode_iters)
            if int(eroded.sum()) > 10:
                return eroded.astype(bool)
        return mask

    def border_region(self, target: np.ndarray) -> np.ndarray:
        """Ring of width ceil(expand_ratio * sqrt(area)) around ``target`` (3x3 dilations), target excluded."""
        r = border_width(int(target.sum()), self.expand_ratio)
        if r == 0:
            return np.zeros_like(target)
        dilated = cv2.dilate(target.astype(np.uint8), _KERNEL_3x3, iterations=r).astype(bool)
        return dilated & ~target

    # -- sampling -----------------------------------------------------------------------------------------

    def sample(self, masks: np.ndarray, rng: np.random.Generator, ignore: Optional[np.ndarray] = None,
               labelled: Optional[np.ndarray] = None, num_all_objects: Optional[int] = None) -> SampledClicks:
        """Choose the target and sample its initial clicks.

        Args:
            masks: (N, H, W) bool array of the sample's objects (N may be 0: an empty sample, whose target
                is all False, with no positives and negatives drawn anywhere).
            rng: the random generator.
            ignore: optional (H, W) bool map; no click is placed on an ignored pixel (an addition: the
                official training data has no ignored pixels).
            labelled: optional (H, W) bool map of every pixel that belongs to some object, also to objects
                left out of ``masks`` (those below the minimum area); default: the union of ``masks``.  Such
                objects stay non-background, as RITM's ``remove_small_objects`` only drops their entries:
                the "other" negatives may land on them, and an empty sample's negatives avoid them
                (RITM ``DSample.get_background_mask``).
            num_all_objects: the number of objects RITM's ``len(sample)`` counts: ``masks`` (the candidate
                targets, the roots of a hierarchy) plus the non-root objects that survived (default
                ``len(masks)``).  "Other" negatives come from ``labelled`` minus the target when it exceeds
                the number of chosen objects, else from the background (official ``sample_object``).
        """
        rng = check_rng(rng)
        masks = np.asarray(masks)
        if masks.ndim != 3 or masks.dtype != np.bool_:
            raise ValueError(f"masks must be a bool array of shape (N, H, W), got {masks.dtype} {masks.shape}")
        num_objects, height, width = masks.shape
        if height < 1 or width < 1:
            raise ValueError(f"masks must have a non-empty (H, W), got {(height, width)}")
        allowed = ~as_optional_mask(ignore, "ignore", (height, width))
        if num_objects and not masks.reshape(num_objects, -1).any(axis=1).all():
            raise ValueError("every object mask must be non-empty (drop empty objects before sampling)")
        union = np.logical_or.reduce(masks, axis=0) if num_objects else np.zeros((height, width), dtype=bool)
        if labelled is None:
            labelled = union
        else:
            labelled = as_mask(labelled, "labelled", (height, width))
            if (union & ~labelled).any():
                raise ValueError("labelled must cover every object of masks")
        num_all_objects = num_objects if num_all_objects is None else \
            check_int(num_all_objects, "num_all_objects (at least the number of masks)", num_objects)

        if num_objects == 0:
            target = np.zeros((height, width), dtype=bool)
            object_ids: Tuple[int, ...] = ()
            positives: List[Click] = []
            # every strategy draws from the background (the whole image when nothing is labelled)
            regions = [~labelled & allowed] * len(NEGATIVE_STRATEGIES)
        else:
            object_ids = self.choose_objects(num_objects, rng)
            target = np.logical_or.reduce(masks[list(object_ids)], axis=0)
            positives = self._sample_positives([masks[i] for i in object_ids], allowed, rng)
            bg = ~target
            if num_all_objects > len(object_ids):
                other = labelled & ~target
            else:
                other = bg
            regions = [bg & allowed, other & allowed, self.border_region(target) & allowed]
        negatives = self._sample_negatives(regions, rng)
        return SampledClicks(target, object_ids, positives, negatives, self.max_num_points)

    @staticmethod
    def _pick(pixels: np.ndarray, width: int, is_positive: bool, rng: np.random.Generator) -> Click:
        flat = int(pixels[rng.integers(len(pixels))])
        return Click(is_positive, flat // width, flat % width)

    def _sample_positives(self, object_masks, allowed, rng) -> List[Click]:
        width = object_masks[0].shape[1]
        pixel_sets = [np.flatnonzero(self.positive_region(m, rng) & allowed) for m in object_masks]
        if len(object_masks) == 1:
            pixels = pixel_sets[0]
            n = self.num_positive(rng)
            return [self._pick(pixels, width, True, rng) for _ in range(n)] if len(pixels) else []
        # Merged objects (B.2): one click per object, then extra clicks, their count drawn from the
        # *negative* distribution, each from an object chosen uniformly; a random subset is kept if the
        # total would exceed max_num_points.
        clicks = [self._pick(p, width, True, rng) for p in pixel_sets if len(p)]
        extra = []
        for _ in range(self.num_negative(rng)):
            pixels = pixel_sets[int(rng.integers(len(pixel_sets)))]
            if len(pixels):
                extra.append(self._pick(pixels, width, True, rng))
        room = self.max_num_points - len(clicks)
        if len(extra) > room:
            extra = [extra[i] for i in sorted(rng.choice(len(extra), size=room, replace=False))]
        return clicks + extra

    def _sample_negatives(self, regions, rng) -> List[Click]:
        width = regions[0].shape[1]
        pixel_sets = [np.flatnonzero(r) for r in regions]
        clicks = []
        for _ in range(self.num_negative(rng)):
            pixels = pixel_sets[int(rng.choice(len(regions), p=self.negative_strategy_probs))]
            if len(pixels):  # an empty region skips the click (so fewer negatives)
                clicks.append(self._pick(pixels, width, False, rng))
        return clicks
