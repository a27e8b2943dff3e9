"""Any COCO-format instance json (images + polygon or RLE instance masks) as an interactive dataset.

Loaded with detectron2's ``load_coco_json`` (category ids mapped to contiguous ids, ``thing_classes`` set in
the metadata).  Each non-crowd annotation is an object; crowd regions (``iscrowd: 1``) become the dict's
``"ignore"`` region (their union): excluded from IoU and from the clicks (and from the SimpleClick-style
baseline's loss; AdaptiveClick's criterion does not read it, datasets/README.md).
"""

import os
from typing import List

import numpy as np
from detectron2.data.datasets import load_coco_json

from .common import load_instance_masks, loader, log_counts, mask_to_rle, register_dataset

__all__ = ["load_coco_format", "register_coco_format"]


def load_coco_format(name: str, json_file: str, image_root: str) -> List[dict]:
    """Dataset dicts of a COCO-format json, crowd annotations turned into the ignore region."""
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"dataset {name!r}: annotation file {json_file} does not exist")
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"dataset {name!r}: image folder {image_root} does not exist")
    dicts = load_coco_json(json_file, image_root, dataset_name=name)
    for d in dicts:
        annotations = d.get("annotations", [])
        crowd = [a for a in annotations if a.get("iscrowd", 0)]
        d["annotations"] = [a for a in annotations if not a.get("iscrowd", 0)]
        if crowd:
            masks, _ = load_instance_masks({**d, "annotations": crowd})
            d["ignore"] = mask_to_rle(np.logical_or.reduce(masks))
    log_counts(name, dicts, json_file)
    return dicts


def register_coco_format(name: str, json_file: str, image_root: str, **metadata) -> None:
    """Register a COCO-format json under ``name`` (lazy; ``metadata`` is added to the defaults)."""
    json_file, image_root = os.path.abspath(os.fspath(json_file)), os.path.abspath(os.fspath(image_root))
    register_dataset(name, loader(load_coco_format, name=name, json_file=json_file, image_root=image_root),
                     dataset_root=image_root, json_file=json_file, image_root=image_root,
                     dataset_format="coco", **metadata)
