"""Dataset registrations and the mask decoder of the data contract, on tiny fixtures written in each format."""

import json
import logging
import os
import pickle

import cv2
import numpy as np
import pytest
import scipy.io
import scipy.ndimage
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image
from pycocotools import mask as mask_util

import adaptiveclick.data  # noqa: F401  (registers the built-in names)
from adaptiveclick.config import add_adaptiveclick_config
from adaptiveclick.data import ClickTrainingMapper
from adaptiveclick.data.datasets import (BUILTIN_DATASETS, DATASETS_ENV, DatasetNotFoundError, load_instance_masks,
                                         load_stuff_masks, register_builtin_datasets, register_coco_format,
                                         register_datasets_from_config, register_default_datasets,
                                         register_folder_dataset, register_pascalvoc, register_sbd)
from adaptiveclick.data.datasets.cocolvis import register_cocolvis
from adaptiveclick.data.datasets.common import mask_bbox

REAL_DATASETS = ("sbd_train", "sbd_val", "cocolvis_train", "grabcut", "berkeley", "davis", "pascalvoc_val",
                 "coco_mval", "sstem", "brats", "oaizib")
H, W = 30, 40


# -- helpers ------------------------------------------------------------------------------------------------


def rect(r0, r1, c0, c1, shape=(H, W)):
    """Bool mask with rows r0..r1 and cols c0..c1 (inclusive) set."""
    m = np.zeros(shape, dtype=bool)
    m[r0:r1 + 1, c0:c1 + 1] = True
    return m


def write_image(path, shape=(H, W), seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, shape + (3,), dtype=np.uint8)
    Image.fromarray(img).save(path)


def write_grey(path, values):
    """Single-channel 8-bit label image (OpenCV reads it back as three equal channels)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), np.asarray(values, dtype=np.uint8))


def rle(mask):
    enc = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    enc["counts"] = enc["counts"].decode("ascii")
    return enc


def voc_palette():
    """The PascalVOC colour map (bits of the index spread over R, G, B from the most significant bit)."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def masks_of(d):
    masks, ignore = load_instance_masks(d)
    return masks, ignore


@pytest.fixture
def builtin_restored(monkeypatch):
    """Let a test re-register the built-in names; restore the import-time registrations afterwards."""
    yield monkeypatch
    monkeypatch.undo()
    register_default_datasets()


# -- load_instance_masks ------------------------------------------------------------------------------------


def test_rle_forms_decode_to_the_same_mask():
    m = rect(3, 20, 5, 30) & ~rect(8, 12, 10, 14)
    compressed = rle(m)
    as_bytes = dict(compressed, counts=compressed["counts"].encode("ascii"))
    # uncompressed RLE: run lengths in column-major order, starting with zeros
    flat = m.T.reshape(-1).astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    if flat[0]:
        runs = [0] + runs
    uncompressed = {"size": [H, W], "counts": runs}
    for seg in (compressed, as_bytes, uncompressed):
        masks, ignore = load_instance_masks({"file_name": "x", "height": H, "width": W,
                                             "annotations": [{"segmentation": seg}]})
        assert ignore is None and len(masks) == 1
        assert masks[0].dtype == bool
        np.testing.assert_array_equal(masks[0], m)


def test_polygons_need_the_image_size():
    poly = [[5.0, 3.0, 30.0, 3.0, 30.0, 20.0, 5.0, 20.0]]
    masks, _ = load_instance_masks({"file_name": "x", "height": H, "width": W, "annotations": [{"segmentation": poly}]})
    expected = rect(3, 20, 5, 30)
    iou = (masks[0] & expected).sum() / (masks[0] | expected).sum()
    assert iou > 0.85
    with pytest.raises(ValueError, match="height"):
        load_instance_masks({"file_name": "x", "annotations": [{"segmentation": poly}]})
    with pytest.raises(ValueError, match="polygons"):
        load_instance_masks({"file_name": "x", "height": H, "width": W, "annotations": [{"segmentation": [[1, 2]]}]})


def test_label_image_mask_files(tmp_path):
    label = np.zeros((H, W), dtype=np.uint8)
    label[rect(2, 10, 2, 10)] = 3
    label[rect(15, 25, 20, 35)] = 7
    label[rect(0, 29, 39, 39)] = 255
    files = {}
    files["grey"] = tmp_path / "grey.png"
    Image.fromarray(label).save(files["grey"])
    files["palette"] = tmp_path / "palette.png"
    p = Image.fromarray(label, mode="P")
    p.putpalette(voc_palette())
    p.save(files["palette"])
    files["rgb"] = tmp_path / "rgb.png"
    Image.fromarray(np.repeat(label[..., None], 3, axis=2)).save(files["rgb"])
    files["rgba"] = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([label] * 3 + [np.full_like(label, 255)])).save(files["rgba"])
    files["16bit"] = tmp_path / "deep.png"
    assert cv2.imwrite(str(files["16bit"]), label.astype(np.uint16) * 200)
    for kind, path in files.items():
        scale = 200 if kind == "16bit" else 1
        d = {"file_name": "img.png", "height": H, "width": W,
             "annotations": [{"mask_file": str(path), "mask_value": 7 * scale},
                             {"mask_file": str(path), "mask_value": 3 * scale}],
             "ignore": {"mask_file": str(path), "mask_value": 255 * scale}}
        masks, ignore = load_instance_masks(d)
        np.testing.assert_array_equal(masks[0], label == 7, err_msg=kind)
        np.testing.assert_array_equal(masks[1], label == 3, err_msg=kind)
        np.testing.assert_array_equal(ignore, label == 255, err_msg=kind)
    colour = np.zeros((H, W, 3), dtype=np.uint8)
    colour[..., 0] = label
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(ValueError, match="one channel"):
        load_instance_masks({"file_name": "x", "annotations": [{"mask_file": str(tmp_path / "colour.png"),
                                                                 "mask_value": 3}]})


def test_mat_and_packed_layer_mask_files(tmp_path):
    seg = np.zeros((H, W), dtype=np.uint8)
    seg[rect(1, 5, 1, 5)] = 1
    seg[rect(10, 20, 10, 20)] = 2
    scipy.io.savemat(tmp_path / "a.mat", {"GTinst": {"Segmentation": seg, "Categories": np.array([[3], [5]])}})
    masks, _ = load_instance_masks({"file_name": "x", "height": H, "width": W, "annotations": [
        {"mask_file": str(tmp_path / "a.mat"), "mask_value": 2}, {"mask_file": str(tmp_path / "a.mat"), "mask_value": 1}]})
    np.testing.assert_array_equal(masks[0], seg == 2)
    np.testing.assert_array_equal(masks[1], seg == 1)

    layer0 = np.zeros((H, W), dtype=np.uint8)
    layer0[rect(0, 9, 0, 9)] = 1
    layer0[rect(20, 29, 0, 9)] = 2
    layer1 = np.zeros((H, W), dtype=np.uint8)
    layer1[rect(2, 6, 2, 6)] = 1  # overlaps object 0 of layer 0
    encoded = [cv2.imencode(".png", layer)[1] for layer in (layer0, layer1)]
    with open(tmp_path / "p.pickle", "wb") as f:
        pickle.dump((encoded, [(0, 1), (1, 1), (0, 2)]), f)
    anns = [{"mask_file": str(tmp_path / "p.pickle"), "mask_object": k} for k in (2, 0, 1)]
    masks, _ = load_instance_masks({"file_name": "x", "height": H, "width": W, "annotations": anns})
    for m, expected in zip(masks, (layer0 == 2, layer0 == 1, layer1 == 1)):
        np.testing.assert_array_equal(m, expected)
    with pytest.raises(ValueError, match="mask_object"):
        load_instance_masks({"file_name": "x", "annotations": [{"mask_file": str(tmp_path / "p.pickle"),
                                                                "mask_object": 3}]})


def test_decoder_errors(tmp_path):
    missing = str(tmp_path / "nope.png")
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_instance_masks({"file_name": "img.jpg", "annotations": [{"mask_file": missing, "mask_value": 1}]})
    with pytest.raises(ValueError, match=r"size \(30, 40\), expected \(31, 40\)"):
        load_instance_masks({"file_name": "img.jpg", "height": H + 1, "width": W,
                             "annotations": [{"segmentation": rle(rect(1, 2, 1, 2))}]})
    with pytest.raises(ValueError, match="ignore"):
        load_instance_masks({"file_name": "img.jpg", "annotations": [{"segmentation": rle(rect(1, 2, 1, 2))}],
                             "ignore": rle(np.zeros((H, W + 1), dtype=bool))})
    with pytest.raises(ValueError, match="needs 'segmentation'"):
        load_instance_masks({"file_name": "img.jpg", "annotations": [{"bbox": [0, 0, 1, 1]}]})
    Image.fromarray(np.zeros((H, W), dtype=np.uint8)).save(tmp_path / "m.png")
    for value in (None, True, 1.0):
        with pytest.raises(ValueError, match="mask_value"):
            load_instance_masks({"file_name": "x", "annotations": [{"mask_file": str(tmp_path / "m.png"),
                                                                    "mask_value": value}]})
    with pytest.raises(TypeError, match="dict"):
        load_instance_masks([])
    with pytest.raises(TypeError, match="annotations"):
        load_instance_masks({"file_name": "x", "annotations": "abc"})
    with pytest.raises(ValueError, match="height"):
        load_instance_masks({"file_name": "x", "height": 0, "width": W, "annotations": []})
    assert load_instance_masks({"file_name": "x"}) == ([], None)


# -- folder datasets ----------------------------------------------------------------------------------------


def grabcut_fixture(root, images="data_GT", masks="boundary_GT"):
    """Two images: 'a' with an object, a 128 band and a stray value 50; 'b' with an object only."""
    label_a = np.zeros((H, W), dtype=np.uint8)
    label_a[rect(5, 20, 5, 25)] = 255
    label_a[rect(4, 21, 26, 27)] = 128
    label_a[rect(25, 28, 30, 35)] = 50
    label_b = np.zeros((H, W), dtype=np.uint8)
    label_b[rect(10, 12, 10, 30)] = 200
    write_image(os.path.join(root, images, "b.png"), seed=1)
    write_image(os.path.join(root, images, "a.jpg"), seed=2)
    write_grey(os.path.join(root, masks, "a.bmp"), label_a)
    write_grey(os.path.join(root, masks, "b.png"), label_b)
    with open(os.path.join(root, images, ".DS_Store"), "w") as f:
        f.write("hidden files are skipped")
    return {"a": label_a, "b": label_b}


def test_grabcut_and_berkeley(tmp_path, names):
    for kind, images, masks in (("grabcut", "data_GT", "boundary_GT"), ("berkeley", "images", "masks")):
        root = tmp_path / kind
        labels = grabcut_fixture(str(root), images, masks)
        name = f"test_{kind}"
        names.append(name)
        register_folder_dataset(name, kind, str(root))
        dicts = DatasetCatalog.get(name)
        assert [d["image_id"] for d in dicts] == ["a", "b"]  # sorted image files
        assert dicts[0]["file_name"] == str(root / images / "a.jpg")
        assert (dicts[0]["height"], dicts[0]["width"]) == (H, W)
        for d in dicts:
            masks_, ignore = load_instance_masks(d)
            label = labels[d["image_id"]]
            assert len(masks_) == 1
            np.testing.assert_array_equal(masks_[0], label > 128)
            if d["image_id"] == "a":
                np.testing.assert_array_equal(ignore, label == 128)  # 50 is background, not ignored
            else:
                assert ignore is None and "ignore" not in d
        assert d["annotations"][0]["bbox"] == [10, 10, 21, 3]
        assert MetadataCatalog.get(name).evaluator_type == "noc"


def test_folder_dataset_errors(tmp_path, names, caplog):
    root = tmp_path / "GrabCut"
    grabcut_fixture(str(root))
    names.append("test_errors")
    write_image(str(root / "data_GT" / "c.png"))
    register_folder_dataset("test_errors", "grabcut", str(root))
    with pytest.raises(FileNotFoundError, match=r"no mask named c\.\* .* for the image .*c\.png"):
        DatasetCatalog.get("test_errors")
    write_grey(str(root / "boundary_GT" / "c.png"), np.zeros((H, W + 1)))
    with pytest.raises(ValueError, match=r"c\.png has size \(30, 41\) but image .* has \(30, 40\)"):
        DatasetCatalog.get("test_errors")
    write_grey(str(root / "boundary_GT" / "c.png"), np.zeros((H, W)))
    with caplog.at_level(logging.WARNING):
        dicts = DatasetCatalog.get("test_errors")
    assert len(dicts) == 2 and "skipped 1 images whose mask has no object" in caplog.text
    with pytest.raises(ValueError, match="kind"):
        register_folder_dataset("test_errors", "grabcat")


def test_davis_and_coco_mval_merge_every_object(tmp_path, names):
    for kind, sub in (("davis", "DAVIS"), ("coco_mval", "COCO_MVal")):
        root = tmp_path / sub
        colour = np.zeros((H, W, 3), dtype=np.uint8)  # BGR
        colour[rect(2, 8, 2, 8)] = (0, 0, 128)
        colour[rect(15, 25, 15, 30)] = (0, 200, 0)
        colour[rect(20, 22, 2, 4)] = (1, 0, 0)
        os.makedirs(root / "gt")
        cv2.imwrite(str(root / "gt" / "frame.png"), colour)
        write_image(str(root / "img" / "frame.jpg"))
        names.append(f"test_{kind}")
        register_folder_dataset(f"test_{kind}", kind, str(root))
        (d,) = DatasetCatalog.get(f"test_{kind}")
        masks, ignore = load_instance_masks(d)
        assert len(masks) == 1 and ignore is None
        np.testing.assert_array_equal(masks[0], colour.max(axis=2) > 0)
    assert MetadataCatalog.get("test_davis").noc_large_zoom_in is True
    assert not hasattr(MetadataCatalog.get("test_coco_mval"), "noc_large_zoom_in")


def test_sstem_connected_components(tmp_path, names):
    root = tmp_path / "ssTEM"
    label = np.zeros((H, W), dtype=np.uint8)
    label[rect(2, 5, 2, 5)] = 255
    label[rect(6, 9, 6, 9)] = 255  # touches the first square only diagonally: one 8-component, two 4-components
    label[rect(2, 20, 20, 22) | rect(18, 20, 20, 35) | rect(2, 20, 33, 35)] = 90  # a U: one component
    label[28, 0] = 1
    write_grey(str(root / "mitochondria" / "slice01.png"), label)
    os.makedirs(root / "raw")
    Image.fromarray(np.full((H, W), 120, dtype=np.uint8)).save(root / "raw" / "slice01.tif")
    write_grey(str(root / "mitochondria" / "notes.png"), label)  # a mask without image is ignored
    # default 8: what the official loader computes (its connectivity=4 lands in cv2's labels argument)
    for name, options, structure, count in (
            ("test_sstem", {}, np.ones((3, 3)), 3),
            ("test_sstem4", {"connectivity": 4}, [[0, 1, 0], [1, 1, 1], [0, 1, 0]], 4)):
        names.append(name)
        register_folder_dataset(name, "sstem", str(root), **options)
        (d,) = DatasetCatalog.get(name)
        masks, _ = load_instance_masks(d)
        reference, n = scipy.ndimage.label(label > 0, structure=structure)
        assert n == count and len(masks) == count
        for i, m in enumerate(masks):  # components in raster order of their first pixel
            np.testing.assert_array_equal(m, reference == i + 1)
    with pytest.raises(ValueError, match="connectivity must be 4 or 8"):
        register_folder_dataset("test_sstem6", "sstem", str(root), connectivity=6)


def test_brats_and_oaizib(tmp_path, names, caplog):
    root = tmp_path / "BraTS20"
    label = np.zeros((H, W), dtype=np.uint8)
    label[rect(5, 10, 5, 10)] = 1
    label[rect(8, 15, 8, 20)] = 2
    label[rect(20, 25, 30, 35)] = 4
    write_grey(str(root / "annotation" / "case1_slice070.png"), label)
    write_grey(str(root / "annotation" / "case1_slice001.png"), np.zeros((H, W)))
    write_image(str(root / "image" / "case1_slice070.png"))
    write_image(str(root / "image" / "case1_slice001.png"))
    names.append("test_brats")
    register_folder_dataset("test_brats", "brats", str(root))
    with caplog.at_level(logging.WARNING):
        dicts = DatasetCatalog.get("test_brats")
    assert [d["image_id"] for d in dicts] == ["case1_slice070"]
    assert "skipped 1 images" in caplog.text
    masks, _ = load_instance_masks(dicts[0])
    assert len(masks) == 1
    np.testing.assert_array_equal(masks[0], label > 0)

    root = tmp_path / "OAI-ZIB" / "iseg_slices"
    label = np.zeros((H, W), dtype=np.uint8)
    label[rect(2, 8, 2, 30)] = 4
    label[rect(12, 18, 2, 30)] = 3
    write_grey(str(root / "test" / "annotations" / "p1_s10.png"), label)
    write_image(str(root / "test" / "image" / "p1_s10.png"))
    names.append("test_oaizib")
    register_folder_dataset("test_oaizib", "oaizib", str(root))
    (d,) = DatasetCatalog.get("test_oaizib")
    masks, _ = load_instance_masks(d)
    assert len(masks) == 2  # ascending values: 3, then 4
    np.testing.assert_array_equal(masks[0], label == 3)
    np.testing.assert_array_equal(masks[1], label == 4)


# -- PascalVOC, SBD, COCO+LVIS, COCO json -------------------------------------------------------------------


def test_pascalvoc_grey_and_index_rules(tmp_path, names):
    root = tmp_path / "PascalVOC"
    index = np.zeros((H, W), dtype=np.uint8)
    index[rect(2, 8, 2, 8)] = 1
    index[rect(2, 8, 20, 26)] = 16  # palette (0, 64, 0): the same grey value (38) as index 1 (128, 0, 0)
    index[rect(15, 25, 5, 30)] = 2
    border = rect(14, 26, 4, 31) & ~rect(15, 25, 5, 30)
    index[border] = 255
    os.makedirs(root / "SegmentationObject")
    img = Image.fromarray(index, mode="P")
    img.putpalette(voc_palette())
    img.save(root / "SegmentationObject" / "2007_000033.png")
    write_image(str(root / "JPEGImages" / "2007_000033.jpg"))
    write_image(str(root / "JPEGImages" / "2007_000042.jpg"))
    empty = Image.fromarray(np.zeros((H, W), dtype=np.uint8), mode="P")
    empty.putpalette(voc_palette())
    empty.save(root / "SegmentationObject" / "2007_000042.png")
    os.makedirs(root / "ImageSets" / "Segmentation")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000042\n2007_000033\n")

    names.extend(["test_voc_grey", "test_voc_index"])
    register_pascalvoc("test_voc_grey", str(root))
    register_pascalvoc("test_voc_index", str(root), labels="index")
    grey, index_dicts = DatasetCatalog.get("test_voc_grey"), DatasetCatalog.get("test_voc_index")
    assert [d["image_id"] for d in grey] == ["2007_000042", "2007_000033"]  # val.txt order
    assert grey[0]["annotations"] == [] and "ignore" not in grey[0]
    masks, ignore = load_instance_masks(grey[1])
    # grey values (OpenCV BGR2GRAY): index 1 and 16 -> 38, index 2 -> 75, void (224, 224, 192) -> 220
    assert len(masks) == 2
    np.testing.assert_array_equal(masks[0], (index == 1) | (index == 16))
    np.testing.assert_array_equal(masks[1], index == 2)
    np.testing.assert_array_equal(ignore, border)
    masks, ignore = load_instance_masks(index_dicts[1])
    assert len(masks) == 3
    for m, v in zip(masks, (1, 2, 16)):
        np.testing.assert_array_equal(m, index == v)
    np.testing.assert_array_equal(ignore, border)
    assert MetadataCatalog.get("test_voc_index").pascalvoc_labels == "index"
    with pytest.raises(ValueError, match="labels"):
        register_pascalvoc("test_voc_grey", str(root), labels="colour")


def sbd_fixture(root):
    seg_a = np.zeros((H, W), dtype=np.uint8)
    seg_a[rect(2, 10, 2, 12)] = 1
    seg_a[rect(15, 25, 20, 35)] = 3
    for k in range(20):  # a thin diagonal: 20 px in a 20 x 20 box (ratio 0.05 < 0.08)
        seg_a[5 + k, 15 + k] = 2
    seg_b = np.zeros((H, W), dtype=np.uint8)
    seg_b[rect(0, 29, 0, 5)] = 4
    for name, seg in (("2008_000001", seg_a), ("2008_000002", seg_b)):
        os.makedirs(os.path.join(root, "inst"), exist_ok=True)
        scipy.io.savemat(os.path.join(root, "inst", f"{name}.mat"),
                         {"GTinst": {"Segmentation": seg, "Categories": np.arange(1, seg.max() + 1)[:, None]}})
        write_image(os.path.join(root, "img", f"{name}.jpg"))
    with open(os.path.join(root, "train.txt"), "w") as f:
        f.write("2008_000002\n2008_000001\n")
    with open(os.path.join(root, "val.txt"), "w") as f:
        f.write("2008_000001\n")
    return seg_a, seg_b


def test_sbd_train_drops_buggy_masks_val_keeps_everything(tmp_path, names):
    root = tmp_path / "SBD" / "dataset"
    seg_a, seg_b = sbd_fixture(str(root))
    names.extend(["test_sbd_train", "test_sbd_val"])
    register_sbd("test_sbd_train", "train", str(root))
    register_sbd("test_sbd_val", "val", str(root))
    train, val = DatasetCatalog.get("test_sbd_train"), DatasetCatalog.get("test_sbd_val")
    assert [d["image_id"] for d in train] == ["2008_000002", "2008_000001"]
    assert [a["mask_value"] for a in train[1]["annotations"]] == [1, 3]  # id 2 dropped (area/box 0.05)
    assert [a["mask_value"] for a in val[0]["annotations"]] == [1, 2, 3]
    masks, ignore = load_instance_masks(val[0])
    assert ignore is None
    for m, v in zip(masks, (1, 2, 3)):
        np.testing.assert_array_equal(m, seg_a == v)
    assert val[0]["annotations"][1]["bbox"] == [15, 5, 20, 20]
    masks, _ = load_instance_masks(train[0])
    np.testing.assert_array_equal(masks[0], seg_b == 4)
    with pytest.raises(ValueError, match="split"):
        register_sbd("test_sbd_train", "test")


def test_cocolvis_objects_hierarchy_and_stuff(tmp_path, names):
    root = tmp_path / "LVIS"
    layer0 = np.zeros((H, W), dtype=np.uint8)
    layer0[rect(0, 20, 0, 20)] = 1  # object 0: root (parent of 1)
    layer0[rect(25, 29, 25, 39)] = 2  # object 2: root without relatives (None)
    layer0[rect(22, 29, 0, 10)] = 3  # object 3: stuff
    layer1 = np.zeros((H, W), dtype=np.uint8)
    layer1[rect(5, 10, 5, 10)] = 1  # object 1: child of 0
    os.makedirs(root / "train" / "masks")
    os.makedirs(root / "train" / "images")
    encoded = [cv2.imencode(".png", layer)[1] for layer in (layer0, layer1)]
    with open(root / "train" / "masks" / "000000000042.pickle", "wb") as f:
        pickle.dump((encoded, [(0, 1), (1, 1), (0, 2), (0, 3)]), f)
    hierarchy = {0: {"parent": None, "children": [1], "node_level": 0},
                 1: {"parent": 0, "children": [], "node_level": 1}, 2: None}
    with open(root / "train" / "hannotation.pickle", "wb") as f:
        pickle.dump({"000000000042": {"hierarchy": hierarchy, "num_instance_masks": 3},
                     "000000000007": {"hierarchy": {}, "num_instance_masks": 0}}, f)
    names.append("test_cocolvis")
    register_cocolvis("test_cocolvis", str(root))
    dicts = DatasetCatalog.get("test_cocolvis")
    assert [d["image_id"] for d in dicts] == ["000000000007", "000000000042"]
    assert dicts[0]["annotations"] == []
    d = dicts[1]
    assert d["file_name"] == str(root / "train" / "images" / "000000000042.jpg")
    # every object in id order, the child pointing at its parent's annotation; the stuff segment apart
    assert [a["mask_object"] for a in d["annotations"]] == [0, 1, 2]
    assert [a.get("parent") for a in d["annotations"]] == [None, 0, None]
    masks, ignore = load_instance_masks(d)
    np.testing.assert_array_equal(masks[0], layer0 == 1)
    np.testing.assert_array_equal(masks[1], layer1 == 1)
    np.testing.assert_array_equal(masks[2], layer0 == 2)
    assert ignore is None
    (stuff,) = load_stuff_masks(d)
    np.testing.assert_array_equal(stuff, layer0 == 3)
    assert dicts[0]["stuff"]["first_object"] == 0


def test_coco_format_json(tmp_path, names):
    images = tmp_path / "images"
    write_image(str(images / "one.png"))
    write_image(str(images / "two.png"))
    obj = rect(10, 19, 5, 24)
    crowd_a, crowd_b = rect(0, 3, 0, 39), rect(25, 29, 30, 39)
    crowd_rle = mask_util.encode(np.asfortranarray(crowd_a.astype(np.uint8)))
    crowd_rle["counts"] = crowd_rle["counts"].decode("ascii")
    coco = {
        "images": [{"id": 1, "file_name": "one.png", "height": H, "width": W},
                   {"id": 2, "file_name": "two.png", "height": H, "width": W}],
        "categories": [{"id": 5, "name": "cat"}, {"id": 7, "name": "dog"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 7, "iscrowd": 0, "area": 200.0, "bbox": [5, 10, 20, 10],
             "segmentation": [[5.0, 10.0, 25.0, 10.0, 25.0, 20.0, 5.0, 20.0]]},
            {"id": 11, "image_id": 1, "category_id": 5, "iscrowd": 0, "area": 200.0, "bbox": [5, 10, 20, 10],
             "segmentation": rle(obj)},
            {"id": 12, "image_id": 1, "category_id": 5, "iscrowd": 1, "area": 160.0, "bbox": [0, 0, 40, 4],
             "segmentation": crowd_rle},
            {"id": 13, "image_id": 1, "category_id": 5, "iscrowd": 1, "area": 50.0, "bbox": [30, 25, 10, 5],
             "segmentation": [[30.0, 25.0, 40.0, 25.0, 40.0, 30.0, 30.0, 30.0]]},
        ],
    }
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    names.append("test_coco_json")
    register_coco_format("test_coco_json", str(tmp_path / "instances.json"), str(images))
    dicts = DatasetCatalog.get("test_coco_json")
    assert len(dicts) == 2 and dicts[1]["annotations"] == [] and "ignore" not in dicts[1]
    d = dicts[0]
    assert [a["category_id"] for a in d["annotations"]] == [1, 0]  # contiguous ids: 5 -> 0, 7 -> 1
    masks, ignore = load_instance_masks(d)
    assert len(masks) == 2
    np.testing.assert_array_equal(masks[1], obj)
    assert (masks[0] & obj).sum() / (masks[0] | obj).sum() > 0.85
    union = crowd_a | crowd_b
    assert ignore[crowd_a].all() and (ignore & union).sum() / (ignore | union).sum() > 0.85
    meta = MetadataCatalog.get("test_coco_json")
    assert meta.thing_classes == ["cat", "dog"] and meta.evaluator_type == "noc"
    names.append("test_coco_missing")
    register_coco_format("test_coco_missing", str(tmp_path / "nope.json"), str(images))
    with pytest.raises(FileNotFoundError, match="nope.json"):
        DatasetCatalog.get("test_coco_missing")


# -- roots, registration, metadata --------------------------------------------------------------------------


def test_builtin_names_are_registered_with_noc_metadata():
    for name in BUILTIN_DATASETS:
        assert name in DatasetCatalog.list(), name
        assert MetadataCatalog.get(name).evaluator_type == "noc"
    assert set(REAL_DATASETS) | {"synthetic_train", "synthetic_val"} == set(BUILTIN_DATASETS)
    assert MetadataCatalog.get("davis").noc_large_zoom_in is True


def test_missing_root_names_the_path_and_the_tree(tmp_path, builtin_restored):
    nowhere = tmp_path / "nowhere"
    builtin_restored.setenv(DATASETS_ENV, str(nowhere))
    assert register_builtin_datasets() == str(nowhere)  # lazy: registering reads nothing
    expected_lines = {"grabcut": "boundary_GT/", "sbd_val": "inst/<id>.mat", "pascalvoc_val": "SegmentationObject/",
                      "cocolvis_train": "hannotation.pickle", "oaizib": "test/annotations/", "davis": "gt/<name>"}
    for name in REAL_DATASETS:
        root = MetadataCatalog.get(name).dataset_root
        assert root.startswith(str(nowhere) + os.sep)
        with pytest.raises(DatasetNotFoundError) as info:
            DatasetCatalog.get(name)
        message = str(info.value)
        assert f"{root} does not exist" in message and DATASETS_ENV in message and "datasets/README.md" in message
        if name in expected_lines:
            assert expected_lines[name] in message
    # a present root with a missing part names that part
    os.makedirs(nowhere / "SBD" / "dataset" / "img")
    os.makedirs(nowhere / "SBD" / "dataset" / "inst")
    with pytest.raises(DatasetNotFoundError, match=r"val\.txt does not exist"):
        DatasetCatalog.get("sbd_val")


def test_root_from_the_environment_and_from_the_config(tmp_path, builtin_restored):
    labels = grabcut_fixture(str(tmp_path / "env" / "GrabCut"))
    builtin_restored.setenv(DATASETS_ENV, str(tmp_path / "env"))
    register_builtin_datasets()
    assert MetadataCatalog.get("grabcut").dataset_root == str(tmp_path / "env" / "GrabCut")
    assert len(DatasetCatalog.get("grabcut")) == len(labels)

    cfg = add_adaptiveclick_config(get_cfg())
    assert cfg.DATASETS.ROOT == "" and cfg.DATASETS.PASCALVOC_LABELS == "grey"
    cfg.DATASETS.ROOT = str(tmp_path / "cfg")
    cfg.DATASETS.PASCALVOC_LABELS = "index"
    cfg.DATASETS.SSTEM_CONNECTIVITY = 5
    with pytest.raises(ValueError, match="ssTEM connectivity must be 4 or 8, got 5"):
        register_datasets_from_config(cfg)
    cfg.DATASETS.SSTEM_CONNECTIVITY = 4
    cfg.DATASETS.SYNTHETIC.CACHE_DIR = str(tmp_path / "cache")
    grabcut_fixture(str(tmp_path / "cfg" / "Berkeley"), "images", "masks")
    assert register_datasets_from_config(cfg) == str(tmp_path / "cfg")
    assert MetadataCatalog.get("berkeley").dataset_root == str(tmp_path / "cfg" / "Berkeley")
    assert len(DatasetCatalog.get("berkeley")) == 2
    assert MetadataCatalog.get("pascalvoc_val").pascalvoc_labels == "index"
    assert MetadataCatalog.get("synthetic_val").dataset_root.startswith(str(tmp_path / "cache"))


def test_mapper_reads_the_ignore_band(tmp_path, names):
    labels = grabcut_fixture(str(tmp_path / "GrabCut"))
    names.append("test_grabcut_mapper")
    register_folder_dataset("test_grabcut_mapper", "grabcut", str(tmp_path / "GrabCut"))
    d = DatasetCatalog.get("test_grabcut_mapper")[0]
    out = ClickTrainingMapper(is_train=False, seed=0)(d)
    np.testing.assert_array_equal(out["ignore_mask"].numpy(), labels["a"] == 128)
    np.testing.assert_array_equal(out["gt_mask"].numpy().astype(bool), labels["a"] > 128)


def test_mask_bbox():
    assert mask_bbox(rect(3, 7, 10, 12)) == [10, 3, 3, 5]
    assert mask_bbox(np.zeros((4, 4), dtype=bool)) == [0, 0, 0, 0]
