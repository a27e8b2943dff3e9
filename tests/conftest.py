"""Shared pytest configuration: CUDA tests are skipped on machines without a GPU; shared fixtures."""

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def names():
    """Dataset names a test registers (append them); removed from DatasetCatalog/MetadataCatalog afterwards."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    registered = []
    yield registered
    for name in registered:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)
