"""Evaluation datasets stored as an image folder plus a mask folder: GrabCut, Berkeley, DAVIS, COCO-MVal, ssTEM,
BraTS, OAI-ZIB (protocol.md A.1).

Images are the sorted files of the image folder; each takes the mask with the same stem.  Masks are read
as OpenCV reads them by default (3-channel BGR), as the RITM/SimpleClick loaders do, and turned into
objects and an ignore region by the dataset's label rule.  One dict per image; its annotations are the
objects in ascending id order, each evaluated with the others as background.  Masks are RLE-encoded when
the dataset is loaded, so evaluation never re-reads the mask files.
"""

import logging
import os
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import cv2
import numpy as np

from .common import (check_image_size, datasets_root, loader, log_counts, make_annotation, mask_to_rle,
                     pair_by_stem, read_mask_bgr, register_dataset, require_paths)

__all__ = ["FolderLayout", "FOLDER_LAYOUTS", "load_folder_dataset", "register_folder_dataset",
           "grabcut_labels", "davis_labels", "sstem_labels", "brats_labels", "oaizib_labels"]

logger = logging.getLogger(__name__)

Labels = Tuple[List[np.ndarray], Optional[np.ndarray]]


def grabcut_labels(mask_bgr: np.ndarray) -> Labels:
    """GrabCut / Berkeley: channel 0; 128 is the ignored trimap band, > 128 the object, the rest background."""
    c = mask_bgr[..., 0]
    ignore = c == 128
    return [c > 128], (ignore if ignore.any() else None)


def davis_labels(mask_bgr: np.ndarray) -> Labels:
    """DAVIS / COCO-MVal: maximum over the channels > 0 is the object (all annotated objects merged)."""
    return [mask_bgr.max(axis=2) > 0], None


#: Pixel connectivity of ssTEM objects by default.  The official loader (isegm/data/datasets/ssTEM.py L32-33)
#: sets ``connectivity = 4`` but passes it as ``cv2.connectedComponentsWithStats``'s second positional argument,
#: which is the ``labels`` output, so OpenCV's default 8-connectivity is what it computes and what the published
#: ssTEM numbers measure; ``DATASETS.SSTEM_CONNECTIVITY 4`` gives the components it meant.
SSTEM_CONNECTIVITY = 8


def sstem_labels(mask_bgr: np.ndarray, connectivity: int = SSTEM_CONNECTIVITY) -> Labels:
    """ssTEM: every ``connectivity``-connected (8 or 4) component of channel 0's non-zero pixels is an object
    (OpenCV label order)."""
    if connectivity not in (4, 8):
        raise ValueError(f"ssTEM connectivity must be 4 or 8, got {connectivity!r}")
    count, labels, _, _ = cv2.connectedComponentsWithStats(np.ascontiguousarray(mask_bgr[..., 0]),
                                                           connectivity=connectivity)
    return [labels == i for i in range(1, count)], None


def brats_labels(mask_bgr: np.ndarray) -> Labels:
    """BraTS: channel 0 > 0 is the object (all tumour sub-labels merged)."""
    return [mask_bgr[..., 0] > 0], None


def oaizib_labels(mask_bgr: np.ndarray) -> Labels:
    """OAI-ZIB: every distinct non-zero value of channel 0 is an object (ascending)."""
    c = mask_bgr[..., 0]
    return [c == v for v in np.unique(c) if v != 0], None


@dataclass(frozen=True)
class FolderLayout:
    """Where a folder dataset lives and how its masks are read."""

    subdir: str  #: default folder under the datasets root
    image_dir: str
    mask_dir: str
    labels: Callable[[np.ndarray], Labels]
    tree: str  #: expected tree, shown when the folder is missing
    image_suffixes: Optional[Tuple[str, ...]] = None  #: None: any file with a suffix
    mask_suffixes: Optional[Tuple[str, ...]] = None
    expected_images: Optional[int] = None  #: published counts (one object per image where given)
    expected_instances: Optional[int] = None
    extra_metadata: Tuple[Tuple[str, object], ...] = ()


def _tree(subdir, image_line, mask_line):
    return f"{subdir}/\n  {image_line}\n  {mask_line}\n"


FOLDER_LAYOUTS = {
    "grabcut": FolderLayout(
        "GrabCut", "data_GT", "boundary_GT", grabcut_labels,
        _tree("GrabCut", "data_GT/<name>.jpg|.bmp       50 images", "boundary_GT/<name>.bmp|.png  masks: 0 bg, 128 ignored band, 255 object"),
        expected_images=50, expected_instances=50),
    "berkeley": FolderLayout(
        "Berkeley", "images", "masks", grabcut_labels,
        _tree("Berkeley", "images/<name>.jpg   100 images", "masks/<name>.png    masks: 0 bg, 255 object"),
        expected_images=100, expected_instances=100),
    "davis": FolderLayout(
        "DAVIS", "img", "gt", davis_labels,
        _tree("DAVIS", "img/<name>.jpg   345 frames", "gt/<name>.png    masks: any non-zero pixel is the object"),
        expected_images=345, expected_instances=345,
        # protocol.md A.5: DAVIS is evaluated with the large zoom-in target (672 x 672)
        extra_metadata=(("noc_large_zoom_in", True),)),
    "coco_mval": FolderLayout(
        "COCO_MVal", "img", "gt", davis_labels,
        _tree("COCO_MVal", "img/<name>.jpg   800 images", "gt/<name>.png    masks: any non-zero pixel is the object"),
        expected_images=800, expected_instances=800),
    "sstem": FolderLayout(
        "ssTEM", "raw", "mitochondria", sstem_labels,
        _tree("ssTEM", "raw/<name>.tif            slices of stack 1", "mitochondria/<name>.png   non-zero = mitochondria; "
              "each 8-connected component is an object"),
        image_suffixes=(".tif",), mask_suffixes=(".png",)),
    "brats": FolderLayout(
        "BraTS20", "image", "annotation", brats_labels,
        _tree("BraTS20", "image/<name>.png        slices", "annotation/<name>.png   non-zero = tumour (one object)"),
        image_suffixes=(".png",), mask_suffixes=(".png",)),
    "oaizib": FolderLayout(
        "OAI-ZIB/iseg_slices", "test/image", "test/annotations", oaizib_labels,
        _tree("OAI-ZIB/iseg_slices", "test/image/<name>.png         slices",
              "test/annotations/<name>.png   each non-zero value is an object (femoral / tibial cartilage)"),
        image_suffixes=(".png",), mask_suffixes=(".png",)),
}


def load_folder_dataset(name: str, root: str, layout: FolderLayout, label_options: Optional[dict] = None) -> List[dict]:
    """Dataset dicts of a folder dataset under ``root`` (its own folder); ``label_options`` go to
    ``layout.labels`` (ssTEM: ``connectivity``)."""
    require_paths(name, root, ["", layout.image_dir, layout.mask_dir], layout.tree)
    pairs = pair_by_stem(os.path.join(root, layout.image_dir), os.path.join(root, layout.mask_dir),
                         layout.image_suffixes, layout.mask_suffixes)
    dicts, empty = [], []
    for image_path, mask_path in pairs:
        mask = read_mask_bgr(mask_path)
        height, width = check_image_size(image_path, mask_path, mask.shape)
        objects, ignore = layout.labels(mask, **(label_options or {}))
        objects = [m for m in objects if (m if ignore is None else m & ~ignore).any()]
        if not objects:
            empty.append(mask_path)
            continue
        d = {"file_name": image_path, "height": height, "width": width,
             "image_id": os.path.splitext(os.path.basename(image_path))[0],
             "annotations": [make_annotation(m) for m in objects]}
        if ignore is not None:
            d["ignore"] = mask_to_rle(ignore)
        dicts.append(d)
    if empty:
        # an empty object cannot be evaluated (its IoU is 0/0); RITM would record NaN for it
        logger.warning(f"{name}: skipped {len(empty)} images whose mask has no object, e.g. {empty[0]}")
    log_counts(name, dicts, root, layout.expected_images, layout.expected_instances)
    return dicts


def register_folder_dataset(name: str, kind: str, root: Optional[str] = None, **label_options) -> None:
    """Register ``name`` as the folder dataset ``kind`` (a key of :data:`FOLDER_LAYOUTS`) stored in ``root``
    (default: ``<datasets root>/<layout.subdir>``); ``label_options`` go to the layout's label rule (ssTEM:
    ``connectivity=8|4``) and are checked here, at registration."""
    if kind not in FOLDER_LAYOUTS:
        raise ValueError(f"kind must be one of {sorted(FOLDER_LAYOUTS)}, got {kind!r}")
    layout = FOLDER_LAYOUTS[kind]
    if label_options:
        # a wrong option fails now, not when the dataset is first read
        layout.labels(np.zeros((1, 1, 3), dtype=np.uint8), **label_options)
    root = os.path.join(datasets_root(), layout.subdir) if root is None else datasets_root(root)
    register_dataset(name, loader(load_folder_dataset, name=name, root=root, layout=layout,
                                  label_options=dict(label_options)),
                     dataset_root=root, dataset_format=kind, **dict(layout.extra_metadata))
