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


@pytest.fixture(scope="module")
def tiny_model():
    """configs/synthetic/tiny.yaml on the CPU, random weights (torch seed 0), eval mode; one per test module."""
    import os

    from adaptiveclick.utils.bench import build_benchmark_model, load_config

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return build_benchmark_model(load_config(os.path.join(root, "configs", "synthetic", "tiny.yaml"), (), "cpu"))
