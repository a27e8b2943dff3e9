"""Tests of adaptiveclick.evaluation: protocol.md section C, fake predictors, an independent reference loop,
zoom-in/flip transforms, the detectron2 evaluator (also gathered over 2 CPU processes) and the config."""

import json
import os

import numpy as np
import pytest
import torch
from scipy import ndimage

from adaptiveclick.clicks import Click
from adaptiveclick.evaluation import (InteractiveEvaluationModel, InteractiveSession, ModelPredictor,
                                      NoCDatasetMapper, NoCEvaluator, NoCProtocol, ZoomIn, ZoomInParams, evaluate_noc,
                                      format_noc_table, iou_curve, mask_iou, noc, noc_protocol_from_config, noc_test,
                                      nof, success_curve, summarize_noc, transformed_prediction)
from adaptiveclick.evaluation.zoom_in import box_iou, clamp_box, clicks_inside, expand_box, object_roi
from adaptiveclick.evaluation.runner import build_noc_test_loader

# ------------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------------


def box(shape, rows, cols):
    """Bool mask of ``shape`` with rows a..b, cols c..d (both ends included) set."""
    m = np.zeros(shape, dtype=bool)
    m[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1] = True
    return m


def blank_image(shape):
    return np.zeros(shape + (3,), dtype=np.uint8)


def disks(shape, centres, radius_sq):
    rr, cc = np.mgrid[:shape[0], :shape[1]]
    out = np.zeros(shape, dtype=bool)
    for r, c in centres:
        out |= (rr - r) ** 2 + (cc - c) ** 2 <= radius_sq
    return out


def toy_predictor_c7(image, clicks, prev_mask):
    """protocol.md C7: within distance 3 of a positive click, minus within distance 2 of a negative click."""
    shape = image.shape[:2]
    pos = disks(shape, [(c.row, c.col) for c in clicks if c.is_positive], 9)
    neg = disks(shape, [(c.row, c.col) for c in clicks if not c.is_positive], 4)
    return (pos & ~neg).astype(np.float32)


class PerfectAfter:
    """Returns the ground truth from click k on, before that a fixed poor guess (IoU < 0.5)."""

    def __init__(self, gt, k):
        self.gt, self.k = gt, k
        self.poor = np.zeros(gt.shape, dtype=np.float32)
        rows, cols = np.nonzero(gt)
        self.poor[rows[0], cols[0]] = 1.0

    def __call__(self, image, clicks, prev_mask):
        return self.gt.astype(np.float32) if len(clicks) >= self.k else self.poor


# ------------------------------------------------------------------------------------------------------
# metrics: protocol.md C8, float32 thresholds, bad input
# ------------------------------------------------------------------------------------------------------

SEQ_A = np.array([0.62, 0.80, 0.86, 0.88, 0.91], dtype=np.float32)
SEQ_B = np.array([0.30 + 0.03 * (k - 1) for k in range(1, 21)], dtype=np.float32)
SEQ_C = np.array([0.50] * 19 + [0.95], dtype=np.float32)


def test_c8_noc_and_nof():
    seqs = [SEQ_A, SEQ_B, SEQ_C]
    assert [noc(s, 0.80) for s in seqs] == [2, 18, 20]
    assert [noc(s, 0.85) for s in seqs] == [3, 20, 20]
    assert [noc(s, 0.90) for s in seqs] == [5, 20, 20]
    assert nof(seqs, 0.85) == 2 and nof(seqs, 0.90) == 2  # B reaches 0.85 only at click 20: still a failure
    m = summarize_noc(seqs, thresholds=(0.80, 0.85, 0.90), stop_iou=0.90)
    assert m["NoC@80"] == pytest.approx(40 / 3) and m["NoC@85"] == pytest.approx(43 / 3)
    assert m["NoC@90"] == pytest.approx(15.0)
    assert m["NoF@85"] == 2 and m["NoF@90"] == 2 and m["NoF@80"] == 1
    assert m["NoC@90_std"] == pytest.approx(np.std([5, 20, 20]))
    assert m["num_instances"] == 3 and m["num_clicks"] == 45
    assert not any(k.startswith("mIoU@") for k in m)  # A stopped early: no mIoU


def test_c8_miou_with_full_sequences():
    a_full = np.concatenate([SEQ_A, np.full(15, 0.93, dtype=np.float32)])
    seqs = [a_full, SEQ_B, SEQ_C]
    curve = iou_curve(seqs)
    assert curve[0] == pytest.approx(0.4733, abs=1e-4)
    assert curve[4] == pytest.approx(0.6100, abs=1e-4)
    assert curve[19] == pytest.approx(0.9167, abs=1e-4)
    m = summarize_noc(seqs)
    assert [m[f"mIoU@{k}"] for k in (1, 5, 20)] == pytest.approx([curve[0], curve[4], curve[19]])
    # reached-within-k fractions: A at 3, B at 20, C at 20 (for 0.85)
    reached = success_curve(seqs, 0.85)
    assert reached[1] == 0 and reached[2] == pytest.approx(1 / 3) and reached[18] == pytest.approx(1 / 3)
    assert reached[19] == pytest.approx(1.0)


def test_thresholds_act_as_float32():
    stored = np.array([np.float32(0.9)], dtype=np.float32)  # 0.899999976 as float64
    assert float(stored[0]) < 0.9
    assert noc(stored, 0.9, max_clicks=20) == 1
    assert noc(stored, float(np.arange(0.8, 0.951, 0.05)[2]), max_clicks=20) == 1  # 0.9000000000000001
    assert noc([0.8999], 0.9, max_clicks=20) == 20
    assert noc([0.5, 1.0], 1.0, max_clicks=2) == 2


@pytest.mark.parametrize("ious, threshold, max_clicks", [
    ([0.5, float("nan")], 0.85, 20), ([], 0.85, 20), ([0.5] * 21, 0.85, 20), ([1.2], 0.85, 20),
    ([0.5], 0.0, 20), ([0.5], 1.5, 20), ([0.5], 0.85, 0), ([[0.5]], 0.85, 20),
])
def test_noc_rejects_bad_input(ious, threshold, max_clicks):
    with pytest.raises(ValueError):
        noc(ious, threshold, max_clicks)


def test_summary_and_curve_reject_inconsistent_input():
    with pytest.raises(ValueError, match="exceed the stop IoU"):
        summarize_noc([SEQ_A], thresholds=(0.85, 0.95), stop_iou=0.90)
    with pytest.raises(ValueError, match="full 20-click"):
        iou_curve([SEQ_A, SEQ_B])
    with pytest.raises(ValueError, match="empty"):
        summarize_noc([])


def test_mask_iou_c2_c6_and_ignore():
    gt_c1 = box((7, 7), (1, 5), (1, 4))
    assert mask_iou(box((7, 7), (1, 2), (1, 6)), gt_c1) == pytest.approx(8 / 24)
    gt = box((7, 7), (1, 5), (1, 3))
    ignore = box((7, 7), (1, 5), (4, 6))
    pred = box((7, 7), (1, 5), (1, 6))
    assert mask_iou(pred, gt, ignore) == 1.0
    assert mask_iou(pred, gt) == 0.5
    with pytest.raises(ValueError, match="undefined"):
        mask_iou(np.zeros((3, 3), bool), np.zeros((3, 3), bool))
    with pytest.raises(ValueError, match="bool"):
        mask_iou(pred.astype(np.uint8), gt)


# ------------------------------------------------------------------------------------------------------
# the session: C6, C7, fake predictors
# ------------------------------------------------------------------------------------------------------

def test_c7_five_clicks_with_toy_predictor():
    gt = box((10, 10), (1, 8), (1, 4)) | box((10, 10), (5, 8), (5, 8))
    assert gt.sum() == 48
    protocol = NoCProtocol(max_clicks=5, stop_iou=1.01)
    result = InteractiveSession(toy_predictor_c7, blank_image((10, 10)), gt, protocol=protocol).run()
    assert result.clicks == [Click(True, 6, 3), Click(True, 2, 2), Click(True, 7, 7), Click(False, 0, 0),
                             Click(False, 0, 3)]
    expected = np.array([26 / 51, 37 / 61, 48 / 71, 47 / 66, 43 / 64], dtype=np.float32)
    np.testing.assert_array_equal(result.ious, expected)
    assert result.ious.dtype == np.float32
    assert noc(result.ious, 0.85, 5) == 5


def test_c6_ignore_label_in_the_session():
    gt = box((7, 7), (1, 5), (1, 3))
    ignore = box((7, 7), (1, 5), (4, 6))
    pred = box((7, 7), (1, 5), (1, 6)).astype(np.float32)

    def predictor(image, clicks, prev_mask):
        return pred

    full = NoCProtocol(max_clicks=2, stop_iou=1.01)
    with_ignore = InteractiveSession(predictor, blank_image((7, 7)), gt, ignore, full).run()
    np.testing.assert_array_equal(with_ignore.ious, [1.0, 1.0])
    assert with_ignore.clicks[1] == Click(False, 0, 0)  # nothing left to fix (C6, C5)
    without = InteractiveSession(predictor, blank_image((7, 7)), gt, None, full).run()
    np.testing.assert_array_equal(without.ious, [0.5, 0.5])
    assert without.clicks[1] == Click(False, 2, 5)
    stopped = InteractiveSession(predictor, blank_image((7, 7)), gt, ignore, NoCProtocol()).run()
    assert len(stopped.ious) == 1  # IoU 1.0 >= 0.90 after the first click


def test_prediction_threshold_is_strict_and_stop_iou_inclusive():
    # GT: 10 pixels of row 2.  The prediction covers 9 of them with probability 0.5 (> 0.49: object) and the
    # 10th with float32(0.49) (not object): IoU = 9 / 10, which reaches stop IoU 0.9 compared in float32.
    gt = box((5, 12), (2, 2), (1, 10))
    probs = np.zeros((5, 12), dtype=np.float32)
    probs[2, 1:10] = 0.5
    probs[2, 10] = 0.49
    session = InteractiveSession(lambda im, c, p: probs, blank_image((5, 12)), gt, protocol=NoCProtocol())
    result = session.run()
    np.testing.assert_array_equal(result.ious, [np.float32(0.9)])
    assert session.prediction.sum() == 9 and not session.prediction[2, 10]


def test_stop_iou_is_compared_on_the_float64_iou(monkeypatch):
    # official evaluate_sample: `iou >= max_iou_thr` on get_iou's float64; 4500008 / 5000009 = 0.89999998
    # rounds to float32(0.9) but does not reach 0.9, so the session goes on (NoC@90 itself compares float32)
    import adaptiveclick.evaluation.session as session_module

    values = iter([4500008 / 5000009, 0.95])
    monkeypatch.setattr(session_module, "mask_iou", lambda *args: next(values))
    gt = box((5, 12), (2, 2), (1, 10))
    session = InteractiveSession(lambda im, c, p: np.full((5, 12), 0.5, np.float32), blank_image((5, 12)), gt)
    result = session.run()
    assert np.float32(4500008 / 5000009) == np.float32(0.9)
    np.testing.assert_array_equal(result.ious, [np.float32(0.9), np.float32(0.95)])
    assert noc(result.ious, 0.90) == 1


@pytest.mark.parametrize("k", [1, 3, 7, 19])
def test_perfect_after_k_clicks_gives_noc_k(k):
    gt = box((24, 30), (4, 15), (6, 20))
    result = InteractiveSession(PerfectAfter(gt, k), blank_image((24, 30)), gt).run()
    assert len(result.ious) == k and result.ious[-1] == 1.0 and (result.ious[:-1] < 0.5).all()
    assert noc(result.ious, 0.85) == k and noc(result.ious, 0.90) == k
    assert nof([result.ious], 0.90) == 0


def test_never_reaching_and_reaching_at_click_20_are_failures():
    gt = box((24, 30), (4, 15), (6, 20))
    never = InteractiveSession(lambda im, c, p: np.zeros((24, 30), np.float32), blank_image((24, 30)), gt).run()
    assert len(never.ious) == 20 and (never.ious == 0).all()
    late = InteractiveSession(PerfectAfter(gt, 20), blank_image((24, 30)), gt).run()
    assert len(late.ious) == 20 and late.ious[-1] == 1.0
    seqs = [never.ious, late.ious]
    assert [noc(s, 0.85) for s in seqs] == [20, 20] and nof(seqs, 0.85) == 2 and nof(seqs, 0.90) == 2


def test_session_passes_previous_probabilities_read_only():
    gt = box((12, 12), (2, 8), (3, 9))
    seen = []

    def predictor(image, clicks, prev_mask):
        seen.append(prev_mask.copy())
        with pytest.raises(ValueError):
            prev_mask[0, 0] = 1.0
        return np.full((12, 12), 0.1 * len(clicks), dtype=np.float32)

    InteractiveSession(predictor, blank_image((12, 12)), gt, protocol=NoCProtocol(max_clicks=4)).run()
    for i, prev in enumerate(seen):
        np.testing.assert_allclose(prev, np.full((12, 12), 0.1 * i, dtype=np.float32))


@pytest.mark.parametrize("bad, match", [
    (lambda im, c, p: np.full(im.shape[:2], 2.0, np.float32), "probabilities in"),
    (lambda im, c, p: np.full(im.shape[:2], np.nan, np.float32), "NaN"),
    (lambda im, c, p: np.zeros((3, 3), np.float32), "shape"),
    (lambda im, c, p: [[0.5]], "NumPy"),
])
def test_session_rejects_bad_predictor_output(bad, match):
    gt = box((8, 8), (2, 5), (2, 5))
    with pytest.raises((ValueError, TypeError), match=match):
        InteractiveSession(bad, blank_image((8, 8)), gt).step()


def test_session_rejects_bad_input():
    gt = box((8, 8), (2, 5), (2, 5))
    with pytest.raises(ValueError, match="uint8"):
        InteractiveSession(toy_predictor_c7, np.zeros((8, 8, 3), np.float32), gt)
    with pytest.raises(ValueError, match="shape"):
        InteractiveSession(toy_predictor_c7, blank_image((8, 9)), gt)
    with pytest.raises(ValueError, match="non-ignored"):
        InteractiveSession(toy_predictor_c7, blank_image((8, 8)), gt, ignore=gt)
    with pytest.raises(TypeError, match="logit network"):
        InteractiveSession(toy_predictor_c7, blank_image((8, 8)), gt, protocol=NoCProtocol(flip=True))
    with pytest.raises(ValueError, match="max_clicks"):
        NoCProtocol(max_clicks=0)
    session = InteractiveSession(PerfectAfter(gt, 1), blank_image((8, 8)), gt)
    session.run()
    with pytest.raises(RuntimeError, match="finished"):
        session.step()


# ------------------------------------------------------------------------------------------------------
# agreement with an independent reference implementation on random masks
# ------------------------------------------------------------------------------------------------------

def reference_click(gt, pred, ignore, clicked):
    """Oracle of protocol.md A.3 with SciPy's exact EDT (float64) on padded masks and np.where tie-breaks."""
    valid = ~ignore
    fn = gt & ~pred & valid
    fp = ~gt & pred & valid
    dist = []
    for err in (fn, fp):
        d = ndimage.distance_transform_edt(np.pad(err, 1))[1:-1, 1:-1]
        d[clicked] = 0
        dist.append(d)
    positive = dist[0].max() > dist[1].max()
    d = dist[0] if positive else dist[1]
    rows, cols = np.where(d == d.max())
    return positive, int(rows[0]), int(cols[0])


def reference_run(predictor, image, gt, ignore, max_clicks, stop, thr=0.49):
    clicked = np.zeros(gt.shape, dtype=bool)
    probs = np.zeros(gt.shape, dtype=np.float32)
    clicks, ious = [], []
    valid = ~ignore
    for _ in range(max_clicks):
        pred = probs > thr
        positive, r, c = reference_click(gt, pred, ignore, clicked)
        clicked[r, c] = True
        clicks.append(Click(positive, r, c))
        probs = predictor(image, list(clicks), probs)
        pred = probs > thr
        ious.append(float(np.float32(np.sum(pred & gt & valid) / np.sum((pred | gt) & valid))))
        if ious[-1] >= stop:
            break
    return clicks, ious


def random_instance(rng, shape):
    gt = np.zeros(shape, dtype=bool)
    for _ in range(int(rng.integers(1, 4))):
        r0, c0 = rng.integers(0, shape[0] - 4), rng.integers(0, shape[1] - 4)
        gt[r0:r0 + rng.integers(3, shape[0] // 2), c0:c0 + rng.integers(3, shape[1] // 2)] = True
    ignore = np.zeros(shape, dtype=bool)
    if rng.random() < 0.6:  # a band around the object, as the GrabCut/Berkeley trimaps
        ignore = ndimage.binary_dilation(gt, iterations=2) & ~ndimage.binary_erosion(gt, iterations=1)
    if not (gt & ~ignore).any():
        ignore[:] = False
    return gt, ignore


class SoftDiskPredictor:
    """Deterministic, imperfect, uses the previous probabilities: 0.4 * prev + disks of varying radius."""

    def __call__(self, image, clicks, prev_mask):
        shape = prev_mask.shape
        pos = np.zeros(shape, dtype=bool)
        for i, c in enumerate(clicks):
            disk = disks(shape, [(c.row, c.col)], (2 + i % 4) ** 2)
            pos = pos | disk if c.is_positive else pos & ~disk
        return np.clip(0.4 * prev_mask + 0.7 * pos, 0, 1).astype(np.float32)


@pytest.mark.parametrize("seed", range(6))
def test_session_matches_reference_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(20, 41)), int(rng.integers(20, 41)))
    image = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    gt, ignore = random_instance(rng, shape)
    stop = [0.90, 1.01][seed % 2]
    ref_clicks, ref_ious = reference_run(SoftDiskPredictor(), image, gt, ignore, 20, stop)
    result = InteractiveSession(SoftDiskPredictor(), image, gt, ignore if ignore.any() else None,
                                NoCProtocol(stop_iou=stop)).run()
    assert result.clicks == ref_clicks
    np.testing.assert_array_equal(result.ious, np.array(ref_ious, dtype=np.float32))
    # no click ever lands on an ignored pixel unless nothing is left to fix (the (0, 0) fallback)
    for c in result.clicks:
        assert not ignore[c.row, c.col] or (c.row, c.col) == (0, 0)
    # NoC by brute force
    for th in (0.85, 0.90):
        hits = [k + 1 for k, v in enumerate(ref_ious) if np.float32(v) >= np.float32(th)]
        assert noc(result.ious, th) == (hits[0] if hits else 20)


# ------------------------------------------------------------------------------------------------------
# zoom-in (protocol.md C9) and flip
# ------------------------------------------------------------------------------------------------------

def test_c9_box_geometry():
    assert expand_box((100, 199, 50, 129), 1.4, 200) == (50, 250, -10, 190)
    assert clamp_box((50, 250, -10, 190), (500, 400)) == (50, 250, 0, 190)
    assert box_iou((50, 250, 0, 190), (0, 499, 0, 399)) == pytest.approx(201 / 500 * 191 / 400)
    assert expand_box((99, 198, 0, 10), 1.4, 200)[:2] == (48, 248)  # round half to even, not (49, 249)
    roi = expand_box((150, 349, 100, 299), 1.4, 200)
    assert roi == (110, 390, 60, 340)
    assert box_iou(roi, (0, 499, 0, 399)) == pytest.approx(0.3948, abs=1e-4)
    assert clamp_box(expand_box((20, 479, 10, 389), 1.4, 200), (500, 400)) == (0, 499, 0, 399)
    assert clicks_inside((10, 20, 10, 20), [Click(True, 19, 10), Click(False, 20, 20)])
    assert not clicks_inside((10, 20, 10, 20), [Click(True, 20, 15)])  # last row counts as outside
    probs = torch.zeros(500, 400)
    probs[100:200, 50:130] = 0.6
    probs[300, 300] = 0.5  # not > 0.5
    assert object_roi(probs, [Click(True, 150, 100)], ZoomInParams()) == (50, 250, 0, 190)
    assert object_roi(torch.full((500, 400), 0.5), [], ZoomInParams()) is None


def test_object_roi_matches_the_mask_with_its_clicks_set():
    """object_roi reads the mask's row and column flags once and grows their box by the positive clicks; the
    reference sets the click pixels in the mask and takes the box of the True pixels in NumPy (A.5)."""
    from adaptiveclick.evaluation.zoom_in import mask_bbox
    from adaptiveclick.utils.op_count import count_operators

    rng = np.random.default_rng(5)
    params = ZoomInParams(min_crop_size=10, expansion_ratio=1.2)
    for trial in range(60):
        h, w = rng.integers(5, 40, 2)
        probs = np.zeros((h, w), np.float32)
        if trial % 6:  # every sixth: an empty mask
            r0, c0 = rng.integers(0, h), rng.integers(0, w)
            probs[r0:r0 + rng.integers(1, h), c0:c0 + rng.integers(1, w)] = rng.uniform(0.3, 1.0)
        clicks = [Click(bool(rng.integers(0, 2)), int(rng.integers(0, h)), int(rng.integers(0, w)))
                  for _ in range(rng.integers(0, 4))]
        mask = probs > 0.5
        if not mask.any():
            expected = None
        else:
            for c in clicks:
                if c.is_positive:
                    mask[c.row, c.col] = True
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            expected = clamp_box(expand_box((rows[0], rows[-1], cols[0], cols[-1]), 1.2, 10), (h, w))
        assert object_roi(torch.from_numpy(probs), clicks, params) == expected, (trial, clicks)
        got = mask_bbox(torch.from_numpy(probs > 0.5))
        ref = None if not (probs > 0.5).any() else (np.flatnonzero((probs > 0.5).any(1))[[0, -1]].tolist()
                                                     + np.flatnonzero((probs > 0.5).any(0))[[0, -1]].tolist())
        assert got == (None if ref is None else tuple(ref))
    counts, _ = count_operators(lambda: object_roi(torch.from_numpy(probs), clicks, params))
    assert counts["host_reads"] == 0, counts  # no nonzero, no scalar read: one copy of the flags


class RecordingNet:
    """Logit network that records what it receives; logits = 4 * (prev - 0.5) + 0.01 * column."""

    def __init__(self):
        self.calls = []

    def predict_logits(self, images, prev_masks, clicks):
        self.calls.append((images.clone(), prev_masks.clone(), [c.copy() for c in clicks]))
        cols = torch.arange(images.shape[-1], dtype=torch.float32)
        return 4 * (prev_masks - 0.5) + 0.01 * cols


def test_c9_zoom_in_through_the_predictor():
    zoom = ZoomIn(ZoomInParams(), (500, 400))
    net = RecordingNet()
    image = torch.zeros(1, 3, 500, 400)
    first = [Click(True, 150, 100)]
    transformed_prediction(net, image, torch.zeros(1, 1, 500, 400), first, zoom, flip=True)
    assert zoom.roi == (0, 499, 0, 399)
    np.testing.assert_allclose(net.calls[0][2][0][0], [134.4, 112.0, 1.0])
    prev = torch.zeros(1, 1, 500, 400)
    prev[..., 100:200, 50:130] = 0.9
    clicks = first + [Click(True, 120, 60)]
    probs = transformed_prediction(net, image, prev, clicks, zoom, flip=True)
    assert zoom.roi == (50, 250, 0, 190)
    images, prevs, rows = net.calls[1]
    assert images.shape == (2, 3, 448, 448) and prevs.shape == (2, 1, 448, 448)
    np.testing.assert_allclose(rows[0][:, :2], [[222.886, 234.555], [156.020, 140.733]], atol=1e-3)
    np.testing.assert_allclose(rows[1][0, :2], [222.886, 212.445], atol=1e-3)  # mirrored: 448 - 1 - col
    torch.testing.assert_close(prevs[1], torch.flip(prevs[0], dims=[2]))
    # outside the ROI the probability is 0; inside it is sigmoid(4 * (prev' - 0.5)) (the column terms cancel
    # in the flip average: 0.01 * (c + 447 - c) / 2 is a constant) pasted back
    assert probs.shape == (500, 400)
    assert probs[:50].abs().max() == 0 and probs[251:].abs().max() == 0 and probs[:, 191:].abs().max() == 0
    expected_roi = torch.sigmoid(4 * (prev[0, 0, 50:251, 0:191] - 0.5) + 0.01 * 447 / 2)
    # prev is piecewise constant: away from its edges the crop/resize/paste round trip is exact
    torch.testing.assert_close(probs[60:90, 10:40], expected_roi[10:40, 10:40])
    torch.testing.assert_close(probs[120:190, 60:120], expected_roi[70:140, 60:120])


def test_zoom_in_keeps_roi_while_consistent_and_crop_is_align_corners_true():
    zoom = ZoomIn(ZoomInParams(target_size=(64, 48), min_crop_size=20), (100, 80))
    prev = torch.zeros(100, 80)
    prev[40:60, 30:50] = 1.0
    assert zoom.update(prev, [Click(True, 50, 40)])  # no stored ROI yet -> candidate
    roi = zoom.roi
    prev2 = torch.zeros(100, 80)
    prev2[43:63, 30:50] = 1.0  # moved: the candidate differs but has IoU >= 0.5, clicks inside -> ROI kept
    assert object_roi(prev2, [Click(True, 50, 40)], zoom.params) != roi
    assert box_iou(object_roi(prev2, [Click(True, 50, 40)], zoom.params), roi) >= 0.5
    assert not zoom.update(prev2, [Click(True, 50, 40)]) and zoom.roi == roi
    assert zoom.update(prev2, [Click(True, 50, 40), Click(True, 5, 5)])  # positive click outside -> replaced
    rmin, rmax, cmin, cmax = zoom.roi
    # bilinear resize with align_corners=True is exact on a linear ramp: target pixel (i, j) samples
    # source (rmin + i (h - 1) / (T_h - 1), cmin + j (w - 1) / (T_w - 1))
    rr, cc = torch.meshgrid(torch.arange(100.0), torch.arange(80.0), indexing="ij")
    crop = zoom.crop((2 * rr + 3 * cc)[None, None])[0, 0]
    i = torch.arange(64.0)[:, None]
    j = torch.arange(48.0)[None, :]
    src_r = rmin + i * (rmax - rmin) / 63
    src_c = cmin + j * (cmax - cmin) / 47
    torch.testing.assert_close(crop, 2 * src_r + 3 * src_c, atol=1e-3, rtol=0)
    pasted = zoom.paste(torch.ones(1, 1, 64, 48))[0, 0]
    assert pasted.sum() == (rmax - rmin + 1) * (cmax - cmin + 1)
    assert pasted[rmin, cmin] == 1 and pasted[rmax, cmax] == 1


def test_flip_averages_logits_not_probabilities():
    torch.manual_seed(0)
    image = torch.randint(0, 256, (1, 3, 9, 11)).float()
    prev = torch.rand(1, 1, 9, 11)

    class Asymmetric:
        def predict_logits(self, images, prev_masks, clicks):
            cols = torch.arange(images.shape[-1], dtype=torch.float32) ** 2
            click_cols = torch.tensor([c[0, 1] for c in clicks], dtype=torch.float32).view(-1, 1, 1, 1)
            return images[:, :1] / 20 - 6 + 0.3 * cols + prev_masks * click_cols

    clicks = [Click(True, 4, 2)]
    net = Asymmetric()
    got = transformed_prediction(net, image, prev, clicks, flip=True)
    plain = net.predict_logits(image, prev, [np.array([[4.0, 2.0, 1.0]])])
    mirrored = net.predict_logits(torch.flip(image, [3]), torch.flip(prev, [3]), [np.array([[4.0, 8.0, 1.0]])])
    expected = torch.sigmoid(0.5 * (plain + torch.flip(mirrored, [3])))[0, 0]
    torch.testing.assert_close(got, expected)
    wrong = 0.5 * (torch.sigmoid(plain) + torch.flip(torch.sigmoid(mirrored), [3]))[0, 0]
    assert not torch.allclose(got, wrong, atol=1e-3)
    no_flip = transformed_prediction(net, image, prev, clicks)
    torch.testing.assert_close(no_flip, torch.sigmoid(plain)[0, 0])


def test_logit_output_is_resized_and_checked():
    class Small:
        def predict_logits(self, images, prev_masks, clicks):
            return torch.zeros(images.shape[0], 1, 4, 4)

    probs = transformed_prediction(Small(), torch.zeros(1, 3, 10, 12), torch.zeros(1, 1, 10, 12), [Click(True, 1, 1)])
    assert probs.shape == (10, 12) and torch.all(probs == 0.5)

    class Nan:
        def predict_logits(self, images, prev_masks, clicks):
            return torch.full((images.shape[0], 1) + images.shape[-2:], float("nan"))

    with pytest.raises(ValueError, match="NaN"):
        transformed_prediction(Nan(), torch.zeros(1, 3, 5, 5), torch.zeros(1, 1, 5, 5), [Click(True, 1, 1)])


def test_unchecked_nan_logits_make_the_whole_map_nan():
    """With check_logits=False a NaN logit is not read on the device: the map comes back all NaN (inside the
    zoom-in region), even where the resize would have skipped it, and check_host_probabilities reports it."""
    from adaptiveclick.evaluation.predictor import check_host_probabilities

    class OneNan:
        def predict_logits(self, images, prev_masks, clicks):
            out = torch.zeros(images.shape[0], 1, 8, 8)
            out[:, :, 2, 2] = float("nan")  # resized to 3 x 3 (align_corners): rows/cols 0-1, 3-4, 7 are read
            return out

    image, prev, clicks = torch.zeros(1, 3, 3, 3, dtype=torch.uint8), torch.zeros(1, 1, 3, 3), [Click(True, 1, 1)]
    assert not torch.isnan(torch.nn.functional.interpolate(OneNan().predict_logits(image, prev, clicks), size=(3, 3),
                                                            mode="bilinear", align_corners=True)).any()  # hidden
    with pytest.raises(ValueError, match="NaN logits"):
        transformed_prediction(OneNan(), image, prev, clicks)
    probs = transformed_prediction(OneNan(), image, prev, clicks, check_logits=False)
    assert torch.isnan(probs).all()
    with pytest.raises(ValueError, match="NaN logits"):
        check_host_probabilities(probs.numpy())
    zoom = ZoomIn(ZoomInParams(target_size=(3, 3), min_crop_size=1), (6, 6))
    probs = transformed_prediction(OneNan(), torch.zeros(1, 3, 6, 6), torch.zeros(1, 1, 6, 6), clicks, zoom_in=zoom,
                                   flip=True, check_logits=False)
    assert torch.isnan(probs).any()

    class Zeros:
        def predict_logits(self, images, prev_masks, clicks):
            return torch.zeros(images.shape[0], 1, 8, 8)

    ok = transformed_prediction(Zeros(), image, prev, clicks, check_logits=False).numpy()
    np.testing.assert_array_equal(check_host_probabilities(ok), np.full((3, 3), 0.5, np.float32))


# ------------------------------------------------------------------------------------------------------
# ModelPredictor with a tiny fake meta-architecture
# ------------------------------------------------------------------------------------------------------

class FakeMetaArch(torch.nn.Module):
    """Contract of the model's eval call; logits +8 inside radius-4 disks of positive clicks, -8 elsewhere,
    returned at half the input resolution.  Records its inputs."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.inputs = []

    def forward(self, batched_inputs):
        self.inputs.append(batched_inputs)
        outs = []
        for x in batched_inputs:
            h, w = x["image"].shape[-2:]
            rr, cc = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                    indexing="ij")
            inside = torch.zeros(h, w, dtype=torch.bool)
            for r, c, p in x["clicks"].tolist():
                if p == 1:
                    inside |= (rr - r) ** 2 + (cc - c) ** 2 <= 16
            logits = torch.where(inside, 8.0, -8.0) * self.scale
            outs.append({"mask_logits": logits[None, ::2, ::2]})
        return outs


def test_model_predictor_follows_the_contract():
    model = FakeMetaArch().eval()
    predictor = ModelPredictor(model)
    assert predictor.device == torch.device("cpu")
    image = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    prev = np.full((20, 24), 0.25, dtype=np.float32)
    probs = predictor(image, [Click(True, 10, 12), Click(False, 2, 3)], prev)
    assert probs.shape == (20, 24) and probs.dtype == np.float32 and probs[10, 12] > 0.99 and probs[0, 0] < 0.01
    (x,) = model.inputs[-1]
    assert x["image"].dtype == torch.uint8 and x["image"].shape == (3, 20, 24)
    assert torch.equal(x["image"], torch.from_numpy(image).permute(2, 0, 1))
    assert x["clicks"].dtype == torch.int64 and x["clicks"].tolist() == [[10, 12, 1], [2, 3, 0]]
    assert x["prev_mask"].dtype == torch.float32 and x["prev_mask"].shape == (1, 20, 24)
    assert torch.all(x["prev_mask"] == 0.25)
    # zoom-in + flip: one call with a batch of 2, float inputs where values are fractional
    gt = box((20, 24), (6, 14), (8, 16))
    protocol = NoCProtocol(max_clicks=3, zoom_in=ZoomInParams(target_size=(31, 29), min_crop_size=8), flip=True)
    calls_before = len(model.inputs)
    InteractiveSession(predictor, image, gt, protocol=protocol).run()
    batch = model.inputs[calls_before]  # first click: whole image squashed to 31 x 29, clicks (15.5, 14.5)
    assert len(batch) == 2 and batch[0]["image"].shape == (3, 31, 29)
    assert batch[0]["clicks"].dtype == torch.float32 and batch[0]["image"].dtype == torch.float32
    np.testing.assert_allclose(batch[0]["clicks"].numpy(), [[15.5, 14.5, 1.0]])
    np.testing.assert_allclose(batch[1]["clicks"].numpy(), [[15.5, 29 - 1 - 14.5, 1.0]])
    model.train()
    with pytest.raises(RuntimeError, match="eval"):
        predictor(image, [Click(True, 10, 12)], prev)


def test_model_predictor_rejects_bad_model_output():
    image = blank_image((8, 8))
    prev = np.zeros((8, 8), np.float32)
    with pytest.raises(ValueError, match="mask_logits"):
        ModelPredictor(lambda inputs: [{"logits": torch.zeros(1, 8, 8)}])(image, [Click(True, 1, 1)], prev)
    with pytest.raises(ValueError, match=r"\(1, h, w\)"):
        ModelPredictor(lambda inputs: [{"mask_logits": torch.zeros(8, 8)}])(image, [Click(True, 1, 1)], prev)


# ------------------------------------------------------------------------------------------------------
# evaluator, inference_on_dataset driver, files
# ------------------------------------------------------------------------------------------------------

def make_samples(n=5, seed=3):
    """Mapped evaluation samples (NoCDatasetMapper format) with 1-2 objects each, some with ignore bands."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        shape = (int(rng.integers(24, 36)), int(rng.integers(24, 36)))
        objects = [random_instance(rng, shape)]
        ignore = objects[0][1]
        while len(objects) < 1 + i % 2:
            gt, _ = random_instance(rng, shape)
            if (gt & ~ignore).any():  # every object needs a non-ignored pixel
                objects.append((gt, ignore))
        samples.append({"image": torch.from_numpy(rng.integers(0, 256, (3,) + shape, dtype=np.uint8)),
                        "gt_masks": torch.from_numpy(np.stack([o[0] for o in objects])),
                        "ignore_mask": torch.from_numpy(ignore), "height": shape[0], "width": shape[1],
                        "file_name": f"img{i}.png", "image_id": i})
    return samples


def direct_sequences(samples, protocol):
    out = []
    for s in samples:
        image = s["image"].permute(1, 2, 0).numpy()
        ignore = s["ignore_mask"].numpy()
        for gt in s["gt_masks"].numpy():
            out.append(InteractiveSession(SoftDiskPredictor(), image, gt, ignore if ignore.any() else None,
                                          protocol).run().ious)
    return out


@pytest.mark.parametrize("stop", [0.90, 1.01])
def test_evaluate_noc_end_to_end(tmp_path, stop):
    samples = make_samples()
    protocol = NoCProtocol(stop_iou=stop)
    results = evaluate_noc(SoftDiskPredictor(), samples, protocol, mapper=lambda d: d, dataset_name="toy",
                           output_dir=str(tmp_path), metadata={"note": "test"})
    assert list(results) == ["noc"]
    m = results["noc"]
    expected = summarize_noc(direct_sequences(samples, protocol), (0.85, 0.90))
    for key, value in expected.items():
        assert m[key] == pytest.approx(value), key
    assert m["num_instances"] == sum(len(s["gt_masks"]) for s in samples)
    assert m["SPC"] > 0 and m["SPC_model"] >= 0 and m["SPC_protocol"] > 0
    assert m["SPC"] >= m["SPC_model"] + m["SPC_protocol"] - 1e-9
    assert ("mIoU@20" in m) == (stop > 1)
    with open(tmp_path / "noc_toy.json") as f:
        saved = json.load(f)
    assert saved["metrics"]["NoC@90"] == pytest.approx(m["NoC@90"])
    assert saved["metadata"]["note"] == "test" and saved["metadata"]["protocol"]["stop_iou"] == stop
    assert len(saved["instances"]) == m["num_instances"]
    assert [r["image_id"] for r in saved["instances"]] == sorted(r["image_id"] for r in saved["instances"])
    assert {"ious", "clicks", "instance", "file_name", "model_time", "total_time"} <= set(saved["instances"][0])
    assert len(saved["curves"]["reached@85"]) == 20 and ("mIoU" in saved["curves"]) == (stop > 1)
    with open(tmp_path / "noc_toy.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    table = format_noc_table({"toy": results})
    assert "NoC@85" in table and ">=20@90" in table and f"{m['NoC@90']:.2f}" in table


def test_interactive_model_switches_wrapped_model_to_eval(tmp_path):
    model = FakeMetaArch()  # training mode: ModelPredictor would refuse it
    samples = make_samples(2)
    results = evaluate_noc(ModelPredictor(model), samples, NoCProtocol(max_clicks=4), mapper=lambda d: d)
    assert results["noc"]["num_instances"] == 3 and model.training  # inference_context restores the mode
    model.eval()
    evaluate_noc(ModelPredictor(model), samples, NoCProtocol(max_clicks=2), mapper=lambda d: d)
    assert not model.training  # an eval-mode model is left in eval mode
    wrapped = InteractiveEvaluationModel(ModelPredictor(model), NoCProtocol())
    assert wrapped.model is model


def test_evaluator_rejects_bad_outputs_and_thresholds():
    evaluator = NoCEvaluator("x", distributed=False)
    with pytest.raises(ValueError, match="noc_instances"):
        evaluator.process([{}], [{"mask": 1}])
    with pytest.raises(ValueError, match="exceed the stop IoU"):
        NoCEvaluator("x", thresholds=(0.95,), stop_iou=0.90)
    assert evaluator.evaluate() == {}  # nothing processed


def write_rgb(path, image):
    from PIL import Image

    Image.fromarray(image).save(path)
    return str(path)


def test_noc_dataset_mapper_with_injected_mask_loader(tmp_path):
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (9, 13, 3), dtype=np.uint8)
    masks = [box((9, 13), (1, 4), (2, 6)), box((9, 13), (5, 8), (0, 12))]
    ignore = box((9, 13), (0, 0), (0, 12))
    d = {"file_name": write_rgb(tmp_path / "a.png", image), "height": 9, "width": 13, "image_id": "a",
         "annotations": []}
    out = NoCDatasetMapper(load_masks=lambda dd: (masks, ignore))(d)
    assert torch.equal(out["image"], torch.from_numpy(image).permute(2, 0, 1)) and out["image"].dtype == torch.uint8
    assert torch.equal(out["gt_masks"], torch.from_numpy(np.stack(masks))) and out["gt_masks"].dtype == torch.bool
    assert torch.equal(out["ignore_mask"], torch.from_numpy(ignore))
    assert (out["height"], out["width"], out["image_id"]) == (9, 13, "a")
    no_ignore = NoCDatasetMapper(load_masks=lambda dd: (masks[:1], None))(d)
    assert no_ignore["gt_masks"].shape == (1, 9, 13) and not no_ignore["ignore_mask"].any()
    with pytest.raises(ValueError, match="shape"):
        NoCDatasetMapper(load_masks=lambda dd: ([np.zeros((4, 4), bool)], None))(d)
    with pytest.raises(ValueError, match="RGB"):
        NoCDatasetMapper("BGR")


def test_noc_dataset_mapper_with_the_contract_loader(tmp_path):
    pytest.importorskip("adaptiveclick.data.datasets.common")
    from pycocotools import mask as mask_util

    image = np.random.default_rng(6).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    gt = box((10, 12), (2, 6), (3, 9))
    rle = mask_util.encode(np.asfortranarray(gt.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    d = {"file_name": write_rgb(tmp_path / "b.png", image), "height": 10, "width": 12, "image_id": 7,
         "annotations": [{"segmentation": rle, "bbox": [3, 2, 7, 5], "bbox_mode": 1, "category_id": 0,
                          "iscrowd": 0}]}
    out = NoCDatasetMapper()(d)
    assert torch.equal(out["gt_masks"], torch.from_numpy(gt[None])) and not out["ignore_mask"].any()


def test_noc_test_on_a_registered_dataset(tmp_path):
    from detectron2.config import get_cfg
    from detectron2.data import DatasetCatalog

    from adaptiveclick.config import add_adaptiveclick_config

    cfg = add_adaptiveclick_config(get_cfg())
    cfg.TEST.NOC.ZOOM_IN.TARGET_SIZE = [32, 32]
    cfg.TEST.NOC.ZOOM_IN.MIN_CROP_SIZE = 10
    cfg.TEST.NOC.MAX_CLICKS = 6
    cfg.DATALOADER.NUM_WORKERS = 0
    name = "noc_unit_toy"
    DatasetCatalog.register(name, lambda: make_samples(3))
    try:
        model = FakeMetaArch().eval()
        results = noc_test(cfg, model, [name], output_dir=str(tmp_path), mapper=lambda d: d)
    finally:
        DatasetCatalog.remove(name)
    protocol = noc_protocol_from_config(cfg, name)
    assert protocol.zoom_in.target_size == (32, 32) and protocol.flip
    sequences = []
    for s in make_samples(3):
        image = s["image"].permute(1, 2, 0).numpy()
        ignore = s["ignore_mask"].numpy()
        for gt in s["gt_masks"].numpy():
            sequences.append(InteractiveSession(ModelPredictor(model), image, gt, ignore if ignore.any() else None,
                                                protocol).run().ious)
    expected = summarize_noc(sequences, (0.85, 0.90), max_clicks=6)
    m = results[name]["noc"]
    for key, value in expected.items():
        assert m[key] == pytest.approx(value), key
    saved = json.load(open(tmp_path / name / f"noc_{name}.json"))
    assert saved["metadata"]["protocol"]["zoom_in"]["target_size"] == [32, 32]
    assert saved["metadata"]["run_info"]["device"] and "torch" in saved["metadata"]["run_info"]
    assert ">=6@85" in format_noc_table(results, max_clicks=6)


def test_noc_test_loader_refuses_a_dataset_with_nothing_to_evaluate(tmp_path):
    from detectron2.config import get_cfg
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from adaptiveclick.config import add_adaptiveclick_config

    cfg = add_adaptiveclick_config(get_cfg())
    for name, dicts in (("noc_unit_no_images", []),
                        ("noc_unit_no_objects", [{"file_name": "a.png", "annotations": []}])):
        DatasetCatalog.register(name, lambda dicts=dicts: dicts)
        MetadataCatalog.get(name).set(dataset_root=str(tmp_path / "GrabCut"))
        try:
            with pytest.raises(ValueError, match=rf"dataset '{name}': nothing to evaluate: {len(dicts)} images, "
                                                 rf"none with an object in .*GrabCut"):
                build_noc_test_loader(cfg, name)
        finally:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_noc_config_keys_and_protocol():
    from detectron2.config import get_cfg

    from adaptiveclick.config import add_adaptiveclick_config

    cfg = add_adaptiveclick_config(get_cfg())
    noc_cfg = cfg.TEST.NOC
    assert (noc_cfg.MAX_CLICKS, noc_cfg.STOP_IOU, noc_cfg.PRED_THRESHOLD, noc_cfg.FLIP) == (20, 0.90, 0.49, True)
    assert list(noc_cfg.IOU_THRESHOLDS) == [0.85, 0.90]
    davis, grabcut = noc_protocol_from_config(cfg, "DAVIS"), noc_protocol_from_config(cfg, "grabcut")
    assert davis.zoom_in.target_size == (672, 672) and grabcut.zoom_in.target_size == (448, 448)
    assert grabcut.zoom_in == ZoomInParams() and grabcut.flip and grabcut.max_clicks == 20
    cfg.TEST.NOC.ZOOM_IN.ENABLED = False
    cfg.TEST.NOC.FLIP = False
    assert noc_protocol_from_config(cfg, "davis") == NoCProtocol()


# ------------------------------------------------------------------------------------------------------
# distributed gather over 2 CPU processes (gloo)
# ------------------------------------------------------------------------------------------------------

def _distributed_worker(out_dir):
    from detectron2.utils import comm

    samples = make_samples(5)
    results = evaluate_noc(SoftDiskPredictor(), samples, NoCProtocol(stop_iou=1.01), mapper=lambda d: d,
                           dataset_name="toy", output_dir=out_dir)
    with open(os.path.join(out_dir, f"rank{comm.get_rank()}.json"), "w") as f:
        json.dump({"results": results, "world": comm.get_world_size()}, f)
    # leave together and tear the process groups down, so that no gloo thread is alive at interpreter exit
    comm.synchronize()
    torch.distributed.destroy_process_group()


def test_distributed_gather_two_processes(tmp_path):
    from detectron2.engine import launch

    # a FileStore rendezvous: no TCP store served by rank 0 that could vanish before rank 1 is done with it
    launch(_distributed_worker, 2, dist_url=f"file://{tmp_path / 'rendezvous'}", args=(str(tmp_path),))
    rank0 = json.load(open(tmp_path / "rank0.json"))
    rank1 = json.load(open(tmp_path / "rank1.json"))
    assert rank0["world"] == 2 and rank1["results"] == {}  # only the main process reports
    m = rank0["results"]["noc"]
    samples = make_samples(5)
    expected = summarize_noc(direct_sequences(samples, NoCProtocol(stop_iou=1.01)), (0.85, 0.90))
    for key, value in expected.items():
        assert m[key] == pytest.approx(value), key
    saved = json.load(open(tmp_path / "noc_toy.json"))
    assert [r["image_id"] for r in saved["instances"]] == [0, 1, 1, 2, 3, 3, 4]  # both shards, in order
