"""Data side of adaptiveclick: dataset registrations and the click-simulating training mapper.

``import adaptiveclick.data`` registers every built-in dataset name in detectron2's DatasetCatalog (lazily;
see :mod:`adaptiveclick.data.datasets`).
"""

from . import datasets  # noqa: F401  (registers the built-in datasets)
from .mapper import ClickTrainingMapper

__all__ = ["ClickTrainingMapper", "datasets"]
