"""Training mapper: dataset dict -> augmented 448 x 448 crop, target mask and simulated clicks.

Implements protocol.md B.1 (objects and target), B.2 (initial clicks, through
:class:`adaptiveclick.clicks.MultiPointSampler`) and B.5 (augmentation, albumentations 0.5.2 semantics
of the official SBD / COCO+LVIS recipes) and returns the mapped sample of the data contract::

    {"image": uint8 (3, H, W) RGB, "gt_mask": uint8 (H, W) in {0, 1}, "ignore_mask": bool (H, W),
     "clicks": int64 (2K, 3) rows (row, col, is_positive), rows 0..K-1 positive slots, K..2K-1 negative
     slots, unused rows (-1, -1, -1); K = INPUT.CLICKS.MAX_NUM_POINTS (24),
     "height": H, "width": W, "file_name", "image_id"}

Randomness.  detectron2's ``Augmentation`` classes draw from the global ``np.random``; to be reproducible
this mapper draws every parameter from a ``numpy.random.Generator`` and builds detectron2 ``Transform``
objects (resize, flip, pad, crop, colour) directly.  Each call uses a fresh generator seeded with
``SeedSequence([seed, distributed rank, DataLoader worker id, call index])`` (:meth:`ClickTrainingMapper.call_rng`;
worker id 0 in the main process; ``seed`` is ``SEED``, or random when it is negative).  Hence workers and ranks
draw different streams, a run is reproducible given ``SEED``, and the training loader
(:mod:`adaptiveclick.data.build`) can continue a worker's stream at any call index when a run resumes.  Passing
``rng=`` to :meth:`ClickTrainingMapper.__call__` bypasses the counter (the training loader passes
``call_rng(index)``; tests, tools).
"""

import functools
import logging
from numbers import Integral, Real
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.utils import comm

from adaptiveclick.clicks import MultiPointSampler
from adaptiveclick.data.datasets.common import load_instance_masks, load_stuff_masks
from adaptiveclick.utils.checks import check_int

__all__ = ["ClickTrainingMapper", "CvResizeTransform", "Rot90Transform", "WarpAffineTransform", "FLIP_MODES"]

logger = logging.getLogger(__name__)

#: "any": albumentations ``Flip`` (horizontal, vertical or both, uniformly; SBD recipe);
#: "horizontal": ``HorizontalFlip`` (COCO+LVIS recipe); "none": no flip.
FLIP_MODES = ("any", "horizontal", "none")


class Rot90Transform(T.Transform):
    """Rotate by k quarter turns counter-clockwise (``np.rot90``), exact for images and masks."""

    def __init__(self, h: int, w: int, k: int):
        super().__init__()
        self._set_attributes({"h": h, "w": w, "k": int(k) % 4})

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.rot90(img, self.k, axes=(0, 1)))

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        # one counter-clockwise quarter turn maps the continuous point (x, y) of a w-wide image to (y, w - x)
        h, w = self.h, self.w
        for _ in range(self.k):
            coords = np.stack([coords[:, 1], w - coords[:, 0]], axis=1)
            h, w = w, h
        return coords

    def inverse(self) -> T.Transform:
        h, w = (self.w, self.h) if self.k % 2 else (self.h, self.w)
        return Rot90Transform(h, w, -self.k)


class CvResizeTransform(T.ResizeTransform):
    """detectron2's ``ResizeTransform`` (same geometry and coordinates) resampling as ``cv2.resize`` does in
    the official ``UniformRandomResize`` (isegm/data/transforms.py, albumentations ``DualTransform``): images
    bilinear without anti-aliasing (PIL's bilinear, which detectron2 uses, averages over the whole footprint
    when shrinking and so blurs), segmentations with OpenCV's nearest neighbour."""

    def __init__(self, h: int, w: int, new_h: int, new_w: int):
        super().__init__(h, w, new_h, new_w, interp=None)

    def _resize(self, img: np.ndarray, interp: int) -> np.ndarray:
        if img.shape[:2] != (self.h, self.w):
            raise ValueError(f"CvResizeTransform: expected an ({self.h}, {self.w}) array, got {img.shape}")
        out = cv2.resize(img, (self.new_w, self.new_h), interpolation=interp)
        return out[..., None] if img.ndim == 3 and out.ndim == 2 else out

    def apply_image(self, img: np.ndarray, interp=None) -> np.ndarray:
        return self._resize(img, cv2.INTER_LINEAR)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self._resize(segmentation, cv2.INTER_NEAREST)

    def inverse(self) -> T.Transform:
        return CvResizeTransform(self.new_h, self.new_w, self.h, self.w)


class WarpAffineTransform(T.Transform):
    """``cv2.warpAffine`` with a 2 x 3 matrix on pixel indices, constant 0 border, same output size.

    Images are interpolated bilinearly, segmentations with nearest neighbour.
    """

    def __init__(self, matrix: np.ndarray, h: int, w: int):
        super().__init__()
        self._set_attributes({"matrix": np.asarray(matrix, dtype=np.float64), "h": h, "w": w})

    def _warp(self, img, interp):
        return cv2.warpAffine(img, self.matrix, (self.w, self.h), flags=interp,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return self._warp(img, cv2.INTER_LINEAR)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        # warped as int32, the dtype of the official label maps (isegm/data/datasets/sbd.py): OpenCV's nearest
        # neighbour rounds source coordinates differently for 8-bit images (about 1 pixel per warp differs)
        return self._warp(segmentation.astype(np.int32), cv2.INTER_NEAREST).astype(segmentation.dtype)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        # detectron2 coordinates are continuous (pixel i spans [i, i + 1)); OpenCV's matrix acts on indices
        idx = coords - 0.5
        return idx @ self.matrix[:, :2].T + self.matrix[:, 2] + 0.5


def _brightness_contrast(img: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    # albumentations 0.5.2 RandomBrightnessContrast on uint8 (brightness_by_max): a LUT of
    # clip(alpha * v + beta * 255, 0, 255) truncated to uint8.
    lut = np.clip(np.arange(256, dtype=np.float32) * alpha + beta * 255.0, 0, 255).astype(np.uint8)
    return lut[img]


def _rgb_shift(img: np.ndarray, shifts: Tuple[float, float, float]) -> np.ndarray:
    # albumentations 0.5.2 RGBShift on uint8: per channel clip(v + shift, 0, 255) truncated to uint8.
    out = np.empty_like(img)
    for c, shift in enumerate(shifts):
        lut = np.clip(np.arange(256, dtype=np.float32) + shift, 0, 255).astype(np.uint8)
        out[..., c] = lut[img[..., c]]
    return out


def _apply(transforms: T.TransformList, array: np.ndarray, segmentation: bool) -> np.ndarray:
    """Apply ``transforms`` step by step, keeping the array writable (PIL-backed resize output is read-only,
    which the flip transforms would hand to ``torch.from_numpy``)."""
    for t in transforms.transforms:
        array = t.apply_segmentation(array) if segmentation else t.apply_image(array)
        if not array.flags.writeable:
            array = array.copy()
    return array


def _pack_bits(layers: Sequence[np.ndarray]) -> np.ndarray:
    """Pack bool (H, W) layers into uint8 planes, layer i in bit i % 8 of plane i // 8."""
    planes = np.zeros(((len(layers) + 7) // 8,) + layers[0].shape, dtype=np.uint8)
    for i, layer in enumerate(layers):
        planes[i // 8] |= np.asarray(layer, dtype=bool).view(np.uint8) << np.uint8(i % 8)
    return planes


def _unpack_bits(planes: np.ndarray, count: int) -> np.ndarray:
    """Inverse of :func:`_pack_bits`: a bool (count, H, W) array."""
    out = np.empty((count,) + planes.shape[1:], dtype=bool)
    for i in range(count):
        np.not_equal(planes[i // 8] & np.uint8(1 << (i % 8)), 0, out=out[i])
    return out


def _parents(dataset_dict: dict) -> list:
    """Each annotation's ``"parent"`` (None for a root), checked: an index of another annotation, no cycle."""
    annotations = dataset_dict.get("annotations", [])
    parents = [a.get("parent") for a in annotations]
    n = len(parents)
    for i, p in enumerate(parents):
        if p is not None and (isinstance(p, bool) or not isinstance(p, Integral) or not 0 <= p < n or p == i):
            raise ValueError(f"{dataset_dict['file_name']}: annotation {i}'s 'parent' must be None or the index of "
                             f"another of its {n} annotations, got {p!r}")
    for i in range(n):
        seen, j = {i}, parents[i]
        while j is not None:
            if j in seen:
                raise ValueError(f"{dataset_dict['file_name']}: the annotations' 'parent' links form a cycle "
                                 f"through annotation {i}")
            seen.add(j)
            j = parents[j]
    return parents


def _surviving_roots(parents: Sequence[Optional[int]], survives: np.ndarray) -> list:
    """Indices of the surviving objects with no surviving ancestor (the roots once the removed objects' children
    have moved up to their nearest surviving ancestor)."""
    roots = []
    for i, alive in enumerate(survives):
        if not alive:
            continue
        j = parents[i]
        while j is not None and not survives[j]:
            j = parents[j]
        if j is None:
            roots.append(i)
    return roots


def _pair(value, name, kind=Real, positive=False):
    if not isinstance(value, (list, tuple)) or len(value) != 2 or any(
            isinstance(v, bool) or not isinstance(v, kind) for v in value):
        raise ValueError(f"{name} must be a pair of {kind.__name__} values, got {value!r}")
    if positive and min(value) <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return tuple(value)


def _prob(value, name):
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _non_negative(value, name, kind=Real):
    if isinstance(value, bool) or not isinstance(value, kind) or value < 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return value


class ClickTrainingMapper(DatasetMapper):
    """Maps a dataset dict to a training sample with a target mask and simulated clicks.

    Shares detectron2 ``DatasetMapper``'s interface (``is_train``, ``image_format``,
    ``from_config(cfg, is_train)``, ``__call__(dataset_dict)``) but not its augmentation machinery (see the
    module docstring), so ``DatasetMapper.__init__`` is not run.

    Args (defaults = AdaptiveClick's SBD recipe, protocol.md B.1/B.5):
        is_train: augment (True) or keep the full image untouched (False; target and clicks still sampled).
        image_format: must be "RGB" (the data contract).
        crop_size: (H, W) of the output crop (448, 448); smaller images are zero-padded (centred) first.
        scale_range: uniform resize factor range, one factor for both sides (0.75, 1.25).
        flip: one of FLIP_MODES ("any"); flip_prob: its probability (0.5).
        rotate90_prob: probability of k quarter turns, k uniform in 0..3 (0.5).
        shift_rotate_prob, shift_limit, rotate_limit: ShiftScaleRotate without scaling (0.75, 0.03, 3 degrees).
        brightness_range, contrast_range, brightness_contrast_prob: (-0.25, 0.25), (-0.15, 0.4), 0.75.
        rgb_shift, rgb_shift_prob: per-channel shift U(-rgb_shift, rgb_shift) (10), probability 0.75.
        min_object_area: objects smaller than this after augmentation are removed (20 px, AdaptiveClick SBD);
            their pixels stay labelled (not background) and their children (annotations' "parent") move up.
        keep_background_prob: probability of accepting an augmentation that left no object (0.01); other
            draws are redrawn, at most ``max_attempts`` times in all (then the empty sample is kept, with a
            warning).
        stuff_prob: probability that the dict's stuff segments (``"stuff"``, COCO+LVIS) join as root objects;
            otherwise they are erased to background (0; RITM ``stuff_prob``, COCO+LVIS recipe 0.3).
        sampler: the :class:`MultiPointSampler` (target choice and initial clicks).
        seed: base seed of the per-call generators (None: random).
    """

    @configurable
    def __init__(self, is_train: bool = True, *, image_format: str = "RGB",
                 crop_size: Sequence[int] = (448, 448), scale_range: Sequence[float] = (0.75, 1.25),
                 flip: str = "any", flip_prob: float = 0.5, rotate90_prob: float = 0.5,
                 shift_rotate_prob: float = 0.75, shift_limit: float = 0.03, rotate_limit: float = 3.0,
                 brightness_range: Sequence[float] = (-0.25, 0.25), contrast_range: Sequence[float] = (-0.15, 0.4),
                 brightness_contrast_prob: float = 0.75, rgb_shift: float = 10.0, rgb_shift_prob: float = 0.75,
                 min_object_area: int = 20, keep_background_prob: float = 0.01, max_attempts: int = 100,
                 stuff_prob: float = 0.0, sampler: Optional[MultiPointSampler] = None, seed: Optional[int] = None):
        # DatasetMapper.__init__ is deliberately not called: it would set up (and log) detectron2
        # augmentations that draw from the global np.random.
        if image_format != "RGB":
            raise ValueError(f"image_format must be 'RGB' (the data contract; set INPUT.FORMAT), got {image_format!r}")
        self.is_train = bool(is_train)
        self.image_format = image_format
        self.crop_size = _pair(tuple(crop_size), "crop_size", Integral, positive=True)
        self.scale_range = _pair(tuple(scale_range), "scale_range", positive=True)
        if self.scale_range[0] > self.scale_range[1]:
            raise ValueError(f"scale_range must be (low, high) with low <= high, got {scale_range!r}")
        if flip not in FLIP_MODES:
            raise ValueError(f"flip must be one of {FLIP_MODES}, got {flip!r}")
        self.flip = flip
        self.flip_prob = _prob(flip_prob, "flip_prob")
        self.rotate90_prob = _prob(rotate90_prob, "rotate90_prob")
        self.shift_rotate_prob = _prob(shift_rotate_prob, "shift_rotate_prob")
        self.shift_limit = float(_non_negative(shift_limit, "shift_limit"))
        self.rotate_limit = float(_non_negative(rotate_limit, "rotate_limit"))
        self.brightness_range = _pair(tuple(brightness_range), "brightness_range")
        self.contrast_range = _pair(tuple(contrast_range), "contrast_range")
        for name, (lo, hi) in (("brightness_range", self.brightness_range), ("contrast_range", self.contrast_range)):
            if lo > hi:
                raise ValueError(f"{name} must be (low, high) with low <= high, got {(lo, hi)}")
        if self.contrast_range[0] < -1:
            raise ValueError(f"contrast_range must be >= -1 (the contrast factor is 1 + c), got {contrast_range!r}")
        self.brightness_contrast_prob = _prob(brightness_contrast_prob, "brightness_contrast_prob")
        self.rgb_shift = float(_non_negative(rgb_shift, "rgb_shift"))
        self.rgb_shift_prob = _prob(rgb_shift_prob, "rgb_shift_prob")
        self.min_object_area = int(_non_negative(min_object_area, "min_object_area", Integral))
        self.keep_background_prob = _prob(keep_background_prob, "keep_background_prob")
        self.stuff_prob = _prob(stuff_prob, "stuff_prob")
        self.max_attempts = check_int(max_attempts, "max_attempts")
        if sampler is None:
            sampler = MultiPointSampler()
        if not isinstance(sampler, MultiPointSampler):
            raise TypeError(f"sampler must be a MultiPointSampler, got {type(sampler).__name__}")
        self.sampler = sampler
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0):
            raise ValueError(f"seed must be None or an integer >= 0, got {seed!r}")
        self.seed = int(seed) if seed is not None else int(np.random.SeedSequence().entropy)
        self._num_calls = 0

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        aug, clicks = cfg.INPUT.AUG, cfg.INPUT.CLICKS
        sampler = MultiPointSampler(
            max_num_points=clicks.MAX_NUM_POINTS, prob_gamma=clicks.PROB_GAMMA,
            merge_objects_prob=clicks.MERGE_OBJECTS_PROB, max_num_merged_objects=clicks.MAX_NUM_MERGED_OBJECTS,
            expand_ratio=clicks.EXPAND_RATIO, positive_erode_prob=clicks.POSITIVE_ERODE_PROB,
            positive_erode_iters=clicks.POSITIVE_ERODE_ITERS,
            negative_strategy_probs=tuple(clicks.NEGATIVE_STRATEGY_PROBS))
        return {
            "is_train": is_train,
            "image_format": cfg.INPUT.FORMAT,
            "crop_size": tuple(aug.CROP_SIZE),
            "scale_range": tuple(aug.SCALE_RANGE),
            "flip": aug.FLIP,
            "flip_prob": aug.FLIP_PROB,
            "rotate90_prob": aug.ROTATE90_PROB,
            "shift_rotate_prob": aug.SHIFT_ROTATE_PROB,
            "shift_limit": aug.SHIFT_LIMIT,
            "rotate_limit": aug.ROTATE_LIMIT,
            "brightness_range": tuple(aug.BRIGHTNESS_RANGE),
            "contrast_range": tuple(aug.CONTRAST_RANGE),
            "brightness_contrast_prob": aug.BRIGHTNESS_CONTRAST_PROB,
            "rgb_shift": aug.RGB_SHIFT,
            "rgb_shift_prob": aug.RGB_SHIFT_PROB,
            "min_object_area": clicks.MIN_OBJECT_AREA,
            "keep_background_prob": clicks.KEEP_BACKGROUND_PROB,
            "max_attempts": aug.MAX_ATTEMPTS,
            "stuff_prob": clicks.STUFF_PROB,
            "sampler": sampler,
            "seed": cfg.SEED if cfg.SEED >= 0 else None,
        }

    # -- randomness ---------------------------------------------------------------------------------------

    def call_rng(self, index: int, worker: Optional[int] = None) -> np.random.Generator:
        """The generator of call ``index`` (0-based) of this process in DataLoader worker ``worker`` (default:
        the current worker, 0 in the main process)."""
        index = check_int(index, "call index", minimum=0)
        if worker is None:
            info = torch.utils.data.get_worker_info()
            worker = info.id if info is not None else 0
        entropy = [self.seed, comm.get_rank(), check_int(worker, "worker", minimum=0), index]
        return np.random.default_rng(np.random.SeedSequence(entropy))

    def _call_rng(self) -> np.random.Generator:
        rng = self.call_rng(self._num_calls)
        self._num_calls += 1
        return rng

    # -- augmentation (protocol.md B.5) -------------------------------------------------------------------

    def geometric_transforms(self, height: int, width: int, rng: np.random.Generator) -> T.TransformList:
        """Draw resize, flip, rotate-90, shift/rotate, pad and crop for an image of (height, width)."""
        tfms = []
        scale = rng.uniform(*self.scale_range)
        # UniformRandomResize: new side = round(side * s) (isegm/data/transforms.py)
        new_h, new_w = max(1, int(round(height * scale))), max(1, int(round(width * scale)))
        tfms.append(CvResizeTransform(height, width, new_h, new_w))
        h, w = new_h, new_w
        if self.flip != "none" and rng.random() < self.flip_prob:
            # albumentations Flip: d uniform in {-1, 0, 1} = both, vertical, horizontal
            d = int(rng.integers(-1, 2)) if self.flip == "any" else 1
            if d in (-1, 1):
                tfms.append(T.HFlipTransform(w))
            if d in (-1, 0):
                tfms.append(T.VFlipTransform(h))
        if rng.random() < self.rotate90_prob:
            k = int(rng.integers(0, 4))
            tfms.append(Rot90Transform(h, w, k))
            if k % 2:
                h, w = w, h
        if rng.random() < self.shift_rotate_prob:
            # albumentations ShiftScaleRotate (scale 1): rotate about the centre, then shift by (dx w, dy h)
            angle = rng.uniform(-self.rotate_limit, self.rotate_limit)
            dx, dy = rng.uniform(-self.shift_limit, self.shift_limit, size=2)
            matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
            matrix[0, 2] += dx * w
            matrix[1, 2] += dy * h
            tfms.append(WarpAffineTransform(matrix, h, w))
        crop_h, crop_w = self.crop_size
        if h < crop_h or w < crop_w:
            # PadIfNeeded: centred, the extra pixel (odd difference) at the bottom / right
            pad_h, pad_w = max(0, crop_h - h), max(0, crop_w - w)
            top, left = pad_h // 2, pad_w // 2
            tfms.append(T.PadTransform(left, top, pad_w - left, pad_h - top, w, h, pad_value=0, seg_pad_value=0))
            h, w = h + pad_h, w + pad_w
        # RandomCrop: offset = int((side - crop) * U[0, 1))
        y0, x0 = int((h - crop_h) * rng.random()), int((w - crop_w) * rng.random())
        tfms.append(T.CropTransform(x0, y0, crop_w, crop_h, orig_w=w, orig_h=h))
        return T.TransformList(tfms)

    def color_transforms(self, rng: np.random.Generator) -> T.TransformList:
        """Draw RandomBrightnessContrast and RGBShift (image only)."""
        tfms = []
        if rng.random() < self.brightness_contrast_prob:
            alpha = 1.0 + rng.uniform(*self.contrast_range)
            beta = rng.uniform(*self.brightness_range)
            tfms.append(T.ColorTransform(functools.partial(_brightness_contrast, alpha=alpha, beta=beta)))
        if rng.random() < self.rgb_shift_prob:
            shifts = tuple(float(s) for s in rng.uniform(-self.rgb_shift, self.rgb_shift, size=3))
            tfms.append(T.ColorTransform(functools.partial(_rgb_shift, shifts=shifts)))
        return T.TransformList(tfms)

    # -- mapping ------------------------------------------------------------------------------------------

    def __call__(self, dataset_dict: dict, rng: Optional[np.random.Generator] = None) -> dict:
        """Map one dataset dict (see the module docstring); ``rng`` overrides the per-call generator."""
        if not isinstance(dataset_dict, dict):
            raise TypeError(f"dataset_dict must be a dict, got {type(dataset_dict).__name__}")
        if "file_name" not in dataset_dict:
            raise ValueError("dataset_dict has no 'file_name' (the image path)")
        if rng is None:
            rng = self._call_rng()
        elif not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")

        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dict(dataset_dict), image)
        mask_files = {}  # each mask file decoded once: COCO+LVIS objects and stuff share one packed file
        masks, ignore = load_instance_masks(dataset_dict, cache=mask_files)
        parents = _parents(dataset_dict)
        if self.stuff_prob > 0 and dataset_dict.get("stuff") is not None and rng.random() < self.stuff_prob:
            stuff = load_stuff_masks(dataset_dict, cache=mask_files)  # RITM: stuff joins as root objects
            masks, parents = list(masks) + stuff, parents + [None] * len(stuff)
        height, width = image.shape[:2]
        for i, m in enumerate(masks):
            if m.shape != (height, width):
                raise ValueError(f"mask {i} of {dataset_dict['file_name']} has shape {m.shape}, "
                                 f"the image has {(height, width)}")
        if ignore is not None and ignore.shape != (height, width):
            raise ValueError(f"ignore mask of {dataset_dict['file_name']} has shape {ignore.shape}, "
                             f"the image has {(height, width)}")

        # Objects and the ignore map travel through the geometric transforms as bit planes of uint8 images
        # (8 masks per plane): every geometric transform resamples segmentations by nearest neighbour,
        # which moves the packed bits unchanged.
        layers = list(masks) + [ignore if ignore is not None else np.zeros((height, width), dtype=bool)]
        planes = _pack_bits(layers)
        num_objects = len(masks)

        if self.is_train:
            for _ in range(self.max_attempts):
                geo = self.geometric_transforms(height, width, rng)
                out_planes = np.stack([_apply(geo, p, segmentation=True) for p in planes])
                out_layers = _unpack_bits(out_planes, len(layers))
                alive = out_layers[:num_objects].any(axis=(1, 2))
                # B.1.1: redraw when every object vanished, unless the keep-background coin accepts
                # (a sample without objects cannot improve, so its first draw is kept).
                if num_objects == 0 or alive.any() or rng.random() < self.keep_background_prob:
                    break
            else:
                logger.warning("%s: no object survived %d augmentation draws; using an empty sample",
                               dataset_dict["file_name"], self.max_attempts)
            image = self.color_transforms(rng).apply_image(_apply(geo, image, segmentation=False))
        else:
            out_layers = np.stack(layers).astype(bool)
        object_masks, ignore_mask = out_layers[:num_objects], out_layers[num_objects]
        # B.1.1-2: drop vanished objects, then objects below min_object_area; the small ones stay labelled
        # (not background), as RITM's remove_small_objects drops only their entries; the targets are the
        # surviving roots, a removed object's children taking its place (RITM DSample._remove_object)
        labelled = object_masks.any(axis=0)
        areas = object_masks.sum(axis=(1, 2))
        survives = (areas > 0) & (areas >= self.min_object_area)
        roots = _surviving_roots(parents, survives)

        sampled = self.sampler.sample(object_masks[roots], rng, ignore=ignore_mask, labelled=labelled,
                                      num_all_objects=int(survives.sum()))
        out_h, out_w = image.shape[:2]
        return {
            "file_name": dataset_dict["file_name"],
            "image_id": dataset_dict.get("image_id"),
            "height": out_h,
            "width": out_w,
            "image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "gt_mask": torch.as_tensor(sampled.target.astype(np.uint8)),
            "ignore_mask": torch.as_tensor(ignore_mask),
            "clicks": torch.as_tensor(sampled.to_array()),
        }
