"""Shared pieces of the dataset registrations: mask decoding (the data contract), roots, RLE, registration.

Annotation forms understood by :func:`load_instance_masks` (one per entry of ``dataset_dict["annotations"]``,
and the same forms for the optional ``dataset_dict["ignore"]``):

* ``{"segmentation": RLE}``: a pycocotools RLE dict ``{"size": [h, w], "counts": str | bytes}``; an
  uncompressed RLE (``counts`` a list of ints) and a COCO polygon list ``[[x0, y0, x1, y1, ...], ...]``
  (needs ``height``/``width`` in the dict) are accepted too.
* ``{"mask_file": path, "mask_value": int}``: the pixels of the file's label map equal to ``mask_value``.
  Label maps: SBD ``.mat`` files (``GTinst.Segmentation``); images read with PIL without conversion (palette
  PNGs give palette indices, 16-bit PNGs their values; a colour image is accepted only when its colour
  channels are equal, i.e. a grey label map stored as RGB).
* ``{"mask_file": path, "mask_object": int}``: object ``k`` of a COCO+LVIS packed-layer ``.pickle`` (RITM's
  format: PNG-encoded layers and the object -> (layer, value) mapping).  Unpickling runs code from the file:
  only use trusted data.

``dataset_dict["ignore"]`` is an RLE dict itself, or one of the ``mask_file`` forms.

Optional keys read by the training mapper: an annotation's ``"parent"`` (index of its parent annotation in an
object hierarchy, None or absent for a root; only roots are targets, RITM ``DSample.root_objects``), and the
dict's ``"stuff"``: ``{"mask_file": <packed-layer .pickle>, "first_object": n}``, the file's objects n, n+1, ...
being stuff segments (:func:`load_stuff_masks`; COCO+LVIS).
"""

import functools
import logging
import os
import pickle
from numbers import Integral
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from PIL import Image
from pycocotools import mask as mask_util

__all__ = [
    "DATASETS_ENV", "DEFAULT_DATASETS_ROOT", "DatasetNotFoundError", "load_instance_masks", "load_stuff_masks",
    "read_label_map",
    "datasets_root", "require_paths", "mask_to_rle", "mask_bbox", "make_annotation", "pair_by_stem",
    "read_mask_bgr", "image_size", "check_image_size", "register_dataset", "log_counts", "loader", "DEFAULT_METADATA",
]

logger = logging.getLogger(__name__)

#: Environment variable naming the folder that holds every dataset's sub-folder.
DATASETS_ENV = "ADAPTIVECLICK_DATASETS"
#: Used when the variable is unset or empty (relative to the working directory at registration).
DEFAULT_DATASETS_ROOT = "./datasets"
#: Metadata shared by every registration: datasets are evaluated by the NoC evaluator.
DEFAULT_METADATA = {"evaluator_type": "noc"}

_PICKLE_SUFFIXES = (".pickle", ".pkl")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's folder or one of its required files is missing."""


# -- roots --------------------------------------------------------------------------------------------------


def datasets_root(root: Optional[str] = None) -> str:
    """Absolute datasets root: ``root`` if given, else ``$ADAPTIVECLICK_DATASETS``, else ``./datasets``."""
    if root is None or root == "":
        root = os.environ.get(DATASETS_ENV) or DEFAULT_DATASETS_ROOT
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path, got {type(root).__name__}")
    return os.path.abspath(os.path.expanduser(os.fspath(root)))


def require_paths(name: str, root: str, relative_paths: Sequence[str], tree: str) -> None:
    """Raise :class:`DatasetNotFoundError` naming the first missing path and the expected tree."""
    for rel in relative_paths:
        path = os.path.join(root, rel) if rel else root
        if not os.path.exists(path):
            env = os.environ.get(DATASETS_ENV)
            env_text = f"{DATASETS_ENV}={env}" if env else f"{DATASETS_ENV} is unset (default {DEFAULT_DATASETS_ROOT})"
            raise DatasetNotFoundError(
                f"dataset {name!r}: {path} does not exist.\nExpected tree of {root}:\n{tree.rstrip()}\n"
                f"Put the data there, or point {DATASETS_ENV} (or DATASETS.ROOT) at the folder holding the "
                f"datasets' sub-folders ({env_text}), or register it with an explicit root. "
                f"See datasets/README.md.")


# -- masks --------------------------------------------------------------------------------------------------


def mask_to_rle(mask: np.ndarray) -> dict:
    """Compressed pycocotools RLE of a 2-D mask, ``counts`` as an ASCII str (JSON-friendly)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def mask_bbox(mask: np.ndarray) -> List[int]:
    """[x, y, w, h] of the non-zero pixels (XYWH_ABS, inclusive pixel extent); [0, 0, 0, 0] when empty."""
    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    if not rows.any():
        return [0, 0, 0, 0]
    y0, y1 = np.flatnonzero(rows)[[0, -1]]
    x0, x1 = np.flatnonzero(cols)[[0, -1]]
    return [int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1)]


def make_annotation(mask: Optional[np.ndarray] = None, category_id: int = 0, **source) -> dict:
    """One annotation of the data contract: RLE of ``mask``, or ``source`` keys (``mask_file`` ...) with
    the box of ``mask`` when it is given."""
    ann = {"bbox_mode": BoxMode.XYWH_ABS, "category_id": int(category_id), "iscrowd": 0}
    if mask is not None:
        ann["bbox"] = mask_bbox(mask)
    if source:
        ann.update(source)
    elif mask is not None:
        ann["segmentation"] = mask_to_rle(mask)
    else:
        raise ValueError("make_annotation needs a mask or a mask_file source")
    return ann


def _decode_rle(seg: dict, where: str) -> np.ndarray:
    size = seg.get("size")
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(s, Integral) and s >= 0 for s in size)):
        raise ValueError(f"{where}: RLE 'size' must be [height, width], got {size!r}")
    counts = seg.get("counts")
    if isinstance(counts, list):
        rle = mask_util.frPyObjects(seg, int(size[0]), int(size[1]))
    elif isinstance(counts, str):
        rle = {"size": [int(size[0]), int(size[1])], "counts": counts.encode("ascii")}
    elif isinstance(counts, bytes):
        rle = {"size": [int(size[0]), int(size[1])], "counts": counts}
    else:
        raise ValueError(f"{where}: RLE 'counts' must be str, bytes or a list of ints, got {type(counts).__name__}")
    return mask_util.decode(rle).astype(bool)


def _decode_polygons(polygons: list, height, width, where: str) -> np.ndarray:
    if height is None or width is None:
        raise ValueError(f"{where}: polygon segmentation needs 'height' and 'width' in the dataset dict")
    if not polygons or not all(isinstance(p, (list, tuple)) and len(p) >= 6 and len(p) % 2 == 0 for p in polygons):
        raise ValueError(f"{where}: polygons must be a non-empty list of [x0, y0, x1, y1, ...] lists "
                         "with at least 3 points each")
    rles = mask_util.frPyObjects([[float(v) for v in p] for p in polygons], int(height), int(width))
    return mask_util.decode(mask_util.merge(rles)).astype(bool)


def _read_mat_label_map(path: str) -> np.ndarray:
    from scipy.io import loadmat

    mat = loadmat(path)
    if "GTinst" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{path}: expected an SBD instance file with a 'GTinst' struct, found keys {keys}")
    gt = mat["GTinst"]
    if gt.dtype.names is None or "Segmentation" not in gt.dtype.names:
        raise ValueError(f"{path}: 'GTinst' has no 'Segmentation' field")
    return np.asarray(gt["Segmentation"][0, 0])


def _read_image_label_map(path: str) -> np.ndarray:
    with Image.open(path) as img:
        mode = img.mode
        arr = np.asarray(img)
    if mode in ("RGBA", "LA", "PA"):
        arr = arr[..., :-1]  # drop alpha
    if arr.ndim == 3:
        if arr.shape[2] > 1 and not all(np.array_equal(arr[..., 0], arr[..., c]) for c in range(1, arr.shape[2])):
            raise ValueError(f"{path}: a label map must have one channel (or equal colour channels); this "
                             f"{mode} image has different channels")
        arr = arr[..., 0]
    return arr


class _PackedLayers:
    """RITM's COCO+LVIS mask file: decoded layers (H, W, L) and the object -> (layer, value) mapping."""

    def __init__(self, path: str):
        with open(path, "rb") as f:
            payload = pickle.load(f)
        if not (isinstance(payload, (tuple, list)) and len(payload) == 2):
            raise ValueError(f"{path}: expected a pickled (encoded_layers, objects_mapping) pair")
        encoded, self.mapping = payload
        layers = []
        for i, buf in enumerate(encoded):
            layer = cv2.imdecode(np.asarray(buf, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
            if layer is None or layer.ndim != 2:
                raise ValueError(f"{path}: layer {i} is not a PNG-encoded single-channel image")
            layers.append(layer)
        if not layers:
            raise ValueError(f"{path}: no mask layers")
        self.layers = np.stack(layers, axis=2)
        self.shape = self.layers.shape[:2]

    def object_mask(self, k: int, where: str) -> np.ndarray:
        if not 0 <= k < len(self.mapping):
            raise ValueError(f"{where}: mask_object {k} out of range (the file has {len(self.mapping)} objects)")
        layer, value = self.mapping[k]
        return self.layers[:, :, int(layer)] == value


def read_label_map(path: str):
    """Read a ``mask_file``: an (H, W) integer label map, or a packed-layer object for ``.pickle`` files."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"mask file {path} does not exist")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".mat":
        return _read_mat_label_map(path)
    if suffix in _PICKLE_SUFFIXES:
        return _PackedLayers(path)
    return _read_image_label_map(path)


def _cached_label_map(path: str, cache: Dict[str, object], where: str):
    """:func:`read_label_map` of ``path``, read once per ``cache``; its errors name the annotation and the file
    (a truncated ``.mat`` or ``.pickle`` otherwise raises without the path)."""
    if path in cache:
        return cache[path]
    try:
        cache[path] = read_label_map(path)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{where}: {e}") from None
    except Exception as e:  # noqa: BLE001 -- any reader's failure, re-raised with the file named
        if path in str(e):
            raise ValueError(f"{where}: {e}") from e
        raise ValueError(f"{where}: cannot read mask file {path}: {type(e).__name__}: {e}") from e
    return cache[path]


def load_stuff_masks(dataset_dict: dict, cache: Optional[Dict[str, object]] = None) -> List[np.ndarray]:
    """The stuff segments of ``dataset_dict["stuff"]`` (module docstring) as bool (H, W) masks; [] without
    the key.  ``cache``: the one given to :func:`load_instance_masks` for the same dict, so that the packed file
    its objects were decoded from is not read again."""
    stuff = dataset_dict.get("stuff")
    if stuff is None:
        return []
    where = f"{dataset_dict.get('file_name', '<dataset dict without file_name>')}: stuff"
    if not isinstance(stuff, dict) or "mask_file" not in stuff or not _is_int(stuff.get("first_object")) \
            or stuff["first_object"] < 0:
        raise ValueError(f"{where}: must be {{'mask_file': path, 'first_object': int >= 0}}, got {stuff!r}")
    label = _cached_label_map(os.fspath(stuff["mask_file"]), {} if cache is None else cache, where)
    if not isinstance(label, _PackedLayers):
        raise ValueError(f"{where}: {stuff['mask_file']} is not a packed-layer .pickle file")
    return [label.object_mask(k, where) for k in range(int(stuff["first_object"]), len(label.mapping))]


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _decode_entry(entry, height, width, cache: Dict[str, object], where: str) -> np.ndarray:
    if not isinstance(entry, dict):
        raise TypeError(f"{where}: must be a dict, got {type(entry).__name__}")
    if "segmentation" in entry:
        seg = entry["segmentation"]
        if isinstance(seg, dict):
            return _decode_rle(seg, where)
        if isinstance(seg, list):
            return _decode_polygons(seg, height, width, where)
        raise ValueError(f"{where}: 'segmentation' must be an RLE dict or a polygon list, got {type(seg).__name__}")
    if "mask_file" in entry:
        path = os.fspath(entry["mask_file"])
        label = _cached_label_map(path, cache, where)
        if isinstance(label, _PackedLayers):
            k = entry.get("mask_object")
            if not _is_int(k):
                raise ValueError(f"{where}: a packed-layer mask file needs an integer 'mask_object', got {k!r}")
            return label.object_mask(int(k), where)
        value = entry.get("mask_value")
        if not _is_int(value):
            raise ValueError(f"{where}: 'mask_file' needs an integer 'mask_value', got {value!r}")
        return label == value
    raise ValueError(f"{where}: needs 'segmentation' (RLE or polygons) or 'mask_file' with 'mask_value', "
                     f"got keys {sorted(entry)}")


def load_instance_masks(dataset_dict: dict, cache: Optional[Dict[str, object]] = None
                        ) -> Tuple[List[np.ndarray], Optional[np.ndarray]]:
    """Decode the object masks and the ignore region of a dataset dict (data contract).

    Returns ``(masks, ignore)``: one bool (H, W) array per entry of ``dataset_dict["annotations"]`` (in
    order; a dict without the key has no objects) and a bool (H, W) array or None.  Raises
    FileNotFoundError for a missing mask file and ValueError for an unknown annotation form or when a mask's
    size differs from the dict's ``height``/``width`` (or from the other masks when those are absent).
    Every mask file is read once; ``cache`` (a dict, filled here) keeps them for a later
    :func:`load_stuff_masks` of the same dict.
    """
    if not isinstance(dataset_dict, dict):
        raise TypeError(f"dataset_dict must be a dict, got {type(dataset_dict).__name__}")
    name = dataset_dict.get("file_name", "<dataset dict without file_name>")
    height, width = dataset_dict.get("height"), dataset_dict.get("width")
    for key, v in (("height", height), ("width", width)):
        if v is not None and (not _is_int(v) or v <= 0):
            raise ValueError(f"{name}: '{key}' must be a positive int, got {v!r}")
    annotations = dataset_dict.get("annotations", [])
    if not isinstance(annotations, (list, tuple)):
        raise TypeError(f"{name}: 'annotations' must be a list, got {type(annotations).__name__}")

    cache = {} if cache is None else cache
    expected = (height, width) if height is not None and width is not None else None
    decoded = []
    entries = [(f"{name}: annotation {i}", a) for i, a in enumerate(annotations)]
    if dataset_dict.get("ignore") is not None:
        ignore = dataset_dict["ignore"]
        # the ignore region is an RLE dict itself, or a mask_file entry
        if isinstance(ignore, dict) and "counts" in ignore:
            ignore = {"segmentation": ignore}
        entries.append((f"{name}: ignore", ignore))
    for where, entry in entries:
        mask = _decode_entry(entry, height, width, cache, where)
        if expected is None:
            expected = mask.shape
        if mask.shape != tuple(expected):
            source = "the dataset dict's height/width" if height is not None else "the first mask"
            raise ValueError(f"{where}: mask has size {mask.shape}, expected {tuple(expected)} from {source}")
        decoded.append(mask)
    if dataset_dict.get("ignore") is not None:
        return decoded[:-1], decoded[-1]
    return decoded, None


# -- image / mask folders -----------------------------------------------------------------------------------


def pair_by_stem(image_dir: str, mask_dir: str, image_suffixes: Optional[Sequence[str]] = None,
                 mask_suffixes: Optional[Sequence[str]] = None) -> List[Tuple[str, str]]:
    """(image, mask) paths: the image folder's files in sorted order, each with the mask of the same stem.

    ``*_suffixes`` restrict the files considered (lower-case, with the dot; None = any file with a suffix).
    Hidden files are skipped.  One rule, ``os.path.splitext`` (text before the last dot), names both image
    and mask.  A missing mask or two masks with one stem raise.
    """

    def files(folder, suffixes):
        out = []
        for entry in sorted(os.listdir(folder)):
            stem, suffix = os.path.splitext(entry)
            path = os.path.join(folder, entry)
            if entry.startswith(".") or not suffix or not os.path.isfile(path):
                continue
            if suffixes is None or suffix.lower() in suffixes:
                out.append((stem, path))
        return out

    masks: Dict[str, str] = {}
    for stem, path in files(mask_dir, mask_suffixes):
        if stem in masks:
            raise ValueError(f"two masks with the stem {stem!r} in {mask_dir}: {masks[stem]} and {path}")
        masks[stem] = path
    pairs = []
    for stem, path in files(image_dir, image_suffixes):
        if stem not in masks:
            raise FileNotFoundError(f"no mask named {stem}.* in {mask_dir} for the image {path}")
        pairs.append((path, masks[stem]))
    return pairs


def read_mask_bgr(path: str) -> np.ndarray:
    """A mask file as OpenCV's ``imread`` gives it by default (3-channel BGR uint8), as RITM reads masks."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"mask file {path} does not exist")
    mask = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if mask is None:
        raise ValueError(f"OpenCV cannot read the mask file {path}")
    return mask


def image_size(path: str) -> Tuple[int, int]:
    """(height, width) of an image file from its header."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file {path} does not exist")
    with Image.open(path) as img:
        width, height = img.size
    return height, width


def check_image_size(image_path: str, mask_path: str, mask_shape: Sequence[int]) -> Tuple[int, int]:
    """(height, width) of the image; ValueError when its mask has another size."""
    size = image_size(image_path)
    if tuple(mask_shape[:2]) != size:
        raise ValueError(f"mask {mask_path} has size {tuple(mask_shape[:2])} but image {image_path} has {size}")
    return size


# -- registration -------------------------------------------------------------------------------------------


def register_dataset(name: str, loader: Callable[[], List[dict]], **metadata) -> None:
    """(Re-)register ``name``: the lazy ``loader`` in DatasetCatalog and :data:`DEFAULT_METADATA` plus
    ``metadata`` in MetadataCatalog (an existing registration of the name is replaced)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(**{**DEFAULT_METADATA, **metadata})


def log_counts(name: str, dicts: List[dict], root: str, expected_images: Optional[int] = None,
               expected_instances: Optional[int] = None) -> None:
    """Log the number of images and instances; warn when they differ from the published counts."""
    num_instances = sum(len(d.get("annotations", ())) for d in dicts)
    logger.info(f"{name}: {len(dicts)} images, {num_instances} instances from {root}")
    for what, got, want in (("images", len(dicts), expected_images), ("instances", num_instances, expected_instances)):
        if want is not None and got != want:
            logger.warning(f"{name}: {got} {what} found in {root}, the published dataset has {want}")


def loader(func: Callable[..., List[dict]], **kwargs) -> Callable[[], List[dict]]:
    """A picklable zero-argument loader for DatasetCatalog."""
    return functools.partial(func, **kwargs)
