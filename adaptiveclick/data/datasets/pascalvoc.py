"""PascalVOC 2012 segmentation val as an interactive-segmentation benchmark (protocol.md A.1, A.8).

Objects of ``SegmentationObject/<id>.png``, by one of two label rules:

* ``"grey"`` (official, SimpleClick/AdaptiveClick ``PascalVocDataset``): the palette PNG read as a colour
  image by OpenCV and converted to grey (0.299 R + 0.587 G + 0.114 B); every grey value except 0 and 220 is
  an object, 220 (the void border colour) is ignored.  Palette indices 1/16, 3/18, 6/21, 9/24 share a grey
  value, so in images with >= 16 instances two instances merge into one object.
* ``"index"``: the palette index read directly (PIL); every index except 0 and 255 is an object, 255 (void)
  is ignored.  Correct for every image; differs from "grey" only on images with >= 16 instances.

One dict per image of ``ImageSets/Segmentation/<split>.txt`` (file order); objects in ascending value order.
"""

import os
from typing import List, Optional

import cv2
import numpy as np

from .common import (check_image_size, datasets_root, loader, log_counts, make_annotation, mask_to_rle,
                     read_label_map, read_mask_bgr, register_dataset, require_paths)

__all__ = ["PASCALVOC_SUBDIR", "PASCALVOC_TREE", "PASCALVOC_LABEL_RULES", "load_pascalvoc", "register_pascalvoc"]

PASCALVOC_SUBDIR = "PascalVOC"
PASCALVOC_TREE = """PascalVOC/
  JPEGImages/<id>.jpg
  SegmentationObject/<id>.png        palette PNG: index k = instance k, 255 = void border
  ImageSets/Segmentation/val.txt     one <id> per line (1449 images, 3417 instances)
"""
#: label rules (see the module docstring) and their void value
PASCALVOC_LABEL_RULES = ("grey", "index")
_VOID = {"grey": 220, "index": 255}
_EXPECTED = {"val": (1449, 3417)}


def _label_map(mask_path: str, labels: str) -> np.ndarray:
    if labels == "grey":
        return cv2.cvtColor(read_mask_bgr(mask_path), cv2.COLOR_BGR2GRAY)
    return read_label_map(mask_path)


def load_pascalvoc(name: str, root: str, split: str = "val", labels: str = "grey") -> List[dict]:
    """Dataset dicts of PascalVOC ``split`` under ``root`` with the label rule ``labels``."""
    if labels not in PASCALVOC_LABEL_RULES:
        raise ValueError(f"labels must be one of {PASCALVOC_LABEL_RULES}, got {labels!r}")
    list_file = os.path.join("ImageSets", "Segmentation", f"{split}.txt")
    require_paths(name, root, ["", "JPEGImages", "SegmentationObject", list_file], PASCALVOC_TREE)
    with open(os.path.join(root, list_file)) as f:
        ids = [line.strip() for line in f if line.strip()]
    void = _VOID[labels]
    dicts = []
    for image_id in ids:
        image_path = os.path.join(root, "JPEGImages", f"{image_id}.jpg")
        mask_path = os.path.join(root, "SegmentationObject", f"{image_id}.png")
        label = _label_map(mask_path, labels)
        height, width = check_image_size(image_path, mask_path, label.shape)
        values = [v for v in np.unique(label) if v != 0 and v != void]
        d = {"file_name": image_path, "height": height, "width": width, "image_id": image_id,
             "annotations": [make_annotation(label == v) for v in values]}
        ignore = label == void
        if ignore.any():
            d["ignore"] = mask_to_rle(ignore)
        dicts.append(d)
    log_counts(name, dicts, root, *_EXPECTED.get(split, (None, None)))
    return dicts


def register_pascalvoc(name: str = "pascalvoc_val", root: Optional[str] = None, split: str = "val",
                       labels: str = "grey") -> None:
    """Register PascalVOC ``split`` (default root ``<datasets root>/PascalVOC``); ``labels``: "grey" or "index"."""
    if labels not in PASCALVOC_LABEL_RULES:
        raise ValueError(f"labels must be one of {PASCALVOC_LABEL_RULES}, got {labels!r}")
    root = os.path.join(datasets_root(), PASCALVOC_SUBDIR) if root is None else datasets_root(root)
    register_dataset(name, loader(load_pascalvoc, name=name, root=root, split=split, labels=labels),
                     dataset_root=root, dataset_format="pascalvoc", split=split, pascalvoc_labels=labels)
