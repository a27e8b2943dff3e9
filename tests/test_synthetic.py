"""The built-in synthetic dataset: determinism, object properties, the on-disk cache and its registration."""

import importlib.util
import json
import os

import cv2
import numpy as np
import pytest
import scipy.ndimage
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from PIL import Image

import adaptiveclick.data  # noqa: F401  (registers the built-in names)
from adaptiveclick.config import add_adaptiveclick_config
from adaptiveclick.data import ClickTrainingMapper
from adaptiveclick.data.datasets import load_instance_masks, synthetic
from adaptiveclick.data.datasets.synthetic import (CACHE_ENV, generate_synthetic_sample, register_synthetic,
                                                   register_synthetic_from_config, synthetic_cache_dir)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def default_synthetic_restored():
    yield
    register_synthetic_from_config(add_adaptiveclick_config(get_cfg()))


def test_same_seed_same_sample_other_seed_other_sample():
    image, masks = generate_synthetic_sample(3, image_size=96, seed=11)
    again, masks_again = generate_synthetic_sample(3, image_size=96, seed=11)
    np.testing.assert_array_equal(image, again)
    assert len(masks) == len(masks_again)
    for a, b in zip(masks, masks_again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(image, generate_synthetic_sample(3, image_size=96, seed=12)[0])
    assert not np.array_equal(image, generate_synthetic_sample(4, image_size=96, seed=11)[0])


def test_images_and_objects():
    size, min_area = 128, max(12, int(0.002 * 128 * 128))
    counts, with_holes, with_thin_parts = [], 0, 0
    for index in range(30):
        image, masks = generate_synthetic_sample(index, image_size=size, seed=7)
        assert image.dtype == np.uint8 and image.shape == (size, size, 3)
        counts.append(len(masks))
        covered = np.zeros((size, size), dtype=np.int32)
        for m in masks:
            assert m.dtype == bool and m.shape == (size, size)
            assert m.sum() >= min_area
            covered += m
        assert covered.max() == 1  # visible parts of overlapping objects are disjoint
        # textured background: not a flat colour
        assert image[covered == 0].std(axis=0).mean() > 3
        # the top object differs in colour from its surroundings
        top = masks[-1]
        ring = cv2.dilate(top.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~top
        assert np.linalg.norm(image[top].mean(axis=0) - image[ring].mean(axis=0)) > 40
        # holes: background pixels enclosed by an object mask
        with_holes += any((scipy.ndimage.binary_fill_holes(m) & ~m).any() for m in masks)
        # thin parts: an opening with a 5 x 5 square removes > 10 % of the object
        opened = [cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_OPEN, np.ones((5, 5), np.uint8)).astype(bool)
                  for m in masks]
        with_thin_parts += any((m & ~o).sum() > 0.1 * m.sum() for m, o in zip(masks, opened))
    assert min(counts) >= 2 and np.mean(counts) >= 3.5 and max(counts) <= 6
    assert with_holes >= 8 and with_thin_parts >= 8


def test_image_size_and_bad_arguments():
    for size in (32, 64, 200):
        image, masks = generate_synthetic_sample(0, image_size=size)
        assert image.shape == (size, size, 3) and all(m.shape == (size, size) for m in masks) and masks
    for kwargs, match in [({"image_size": 31}, "image_size"), ({"image_size": 64.0}, "image_size"),
                          ({"seed": -1}, "seed"), ({"seed": True}, "seed"), ({"index": -2}, "index")]:
        args = dict({"index": 0}, **kwargs)
        with pytest.raises(ValueError, match=match):
            generate_synthetic_sample(**args)
    with pytest.raises(ValueError, match="num_images"):
        register_synthetic("test_bad", 0)


def test_registered_dataset_matches_the_generator(tmp_path, names):
    names.append("test_syn")
    register_synthetic("test_syn", 4, image_size=64, seed=5, cache_dir=str(tmp_path))
    folder = synthetic_cache_dir(64, 5, str(tmp_path))
    assert MetadataCatalog.get("test_syn").dataset_root == folder
    assert not os.path.exists(folder)  # lazy
    dicts = DatasetCatalog.get("test_syn")
    assert len(dicts) == 4 and len({d["image_id"] for d in dicts}) == 4
    for index, d in enumerate(dicts):
        image, masks = generate_synthetic_sample(index, image_size=64, seed=5)
        assert os.path.dirname(d["file_name"]) == folder and (d["height"], d["width"]) == (64, 64)
        np.testing.assert_array_equal(read_image(d["file_name"], format="RGB"), image)
        loaded, ignore = load_instance_masks(d)
        assert ignore is None and len(loaded) == len(masks)
        for a, m, ann in zip(loaded, masks, d["annotations"]):
            np.testing.assert_array_equal(a, m)
            ys, xs = np.nonzero(m)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    assert not [f for f in os.listdir(folder) if f.startswith(".")]  # no temporary files left


def test_cache_is_reused_and_keyed_by_parameters(tmp_path, names, monkeypatch, caplog):
    names.extend(["test_syn_a", "test_syn_b"])
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env_cache"))
    register_synthetic("test_syn_a", 3, image_size=48, seed=0)
    folder = MetadataCatalog.get("test_syn_a").dataset_root
    assert folder.startswith(str(tmp_path / "env_cache"))
    first = DatasetCatalog.get("test_syn_a")
    mtimes = {f: os.path.getmtime(os.path.join(folder, f)) for f in os.listdir(folder)}
    assert len(mtimes) == 6

    def fail(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(synthetic, "generate_synthetic_sample", fail)
    assert DatasetCatalog.get("test_syn_a") == first
    assert {f: os.path.getmtime(os.path.join(folder, f)) for f in os.listdir(folder)} == mtimes
    # another size or seed is another folder
    assert synthetic_cache_dir(64, 0) != folder and synthetic_cache_dir(48, 1) != folder
    register_synthetic("test_syn_b", 2, image_size=48, seed=1)
    with pytest.raises(AssertionError, match="cache"):
        DatasetCatalog.get("test_syn_b")
    monkeypatch.undo()

    # a damaged entry is regenerated
    with open(os.path.join(folder, "000001.json"), "w") as f:
        f.write("{not json")
    with caplog.at_level("WARNING"):
        again = DatasetCatalog.get("test_syn_a")
    assert "regenerating" in caplog.text and again == first
    record = json.load(open(os.path.join(folder, "000001.json")))
    assert record["params"] == {"generator_version": synthetic.GENERATOR_VERSION, "image_size": 48, "seed": 0,
                                "index": 1}
    # so is one whose annotation carries a bad box mode (valid JSON, wrong content)
    record["annotations"][0]["bbox_mode"] = 99
    with open(os.path.join(folder, "000001.json"), "w") as f:
        json.dump(record, f)
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert DatasetCatalog.get("test_syn_a") == first
    assert "regenerating" in caplog.text


def test_config_registration(tmp_path, default_synthetic_restored):
    # import-time registration uses the config defaults
    cfg = add_adaptiveclick_config(get_cfg())
    s = cfg.DATASETS.SYNTHETIC
    assert (s.NUM_TRAIN, s.NUM_VAL, s.IMAGE_SIZE, s.SEED, s.VAL_SEED, s.CACHE_DIR) == (2000, 50, 256, 0, 1, "")
    train, val = MetadataCatalog.get("synthetic_train"), MetadataCatalog.get("synthetic_val")
    assert (train.num_images, train.image_size, train.seed) == (2000, 256, 0)
    assert (val.num_images, val.image_size, val.seed) == (50, 256, 1)

    s.NUM_TRAIN, s.NUM_VAL, s.IMAGE_SIZE, s.SEED, s.VAL_SEED = 3, 2, 40, 8, 9
    s.CACHE_DIR = str(tmp_path)
    assert register_synthetic_from_config(cfg) == ("synthetic_train", "synthetic_val")
    train, val = DatasetCatalog.get("synthetic_train"), DatasetCatalog.get("synthetic_val")
    assert len(train) == 3 and len(val) == 2 and train[0]["height"] == 40
    assert MetadataCatalog.get("synthetic_val").dataset_root == synthetic_cache_dir(40, 9, str(tmp_path))
    assert not np.array_equal(read_image(train[0]["file_name"]), read_image(val[0]["file_name"]))
    s.VAL_SEED = 8
    with pytest.raises(ValueError, match="VAL_SEED"):
        register_synthetic_from_config(cfg)


def test_mapper_and_visualize_tool_on_synthetic(tmp_path, names):
    names.append("test_syn_vis")
    register_synthetic("test_syn_vis", 3, image_size=96, seed=2, cache_dir=str(tmp_path / "cache"))
    d = DatasetCatalog.get("test_syn_vis")[0]
    masks, _ = load_instance_masks(d)
    out = ClickTrainingMapper(is_train=False, seed=0)(d)
    assert out["image"].dtype == torch.uint8 and tuple(out["image"].shape) == (3, 96, 96)
    gt = out["gt_mask"].numpy().astype(bool)  # one object, or the union of two (merging)
    assert any(np.array_equal(gt, m) for m in masks) or any(
        np.array_equal(gt, a | b) for i, a in enumerate(masks) for b in masks[i + 1:])

    spec = importlib.util.spec_from_file_location("visualize_data", os.path.join(REPO, "tools", "visualize_data.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    paths = tool.main(["--dataset", "test_syn_vis", "--num", "2", "--output", str(tmp_path / "vis"),
                       "INPUT.AUG.CROP_SIZE", "[64, 64]"])
    assert len(paths) == 2 and np.asarray(Image.open(paths[0])).shape[:2] == (64, 64)
