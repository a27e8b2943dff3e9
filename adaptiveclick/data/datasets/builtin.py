"""Registration of the built-in dataset names (run when ``adaptiveclick.data`` is imported).

=================  =====================================  ===========================================
name               default folder (under the root)        contents
=================  =====================================  ===========================================
sbd_train          SBD/dataset                            8498 images, objects with area/box >= 0.08
sbd_val            SBD/dataset                            2857 images, 6671 instances
cocolvis_train     LVIS                                   ~99k images (RITM's COCO+LVIS)
grabcut            GrabCut                                50 images, 128 band ignored
berkeley           Berkeley                               100 images
davis              DAVIS                                  345 frames (large zoom-in)
pascalvoc_val      PascalVOC                              1449 images, 3417 instances, void ignored
coco_mval          COCO_MVal                              800 images
sstem              ssTEM                                  8-connected components of the mitochondria
brats              BraTS20                                one tumour object per slice
oaizib             OAI-ZIB/iseg_slices                    femoral / tibial cartilage per slice
synthetic_train    cache (no download)                    DATASETS.SYNTHETIC.NUM_TRAIN images
synthetic_val      cache (no download)                    DATASETS.SYNTHETIC.NUM_VAL images
=================  =====================================  ===========================================

The root is ``DATASETS.ROOT`` when set, else ``$ADAPTIVECLICK_DATASETS``, else ``./datasets``; it is
resolved when the names are registered (at import, or by :func:`register_datasets_from_config`).
"""

import os
from typing import Optional

from .cocolvis import COCOLVIS_SUBDIR, register_cocolvis
from .common import datasets_root
from .folders import FOLDER_LAYOUTS, SSTEM_CONNECTIVITY, register_folder_dataset
from .pascalvoc import PASCALVOC_SUBDIR, register_pascalvoc
from .sbd import SBD_SUBDIR, register_sbd
from .synthetic import SYNTHETIC_NAMES, register_synthetic_from_config

__all__ = ["BUILTIN_DATASETS", "register_builtin_datasets", "register_datasets_from_config",
           "register_default_datasets"]

_FOLDER_NAMES = ("grabcut", "berkeley", "davis", "coco_mval", "sstem", "brats", "oaizib")
#: Every name registered by :func:`register_datasets_from_config`.
BUILTIN_DATASETS = ("sbd_train", "sbd_val", "cocolvis_train", "pascalvoc_val") + _FOLDER_NAMES + SYNTHETIC_NAMES


def register_builtin_datasets(root: Optional[str] = None, pascalvoc_labels: str = "grey",
                              sstem_connectivity: int = SSTEM_CONNECTIVITY) -> str:
    """(Re-)register the real datasets (not the synthetic ones) under ``root`` (None: $ADAPTIVECLICK_DATASETS
    or ./datasets); returns the resolved root."""
    root = datasets_root(root)
    register_sbd("sbd_train", "train", os.path.join(root, SBD_SUBDIR))
    register_sbd("sbd_val", "val", os.path.join(root, SBD_SUBDIR))
    register_cocolvis("cocolvis_train", os.path.join(root, COCOLVIS_SUBDIR))
    register_pascalvoc("pascalvoc_val", os.path.join(root, PASCALVOC_SUBDIR), labels=pascalvoc_labels)
    for name in _FOLDER_NAMES:
        options = {"connectivity": sstem_connectivity} if name == "sstem" else {}
        register_folder_dataset(name, name, os.path.join(root, FOLDER_LAYOUTS[name].subdir), **options)
    return root


def register_datasets_from_config(cfg) -> str:
    """(Re-)register every built-in name from ``cfg.DATASETS`` (ROOT, PASCALVOC_LABELS, SSTEM_CONNECTIVITY,
    SYNTHETIC.*); returns the resolved datasets root."""
    root = register_builtin_datasets(cfg.DATASETS.ROOT or None, cfg.DATASETS.PASCALVOC_LABELS,
                                     cfg.DATASETS.SSTEM_CONNECTIVITY)
    register_synthetic_from_config(cfg)
    return root


def register_default_datasets() -> str:
    """Register every built-in name with the config defaults (what importing ``adaptiveclick.data`` does)."""
    from detectron2.config import get_cfg

    from adaptiveclick.config import add_adaptiveclick_config

    return register_datasets_from_config(add_adaptiveclick_config(get_cfg()))
