"""COCO+LVIS, the combined training set distributed by RITM (protocol.md B.6).

Layout: ``<root>/<split>/images/<id>.jpg``, ``<root>/<split>/masks/<id>.pickle`` (PNG-encoded label layers and
the object -> (layer, value) mapping) and ``<root>/<split>/hannotation.pickle`` (per image: the object
hierarchy and ``num_instance_masks``).  Only ``hannotation.pickle`` is read when the dataset is loaded
(~99k images); masks are decoded from the per-image pickle when a sample is used.

Annotations are the *root* objects of the hierarchy, ``{"mask_file": <id>.pickle, "mask_object": k}``,
ascending k: the training sampler only ever targets roots (protocol.md B.1.3), and a child lies inside its
parent, so leaving children out changes neither the targets nor the negative regions -- except that RITM
promotes the children of a root removed by ``min_object_area``.  Stuff segments (ids >=
``num_instance_masks``) are left out, i.e. treated as background (RITM: background with probability 0.7,
``stuff_prob`` 0.3).  Dicts carry no height/width/bbox: reading 99k image headers at every load is not
worth it; the mapper takes the size from the image.  Unpickling runs code from the files: trusted data only.
"""

import os
import pickle
from typing import List, Optional

from .common import datasets_root, loader, log_counts, make_annotation, register_dataset, require_paths

__all__ = ["COCOLVIS_SUBDIR", "COCOLVIS_TREE", "load_cocolvis", "register_cocolvis"]

COCOLVIS_SUBDIR = "LVIS"
COCOLVIS_TREE = """LVIS/                          (RITM's LVIS_v1_PATH)
  train/
    images/<id>.jpg            COCO 2017 train images
    masks/<id>.pickle          from RITM's cocolvis_annotation.tar.gz
    hannotation.pickle         from RITM's cocolvis_annotation.tar.gz
"""


def _is_root(info) -> bool:
    return info is None or info.get("parent") is None


def load_cocolvis(name: str, root: str, split: str = "train") -> List[dict]:
    """Dataset dicts of COCO+LVIS ``split`` under ``root`` (sorted by image id, as RITM)."""
    ann_file = os.path.join(split, "hannotation.pickle")
    require_paths(name, root, ["", os.path.join(split, "images"), os.path.join(split, "masks"), ann_file],
                  COCOLVIS_TREE)
    with open(os.path.join(root, ann_file), "rb") as f:
        samples = pickle.load(f)
    if not isinstance(samples, dict):
        raise ValueError(f"{os.path.join(root, ann_file)}: expected a dict image id -> annotation, "
                         f"got {type(samples).__name__}")
    dicts = []
    for image_id, sample in sorted(samples.items()):
        mask_file = os.path.join(root, split, "masks", f"{image_id}.pickle")
        roots = sorted(k for k, info in sample["hierarchy"].items() if _is_root(info))
        dicts.append({"file_name": os.path.join(root, split, "images", f"{image_id}.jpg"), "image_id": image_id,
                      "annotations": [make_annotation(mask_file=mask_file, mask_object=int(k)) for k in roots]})
    log_counts(name, dicts, root)
    return dicts


def register_cocolvis(name: str = "cocolvis_train", root: Optional[str] = None, split: str = "train") -> None:
    """Register COCO+LVIS ``split`` (default root ``<datasets root>/LVIS``)."""
    root = os.path.join(datasets_root(), COCOLVIS_SUBDIR) if root is None else datasets_root(root)
    register_dataset(name, loader(load_cocolvis, name=name, root=root, split=split),
                     dataset_root=root, dataset_format="cocolvis", split=split)
