"""Dataset registrations (DatasetCatalog / MetadataCatalog) and the mask decoder of the data contract.

Importing this package registers every built-in name with the config defaults (see :mod:`.builtin`);
loaders are lazy, nothing is read before ``DatasetCatalog.get(name)``.  The expected on-disk trees are in
``datasets/README.md``.
"""

from .builtin import (BUILTIN_DATASETS, register_builtin_datasets, register_datasets_from_config,
                      register_default_datasets)
from .cocolvis import register_cocolvis
from .coco_format import register_coco_format
from .common import (DATASETS_ENV, DatasetNotFoundError, datasets_root, load_instance_masks, load_stuff_masks,
                     mask_to_rle)
from .folders import FOLDER_LAYOUTS, register_folder_dataset
from .pascalvoc import register_pascalvoc
from .sbd import register_sbd
from .synthetic import (CACHE_ENV, generate_synthetic_sample, register_synthetic, register_synthetic_from_config,
                        synthetic_cache_dir)

__all__ = [
    "load_instance_masks", "load_stuff_masks", "mask_to_rle", "datasets_root", "DatasetNotFoundError", "DATASETS_ENV",
    "CACHE_ENV",
    "BUILTIN_DATASETS", "register_builtin_datasets", "register_datasets_from_config", "register_default_datasets",
    "register_sbd", "register_cocolvis", "register_pascalvoc", "register_folder_dataset", "FOLDER_LAYOUTS",
    "register_coco_format", "register_synthetic", "register_synthetic_from_config", "generate_synthetic_sample",
    "synthetic_cache_dir",
]

register_default_datasets()
