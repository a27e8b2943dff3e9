"""Tests of adaptiveclick.data.samplers: the RITM sample-weights file (official SBD recipe), its lookup, the
weighted i.i.d. training sampler, and ClickTrainer.build_train_loader's use of it.  Small pickles only."""

import itertools
import os
import pickle

import numpy as np
import pytest
from detectron2.config import get_cfg
from detectron2.utils import comm

from adaptiveclick.config import add_adaptiveclick_config
from adaptiveclick.data.samplers import (WeightedTrainingSampler, load_sample_weights,
                                         resolve_sample_weights_file)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_weights(path, entries):
    with open(path, "wb") as f:
        pickle.dump(entries, f)
    return str(path)


def dicts_of(*names):
    return [{"image_id": n} for n in names]


# ----------------------------------------------------------------------------------------------------------
# load_sample_weights


def test_probabilities_by_hand(tmp_path):
    # weights (1 - s) ** 2: 0.5 -> 0.25, 0.75 -> 0.0625, 0 -> 1, 0.9 -> 0.01; sum 1.3225
    path = write_weights(tmp_path / "w.pkl", [(0, "a", np.float32(0.5)), (1, "b", 0.75), (2, "c", 0.0),
                                              (3, "d", np.float32(0.9))])
    probs = load_sample_weights(path, dicts_of("a", "b", "c", "d"), gamma=2)
    expected = np.array([0.25, 0.0625, 1.0, 0.01]) / 1.3225
    assert probs.dtype == np.float64 and probs.shape == (4,)
    np.testing.assert_allclose(probs, expected, rtol=1e-6)
    assert probs.sum() == pytest.approx(1.0)


def test_gamma_zero_is_uniform_and_score_one_never_drawn(tmp_path):
    path = write_weights(tmp_path / "w.pkl", [(0, "a", 0.2), (1, "b", 1.0), (2, "c", 0.7)])
    np.testing.assert_allclose(load_sample_weights(path, dicts_of("a", "b", "c"), gamma=0), [1 / 3] * 3)
    probs = load_sample_weights(path, dicts_of("a", "b", "c"), gamma=1)
    np.testing.assert_allclose(probs, [0.8 / 1.1, 0.0, 0.3 / 1.1])


def test_matched_by_name_not_by_index(tmp_path, caplog):
    # the file's order and indices differ from the dicts'; an extra entry ("z") is allowed and logged
    path = write_weights(tmp_path / "w.pkl", [(0, "c", 0.5), (1, "z", 0.1), (2, "a", 0.0), (3, "b", 0.75)])
    with caplog.at_level("INFO", logger="adaptiveclick.data.samplers"):
        probs = load_sample_weights(path, dicts_of("a", "b", "c"), gamma=1)
    np.testing.assert_allclose(probs, np.array([1.0, 0.25, 0.5]) / 1.75)
    assert "1 of its 4 entries are not in the dataset" in caplog.text


def test_integer_image_ids_match_string_names(tmp_path):
    path = write_weights(tmp_path / "w.pkl", [(0, "7", 0.5), (1, 8, 0.0)])
    np.testing.assert_allclose(load_sample_weights(path, dicts_of(8, 7), gamma=1), [2 / 3, 1 / 3])


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.pkl")
    with pytest.raises(FileNotFoundError, match="nope.pkl"):
        load_sample_weights(path, dicts_of("a"), gamma=1)


@pytest.mark.parametrize("content, message", [
    ({"a": 0.5}, "expected a list of .*got dict"),
    ([], "is empty"),
    ([(0, "a")], "entry 0 .*expected a 3-tuple"),
    ([(0, "a", 0.5), "b"], "entry 1 .*expected a 3-tuple"),
    ([(0, "a", "high")], "non-numeric score"),
    ([(0, "a", 1.5)], r"score 1.5, expected a finite value in \[0, 1\]"),
    ([(0, "a", -0.1)], r"score -0.1, expected a finite value in \[0, 1\]"),
    ([(0, "a", float("nan"))], r"score nan, expected a finite value"),
    ([(0, "a", float("inf"))], r"score inf, expected a finite value"),
    ([(0, "a", 0.5), (1, "b", 0.2), (2, "a", 0.1)], r"1 duplicate image name\(s\), e.g. \['a'\]"),
])
def test_malformed_files(tmp_path, content, message):
    path = write_weights(tmp_path / "bad.pkl", content)
    with pytest.raises(ValueError, match=message) as info:
        load_sample_weights(path, dicts_of("a"), gamma=1)
    assert "bad.pkl" in str(info.value)


def test_dataset_images_missing_from_the_file(tmp_path):
    path = write_weights(tmp_path / "w.pkl", [(0, "a", 0.5)])
    names = ["a"] + [f"m{i}" for i in range(8)]
    with pytest.raises(ValueError, match=r"w.pkl: 8 of the 9 dataset images have no entry, "
                                         r"e.g. \['m0', 'm1', 'm2', 'm3', 'm4'\]"):
        load_sample_weights(path, dicts_of(*names), gamma=1)


def test_negative_gamma_and_all_zero_weights(tmp_path):
    path = write_weights(tmp_path / "w.pkl", [(0, "a", 0.5)])
    with pytest.raises(ValueError, match="GAMMA.*>= 0, got -0.5"):
        load_sample_weights(path, dicts_of("a"), gamma=-0.5)
    path = write_weights(tmp_path / "ones.pkl", [(0, "a", 1.0), (1, "b", 1.0), (2, "c", 0.3)])
    with pytest.raises(ValueError, match="ones.pkl: every weight .* is zero"):
        load_sample_weights(path, dicts_of("a", "b"), gamma=1)


# ----------------------------------------------------------------------------------------------------------
# resolve_sample_weights_file


def test_lookup_cwd_first_then_datasets_root(tmp_path, monkeypatch):
    cwd, root = tmp_path / "cwd", tmp_path / "root"
    (cwd / "SBD").mkdir(parents=True)
    (root / "SBD").mkdir(parents=True)
    monkeypatch.chdir(cwd)
    rel = os.path.join("SBD", "w.pkl")
    in_root = write_weights(root / rel, [])
    assert resolve_sample_weights_file(rel, str(root)) == in_root
    in_cwd = write_weights(cwd / rel, [])
    assert resolve_sample_weights_file(rel, str(root)) == in_cwd
    assert resolve_sample_weights_file(in_root, str(tmp_path / "elsewhere")) == in_root  # absolute: as is


def test_lookup_failure_names_both_paths_and_the_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        resolve_sample_weights_file("SBD/w.pkl", str(tmp_path / "root"))
    text = str(info.value)
    assert os.path.join(str(tmp_path), "SBD", "w.pkl") in text
    assert os.path.join(str(tmp_path), "root", "SBD", "w.pkl") in text
    assert "sbd_samples_weights.pkl" in text and "lab206/AdaptiveClick" in text and "RITM" in text
    assert 'DATALOADER.SAMPLE_WEIGHTS.FILE ""' in text


# ----------------------------------------------------------------------------------------------------------
# WeightedTrainingSampler


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_sampler_frequencies_match_the_probabilities():
    probs = np.array([0.05, 0.15, 0.3, 0.5, 0.0])
    n = 20000
    draws = take(WeightedTrainingSampler(probs * 3.0, seed=1), n)  # unnormalised weights are fine
    assert all(isinstance(i, int) for i in draws[:10])
    counts = np.bincount(draws, minlength=probs.size)
    assert counts.size == probs.size and counts[4] == 0
    sigma = np.sqrt(n * probs * (1 - probs))
    assert (np.abs(counts - n * probs) <= 5 * sigma + 1e-9).all(), (counts, n * probs)


def test_sampler_is_iid_with_replacement():
    # unlike shuffled epochs, a heavily weighted image repeats within len(dataset) draws
    draws = take(WeightedTrainingSampler([0.97, 0.01, 0.01, 0.01], seed=0), 4)
    assert len(set(draws)) < 4


def test_sampler_seeding():
    w = np.arange(1, 11, dtype=float)
    a = take(WeightedTrainingSampler(w, seed=5), 9000)  # crosses chunk boundaries
    assert a == take(WeightedTrainingSampler(w, seed=5), 9000)
    assert take(iter(WeightedTrainingSampler(w, seed=5)), 100) == a[:100]  # every iteration restarts the stream
    assert a[:200] != take(WeightedTrainingSampler(w, seed=6), 200)


def test_sampler_seed_none_uses_the_shared_seed(monkeypatch):
    monkeypatch.setattr(comm, "shared_random_seed", lambda: 11)
    assert take(WeightedTrainingSampler([1, 2, 3]), 50) == take(WeightedTrainingSampler([1, 2, 3], seed=11), 50)


def test_sampler_sharding(monkeypatch):
    w = [1.0, 2.0, 3.0, 4.0, 5.0]
    single = take(WeightedTrainingSampler(w, seed=3), 400)
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    shards = []
    for rank in (0, 1):
        monkeypatch.setattr(comm, "get_rank", lambda rank=rank: rank)
        shards.append(take(WeightedTrainingSampler(w, seed=3), 200))
    assert shards[0] == single[0::2] and shards[1] == single[1::2]


@pytest.mark.parametrize("weights, message", [
    ([[1.0, 2.0]], "1-D"),
    ([], "non-empty"),
    ([1.0, float("nan")], "finite"),
    ([1.0, -1.0], ">= 0"),
    ([0.0, 0.0], "sum to zero"),
])
def test_sampler_rejects_bad_weights(weights, message):
    with pytest.raises(ValueError, match=message):
        WeightedTrainingSampler(weights, seed=0)


# ----------------------------------------------------------------------------------------------------------
# the training loader's sampler (adaptiveclick.data.build)


def tiny_cfg(tmp_path, *opts):
    cfg = get_cfg()
    add_adaptiveclick_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs/synthetic/tiny.yaml"))
    cfg.merge_from_list(["OUTPUT_DIR", str(tmp_path), "MODEL.DEVICE", "cpu"] + list(opts))
    return cfg


def register_images(tmp_path, name, stems):
    from detectron2.data import DatasetCatalog
    from PIL import Image

    from adaptiveclick.data.datasets.common import make_annotation

    dicts = []
    for stem in stems:
        Image.fromarray(np.full((16, 16, 3), 100, dtype=np.uint8)).save(tmp_path / f"{stem}.png")
        mask = np.zeros((16, 16), dtype=bool)
        mask[2:10, 3:11] = True
        dicts.append({"file_name": str(tmp_path / f"{stem}.png"), "height": 16, "width": 16, "image_id": stem,
                      "annotations": [make_annotation(mask)]})
    DatasetCatalog.register(name, lambda: [dict(d) for d in dicts])
    return dicts


def test_train_sampler_is_the_weighted_one_when_a_file_is_set(tmp_path, monkeypatch):
    from detectron2.data import DatasetCatalog
    from detectron2.data.samplers import TrainingSampler

    from adaptiveclick.data.build import build_train_sampler

    name = "test_samplers_weighted"
    monkeypatch.chdir(tmp_path)
    dicts = register_images(tmp_path, name, ["x", "y", "z"])
    try:
        # relative FILE found under DATASETS.ROOT (not in the working directory)
        root = tmp_path / "root"
        (root / "SBD").mkdir(parents=True)
        write_weights(root / "SBD" / "w.pkl", [(0, "z", 0.5), (1, "x", 0.0), (2, "y", 0.75), (3, "extra", 0.1)])
        cfg = tiny_cfg(tmp_path, "DATASETS.TRAIN", (name,), "DATASETS.ROOT", str(root),
                       "DATALOADER.SAMPLE_WEIGHTS.FILE", "SBD/w.pkl", "DATALOADER.SAMPLE_WEIGHTS.GAMMA", 2.0)
        sampler = build_train_sampler(cfg, dicts)
        assert isinstance(sampler, WeightedTrainingSampler)
        np.testing.assert_allclose(sampler.probabilities, np.array([1.0, 0.0625, 0.25]) / 1.3125)

        # FILE "" keeps detectron2's shuffled epochs, or draws i.i.d. uniformly (the COCO+LVIS recipe)
        assert type(build_train_sampler(tiny_cfg(tmp_path, "DATASETS.TRAIN", (name,)), dicts)) is TrainingSampler
        iid = build_train_sampler(tiny_cfg(tmp_path, "DATASETS.TRAIN", (name,),
                                           "DATALOADER.SAMPLE_WITH_REPLACEMENT", True), dicts)
        assert isinstance(iid, WeightedTrainingSampler)
        np.testing.assert_allclose(iid.probabilities, [1 / 3] * 3)
        for size in ("b", "l", "h"):
            shipped = get_cfg()
            add_adaptiveclick_config(shipped)
            shipped.merge_from_file(os.path.join(REPO, f"configs/cocolvis/adaptiveclick_vit_{size}_448.yaml"))
            assert shipped.DATALOADER.SAMPLE_WITH_REPLACEMENT is True

        cfg.DATALOADER.SAMPLE_WEIGHTS.FILE = "SBD/missing.pkl"
        with pytest.raises(FileNotFoundError, match="missing.pkl"):
            build_train_sampler(cfg, dicts)
    finally:
        DatasetCatalog.remove(name)


def test_real_train_loader_never_draws_a_zero_weight_image(tmp_path):
    # detectron2's configurable accepts dataset= and sampler= together with pin_memory (real loader, 0 workers)
    from detectron2.data import DatasetCatalog

    from adaptiveclick.engine import ClickTrainer

    name = "test_samplers_real_loader"
    register_images(tmp_path, name, ["keep", "never"])
    try:
        path = write_weights(tmp_path / "w.pkl", [(0, "keep", 0.3), (1, "never", 1.0)])
        cfg = tiny_cfg(tmp_path, "DATASETS.TRAIN", (name,), "DATALOADER.NUM_WORKERS", 0, "SOLVER.IMS_PER_BATCH", 6,
                       "INPUT.AUG.CROP_SIZE", [16, 16], "DATALOADER.SAMPLE_WEIGHTS.FILE", path)
        batch = next(iter(ClickTrainer.build_train_loader(cfg)))
        assert len(batch) == 6
        assert {os.path.basename(s["file_name"]) for s in batch} == {"keep.png"}
    finally:
        DatasetCatalog.remove(name)
