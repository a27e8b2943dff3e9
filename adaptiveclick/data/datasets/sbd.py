"""SBD (Semantic Boundaries Dataset, Hariharan et al. 2011) for training and evaluation (protocol.md A.1, B.6).

Instance maps are ``GTinst.Segmentation`` of ``inst/<id>.mat`` (0 = background, 1..N = instances).  One
dict per image of ``<split>.txt`` (file order); annotations are ``{"mask_file": <.mat>, "mask_value": id}``
in ascending id order, so masks are read from the ``.mat`` when a sample is used.  Every ``.mat`` is read
once when the dataset is loaded, to list the instance ids and image sizes (a few seconds for 8498 files).

* ``sbd_train``: objects whose area / bounding-box area < 0.08 are dropped as annotation errors (RITM's
  ``buggy_mask_thresh``; their pixels become background).
* ``sbd_val``: every instance id present, no filtering (the evaluation set: 2857 images, 6671 instances).
"""

import os
from typing import List, Optional

import numpy as np

from .common import (check_image_size, datasets_root, loader, log_counts, make_annotation, mask_bbox,
                     read_label_map, register_dataset, require_paths)

__all__ = ["SBD_SUBDIR", "SBD_TREE", "BUGGY_MASK_THRESHOLD", "load_sbd", "register_sbd"]

SBD_SUBDIR = os.path.join("SBD", "dataset")
SBD_TREE = """SBD/dataset/
  img/<id>.jpg
  inst/<id>.mat    struct GTinst with field Segmentation: instance id map (0 = background)
  train.txt        8498 ids, one per line
  val.txt          2857 ids
"""
#: RITM/SimpleClick SBDDataset(buggy_mask_thresh=0.08): minimum area / bounding-box area of a training object
BUGGY_MASK_THRESHOLD = 0.08
_EXPECTED = {"train": (8498, None), "val": (2857, 6671)}


def load_sbd(name: str, root: str, split: str, buggy_mask_threshold: float = 0.0) -> List[dict]:
    """Dataset dicts of SBD ``split`` under ``root``; objects with area / box area below
    ``buggy_mask_threshold`` are dropped (0 keeps all)."""
    list_file = f"{split}.txt"
    require_paths(name, root, ["", "img", "inst", list_file], SBD_TREE)
    with open(os.path.join(root, list_file)) as f:
        ids = [line.strip() for line in f if line.strip()]
    dicts = []
    for image_id in ids:
        image_path = os.path.join(root, "img", f"{image_id}.jpg")
        mat_path = os.path.join(root, "inst", f"{image_id}.mat")
        seg = read_label_map(mat_path)
        height, width = check_image_size(image_path, mat_path, seg.shape)
        annotations = []
        for value in np.unique(seg):
            if value == 0:
                continue
            mask = seg == value
            x, y, w, h = mask_bbox(mask)
            if mask.sum() < buggy_mask_threshold * w * h:
                continue
            annotations.append(make_annotation(mask, mask_file=mat_path, mask_value=int(value)))
        dicts.append({"file_name": image_path, "height": height, "width": width, "image_id": image_id,
                      "annotations": annotations})
    log_counts(name, dicts, root, *_EXPECTED.get(split, (None, None)))
    return dicts


def register_sbd(name: str, split: str, root: Optional[str] = None,
                 buggy_mask_threshold: Optional[float] = None) -> None:
    """Register SBD ``split`` ("train" or "val"; default root ``<datasets root>/SBD/dataset``).

    ``buggy_mask_threshold`` defaults to :data:`BUGGY_MASK_THRESHOLD` for "train" and 0 (no filter) for "val".
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if buggy_mask_threshold is None:
        buggy_mask_threshold = BUGGY_MASK_THRESHOLD if split == "train" else 0.0
    if not 0.0 <= buggy_mask_threshold <= 1.0:
        raise ValueError(f"buggy_mask_threshold must be in [0, 1], got {buggy_mask_threshold!r}")
    root = os.path.join(datasets_root(), SBD_SUBDIR) if root is None else datasets_root(root)
    register_dataset(name, loader(load_sbd, name=name, root=root, split=split,
                                  buggy_mask_threshold=float(buggy_mask_threshold)),
                     dataset_root=root, dataset_format="sbd", split=split)
