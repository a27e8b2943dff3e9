"""Tests of adaptiveclick.data.mapper.ClickTrainingMapper and tools/visualize_data.py on a tiny on-disk dataset."""

import importlib.util
import logging
import os
import pickle
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from PIL import Image
from pycocotools import mask as mask_util

from adaptiveclick.clicks import MultiPointSampler, array_to_clicks
from adaptiveclick.config import add_adaptiveclick_config

# The mapper decodes masks with the datasets part's load_instance_masks (data contract); these tests run
# against the real function and are skipped only while that module does not exist yet.
pytest.importorskip("adaptiveclick.data.datasets.common",
                    reason="adaptiveclick.data.datasets.common not written yet", exc_type=ModuleNotFoundError)
from adaptiveclick.data.mapper import (ClickTrainingMapper, CvResizeTransform, Rot90Transform,  # noqa: E402
                                       WarpAffineTransform, _pack_bits, _unpack_bits)

H, W = 96, 128
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# no geometric / photometric randomness: the crop is the whole image
IDENTITY_AUG = dict(crop_size=(H, W), scale_range=(1.0, 1.0), flip="none", rotate90_prob=0.0,
                    shift_rotate_prob=0.0, brightness_contrast_prob=0.0, rgb_shift_prob=0.0)


def rle(mask):
    enc = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    enc["counts"] = enc["counts"].decode("ascii")
    return enc


def make_dict(tmp_path, objects, ignore=None, image=None, name="img"):
    """Write ``image`` (default: random RGB) as PNG and build a dataset dict with RLE masks."""
    if image is None:
        image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    path = tmp_path / f"{name}.png"
    Image.fromarray(image).save(path)
    annotations = []
    for m in objects:
        ys, xs = np.nonzero(m)
        annotations.append({"segmentation": rle(m), "bbox": [int(xs.min()), int(ys.min()),
                                                             int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1],
                            "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1, "iscrowd": 0})
    d = {"file_name": str(path), "height": image.shape[0], "width": image.shape[1], "image_id": name,
         "annotations": annotations}
    if ignore is not None:
        d["ignore"] = rle(ignore)
    return d


def rect(rows, cols, shape=(H, W)):
    m = np.zeros(shape, dtype=bool)
    m[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1] = True
    return m


OBJ_A = rect((10, 49), (10, 59))
OBJ_B = rect((60, 85), (80, 120))
IGNORE = rect((0, 95), (124, 127))


@pytest.fixture
def sample_dict(tmp_path):
    return make_dict(tmp_path, [OBJ_A, OBJ_B], ignore=IGNORE)


def check_sample(out, size):
    h, w = size
    assert out["image"].dtype == torch.uint8 and tuple(out["image"].shape) == (3, h, w)
    assert out["gt_mask"].dtype == torch.uint8 and tuple(out["gt_mask"].shape) == (h, w)
    assert set(out["gt_mask"].unique().tolist()) <= {0, 1}
    assert out["ignore_mask"].dtype == torch.bool and tuple(out["ignore_mask"].shape) == (h, w)
    assert out["clicks"].dtype == torch.int64 and tuple(out["clicks"].shape) == (48, 3)
    assert (out["height"], out["width"]) == (h, w)
    clicks = out["clicks"].numpy()
    gt = out["gt_mask"].numpy().astype(bool)
    for i, (r, c, p) in enumerate(clicks):
        if (r, c, p) == (-1, -1, -1):
            continue
        assert 0 <= r < h and 0 <= c < w
        assert p == (1 if i < 24 else 0)  # positive slots first, then negative slots
        assert gt[r, c] == bool(p)  # positives on the object, negatives off it
        assert not out["ignore_mask"][r, c]
    return array_to_clicks(clicks)


def test_output_format_default_crop(sample_dict):
    mapper = ClickTrainingMapper(seed=0)
    for _ in range(4):
        out = mapper(sample_dict)
        clicks = check_sample(out, (448, 448))
        assert out["file_name"] == sample_dict["file_name"] and out["image_id"] == "img"
        if out["gt_mask"].any():
            assert any(c.is_positive for c in clicks)


def test_clicks_inside_and_on_the_right_side_over_many_samples(sample_dict):
    mapper = ClickTrainingMapper(crop_size=(64, 64), keep_background_prob=0.0, seed=1)
    n_pos = n_neg = 0
    for _ in range(30):
        clicks = check_sample(mapper(sample_dict), (64, 64))
        n_pos += sum(c.is_positive for c in clicks)
        n_neg += sum(not c.is_positive for c in clicks)
    assert n_pos > 30 and n_neg > 0


def test_determinism_for_a_seed(sample_dict):
    def run(seed):
        mapper = ClickTrainingMapper(crop_size=(64, 64), seed=seed)
        return [mapper(sample_dict) for _ in range(3)]

    a, b, c = run(7), run(7), run(8)
    for x, y in zip(a, b):
        for key in ("image", "gt_mask", "ignore_mask", "clicks"):
            assert torch.equal(x[key], y[key])
    assert not all(torch.equal(x["image"], y["image"]) and torch.equal(x["clicks"], y["clicks"])
                   for x, y in zip(a, c))
    # successive calls of one mapper draw different samples
    assert not all(torch.equal(a[0]["clicks"], x["clicks"]) and torch.equal(a[0]["image"], x["image"])
                   for x in a[1:])
    # an explicit generator overrides the mapper's own stream
    m1, m2 = ClickTrainingMapper(crop_size=(64, 64), seed=1), ClickTrainingMapper(crop_size=(64, 64), seed=2)
    o1, o2 = m1(sample_dict, rng=np.random.default_rng(3)), m2(sample_dict, rng=np.random.default_rng(3))
    assert torch.equal(o1["image"], o2["image"]) and torch.equal(o1["clicks"], o2["clicks"])


def test_call_rng_is_the_generator_of_that_call(sample_dict):
    # the training loader passes call_rng(k) to continue a stream: the k-th plain call must draw the same
    a = ClickTrainingMapper(crop_size=(64, 64), seed=9)
    plain = [a(sample_dict) for _ in range(3)]
    b = ClickTrainingMapper(crop_size=(64, 64), seed=9)
    direct = b(sample_dict, rng=b.call_rng(2))
    assert torch.equal(plain[2]["image"], direct["image"]) and torch.equal(plain[2]["clicks"], direct["clicks"])
    other = b(sample_dict, rng=b.call_rng(2, worker=1))
    assert not (torch.equal(other["image"], direct["image"]) and torch.equal(other["clicks"], direct["clicks"]))
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="call index"):
            b.call_rng(bad)
    with pytest.raises(ValueError, match="worker"):
        b.call_rng(0, worker=-1)


def test_dataloader_workers_get_different_streams(sample_dict, monkeypatch):
    outputs = []
    for worker_seed in (100, 101, 100):
        info = SimpleNamespace(id=worker_seed - 100, seed=worker_seed)
        monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda info=info: info)
        outputs.append(ClickTrainingMapper(crop_size=(64, 64), seed=5)(sample_dict))
    assert torch.equal(outputs[0]["image"], outputs[2]["image"])
    assert not (torch.equal(outputs[0]["image"], outputs[1]["image"])
                and torch.equal(outputs[0]["clicks"], outputs[1]["clicks"]))


def test_masks_follow_the_image_geometry(tmp_path):
    # the image is bright exactly on the object: after any geometric augmentation the target must sit where
    # the image is bright (up to interpolation at the edges)
    image = np.zeros((H, W, 3), dtype=np.uint8)
    image[OBJ_A] = 250
    d = make_dict(tmp_path, [OBJ_A], image=image)
    mapper = ClickTrainingMapper(crop_size=(80, 80), brightness_contrast_prob=0.0, rgb_shift_prob=0.0,
                                 flip_prob=1.0, rotate90_prob=1.0, shift_rotate_prob=1.0, rotate_limit=3.0,
                                 keep_background_prob=0.0, seed=0)
    for _ in range(12):
        out = mapper(d)
        gt = out["gt_mask"].numpy().astype(bool)
        bright = out["image"].numpy()[0] > 125
        assert gt.sum() > 0
        assert (gt & bright).sum() / (gt | bright).sum() > 0.9


def test_identity_augmentation_keeps_image_and_object(sample_dict):
    out = ClickTrainingMapper(**IDENTITY_AUG, sampler=MultiPointSampler(merge_objects_prob=0.0), seed=0)(sample_dict)
    expected = np.asarray(Image.open(sample_dict["file_name"])).transpose(2, 0, 1)
    np.testing.assert_array_equal(out["image"].numpy(), expected)
    gt = out["gt_mask"].numpy().astype(bool)
    assert np.array_equal(gt, OBJ_A) or np.array_equal(gt, OBJ_B)
    np.testing.assert_array_equal(out["ignore_mask"].numpy(), IGNORE)
    # is_train=False: no augmentation at all
    out = ClickTrainingMapper(is_train=False, seed=0)(sample_dict)
    np.testing.assert_array_equal(out["image"].numpy(), expected)
    assert (out["height"], out["width"]) == (H, W)


def test_flips_and_quarter_turns(tmp_path, sample_dict):
    src = np.asarray(Image.open(sample_dict["file_name"]))
    mapper = ClickTrainingMapper(**dict(IDENTITY_AUG, flip="any", flip_prob=1.0), seed=0)
    candidates = {"h": src[:, ::-1], "v": src[::-1], "hv": src[::-1, ::-1]}
    seen = set()
    for _ in range(15):
        img = mapper(sample_dict)["image"].numpy().transpose(1, 2, 0)
        match = [k for k, v in candidates.items() if np.array_equal(img, v)]
        assert len(match) == 1
        seen.add(match[0])
    assert seen == set(candidates)
    square = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    obj = rect((5, 20), (30, 60), (64, 64))
    d = make_dict(tmp_path, [obj], image=square, name="square")
    aug = dict(IDENTITY_AUG, crop_size=(64, 64), rotate90_prob=1.0)
    mapper = ClickTrainingMapper(**aug, seed=0)
    seen = set()
    for _ in range(20):
        out = mapper(d)
        k = [k for k in range(4) if np.array_equal(out["image"].numpy().transpose(1, 2, 0), np.rot90(square, k))]
        assert len(k) == 1
        np.testing.assert_array_equal(out["gt_mask"].numpy().astype(bool), np.rot90(obj, k[0]))
        seen.add(k[0])
    assert seen == {0, 1, 2, 3}


def test_colour_jitter_formula(sample_dict):
    aug = dict(IDENTITY_AUG, brightness_contrast_prob=1.0, brightness_range=(0.1, 0.1), contrast_range=(0.2, 0.2))
    out = ClickTrainingMapper(**aug, seed=0)(sample_dict)
    src = np.asarray(Image.open(sample_dict["file_name"])).transpose(2, 0, 1).astype(np.float64)
    # albumentations: uint8(clip(alpha * v + beta * 255)); 1.2 v + 25.5 is never within 0.1 of an integer
    expected = np.floor(np.clip(1.2 * src + 0.1 * 255, 0, 255))
    np.testing.assert_array_equal(out["image"].numpy(), expected)
    aug = dict(IDENTITY_AUG, rgb_shift_prob=1.0, rgb_shift=10.0)
    img = ClickTrainingMapper(**aug, seed=0)(sample_dict)["image"].numpy().astype(np.int64)
    diff = img - src.astype(np.int64)
    unclipped = (src > 20) & (src < 235)
    for c in range(3):
        shifts = np.unique(diff[c][unclipped[c]])
        assert len(shifts) == 1 and abs(shifts[0]) <= 10  # one shift per channel
    assert len({int(np.unique(diff[c][unclipped[c]])[0]) for c in range(3)}) > 1


def test_min_object_area_and_empty_samples(tmp_path):
    small = rect((40, 42), (40, 42))  # 9 px < 20
    d = make_dict(tmp_path, [small])
    out = ClickTrainingMapper(**IDENTITY_AUG, seed=0)(d)
    assert not out["gt_mask"].any()
    clicks = check_sample(out, (H, W))
    assert not any(c.is_positive for c in clicks)
    out = ClickTrainingMapper(**IDENTITY_AUG, min_object_area=9, seed=0)(d)
    np.testing.assert_array_equal(out["gt_mask"].numpy().astype(bool), small)
    # an object below min_object_area stays labelled for the sampler (RITM keeps its pixels non-background)
    big = rect((5, 30), (5, 30))
    mapper = ClickTrainingMapper(**IDENTITY_AUG, seed=0)
    seen = _spy_sampler(mapper)
    mapper(make_dict(tmp_path, [big, small], name="two"))
    assert len(seen["masks"]) == 1
    np.testing.assert_array_equal(seen["masks"][0], big)
    np.testing.assert_array_equal(seen["labelled"], big | small)
    assert seen["num_all_objects"] == 1
    # no annotation at all: an empty sample, negatives anywhere
    d = make_dict(tmp_path, [], name="empty")
    check_sample(ClickTrainingMapper(crop_size=(64, 64), seed=0)(d), (64, 64))


def _spy_sampler(mapper):
    seen = {}
    real_sample = mapper.sampler.sample

    def spy(masks, rng, **kwargs):
        seen.update(masks=masks, **kwargs)
        return real_sample(masks, rng, **kwargs)

    mapper.sampler.sample = spy
    return seen


def test_hierarchy_targets_roots_and_counts_children(tmp_path):
    # RITM: only roots are targets; len(sample) counts the children too; a removed object's children move up
    child = rect((20, 30), (20, 30))
    d = make_dict(tmp_path, [OBJ_A, child, OBJ_B])
    d["annotations"][1]["parent"] = 0
    mapper = ClickTrainingMapper(**IDENTITY_AUG, seed=0)
    seen = _spy_sampler(mapper)
    mapper(d)
    assert [m.sum() for m in seen["masks"]] == [OBJ_A.sum(), OBJ_B.sum()] and seen["num_all_objects"] == 3
    np.testing.assert_array_equal(seen["labelled"], OBJ_A | OBJ_B)

    # a small root (removed) hands its child up; a small middle node is skipped over by its child
    small = rect((0, 1), (0, 1))  # 4 px < 20
    d = make_dict(tmp_path, [small, OBJ_A, OBJ_B, small, child], name="chain")
    d["annotations"][1]["parent"] = 0   # A under the small root: A becomes a root
    d["annotations"][3]["parent"] = 2   # small under B
    d["annotations"][4]["parent"] = 3   # child under small under B: stays below B
    mapper(d)
    assert [m.sum() for m in seen["masks"]] == [OBJ_A.sum(), OBJ_B.sum()] and seen["num_all_objects"] == 3
    np.testing.assert_array_equal(seen["labelled"], OBJ_A | OBJ_B | small)

    for parent, message in ((5, "must be None or the index"), (0, "must be None or the index"), (1, "cycle")):
        bad = make_dict(tmp_path, [OBJ_A, OBJ_B], name="bad")
        bad["annotations"][0]["parent"] = parent
        if parent == 1:
            bad["annotations"][1]["parent"] = 0
        with pytest.raises(ValueError, match=message):
            mapper(bad)


def _packed_stuff(tmp_path, stuff_masks):
    """A RITM packed-layer .pickle holding ``stuff_masks`` as its objects 0, 1, ... (one layer each)."""
    layers = [cv2.imencode(".png", m.astype(np.uint8))[1] for m in stuff_masks]
    path = tmp_path / "stuff.pickle"
    with open(path, "wb") as f:
        pickle.dump((layers, [(i, 1) for i in range(len(stuff_masks))]), f)
    return {"mask_file": str(path), "first_object": 0}


def test_stuff_joins_as_roots_with_stuff_prob_else_is_background(tmp_path):
    stuff = rect((70, 95), (0, 40))
    d = make_dict(tmp_path, [OBJ_A])
    d["stuff"] = _packed_stuff(tmp_path, [stuff])
    for prob, expected in ((1.0, [OBJ_A, stuff]), (0.0, [OBJ_A])):
        mapper = ClickTrainingMapper(**IDENTITY_AUG, stuff_prob=prob, seed=0)
        seen = _spy_sampler(mapper)
        mapper(d)
        assert len(seen["masks"]) == len(expected)
        for got, want in zip(seen["masks"], expected):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(seen["labelled"], np.logical_or.reduce(expected))
    # probability 0.3 per sample (one draw each)
    mapper = ClickTrainingMapper(**IDENTITY_AUG, stuff_prob=0.3, seed=0)
    seen = _spy_sampler(mapper)
    joined = 0
    for _ in range(300):
        mapper(d)
        joined += len(seen["masks"]) == 2
    assert joined / 300 == pytest.approx(0.3, abs=0.08)
    with pytest.raises(ValueError, match="stuff_prob"):
        ClickTrainingMapper(stuff_prob=1.5)


def test_objects_and_stuff_of_one_packed_file_read_it_once(tmp_path, monkeypatch):
    import adaptiveclick.data.datasets.common as common

    stuff = rect((70, 95), (0, 40))
    d = make_dict(tmp_path, [])
    d["stuff"] = _packed_stuff(tmp_path, [OBJ_A, stuff])  # object 0: an instance, object 1: stuff
    d["stuff"]["first_object"] = 1
    d["annotations"] = [{"mask_file": d["stuff"]["mask_file"], "mask_object": 0, "bbox": [10, 10, 50, 40],
                         "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1, "iscrowd": 0}]
    reads = []
    real_read = common.read_label_map
    monkeypatch.setattr(common, "read_label_map", lambda path: reads.append(path) or real_read(path))
    mapper = ClickTrainingMapper(**IDENTITY_AUG, stuff_prob=1.0, seed=0)
    seen = _spy_sampler(mapper)
    mapper(d)
    assert reads == [d["stuff"]["mask_file"]]
    assert len(seen["masks"]) == 2
    np.testing.assert_array_equal(seen["masks"][0], OBJ_A)
    np.testing.assert_array_equal(seen["masks"][1], stuff)


def test_redraw_until_an_object_survives(tmp_path):
    tiny = rect((2, 5), (120, 123))
    d = make_dict(tmp_path, [tiny])
    aug = dict(crop_size=(16, 16), flip="none", rotate90_prob=0.0, shift_rotate_prob=0.0,
               brightness_contrast_prob=0.0, rgb_shift_prob=0.0, min_object_area=0)
    mapper = ClickTrainingMapper(**aug, keep_background_prob=0.0, max_attempts=2000, seed=0)
    assert all(mapper(d)["gt_mask"].any() for _ in range(5))
    mapper = ClickTrainingMapper(**aug, keep_background_prob=1.0, seed=0)
    assert not all(mapper(d)["gt_mask"].any() for _ in range(5))


def test_gives_up_after_max_attempts_with_a_warning(tmp_path, caplog):
    d = make_dict(tmp_path, [rect((2, 3), (120, 121))])
    mapper = ClickTrainingMapper(crop_size=(8, 8), scale_range=(1.0, 1.0), flip="none", rotate90_prob=0.0,
                                 shift_rotate_prob=0.0, keep_background_prob=0.0, max_attempts=1, min_object_area=0,
                                 seed=0)
    with caplog.at_level(logging.WARNING, logger="adaptiveclick.data.mapper"):
        outs = [mapper(d) for _ in range(4)]
    assert any(not o["gt_mask"].any() for o in outs)
    assert "no object survived 1 augmentation draws" in caplog.text


def test_bad_input(sample_dict):
    mapper = ClickTrainingMapper(crop_size=(32, 32), seed=0)
    with pytest.raises(ValueError, match="file_name"):
        mapper({k: v for k, v in sample_dict.items() if k != "file_name"})
    with pytest.raises(ValueError, match="Mismatched image shape"):
        mapper(dict(sample_dict, height=H + 1))
    with pytest.raises(TypeError, match="Generator"):
        mapper(sample_dict, rng=3)
    with pytest.raises(TypeError, match="dict"):
        mapper([sample_dict])
    for kwargs, match in [({"image_format": "BGR"}, "RGB"), ({"crop_size": (0, 448)}, "crop_size"),
                          ({"scale_range": (1.2, 0.8)}, "scale_range"), ({"flip": "diagonal"}, "flip"),
                          ({"flip_prob": 1.5}, "flip_prob"), ({"contrast_range": (0.4, -0.1)}, "contrast_range"),
                          ({"min_object_area": -1}, "min_object_area"), ({"max_attempts": 0}, "max_attempts"),
                          ({"seed": -3}, "seed")]:
        with pytest.raises(ValueError, match=match):
            ClickTrainingMapper(**kwargs)
    with pytest.raises(TypeError, match="sampler"):
        ClickTrainingMapper(sampler=object())


def test_from_config():
    cfg = get_cfg()
    add_adaptiveclick_config(cfg)
    cfg.SEED = 3
    cfg.INPUT.AUG.CROP_SIZE = [320, 256]
    cfg.INPUT.CLICKS.MAX_NUM_POINTS = 12
    cfg.INPUT.CLICKS.MIN_OBJECT_AREA = 80
    mapper = ClickTrainingMapper(cfg, is_train=True)
    assert mapper.is_train and mapper.seed == 3 and mapper.crop_size == (320, 256)
    assert mapper.sampler.max_num_points == 12 and mapper.min_object_area == 80
    assert mapper.scale_range == (0.75, 1.25) and mapper.flip == "any" and mapper.keep_background_prob == 0.01
    assert mapper.sampler.merge_objects_prob == 0.15
    np.testing.assert_allclose(mapper.sampler.negative_strategy_probs, [0.1, 0.4, 0.5])
    assert not ClickTrainingMapper(cfg, is_train=False).is_train


def test_resize_is_opencv_bilinear_without_antialiasing():
    # official UniformRandomResize: cv2.resize, INTER_LINEAR for the image, INTER_NEAREST for masks; PIL's
    # bilinear (detectron2's ResizeTransform) averages the whole footprint when shrinking
    img = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    seg = (img[..., 0] > 128).astype(np.uint8)
    for new_h, new_w in ((30, 45), (50, 75)):
        t = CvResizeTransform(40, 60, new_h, new_w)
        np.testing.assert_array_equal(t.apply_image(img),
                                      cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR))
        np.testing.assert_array_equal(t.apply_segmentation(seg),
                                      cv2.resize(seg, (new_w, new_h), interpolation=cv2.INTER_NEAREST))
        np.testing.assert_allclose(t.apply_coords(np.array([[60.0, 40.0], [30.0, 20.0]])),
                                   [[new_w, new_h], [new_w / 2, new_h / 2]])
        assert t.inverse().apply_image(t.apply_image(img)).shape == img.shape
    # a noise image shrunk by 0.75: no anti-aliasing keeps its contrast (PIL's blurs it)
    pil = T.ResizeTransform(40, 60, 30, 45).apply_image(img)
    assert CvResizeTransform(40, 60, 30, 45).apply_image(img).std() > pil.std() + 5
    with pytest.raises(ValueError, match="expected an"):
        CvResizeTransform(40, 60, 30, 45).apply_image(img[:10])


def test_custom_transforms_map_coordinates_like_pixels():
    img = np.zeros((5, 7), dtype=np.uint8)
    img[1, 5] = 255
    for k in range(4):
        t = Rot90Transform(5, 7, k)
        out = t.apply_image(img)
        r, c = map(int, np.argwhere(out == 255)[0])
        x, y = t.apply_coords(np.array([[5.5, 1.5]]))[0]
        assert (int(np.floor(y)), int(np.floor(x))) == (r, c)
        np.testing.assert_array_equal(t.inverse().apply_image(out), img)
    shift = WarpAffineTransform(np.array([[1.0, 0, -2], [0, 1, 3]]), 5, 7)
    out = shift.apply_segmentation(img)
    r, c = map(int, np.argwhere(out == 255)[0])
    assert (r, c) == (4, 3)
    x, y = shift.apply_coords(np.array([[5.5, 1.5]]))[0]
    assert (y, x) == (4.5, 3.5)


def test_rotated_masks_equal_the_official_int32_label_map_warp():
    # the official SBD recipe warps an int32 label map; our bit planes (uint8) must give the same objects
    import cv2

    rng = np.random.default_rng(0)
    for _ in range(6):
        h, w = (int(v) for v in rng.integers(120, 200, 2))
        labels = np.zeros((h, w), dtype=np.int32)
        for i in range(1, 6):
            cv2.ellipse(labels, (int(rng.integers(0, w)), int(rng.integers(0, h))),
                        (int(rng.integers(5, 60)), int(rng.integers(5, 60))), 0, 0, 360, i, -1)
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-3, 3), 1.0)
        matrix[:, 2] += rng.uniform(-0.03, 0.03, 2) * (w, h)
        official = cv2.warpAffine(labels, matrix, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                                  borderValue=0)
        planes = _pack_bits([labels == i for i in range(1, 6)])
        warp = WarpAffineTransform(matrix, h, w)
        ours = _unpack_bits(np.stack([warp.apply_segmentation(p) for p in planes]), 5)
        for i in range(1, 6):
            np.testing.assert_array_equal(ours[i - 1], official == i)


def test_visualize_data_tool(tmp_path, sample_dict):
    from detectron2.data import DatasetCatalog

    spec = importlib.util.spec_from_file_location("visualize_data", os.path.join(REPO, "tools", "visualize_data.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    name = "adaptiveclick_test_mapper_tiny"
    DatasetCatalog.register(name, lambda: [sample_dict] * 3)
    try:
        out_dir = tmp_path / "vis"
        paths = tool.main(["--dataset", name, "--num", "2", "--output", str(out_dir),
                           "INPUT.AUG.CROP_SIZE", "[64, 64]"])
    finally:
        DatasetCatalog.remove(name)
    assert len(paths) == 2 and all(p.endswith(".png") for p in paths)
    img = np.asarray(Image.open(paths[0]))
    assert img.shape[:2] == (64, 64)
