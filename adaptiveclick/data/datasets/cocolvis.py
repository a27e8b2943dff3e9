"""COCO+LVIS, the combined training set distributed by RITM (protocol.md B.6).

Layout: ``<root>/<split>/images/<id>.jpg``, ``<root>/<split>/masks/<id>.pickle`` (PNG-encoded label layers and
the object -> (layer, value) mapping) and ``<root>/<split>/hannotation.pickle`` (per image: the object
hierarchy and ``num_instance_masks``).  Only ``hannotation.pickle`` is read when the dataset is loaded
(~99k images); masks are decoded from the per-image pickle when a sample is used.

Annotations are every object of the hierarchy, ``{"mask_file": <id>.pickle, "mask_object": k}`` in ascending
k, a child with ``"parent"``: the index of its parent's annotation.  The training mapper targets only the
roots (protocol.md B.1.3) but counts the children as RITM's ``len(sample)`` does (they decide whether "other"
negatives exist), and a root removed by ``min_object_area`` hands its children up (RITM
``DSample._remove_object``).  Stuff segments (ids >= ``num_instance_masks``) are the dict's ``"stuff"``
entry: the mapper makes them root objects with probability ``INPUT.CLICKS.STUFF_PROB`` (RITM ``stuff_prob``,
0.3 in the COCO+LVIS recipe) and erases them to background otherwise.  Dicts carry no height/width/bbox:
reading 99k image headers at every load is not worth it; the mapper takes the size from the image.
Unpickling runs code from the files: trusted data only.
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


def _annotations(mask_file: str, hierarchy: dict, where: str) -> List[dict]:
    """Every object of ``hierarchy`` (id -> None for a lone root, or {"parent", "children", ...}) in ascending
    id, with ``"parent"`` as the index of the parent's annotation."""
    ids = sorted(hierarchy)
    index = {k: i for i, k in enumerate(ids)}
    out = []
    for k in ids:
        info = hierarchy[k]
        parent = None if info is None else info.get("parent")
        ann = make_annotation(mask_file=mask_file, mask_object=int(k))
        if parent is not None:
            if parent not in index:
                raise ValueError(f"{where}: object {k}'s parent {parent!r} is not in the hierarchy")
            ann["parent"] = index[parent]
        out.append(ann)
    return out


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
        where = f"{os.path.join(root, ann_file)}: image {image_id}"
        dicts.append({"file_name": os.path.join(root, split, "images", f"{image_id}.jpg"), "image_id": image_id,
                      "annotations": _annotations(mask_file, sample["hierarchy"], where),
                      "stuff": {"mask_file": mask_file, "first_object": int(sample["num_instance_masks"])}})
    log_counts(name, dicts, root)
    return dicts


def register_cocolvis(name: str = "cocolvis_train", root: Optional[str] = None, split: str = "train") -> None:
    """Register COCO+LVIS ``split`` (default root ``<datasets root>/LVIS``)."""
    root = os.path.join(datasets_root(), COCOLVIS_SUBDIR) if root is None else datasets_root(root)
    register_dataset(name, loader(load_cocolvis, name=name, root=root, split=split),
                     dataset_root=root, dataset_format="cocolvis", split=split)
