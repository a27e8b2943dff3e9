"""The built-in synthetic dataset: procedural RGB images with overlapping instance masks, no download.

Every image is a pure function of ``(index, image_size, seed)`` (NumPy ``Generator`` seeded with
``[seed, index]``; OpenCV drawing): a textured background (gradient, stripes, checks, blotches or smooth
noise) and 3-6 objects painted bottom to top, each with its own colour and texture and a shape drawn from:
smooth blobs, ellipses, rotated rectangles, rings and blobs with holes, "spiders" (a body with 1-3 px legs),
C-shaped arcs and thin branches.  Objects overlap; the instance mask of an object is its visible part, and
an object is only added if every object below it keeps at least 40 % of its area and ``min_area`` pixels.
Thin parts, holes and concave arcs make 90 % IoU a matter of several clicks.

Images are cached as PNG (so ``file_name`` works with detectron2's ``read_image``) beside a JSON file with
the RLE masks, under ``<cache>/synthetic/v<version>-size<size>-seed<seed>/<index>.png|.json`` where
``<cache>`` is ``cache_dir``, else ``$ADAPTIVECLICK_CACHE``, else ``~/.cache/adaptiveclick``.  Files are
written to a temporary name and renamed, so concurrent processes and interrupted runs never leave partial
files; a cached entry whose JSON is unreadable or does not match its parameters is regenerated.
"""

import contextlib
import json
import logging
import os
import tempfile
from typing import List, Optional, Tuple

import cv2
import numpy as np
from detectron2.structures import BoxMode

from adaptiveclick.utils.checks import check_int

from .common import loader, make_annotation, register_dataset

__all__ = ["GENERATOR_VERSION", "CACHE_ENV", "DEFAULT_CACHE_DIR", "MIN_IMAGE_SIZE", "SYNTHETIC_NAMES",
           "generate_synthetic_sample", "synthetic_cache_dir", "load_synthetic", "register_synthetic",
           "register_synthetic_from_config"]

logger = logging.getLogger(__name__)

#: Bump whenever the images change for given parameters: it is part of the cache key.
GENERATOR_VERSION = 1
CACHE_ENV = "ADAPTIVECLICK_CACHE"
DEFAULT_CACHE_DIR = "~/.cache/adaptiveclick"
MIN_IMAGE_SIZE = 32
#: Names registered by :func:`register_synthetic_from_config` (training set, validation set).
SYNTHETIC_NAMES = ("synthetic_train", "synthetic_val")

_SHAPES = ("blob", "box", "ring", "holes", "spider", "arc", "branch")
_SHAPE_PROBS = (0.16, 0.14, 0.16, 0.14, 0.16, 0.12, 0.12)
_TEXTURES = ("noise", "gradient", "stripes", "checks", "blotches")
_NUM_OBJECTS = (3, 6)  # inclusive range of objects per image
_MIN_VISIBLE_FRACTION = 0.4


# -- drawing ------------------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """(h, w) float32 in ~[0, 1]: a random cells x cells grid upsampled bicubically."""
    grid = rng.random((cells, cells), dtype=np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _texture(rng: np.random.Generator, h: int, w: int, c1: np.ndarray, c2: np.ndarray, unit: float) -> np.ndarray:
    """(h, w, 3) float32 texture mixing colours c1 and c2."""
    kind = _TEXTURES[rng.integers(len(_TEXTURES))]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    along = xx * np.float32(np.cos(angle)) + yy * np.float32(np.sin(angle))
    if kind == "noise":
        t = _smooth_noise(rng, h, w, int(rng.integers(2, 6))) * np.float32(0.6)
    elif kind == "gradient":
        t = (along - along.min()) / max(float(np.ptp(along)), 1.0)
    elif kind == "stripes":
        period = rng.uniform(6, 24) * unit
        t = np.float32(0.5) + np.float32(0.5) * np.sin(along * np.float32(2 * np.pi / period) + rng.uniform(0, 2 * np.pi))
        if rng.random() < 0.5:
            t = (t > 0.5).astype(np.float32)
    elif kind == "checks":
        period = rng.uniform(6, 20) * unit
        across = yy * np.float32(np.cos(angle)) - xx * np.float32(np.sin(angle))
        t = ((np.floor(along / period) + np.floor(across / period)) % 2).astype(np.float32)
    else:  # blotches
        t = (_smooth_noise(rng, h, w, int(rng.integers(4, 10))) > 0.5).astype(np.float32)
    return c1 + t[..., None] * (c2 - c1)


def _radial_polygon(rng: np.random.Generator, cx: float, cy: float, r: float, min_factor: float,
                    points: int = 48) -> np.ndarray:
    """Closed star-shaped polygon: radius r * (1 + a few random harmonics), at least r * min_factor."""
    theta = np.linspace(0, 2 * np.pi, points, endpoint=False)
    radius = np.ones(points)
    for k in range(1, 5):
        radius += rng.uniform(0, 0.3 / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    radius = r * np.maximum(radius, min_factor)
    return np.round(np.stack([cx + radius * np.cos(theta), cy + radius * np.sin(theta)], 1)).astype(np.int32)


def _polyline(rng: np.random.Generator, x: float, y: float, direction: float, segments: int, step: float,
              bend: float) -> np.ndarray:
    pts = [(x, y)]
    for _ in range(segments):
        direction += rng.uniform(-bend, bend)
        x, y = x + step * np.cos(direction), y + step * np.sin(direction)
        pts.append((x, y))
    return np.round(np.asarray(pts)).astype(np.int32)


def _draw_shape(rng: np.random.Generator, kind: str, cx: float, cy: float, size: int) -> np.ndarray:
    """A (size, size) bool mask of one object of the given kind centred near (cx, cy)."""
    canvas = np.zeros((size, size), dtype=np.uint8)
    unit = size / 256.0
    r = rng.uniform(0.09, 0.2) * size
    if kind == "blob":
        cv2.fillPoly(canvas, [_radial_polygon(rng, cx, cy, r, 0.35)], 1)
    elif kind == "box":
        a, b = rng.uniform(0.08, 0.22) * size, rng.uniform(0.04, 0.14) * size
        angle = rng.uniform(0, 180)
        if rng.random() < 0.5:
            cv2.ellipse(canvas, (int(cx), int(cy)), (int(a), int(b)), angle, 0, 360, 1, -1)
        else:
            corners = cv2.boxPoints(((cx, cy), (2 * a, 2 * b), angle))
            cv2.fillPoly(canvas, [np.round(corners).astype(np.int32)], 1)
    elif kind in ("ring", "holes"):
        # outer radius >= 0.6 r; every hole stays within 0.55 r of the centre, so holes are enclosed
        cv2.fillPoly(canvas, [_radial_polygon(rng, cx, cy, r, 0.6)], 1)
        if kind == "ring":
            ox, oy = rng.uniform(-0.1, 0.1, size=2) * r
            axes = (int(rng.uniform(0.25, 0.45) * r), int(rng.uniform(0.2, 0.4) * r))
            cv2.ellipse(canvas, (int(cx + ox), int(cy + oy)), axes, rng.uniform(0, 180), 0, 360, 0, -1)
        else:
            for _ in range(int(rng.integers(1, 4))):
                hole_r = rng.uniform(0.1, 0.2) * r
                dist, ang = rng.uniform(0, 0.55 * r - hole_r), rng.uniform(0, 2 * np.pi)
                cv2.circle(canvas, (int(cx + dist * np.cos(ang)), int(cy + dist * np.sin(ang))), int(hole_r), 0, -1)
    elif kind == "spider":
        body = r * rng.uniform(0.45, 0.7)
        cv2.fillPoly(canvas, [_radial_polygon(rng, cx, cy, body, 0.5)], 1)
        thickness = max(1, int(round(rng.uniform(1.0, 3.0) * unit)))
        for direction in rng.uniform(0, 2 * np.pi, size=int(rng.integers(2, 7))):
            leg = _polyline(rng, cx, cy, direction, 3, body * rng.uniform(0.6, 1.1), 0.5)
            cv2.polylines(canvas, [leg], False, 1, thickness)
    elif kind == "arc":
        axes = (int(r), int(r * rng.uniform(0.5, 1.0)))
        start = rng.uniform(0, 360)
        thickness = max(2, int(round(rng.uniform(0.15, 0.35) * r)))
        cv2.ellipse(canvas, (int(cx), int(cy)), axes, rng.uniform(0, 180), start, start + rng.uniform(200, 320), 1,
                    thickness)
    else:  # branch: a bent stick with one or two side twigs
        thickness = max(2, int(round(rng.uniform(2.0, 6.0) * unit)))
        stem = _polyline(rng, cx, cy, rng.uniform(0, 2 * np.pi), int(rng.integers(3, 7)), r * 0.6, 0.6)
        cv2.polylines(canvas, [stem], False, 1, thickness)
        for _ in range(int(rng.integers(1, 3))):
            x, y = stem[int(rng.integers(1, len(stem)))]
            twig = _polyline(rng, x, y, rng.uniform(0, 2 * np.pi), 2, r * 0.4, 0.4)
            cv2.polylines(canvas, [twig], False, 1, max(1, thickness - 1))
    return canvas.astype(bool)


def _distinct_colour(rng: np.random.Generator, reference: np.ndarray) -> np.ndarray:
    """Of 8 random colours, the one farthest from ``reference`` (RGB float32)."""
    candidates = rng.integers(0, 256, size=(8, 3)).astype(np.float32)
    return candidates[np.argmax(np.linalg.norm(candidates - reference, axis=1))]


def generate_synthetic_sample(index: int, image_size: int = 256, seed: int = 0) -> Tuple[np.ndarray, List[np.ndarray]]:
    """Image ``index`` of the synthetic dataset ``(image_size, seed)``.

    Returns ``(image, masks)``: uint8 (S, S, 3) RGB and a list of bool (S, S) visible-instance masks, bottom
    to top; the masks are pairwise disjoint and each has at least ``max(12, 0.002 S^2)`` pixels.
    """
    index = check_int(index, "index", 0)
    size = check_int(image_size, "image_size", MIN_IMAGE_SIZE)
    seed = check_int(seed, "seed", 0)
    rng = np.random.default_rng([seed, index])
    unit = size / 256.0
    min_area = max(12, int(0.002 * size * size))

    background = _texture(rng, size, size, rng.integers(0, 256, 3).astype(np.float32),
                          rng.integers(0, 256, 3).astype(np.float32), unit)
    image = background + _smooth_noise(rng, size, size, 3)[..., None] * np.float32(rng.uniform(-60, 60))

    full, visible = [], []
    target = int(rng.integers(_NUM_OBJECTS[0], _NUM_OBJECTS[1] + 1))
    for _ in range(10 * target):
        if len(full) == target:
            break
        if full and rng.random() < 0.6:
            # overlap: centre near a pixel of an existing object
            ys, xs = np.nonzero(full[int(rng.integers(len(full)))])
            k = int(rng.integers(len(ys)))
            cx, cy = xs[k] + rng.uniform(-0.1, 0.1) * size, ys[k] + rng.uniform(-0.1, 0.1) * size
        else:
            cx, cy = rng.uniform(0.1, 0.9, size=2) * size
        kind = _SHAPES[rng.choice(len(_SHAPES), p=_SHAPE_PROBS)]
        mask = _draw_shape(rng, kind, cx, cy, size)
        if mask.sum() < min_area:
            continue
        kept = [v & ~mask for v in visible]
        if any(k.sum() < max(min_area, _MIN_VISIBLE_FRACTION * f.sum()) for k, f in zip(kept, full)):
            continue
        ys, xs = np.nonzero(mask)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        region = mask[y0:y1, x0:x1]
        c1 = _distinct_colour(rng, image[y0:y1, x0:x1][region].mean(axis=0))
        c2 = np.clip(c1 + rng.uniform(-70, 70, size=3), 0, 255).astype(np.float32)
        texture = _texture(rng, y1 - y0, x1 - x0, c1, c2, unit)
        image[y0:y1, x0:x1][region] = texture[region]
        full.append(mask)
        visible = kept + [mask]

    # no per-pixel noise: it would triple the PNG size (~45 KB per 256 x 256 image without it)
    return np.clip(image, 0, 255).astype(np.uint8), visible


# -- cache and registration ---------------------------------------------------------------------------------


def synthetic_cache_dir(image_size: int, seed: int, cache_dir: Optional[str] = None) -> str:
    """Folder of the cached images of ``(image_size, seed)`` under ``cache_dir`` (else $ADAPTIVECLICK_CACHE,
    else ~/.cache/adaptiveclick)."""
    if cache_dir is None or cache_dir == "":
        cache_dir = os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR
    cache_dir = os.path.abspath(os.path.expanduser(os.fspath(cache_dir)))
    return os.path.join(cache_dir, "synthetic", f"v{GENERATOR_VERSION}-size{int(image_size)}-seed{int(seed)}")


def _atomic_write(path: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _params(index: int, image_size: int, seed: int) -> dict:
    return {"generator_version": GENERATOR_VERSION, "image_size": image_size, "seed": seed, "index": index}


def _read_cached(png: str, js: str, params: dict) -> Optional[List[dict]]:
    """The cached annotations, or None when the entry is missing or unusable (then it is regenerated)."""
    if not (os.path.isfile(png) and os.path.isfile(js)):
        return None
    try:
        with open(js) as f:
            record = json.load(f)
        if record.get("params") != params:
            raise ValueError(f"parameters {record.get('params')} differ from {params}")
        annotations = record["annotations"]
        for a in annotations:
            a["bbox_mode"] = BoxMode(a["bbox_mode"])
    except (ValueError, KeyError, AttributeError, TypeError) as e:
        logger.warning(f"regenerating the synthetic image of {js}: unusable cache entry ({e})")
        return None
    return annotations


def _write_cached(png: str, js: str, params: dict) -> List[dict]:
    image, masks = generate_synthetic_sample(params["index"], params["image_size"], params["seed"])
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {png}")
    annotations = [make_annotation(m) for m in masks]
    record = {"params": params, "annotations": [{**a, "bbox_mode": int(a["bbox_mode"])} for a in annotations]}
    # image first: the JSON marks a complete entry
    _atomic_write(png, encoded.tobytes())
    _atomic_write(js, json.dumps(record).encode("utf-8"))
    return annotations


def load_synthetic(name: str, num_images: int, image_size: int, seed: int, cache_dir: str) -> List[dict]:
    """Dataset dicts of images 0..num_images-1, generated into ``cache_dir`` (a folder of
    :func:`synthetic_cache_dir`) unless already there."""
    os.makedirs(cache_dir, exist_ok=True)
    dicts, generated = [], 0
    for index in range(num_images):
        png, js = (os.path.join(cache_dir, f"{index:06d}{ext}") for ext in (".png", ".json"))
        params = _params(index, image_size, seed)
        annotations = _read_cached(png, js, params)
        if annotations is None:
            annotations = _write_cached(png, js, params)
            generated += 1
        dicts.append({"file_name": png, "height": image_size, "width": image_size,
                      "image_id": f"synthetic-{seed}-{index}", "annotations": annotations})
    logger.info(f"{name}: {num_images} synthetic images ({generated} generated now) in {cache_dir}")
    return dicts


def register_synthetic(name: str, num_images: int, image_size: int = 256, seed: int = 0,
                       cache_dir: Optional[str] = None) -> None:
    """Register ``name`` as ``num_images`` synthetic images of side ``image_size`` drawn with ``seed``.

    Lazy: images are generated (or read from the cache) by ``DatasetCatalog.get(name)``.  The cache folder
    is resolved now (``cache_dir``, else $ADAPTIVECLICK_CACHE, else ~/.cache/adaptiveclick).
    """
    num_images = check_int(num_images, "num_images", 1)
    image_size = check_int(image_size, "image_size", MIN_IMAGE_SIZE)
    seed = check_int(seed, "seed", 0)
    folder = synthetic_cache_dir(image_size, seed, cache_dir)
    register_dataset(name, loader(load_synthetic, name=name, num_images=num_images, image_size=image_size,
                                  seed=seed, cache_dir=folder),
                     dataset_root=folder, dataset_format="synthetic", num_images=num_images,
                     image_size=image_size, seed=seed)


def register_synthetic_from_config(cfg) -> Tuple[str, str]:
    """(Re-)register ``synthetic_train`` / ``synthetic_val`` from ``cfg.DATASETS.SYNTHETIC``; returns the names."""
    s = cfg.DATASETS.SYNTHETIC
    if s.SEED == s.VAL_SEED:
        raise ValueError(f"DATASETS.SYNTHETIC.SEED and VAL_SEED must differ (both {s.SEED}): the validation "
                         "images would be the training images")
    cache_dir = s.CACHE_DIR or None
    train, val = SYNTHETIC_NAMES
    register_synthetic(train, s.NUM_TRAIN, s.IMAGE_SIZE, s.SEED, cache_dir)
    register_synthetic(val, s.NUM_VAL, s.IMAGE_SIZE, s.VAL_SEED, cache_dir)
    return train, val
