"""Tests of adaptiveclick.clicks against protocol.md section C and independent brute-force references."""

import subprocess
import sys

import numpy as np
import pytest

from adaptiveclick.clicks import (Click, MultiPointSampler, array_to_clicks, border_width, clicks_to_array,
                                  encode_clicks, error_masks, iterative_click_slot, negative_count_probs,
                                  next_click, next_training_click, padded_distance_transform,
                                  positive_count_probs, training_click_array, write_iterative_click)


def box(shape, rows, cols, value=True):
    """Mask of ``shape`` with rows a..b, cols c..d (both ends included) set."""
    m = np.zeros(shape, dtype=bool)
    m[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1] = value
    return m


GT_C1 = box((7, 7), (1, 5), (1, 4))
EMPTY7 = np.zeros((7, 7), dtype=bool)


def iou(gt, pred, ignore=None):
    valid = np.ones_like(gt) if ignore is None else ~ignore
    return (gt & pred & valid).sum() / ((gt | pred) & valid).sum()


# ------------------------------------------------------------------------------------------------------
# Worked examples of protocol.md section C
# ------------------------------------------------------------------------------------------------------

def test_c1_first_click_and_tie_break():
    expected = np.array([[0, 0, 0, 0, 0, 0, 0],
                         [0, 1, 1, 1, 1, 0, 0],
                         [0, 1, 2, 2, 1, 0, 0],
                         [0, 1, 2, 2, 1, 0, 0],
                         [0, 1, 2, 2, 1, 0, 0],
                         [0, 1, 1, 1, 1, 0, 0],
                         [0, 0, 0, 0, 0, 0, 0]], dtype=np.float32)
    np.testing.assert_array_equal(padded_distance_transform(GT_C1), expected)
    first = next_click(GT_C1, EMPTY7)
    assert first == Click(True, 2, 2)
    assert next_click(GT_C1, EMPTY7, previous_clicks=[first]) == Click(True, 2, 3)


def test_c2_fn_beats_fp():
    pred = box((7, 7), (1, 2), (1, 6))
    fn, fp = error_masks(GT_C1, pred)
    np.testing.assert_array_equal(fn, box((7, 7), (3, 5), (1, 4)))
    np.testing.assert_array_equal(fp, box((7, 7), (1, 2), (5, 6)))
    assert padded_distance_transform(fn).max() == 2 and padded_distance_transform(fp).max() == 1
    assert next_click(GT_C1, pred) == Click(True, 4, 2)
    assert iou(GT_C1, pred) == pytest.approx(8 / 24)


def test_c3_tie_goes_negative():
    gt = box((7, 7), (0, 2), (0, 2))
    pred = box((7, 7), (4, 6), (4, 6))
    assert next_click(gt, pred) == Click(False, 5, 5)


def test_c4_padding():
    gt = box((7, 7), (0, 6), (0, 2))
    dist = padded_distance_transform(gt)
    np.testing.assert_array_equal(dist[0, :3], [1, 1, 1])
    np.testing.assert_array_equal(dist[6, :3], [1, 1, 1])
    np.testing.assert_array_equal(dist[1:6, :3], np.tile([1, 2, 1], (5, 1)))
    assert next_click(gt, EMPTY7) == Click(True, 1, 1)
    full = np.ones((7, 7), dtype=bool)
    assert padded_distance_transform(full).max() == 4
    assert next_click(full, EMPTY7) == Click(True, 3, 3)


def test_c5_nothing_to_fix():
    assert next_click(GT_C1, GT_C1) == Click(False, 0, 0)
    # reproduced even when (0, 0) was clicked before (the official oracle's answer when no error is left)
    assert next_click(GT_C1, GT_C1, previous_clicks=[Click(False, 0, 0)]) == Click(False, 0, 0)


def test_c6_ignore_label():
    gt = box((7, 7), (1, 5), (1, 3))
    ignore = box((7, 7), (1, 5), (4, 6))
    pred = box((7, 7), (1, 5), (1, 6))
    fn, fp = error_masks(gt, pred, ignore)
    assert not fn.any() and not fp.any()
    assert iou(gt, pred, ignore) == 1.0
    assert next_click(gt, pred, ignore=ignore) == Click(False, 0, 0)
    assert iou(gt, pred) == 0.5
    assert next_click(gt, pred) == Click(False, 2, 5)


def toy_predictor(shape, clicks):
    rr, cc = np.mgrid[:shape[0], :shape[1]]
    pred = np.zeros(shape, dtype=bool)
    for c in clicks:
        d2 = (rr - c.row) ** 2 + (cc - c.col) ** 2
        if c.is_positive:
            pred |= d2 <= 9
    for c in clicks:
        if not c.is_positive:
            pred &= ~((rr - c.row) ** 2 + (cc - c.col) ** 2 <= 4)
    return pred


def test_c7_five_clicks_with_toy_predictor():
    gt = box((10, 10), (1, 8), (1, 4)) | box((10, 10), (5, 8), (5, 8))
    assert gt.sum() == 48
    expected = [(Click(True, 6, 3), 2.8284, 0.0, 26, 51), (Click(True, 2, 2), 1.4142, 1.0, 37, 61),
                (Click(True, 7, 7), 1.4142, 1.0, 48, 71), (Click(False, 0, 0), 0.0, 1.0, 47, 66),
                (Click(False, 0, 3), 1.0, 1.0, 43, 64)]
    clicks = []
    pred = np.zeros_like(gt)
    for click_exp, m_fn, m_fp, inter, union in expected:
        fn, fp = error_masks(gt, pred)
        clicked = np.ones_like(gt)
        for c in clicks:
            clicked[c.row, c.col] = False
        assert (padded_distance_transform(fn) * clicked).max() == pytest.approx(m_fn, abs=1e-4)
        assert (padded_distance_transform(fp) * clicked).max() == pytest.approx(m_fp, abs=1e-4)
        click = next_click(gt, pred, previous_clicks=clicks)
        assert click == click_exp
        clicks.append(click)
        pred = toy_predictor(gt.shape, clicks)
        assert ((gt & pred).sum(), (gt | pred).sum()) == (inter, union)


@pytest.mark.parametrize("click,count", [((10, 10), 81), ((0, 0), 26), ((10.5, 10.5), 80), ((-1, -1), 0),
                                         ((-1, 3), 32)])
def test_c10_disks(click, count):
    maps = encode_clicks(np.array([[click[0], click[1], 1]]), (20, 20), radius=5)
    assert maps.dtype == np.float32 and maps.shape == (2, 20, 20)
    assert maps[0].sum() == count and maps[1].sum() == 0


def test_c11_sampler_numbers():
    pos, neg = positive_count_probs(24, 0.8), negative_count_probs(24, 0.8)
    assert len(pos) == 24 and len(neg) == 25
    np.testing.assert_allclose(pos[:4], [0.20095, 0.16076, 0.12861, 0.10289], atol=5e-6)
    np.testing.assert_allclose(neg[:4], [0.20076, 0.16061, 0.12849, 0.10279], atol=5e-6)
    assert (np.arange(1, 25) * pos).sum() == pytest.approx(4.8861, abs=1e-4)
    assert (np.arange(25) * neg).sum() == pytest.approx(3.9052, abs=1e-4)
    assert [border_width(a, 0.1) for a in (20, 400, 401, 1000)] == [1, 2, 3, 4]


def test_c12_training_next_click():
    counts = {}
    rng = np.random.default_rng(0)
    d5 = padded_distance_transform(GT_C1, mask_size=5)
    np.testing.assert_array_equal(d5, padded_distance_transform(GT_C1))
    for _ in range(600):
        click = next_training_click(GT_C1, np.zeros((7, 7)), rng)
        counts[(click.is_positive, click.row, click.col)] = counts.get((click.is_positive, click.row, click.col), 0) + 1
    assert set(counts) == {(True, r, c) for r in (2, 3, 4) for c in (2, 3)}
    assert min(counts.values()) > 60  # uniform: 100 expected each
    array = training_click_array([Click(True, 1, 1)], [], 24)
    write_iterative_click(array, Click(True, 2, 3), 1)
    np.testing.assert_array_equal(array[23], [2, 3, 1])
    np.testing.assert_array_equal(array[0], [1, 1, 1])


@pytest.mark.parametrize("mask_size,expected", [(0, [1, 1.4142, 2.2361, 2.8284, 5.6569]),
                                                (5, [1, 1.4, 2.1969, 2.8, 5.6]),
                                                (3, [0.955, 1.3693, 2.3243, 2.7386, 5.4772])])
def test_c13_distance_values(mask_size, expected):
    # a 21 x 21 block keeps the padded border farther than the offsets probed around the centre
    m = np.ones((21, 21), dtype=bool)
    m[10, 10] = False
    d = padded_distance_transform(m, mask_size)
    got = [d[10 + a, 10 + b] for a, b in [(0, 1), (1, 1), (2, 1), (2, 2), (4, 4)]]
    np.testing.assert_allclose(got, expected, atol=1e-4)


# ------------------------------------------------------------------------------------------------------
# Oracle: properties and a brute-force reference
# ------------------------------------------------------------------------------------------------------

def brute_force_sq_dist(mask):
    """Squared Euclidean distance of each True pixel to the nearest False pixel of the 1-px zero-padded mask."""
    padded = np.pad(mask, 1)
    zeros = np.argwhere(~padded)
    out = np.zeros(mask.shape, dtype=np.int64)
    for r, c in np.argwhere(mask):
        out[r, c] = ((zeros - (r + 1, c + 1)) ** 2).sum(axis=1).min()
    return out


def brute_force_oracle(gt, pred, ignore, previous):
    valid = ~ignore
    fn, fp = gt & ~pred & valid, ~gt & pred & valid
    d_fn, d_fp = brute_force_sq_dist(fn), brute_force_sq_dist(fp)
    for c in previous:
        d_fn[c.row, c.col] = d_fp[c.row, c.col] = 0
    positive = d_fn.max() > d_fp.max()
    d = d_fn if positive else d_fp
    best = d.max()
    for r in range(d.shape[0]):  # explicit row-major scan for the first maximum
        for c in range(d.shape[1]):
            if d[r, c] == best:
                return Click(bool(positive), r, c)


def random_blob(rng, shape, density):
    """Smooth random mask: thresholded box-filtered noise."""
    noise = rng.random((shape[0] + 4, shape[1] + 4))
    smooth = sum(noise[i:i + shape[0], j:j + shape[1]] for i in range(5) for j in range(5)) / 25
    return smooth > np.quantile(smooth, 1 - density)


def random_case(rng):
    shape = (int(rng.integers(5, 18)), int(rng.integers(5, 18)))
    gt = random_blob(rng, shape, rng.uniform(0.1, 0.7))
    pred = random_blob(rng, shape, rng.uniform(0.0, 0.7)) if rng.random() < 0.8 else np.zeros(shape, bool)
    ignore = random_blob(rng, shape, 0.15) if rng.random() < 0.3 else np.zeros(shape, bool)
    if not (gt & ~ignore).any():
        ignore[:] = False
    previous = [Click(bool(rng.random() < 0.5), int(rng.integers(shape[0])), int(rng.integers(shape[1])))
                for _ in range(int(rng.integers(0, 4)))]
    return gt, pred, ignore, previous


def test_oracle_matches_brute_force_on_random_masks():
    rng = np.random.default_rng(1234)
    for _ in range(150):
        gt, pred, ignore, previous = random_case(rng)
        assert next_click(gt, pred, ignore, previous) == brute_force_oracle(gt, pred, ignore, previous)
        np.testing.assert_allclose(padded_distance_transform(gt), np.sqrt(brute_force_sq_dist(gt)), atol=1e-6)


def test_oracle_click_properties_on_random_masks():
    rng = np.random.default_rng(99)
    for _ in range(200):
        gt, pred, ignore, previous = random_case(rng)
        fn, fp = error_masks(gt, pred, ignore)
        unclicked = np.ones_like(gt)
        for c in previous:
            unclicked[c.row, c.col] = False
        click = next_click(gt, pred, ignore, previous)
        assert next_click(gt, pred, ignore, previous) == click  # deterministic
        if not ((fn | fp) & unclicked).any():
            assert click == Click(False, 0, 0)
            continue
        assert (fn | fp)[click.row, click.col]  # in the error region
        assert click.is_positive == bool(fn[click.row, click.col])  # positive exactly when in FN
        assert unclicked[click.row, click.col]  # never a pixel clicked before
        assert not ignore[click.row, click.col]


def test_oracle_accepts_numeric_masks():
    assert next_click(GT_C1.astype(np.uint8), EMPTY7.astype(np.float32)) == Click(True, 2, 2)


@pytest.mark.parametrize("kwargs,match", [
    (dict(gt=GT_C1, pred=np.zeros((7, 6), bool)), "pred has shape"),
    (dict(gt=GT_C1.astype(np.uint8) * 2, pred=EMPTY7), "gt must be binary"),
    (dict(gt=GT_C1, pred=np.full((7, 7), 0.3)), "pred must be binary"),
    (dict(gt=EMPTY7, pred=EMPTY7), "no .*object pixel"),
    (dict(gt=GT_C1, pred=EMPTY7, ignore=GT_C1), "no .*object pixel"),
    (dict(gt=GT_C1, pred=EMPTY7, ignore=np.zeros((6, 7), bool)), "ignore has shape"),
    (dict(gt=GT_C1, pred=EMPTY7, previous_clicks=[Click(True, 7, 0)]), "outside the image"),
    (dict(gt=np.zeros((2, 7, 7), bool), pred=EMPTY7), "2-D"),
])
def test_oracle_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        next_click(**kwargs)


def test_click_type_checks():
    with pytest.raises(ValueError, match="row must be >= 0"):
        Click(True, -1, 0)
    with pytest.raises(TypeError, match="col must be an integer"):
        Click(True, 0, 1.5)
    with pytest.raises(TypeError, match="is_positive must be a bool"):
        Click(1, 0, 0)
    assert Click(np.bool_(True), np.int64(3), np.int32(4)) == Click(True, 3, 4)


def test_padded_distance_transform_bad_mask_size():
    with pytest.raises(ValueError, match="mask_size"):
        padded_distance_transform(GT_C1, mask_size=4)


# ------------------------------------------------------------------------------------------------------
# Click arrays and encoding
# ------------------------------------------------------------------------------------------------------

def test_click_array_round_trip_and_errors():
    clicks = [Click(True, 3, 4), Click(False, 0, 6), Click(True, 6, 0)]
    arr = clicks_to_array(clicks, 5, shape=(7, 7))
    assert arr.dtype == np.int64 and arr.shape == (5, 3)
    np.testing.assert_array_equal(arr, [[3, 4, 1], [0, 6, 0], [6, 0, 1], [-1, -1, -1], [-1, -1, -1]])
    assert array_to_clicks(arr) == clicks
    with pytest.raises(ValueError, match="max_points is 2"):
        clicks_to_array(clicks, 2)
    with pytest.raises(ValueError, match="outside the image"):
        clicks_to_array(clicks, 5, shape=(6, 7))
    with pytest.raises(ValueError, match="row 1"):
        array_to_clicks(np.array([[1, 1, 1], [-1, 2, 0]]))
    with pytest.raises(ValueError, match="row 0"):
        array_to_clicks(np.array([[1, 1, 2]]))
    with pytest.raises(ValueError, match="shape \\(N, 3\\)"):
        array_to_clicks(np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="integers"):
        array_to_clicks(np.zeros((1, 3)))


def test_training_click_array_layout_and_iterative_slots():
    pos, neg = [Click(True, 1, 2), Click(True, 3, 4)], [Click(False, 5, 6)]
    arr = training_click_array(pos, neg, 24)
    assert arr.shape == (48, 3)
    np.testing.assert_array_equal(arr[:2], [[1, 2, 1], [3, 4, 1]])
    np.testing.assert_array_equal(arr[24], [5, 6, 0])
    assert (arr[2:24] == -1).all() and (arr[25:] == -1).all()
    assert array_to_clicks(arr) == pos + neg
    assert [(iterative_click_slot(True, i, 24), iterative_click_slot(False, i, 24)) for i in (1, 2, 3)] == \
        [(23, 47), (22, 46), (21, 45)]
    full = training_click_array([Click(True, 0, i) for i in range(24)], [], 24)
    write_iterative_click(full, Click(True, 9, 9), 1)
    np.testing.assert_array_equal(full[23], [9, 9, 1])  # overwrites the sampler's click
    write_iterative_click(full, Click(False, 8, 8), 2)
    np.testing.assert_array_equal(full[46], [8, 8, 0])
    with pytest.raises(ValueError, match="iteration"):
        iterative_click_slot(True, 0, 24)
    with pytest.raises(ValueError, match="positives must all be positive"):
        training_click_array(neg, [], 24)


def test_encode_clicks_matches_brute_force():
    rng = np.random.default_rng(5)
    shape = (23, 17)
    rr, cc = np.mgrid[:shape[0], :shape[1]]
    for _ in range(20):
        n = int(rng.integers(0, 6))
        rows = np.stack([rng.uniform(-4, 26, n), rng.uniform(-4, 20, n), rng.integers(0, 2, n)], axis=1)
        radius = float(rng.uniform(1, 6))
        expected = np.zeros((2,) + shape, dtype=np.float32)
        for y, x, p in rows:
            if max(y, x) < 0:
                continue
            expected[0 if p == 1 else 1][(rr - y) ** 2 + (cc - x) ** 2 <= radius ** 2] = 1
        np.testing.assert_array_equal(encode_clicks(rows, shape, radius), expected)
    clicks = [Click(True, 4, 4), Click(False, 10, 3)]
    np.testing.assert_array_equal(encode_clicks(clicks, shape), encode_clicks(clicks_to_array(clicks, 4), shape))


def test_encode_clicks_bad_input():
    with pytest.raises(ValueError, match="shape"):
        encode_clicks([], (0, 5))
    with pytest.raises(ValueError, match="radius"):
        encode_clicks([], (5, 5), radius=0)
    with pytest.raises(ValueError, match="is_positive must be 0 or 1"):
        encode_clicks(np.array([[1, 1, 3]]), (5, 5))
    with pytest.raises(ValueError, match="NaN"):
        encode_clicks(np.array([[np.nan, 1, 1]]), (5, 5))
    with pytest.raises(ValueError, match="\\(N, 3\\)"):
        encode_clicks(np.zeros((2, 2)), (5, 5))


# ------------------------------------------------------------------------------------------------------
# Training sampler (B.1-B.2)
# ------------------------------------------------------------------------------------------------------

def scene():
    """40 x 40: object A (rows 8..27, cols 8..27), object B (rows 32..37, cols 30..37)."""
    a = box((40, 40), (8, 27), (8, 27))
    b = box((40, 40), (32, 37), (30, 37))
    return np.stack([a, b])


def test_sampler_single_object_statistics():
    a = scene()[:1]
    sampler = MultiPointSampler()
    rng = np.random.default_rng(7)
    interior = box((40, 40), (11, 24), (11, 24))  # A eroded three times
    ring = sampler.border_region(a[0])
    n_pos, n_neg, pos_in_rim, neg_in_ring, total_pos, total_neg = [], [], 0, 0, 0, 0
    for _ in range(1500):
        s = sampler.sample(a, rng)
        np.testing.assert_array_equal(s.target, a[0])
        assert s.object_ids == (0,)
        assert 1 <= len(s.positives) <= 24 and len(s.negatives) <= 24
        n_pos.append(len(s.positives))
        n_neg.append(len(s.negatives))
        for c in s.positives:
            assert c.is_positive and a[0, c.row, c.col]
            pos_in_rim += not interior[c.row, c.col]
        for c in s.negatives:
            assert not c.is_positive and not a[0, c.row, c.col]
            neg_in_ring += bool(ring[c.row, c.col])
        total_pos += len(s.positives)
        total_neg += len(s.negatives)
    assert np.mean(n_pos) == pytest.approx(4.886, abs=0.35)
    assert np.mean(n_neg) == pytest.approx(3.905, abs=0.35)
    # only without erosion (p 0.1) can a positive land in the 3-px rim, which is 204 of A's 400 pixels
    assert pos_in_rim / total_pos == pytest.approx(0.1 * 204 / 400, abs=0.02)
    # border strategy 0.5; bg strategy 0.1 lands in the ring with |ring| / |bg|; "other" is bg (one object)
    ring_share = ring.sum() / (1600 - 400)
    assert neg_in_ring / total_neg == pytest.approx(0.5 + 0.5 * ring_share, abs=0.04)
    assert border_width(400) == 2 and ring.sum() == 24 * 24 - 400


def test_sampler_negative_strategies_with_other_object():
    masks = scene()
    sampler = MultiPointSampler(merge_objects_prob=0.0)
    rng = np.random.default_rng(11)
    in_other = total = 0
    for _ in range(1500):
        s = sampler.sample(masks, rng)
        other = masks[1 - s.object_ids[0]]
        for c in s.negatives:
            assert not s.target[c.row, c.col]
            in_other += bool(other[c.row, c.col])
            total += 1
    # an "other" target gets the other-object strategy (0.4) plus bg clicks that fall on it
    p_a = 0.4 + 0.1 * 48 / 1200 + 0.5 * 0.0          # target A: other = B (48 px), ring of A misses B
    ring_b = sampler.border_region(masks[1])
    p_b = 0.4 + 0.1 * 400 / 1552 + 0.5 * (ring_b & masks[0]).sum() / ring_b.sum()
    assert in_other / total == pytest.approx((p_a + p_b) / 2, abs=0.04)


def test_sampler_labelled_pixels_of_left_out_objects():
    # RITM keeps the pixels of objects removed by min_object_area as non-background (remove_small_objects drops
    # only their entries): with A and B sampled and a small C left out, "other" negatives may land on C
    masks = scene()
    c = box((40, 40), (1, 3), (30, 32))  # 9 px, touching neither A, B nor their rings
    labelled = masks[0] | masks[1] | c
    sampler = MultiPointSampler(merge_objects_prob=0.0)
    rng = np.random.default_rng(5)
    on_c = total = 0
    for _ in range(1500):
        s = sampler.sample(masks, rng, labelled=labelled)
        on_c += sum(bool(c[k.row, k.col]) for k in s.negatives)
        total += len(s.negatives)
    # "other" (0.4) draws from (other object | C), bg (0.1) from the 1200 / 1552 non-target pixels
    p_a = 0.4 * 9 / (48 + 9) + 0.1 * 9 / 1200
    p_b = 0.4 * 9 / (400 + 9) + 0.1 * 9 / 1552
    assert on_c / total == pytest.approx((p_a + p_b) / 2, abs=0.015)
    assert on_c > 0
    # without labelled (the default: the union of masks) no negative is ever drawn there by "other"
    rng = np.random.default_rng(5)
    on_c_default = sum(sum(bool(c[k.row, k.col]) for k in sampler.sample(masks, rng).negatives) for _ in range(1500))
    assert on_c_default < on_c / 3
    # an empty sample draws its negatives from the background, off every labelled object
    for _ in range(50):
        s = sampler.sample(np.zeros((0, 40, 40), bool), rng, labelled=labelled)
        assert not any(labelled[k.row, k.col] for k in s.negatives)
    with pytest.raises(ValueError, match="labelled must cover every object"):
        sampler.sample(masks, rng, labelled=masks[0])


def test_sampler_counts_non_root_objects_for_the_other_region():
    # RITM: with more objects than chosen (children count), "other" = labelled minus target; for one root whose
    # children lie inside it that region is empty, and the 0.4 "other" draws are skipped
    a = scene()[:1]
    sampler = MultiPointSampler()
    n_default, n_counted = [], []
    rng = np.random.default_rng(9)
    for _ in range(2000):
        n_default.append(len(sampler.sample(a, rng).negatives))
        n_counted.append(len(sampler.sample(a, rng, num_all_objects=2).negatives))
    assert np.mean(n_counted) == pytest.approx(0.6 * np.mean(n_default), abs=0.3)
    with pytest.raises(ValueError, match="num_all_objects"):
        sampler.sample(scene(), rng, num_all_objects=1)


def test_sampler_merging():
    masks = scene()
    sampler = MultiPointSampler()
    rng = np.random.default_rng(3)
    merged = 0
    for _ in range(1000):
        s = sampler.sample(masks, rng)
        if len(s.object_ids) == 2:
            merged += 1
            assert sorted(s.object_ids) == [0, 1]
            np.testing.assert_array_equal(s.target, masks[0] | masks[1])
            assert masks[0][tuple(zip(*[(c.row, c.col) for c in s.positives]))].any()
            assert masks[1][tuple(zip(*[(c.row, c.col) for c in s.positives]))].any()
            assert 2 <= len(s.positives) <= 24
        else:
            np.testing.assert_array_equal(s.target, masks[s.object_ids[0]])
        assert all(s.target[c.row, c.col] for c in s.positives)
        assert not any(s.target[c.row, c.col] for c in s.negatives)
    assert merged / 1000 == pytest.approx(0.15, abs=0.04)


def test_sampler_empty_sample_and_ignore():
    sampler = MultiPointSampler()
    rng = np.random.default_rng(0)
    ignore = box((20, 30), (0, 19), (0, 14))
    for _ in range(50):
        s = sampler.sample(np.zeros((0, 20, 30), bool), rng, ignore=ignore)
        assert not s.target.any() and s.target.shape == (20, 30) and s.positives == [] and s.object_ids == ()
        assert all(c.col >= 15 for c in s.negatives)
    masks = scene()
    ignore = np.zeros((40, 40), bool)
    ignore[:, :18] = True
    for _ in range(50):
        s = sampler.sample(masks, rng, ignore=ignore)
        assert all(not ignore[c.row, c.col] for c in s.positives + s.negatives)
        arr = s.to_array()
        assert arr.shape == (48, 3) and array_to_clicks(arr) == s.positives + s.negatives


def test_sampler_is_deterministic_for_a_seed():
    masks = scene()
    sampler = MultiPointSampler()
    runs = [[sampler.sample(masks, np.random.default_rng(42)).to_array() for _ in range(3)] for _ in range(2)]
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    different = [sampler.sample(masks, np.random.default_rng(s)).to_array() for s in range(5)]
    assert any(not np.array_equal(different[0], d) for d in different[1:])


def test_sampler_bad_input():
    sampler = MultiPointSampler()
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="\\(N, H, W\\)"):
        sampler.sample(scene()[0], rng)
    with pytest.raises(ValueError, match="\\(N, H, W\\)"):
        sampler.sample(scene().astype(np.uint8), rng)
    with pytest.raises(ValueError, match="non-empty"):
        sampler.sample(np.zeros((1, 5, 5), bool), rng)
    with pytest.raises(ValueError, match="ignore has shape"):
        sampler.sample(scene(), rng, ignore=np.zeros((4, 4), bool))
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        sampler.sample(scene(), 0)
    with pytest.raises(ValueError, match="negative_strategy_probs"):
        MultiPointSampler(negative_strategy_probs=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="merge_objects_prob"):
        MultiPointSampler(merge_objects_prob=1.5)
    with pytest.raises(ValueError, match="prob_gamma"):
        MultiPointSampler(prob_gamma=0.0)


# ------------------------------------------------------------------------------------------------------
# Iterative-training rule (B.4)
# ------------------------------------------------------------------------------------------------------

def test_next_training_click_properties():
    rng = np.random.default_rng(21)
    for _ in range(100):
        shape = (int(rng.integers(6, 16)), int(rng.integers(6, 16)))
        gt = random_blob(rng, shape, rng.uniform(0.0, 0.6)) if rng.random() < 0.9 else np.zeros(shape, bool)
        prev = rng.random(shape) * random_blob(rng, shape, 0.5)
        fn, fp = gt & (prev < 0.49), ~gt & (prev > 0.49)
        seed = int(rng.integers(1 << 30))
        click = next_training_click(gt, prev, np.random.default_rng(seed))
        assert click == next_training_click(gt, prev, np.random.default_rng(seed))  # deterministic
        if not (fn | fp).any():
            assert click is None
            continue
        d_fn, d_fp = padded_distance_transform(fn, 5), padded_distance_transform(fp, 5)
        assert click.is_positive == bool(d_fn.max() > d_fp.max())
        d = d_fn if click.is_positive else d_fp
        assert (fn if click.is_positive else fp)[click.row, click.col]
        assert d[click.row, click.col] > max(d_fn.max(), d_fp.max()) / 2


def test_next_training_click_uses_the_mask5_chamfer_transform(monkeypatch):
    # exact and mask-5 distances pick the same candidates on almost every mask (C12), so check the call
    import adaptiveclick.clicks.iterative as iterative

    sizes = []
    real = iterative.padded_distance_transform

    def spy(mask, mask_size=0):
        sizes.append(mask_size)
        return real(mask, mask_size)

    monkeypatch.setattr(iterative, "padded_distance_transform", spy)
    next_training_click(GT_C1, np.zeros((7, 7)), np.random.default_rng(0))
    assert sizes == [5, 5]


def test_next_training_click_threshold_and_bad_input():
    rng = np.random.default_rng(0)
    assert next_training_click(GT_C1, np.where(GT_C1, 0.49, 0.49), rng) is None  # 0.49 is neither
    assert next_training_click(GT_C1, GT_C1.astype(np.float32), rng) is None
    click = next_training_click(EMPTY7, np.full((7, 7), 0.5), rng)
    # everything is FP; mask-5 distances: 4 at the centre, 3 on the ring around it -> candidates D > 2
    assert not click.is_positive and 2 <= click.row <= 4 and 2 <= click.col <= 4
    with pytest.raises(ValueError, match="prev has shape"):
        next_training_click(GT_C1, np.zeros((6, 7)), rng)
    with pytest.raises(ValueError, match="probabilities in \\[0, 1\\]"):
        next_training_click(GT_C1, np.full((7, 7), np.nan), rng)
    with pytest.raises(ValueError, match="probabilities in \\[0, 1\\]"):
        next_training_click(GT_C1, np.full((7, 7), 1.5), rng)
    with pytest.raises(TypeError, match="Generator"):
        next_training_click(GT_C1, np.zeros((7, 7)), None)


def test_clicks_package_imports_no_torch_or_detectron2():
    code = ("import sys, adaptiveclick.clicks; "
            "bad = [m for m in ('torch', 'detectron2') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
