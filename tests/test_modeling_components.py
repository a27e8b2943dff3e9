"""Unit tests of the AdaptiveClick building blocks against hand-computed values and brute-force references."""

import contextlib
import itertools
import math
import os
import traceback

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from detectron2.projects.point_rend.point_features import point_sample

from adaptiveclick.clicks import encode_clicks
from adaptiveclick.layers.ms_deform_attn import extension_status
from adaptiveclick.modeling.click_maps import check_clicks, click_disk_maps
from adaptiveclick.modeling.criterion import SetCriterion
from adaptiveclick.modeling.matcher import (HungarianMatcher, pairwise_afl_cost, pairwise_bce_cost,
                                            pairwise_dice_cost, pairwise_focal_cost)
from adaptiveclick.modeling.meta_arch import merge_query_logits
from adaptiveclick.modeling.pixel_decoder.pmmd import encoder_reference_points
from adaptiveclick.modeling.position_encoding import PositionEmbeddingSine
from adaptiveclick.modeling.targets import build_targets
from adaptiveclick.modeling.transformer_decoder.camd import (CAMDDecoder, SDPAMultiheadAttention,
                                                             clicks_aware_attention_mask, open_full_rows,
                                                             pool_click_map, pool_click_maps)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- click maps

def _dense_disks(clicks, size, radius):
    """Brute force: every pixel against every click."""
    h, w = size
    rr, cc = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    out = np.zeros((len(clicks), 2, h, w), dtype=np.float32)
    for b, rows in enumerate(clicks):
        for y, x, pos in rows:
            if y < 0 and x < 0:
                continue
            hit = (rr - y) ** 2 + (cc - x) ** 2 <= radius ** 2
            out[b, 0 if pos == 1 else 1][hit] = 1
    return out


def test_click_disks_hand_example():
    # radius 1 around (0, 0) on a 3x3 map covers (0,0), (0,1), (1,0); a negative click at (2, 2) likewise
    maps = click_disk_maps(torch.tensor([[[0, 0, 1], [2, 2, 0], [-1, -1, -1]]]), (3, 3), radius=1)
    assert maps.shape == (1, 2, 3, 3)
    assert maps[0, 0].tolist() == [[1, 1, 0], [1, 0, 0], [0, 0, 0]]
    assert maps[0, 1].tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 1]]


@pytest.mark.parametrize("radius", [5.0, 2.5])
def test_click_disks_match_brute_force_and_numpy_encoder(radius):
    g = torch.Generator().manual_seed(0)
    size = (23, 31)
    clicks = torch.cat([torch.rand(3, 7, 1, generator=g) * 34 - 3,  # rows, some outside the map
                        torch.rand(3, 7, 1, generator=g) * 40 - 4,
                        (torch.rand(3, 7, 1, generator=g) > 0.5).float()], dim=-1)
    clicks[0, :3] = torch.tensor([[4.0, 6.0, 1.0], [10.0, 10.0, 0.0], [-1.0, -1.0, -1.0]])  # integers + padding
    clicks[1, 2] = torch.tensor([-2.0, 5.5, 1.0])  # one negative coordinate only: a click, not padding
    got = click_disk_maps(clicks, size, radius).numpy()
    np.testing.assert_array_equal(got, _dense_disks(clicks.double().numpy(), size, radius))
    for b in range(3):  # the click-protocol package's NumPy encoder (written independently)
        np.testing.assert_array_equal(got[b], encode_clicks(clicks[b].double().numpy(), size, radius=radius))


def test_numpy_encoder_matches_the_model_encoder_on_the_circle():
    # fractional clicks placed so that a pixel lies on the radius-5 circle up to float rounding: both encoders
    # decide in float32 as the official DistMaps (in float64 389 of these 3000 differed)
    rng = np.random.default_rng(0)
    size = (30, 30)
    clicks = []
    for _ in range(3000):
        y = np.float32(rng.uniform(10, 20))
        dy = float(int(np.floor(y)) - int(rng.integers(0, 5))) - float(y)
        x = np.float32(20 - np.sqrt(max(25 - dy * dy, 0.0)))
        clicks.append([float(y), float(x), 1.0])
    clicks = torch.tensor(clicks, dtype=torch.float32)[:, None]  # (3000, 1, 3): one click per map
    got = click_disk_maps(clicks, size, 5.0).numpy()
    for b in range(len(clicks)):
        np.testing.assert_array_equal(encode_clicks(clicks[b].double().numpy(), size, radius=5), got[b])


def test_preprocess_batches_equal_sizes_without_imagelist(tiny_model, monkeypatch):
    """Inputs of one size that is a multiple of the backbone's divisibility are stacked and normalised as one
    batch (no padding, no ImageList, whose size reads and ~10 operators a call cost an eager GPU click); the
    result equals the padded path's, computed here with detectron2's ImageList as the reference.  Other sizes
    still go through ImageList and are padded."""
    from detectron2.structures import ImageList

    from adaptiveclick.modeling import meta_arch
    from adaptiveclick.utils.op_count import count_operators

    calls = []

    class CountingImageList(ImageList):
        @staticmethod
        def from_tensors(*args, **kwargs):
            calls.append(1)
            return ImageList.from_tensors(*args, **kwargs)

    monkeypatch.setattr(meta_arch, "ImageList", CountingImageList)
    div = tiny_model.backbone.size_divisibility
    gen = torch.Generator().manual_seed(0)

    def item(h, w, clicks):
        return {"image": torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8),
                "clicks": torch.tensor(clicks), "prev_mask": torch.rand(1, h, w, generator=gen)}

    for sizes in (((2 * div, 3 * div),) * 2, ((2 * div, 3 * div),), ((2 * div - 3, 3 * div), (2 * div, 3 * div - 1))):
        batch = [item(h, w, [[1, 2, 1], [3, 4, 0]][:1 + b]) for b, (h, w) in enumerate(sizes)]
        calls.clear()
        counts, data = count_operators(lambda: tiny_model.preprocess(batch))
        mean, std = tiny_model.pixel_mean, tiny_model.pixel_std
        ref = ImageList.from_tensors([(x["image"].float() - mean) / std for x in batch], size_divisibility=div)
        assert torch.equal(data["images"], ref.tensor) and data["image_sizes"] == [tuple(s) for s in sizes]
        prev = ImageList.from_tensors([x["prev_mask"] for x in batch], size_divisibility=div).tensor
        assert torch.equal(data["coord_features"][:, :1], prev)
        assert data["coord_features"][0, 1, 1, 2] == 1 and (len(batch) == 1 or data["coord_features"][1, 2, 3, 4] == 1)
        stacked = len(set(sizes)) == 1 and all(h % div == 0 and w % div == 0 for h, w in sizes)
        assert len(calls) == (0 if stacked else 2), sizes  # images and previous masks
        if stacked:
            assert counts["host_reads"] == 1, counts  # the input checks' flag; no ImageList size reads


def test_check_clicks_errors():
    check_clicks(torch.tensor([[0, 0, 1], [9, 9, 0], [-1, -1, -1]]), (10, 10))
    # checked in NumPy on the host: a CPU click tensor runs no torch operator (on a GPU, one copy in all)
    from adaptiveclick.utils.op_count import count_operators

    counts, _ = count_operators(lambda: check_clicks(torch.tensor([[0, 0, 1], [9.5, 9, 0]]), (10, 10)))
    assert counts["compute"] == 0 and counts["host_reads"] == 0, counts  # a detach (a view) is all
    check_clicks(torch.tensor([[0, 0, 1]], dtype=torch.bfloat16), (10, 10))
    with pytest.raises(ValueError, match=r"clicks\[1\] = \[3, 4, 2\]: is_positive"):
        check_clicks(torch.tensor([[0, 0, 1], [3, 4, 2]]), (10, 10))
    with pytest.raises(ValueError, match=r"clicks\[0\] = \[10.5, 0.0, 1.0\] lies outside"):
        check_clicks(torch.tensor([[10.5, 0.0, 1.0]]), (10, 10))
    with pytest.raises(ValueError, match="outside the 10x10 image"):
        check_clicks(torch.tensor([[10, 0, 1]]), (10, 10), name="clicks")
    with pytest.raises(ValueError, match="outside"):
        check_clicks(torch.tensor([[-1, 3, 1]]), (10, 10))
    check_clicks(torch.tensor([[-1.5, 3.0, 1.0]]), (10, 10), outside="draw")
    with pytest.raises(ValueError, match="NaN"):
        check_clicks(torch.tensor([[float("nan"), 3.0, 1.0]]), (10, 10))
    with pytest.raises(ValueError, match="is_positive"):
        check_clicks(torch.tensor([[1, 1, 2]]), (10, 10))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        check_clicks(torch.zeros(4, 2), (10, 10))
    with pytest.raises(TypeError):
        check_clicks(np.zeros((1, 3)), (10, 10))


# ---------------------------------------------------------------- targets

def _gt_with_cell_values():
    # 8x8 -> 2x2 bilinear (scale 4, align_corners=False): output cell (i, j) is the mean of input pixels
    # rows 4i+1..4i+2, cols 4j+1..4j+2.  Set those to get cell values [[1, 0.5], [0.25, 0]].
    gt = torch.zeros(8, 8)
    gt[1:3, 1:3] = 1            # cell (0, 0): 4/4
    gt[1:3, 5] = 1              # cell (0, 1): 2/4
    gt[5, 1] = 1                # cell (1, 0): 1/4
    gt[0, 7] = gt[7, 7] = 1     # pixels outside every sampled block change nothing
    return gt


def test_official_targets_hand_example():
    (t,) = build_targets(_gt_with_cell_values()[None], (2, 2), "official")
    # distinct values {0, .25, .5, 1} -> trunc [0, 0, 0, 1] -> first dropped -> labels [0, 0, 1]
    assert t["labels"].tolist() == [0, 0, 1]
    bg, fg = [[0, 1], [1, 1]], [[1, 0], [0, 0]]
    assert t["masks"].tolist() == [bg, bg, fg]


def test_official_targets_degenerate_cases():
    empty, full = build_targets(torch.stack([torch.zeros(8, 8), torch.ones(8, 8)]), (2, 2), "official")
    assert empty["labels"].numel() == 0 and empty["masks"].shape == (0, 2, 2)
    assert full["labels"].numel() == 0
    half = torch.zeros(8, 8)
    half[1, 1:3] = 1  # cell (0, 0) = 0.5 only: background targets only
    (t,) = build_targets(half[None], (2, 2), "official")
    assert t["labels"].tolist() == [0]


def test_targets_of_a_batch_match_the_per_image_rule():
    """build_targets finds every image's distinct values with one operator for the batch (one wait on a GPU);
    the reference applies the rule image by image (torch.unique of each resized map)."""
    from adaptiveclick.modeling.targets import resize_gt_masks
    from adaptiveclick.utils.op_count import count_operators

    gen = torch.Generator().manual_seed(3)
    gts = (torch.rand(6, 16, 16, generator=gen) > 0.6).float()
    gts[1] = 0  # no object
    gts[2] = 1  # all object
    gts[3, 5:11, 2:9] = 1
    for mode in ("official", "clean"):
        counts, got = count_operators(lambda: build_targets(gts, (4, 4), mode))
        assert counts["host_reads"] == (1 if mode == "official" else 0), counts  # the one unique
        for value_map, t in zip(resize_gt_masks(gts, (4, 4)), got):
            if mode == "official":
                labels = torch.unique(value_map).trunc().long()[1:]
                masks = (value_map.trunc().long()[None] == labels[:, None, None]).float()
            else:
                mask = (value_map >= 0.5).float()
                labels = torch.ones(int(mask.any()), dtype=torch.long)
                masks = mask[None].expand(len(labels), -1, -1)
            assert torch.equal(t["labels"], labels) and torch.equal(t["masks"], masks), mode
    assert [len(t["labels"]) for t in build_targets(gts, (4, 4), "official")][1:3] == [0, 0]
    assert build_targets(gts[:0], (4, 4), "official") == [] and build_targets(gts[:0], (4, 4), "clean") == []
    # the official targets' masks are made for the whole batch at once: the operators do not grow with it
    few, _ = count_operators(lambda: build_targets(gts[:2], (4, 4), "official"))
    many, _ = count_operators(lambda: build_targets(gts, (4, 4), "official"))
    assert few["compute"] == many["compute"], (few, many)


def test_clean_targets_hand_example():
    gt = _gt_with_cell_values()
    (t,) = build_targets(gt[None], (2, 2), "clean")
    assert t["labels"].tolist() == [1]
    assert t["masks"].tolist() == [[[1, 1], [0, 0]]]
    (e,) = build_targets(torch.zeros(1, 8, 8), (2, 2), "clean")
    assert e["labels"].numel() == 0
    with pytest.raises(ValueError, match="target mode"):
        build_targets(gt[None], (2, 2), "paper")


# ---------------------------------------------------------------- matcher

def _bce(x, y):
    return max(x, 0) - x * y + math.log1p(math.exp(-abs(x)))


def _afl_cost_loop(x, y, eps_t=0.5, g0=2.0, delta=0.4, alpha=1.0, eps=1e-12):
    """model.md §5.2 written out pair by pair in plain Python (foreground count: cells > 0.5, official L99-101)."""
    n_q, n_t, n_p = x.shape[0], y.shape[0], x.shape[1]
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    gam, bb, ee = np.zeros((n_q, n_t)), np.zeros((n_q, n_t)), np.zeros((n_q, n_t))
    for n in range(n_q):
        for m in range(n_t):
            s_pos = sum(sig(x[n, i]) * y[m, i] for i in range(n_p))
            s_neg = sum((1 - sig(x[n, i])) * (1 - y[m, i]) for i in range(n_p))
            pbar = (s_pos + s_neg) / n_p
            gam[n, m] = g0 + 1 - s_pos / (sum(1 for v in y[m] if v > 0.5) + eps)
            bb[n, m] = (1 - pbar) ** gam[n, m]
            ee[n, m] = sum(eps_t * y[m, i] * _bce(x[n, i], 1) + (1 - eps_t) * (1 - y[m, i]) * _bce(x[n, i], 0)
                           for i in range(n_p))
    out = np.zeros((n_q, n_t))
    for n in range(n_q):
        for m in range(n_t):
            w = n_t / ((1 + delta * gam[n, m]) * bb[n].sum() + eps)
            out[n, m] = w * bb[n, m] * ee[n, m] / n_p + eps_t * alpha * (bb[n, m] + 1)
    return out


def test_pairwise_costs_match_per_pair_loops():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 12, generator=g, dtype=torch.float64) * 2
    y = (torch.rand(3, 12, generator=g) > 0.5).double()
    xn, yn = x.numpy(), y.numpy()
    np.testing.assert_allclose(pairwise_afl_cost(x, y).numpy(), _afl_cost_loop(xn, yn), rtol=1e-10)
    p = 1 / (1 + np.exp(-xn))
    dice = np.array([[1 - (2 * (p[n] * yn[m]).sum() + 1) / (p[n].sum() + yn[m].sum() + 1) for m in range(3)]
                     for n in range(4)])
    np.testing.assert_allclose(pairwise_dice_cost(x, y).numpy(), dice, rtol=1e-10)
    bce = np.array([[np.mean([_bce(xn[n, i], yn[m, i]) for i in range(12)]) for m in range(3)] for n in range(4)])
    np.testing.assert_allclose(pairwise_bce_cost(x, y).numpy(), bce, rtol=1e-10)
    pt = lambda n, m: p[n] * yn[m] + (1 - p[n]) * (1 - yn[m])  # noqa: E731
    at = lambda m: 0.25 * yn[m] + 0.75 * (1 - yn[m])  # noqa: E731
    focal = np.array([[np.mean(at(m) * (1 - pt(n, m)) ** 2 * np.array([_bce(xn[n, i], yn[m, i]) for i in range(12)]))
                       for m in range(3)] for n in range(4)])
    np.testing.assert_allclose(pairwise_focal_cost(x, y).numpy(), focal, rtol=1e-10)
    # alpha < 0 switches the alpha weighting off (Mask2Former's rule), it does not weight by a negative alpha
    no_alpha = np.array([[np.mean((1 - pt(n, m)) ** 2 * np.array([_bce(xn[n, i], yn[m, i]) for i in range(12)]))
                          for m in range(3)] for n in range(4)])
    np.testing.assert_allclose(pairwise_focal_cost(x, y, alpha=-1).numpy(), no_alpha, rtol=1e-10)
    assert (pairwise_focal_cost(x, y, alpha=-1) > 0).all()


def test_pairwise_afl_cost_counts_foreground_cells_of_soft_targets():
    # point-sampled targets are soft: the adaptive gamma divides by the number of cells > 0.5, not their sum
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 10, generator=g, dtype=torch.float64)
    y = torch.rand(2, 10, generator=g, dtype=torch.float64)
    np.testing.assert_allclose(pairwise_afl_cost(x, y).numpy(), _afl_cost_loop(x.numpy(), y.numpy()), rtol=1e-10)
    assert not np.allclose((y > 0.5).sum(-1).numpy(), y.sum(-1).numpy())  # the case tells the two counts apart


def _brute_force_min_cost(cost):
    q, m = cost.shape
    if m <= q:
        return min(sum(cost[r, c] for c, r in enumerate(rows)) for rows in itertools.permutations(range(q), m))
    return min(sum(cost[r, c] for r, c in enumerate(cols)) for cols in itertools.permutations(range(m), q))


@pytest.mark.parametrize("mask_type", ["afl", "bce", "focal"])
@pytest.mark.parametrize("num_targets", [1, 3, 5])
def test_matcher_equals_brute_force(mask_type, num_targets):
    g = torch.Generator().manual_seed(10 * num_targets + len(mask_type))
    q, b = 4, 2
    outputs = {"pred_logits": torch.randn(b, q, 2, generator=g), "pred_masks": torch.randn(b, q, 5, 5, generator=g) * 3}
    targets = [{"labels": torch.randint(0, 2, (num_targets,), generator=g),
                "masks": (torch.rand(num_targets, 5, 5, generator=g) > 0.6).float()} for _ in range(b)]
    matcher = HungarianMatcher(cost_mask_type=mask_type)
    indices = matcher(outputs, targets)
    for i, (rows, cols) in enumerate(indices):
        assert len(rows) == len(cols) == min(q, num_targets)
        assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
        cost = matcher.cost_matrix(outputs["pred_logits"][i], outputs["pred_masks"][i], targets[i]["labels"],
                                   targets[i]["masks"]).double().numpy()
        assert cost[rows.numpy(), cols.numpy()].sum() == pytest.approx(_brute_force_min_cost(cost), rel=1e-6)
        # the total cost is the weighted sum of the three documented terms
        x, y = outputs["pred_masks"][i].flatten(1), targets[i]["masks"].flatten(1)
        cls = -outputs["pred_logits"][i].softmax(-1)[:, targets[i]["labels"]]
        mask = {"afl": pairwise_afl_cost, "bce": pairwise_bce_cost, "focal": pairwise_focal_cost}[mask_type](x, y)
        np.testing.assert_allclose(cost, (2 * cls + 5 * mask + 5 * pairwise_dice_cost(x, y)).numpy(), rtol=1e-5)


def test_matcher_no_targets_and_bad_logits():
    outputs = {"pred_logits": torch.zeros(1, 3, 2), "pred_masks": torch.zeros(1, 3, 4, 4)}
    (rows, cols), = HungarianMatcher()(outputs, [{"labels": torch.zeros(0, dtype=torch.long),
                                                 "masks": torch.zeros(0, 4, 4)}])
    assert rows.numel() == 0 and cols.numel() == 0
    outputs["pred_masks"][0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN"):
        HungarianMatcher()(outputs, [{"labels": torch.ones(1, dtype=torch.long), "masks": torch.ones(1, 4, 4)}])


def test_matcher_point_sampling_shapes():
    outputs = {"pred_logits": torch.randn(1, 3, 2), "pred_masks": torch.randn(1, 3, 8, 8)}
    targets = [{"labels": torch.tensor([0, 1]), "masks": (torch.rand(2, 8, 8) > 0.5).float()}]
    (rows, cols), = HungarianMatcher(num_points=20)(outputs, targets)
    assert len(rows) == 2


# ---------------------------------------------------------------- criterion

class _RecordingLoss:
    """Stand-in mask loss: mean |sigmoid(x) - y| per row, summed, / num_masks; records its inputs."""

    def __init__(self):
        self.calls = []

    def __call__(self, logits, targets, num_masks):
        self.calls.append((logits.detach().clone(), targets.clone(), float(num_masks)))
        return (logits.sigmoid() - targets).abs().mean(-1).sum() / num_masks


def _criterion_case():
    logits = torch.tensor([[[2.0, -1.0], [0.5, 0.3], [-1.0, 1.5]]], requires_grad=True)  # (1, 3, 2)
    masks = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(3), requires_grad=True)
    targets = [{"labels": torch.tensor([1, 0]), "masks": (torch.rand(2, 4, 4) > 0.5).float()}]
    return {"pred_logits": logits, "pred_masks": masks}, targets


class _FixedMatcher:
    def __init__(self, indices):
        self.indices = indices

    def __call__(self, outputs, targets):
        return self.indices


@pytest.mark.parametrize("mode,weights", [("official", [1.0, 0.1]), ("clean", [0.1, 1.0])])
def test_criterion_class_loss_and_pairs(mode, weights):
    outputs, targets = _criterion_case()
    mask_loss, dice = _RecordingLoss(), _RecordingLoss()
    # query 2 <- target 0 (label 1), query 0 <- target 1 (label 0); query 1 unmatched -> class 0
    matcher = _FixedMatcher([(torch.tensor([2, 0]), torch.tensor([0, 1]))])
    crit = SetCriterion(matcher, mask_loss, dice, eos_coef=0.1, class_weights_mode=mode, deep_supervision=False)
    losses = crit(outputs, targets)
    assert set(losses) == {"loss_ce", "loss_mask", "loss_dice"}
    classes = [0, 0, 1]
    lg = outputs["pred_logits"][0].detach().double()
    nll = [-(lg[q].log_softmax(-1)[c]).item() for q, c in enumerate(classes)]
    wt = [weights[c] for c in classes]
    assert losses["loss_ce"].item() == pytest.approx(sum(w * n for w, n in zip(wt, nll)) / sum(wt), rel=1e-6)
    got_logits, got_targets, num_masks = mask_loss.calls[0]
    assert num_masks == 2.0
    torch.testing.assert_close(got_logits, outputs["pred_masks"][0, [2, 0]].detach().flatten(1))
    torch.testing.assert_close(got_targets, targets[0]["masks"][[0, 1]].flatten(1))
    (losses["loss_ce"] + losses["loss_mask"]).backward()
    assert outputs["pred_masks"].grad[0, 1].abs().sum() == 0  # unmatched query: no mask gradient
    assert outputs["pred_masks"].grad[0, 2].abs().sum() > 0


def test_criterion_deep_supervision_points_and_empty():
    outputs, targets = _criterion_case()
    aux = [{"pred_logits": outputs["pred_logits"] * 0.5, "pred_masks": outputs["pred_masks"] * 2}] * 2
    outputs["aux_outputs"] = aux
    mask_loss = _RecordingLoss()
    crit = SetCriterion(HungarianMatcher(), mask_loss, _RecordingLoss(), point_sampling=True, num_points=7,
                        oversample_ratio=3.0, importance_sample_ratio=0.75)
    losses = crit(outputs, targets)
    assert set(losses) == {f"loss_{k}{s}" for k in ("ce", "mask", "dice") for s in ("", "_0", "_1")}
    assert all(c[0].shape == (2, 7) for c in mask_loss.calls)
    empty = [{"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 4, 4)}]
    losses = SetCriterion(HungarianMatcher(), mask_loss, mask_loss, deep_supervision=False)(outputs, empty)
    assert losses["loss_mask"].item() == 0 and losses["loss_mask"].requires_grad
    assert torch.isfinite(losses["loss_ce"])


def test_matcher_match_many_equals_forward_per_prediction_with_one_copy(monkeypatch):
    """match_many gives each prediction the indices forward gives it (the random points drawn in the same order:
    the same indices under one seed), and brings every cost matrix to the host in one call of host_arrays."""
    from adaptiveclick.modeling import matcher as matcher_module

    g = torch.Generator().manual_seed(7)
    predictions = [{"pred_logits": torch.randn(3, 4, 2, generator=g),
                    "pred_masks": torch.randn(3, 4, 6, 6, generator=g) * 3} for _ in range(3)]
    targets = [{"labels": torch.ones(m, dtype=torch.long), "masks": (torch.rand(m, 6, 6, generator=g) > 0.5).float()}
               for m in (2, 0, 3)]  # the middle image has no target
    for num_points in (0, 9):
        matcher = HungarianMatcher(num_points=num_points)
        torch.manual_seed(0)
        one_by_one = [matcher(p, targets) for p in predictions]
        calls = []
        real = matcher_module.host_arrays
        monkeypatch.setattr(matcher_module, "host_arrays", lambda ts: calls.append(len(ts)) or real(ts))
        torch.manual_seed(0)
        together = matcher.match_many(predictions, targets)
        monkeypatch.setattr(matcher_module, "host_arrays", real)
        assert calls == [3]  # one (3, Q, M) cost tensor per prediction, all in one copy
        assert len(together) == 3
        for a, b in zip(one_by_one, together):
            assert len(a) == len(b) == 3 and a[1][0].numel() == b[1][0].numel() == 0
            for (ra, ca), (rb, cb) in zip(a, b):
                assert torch.equal(ra, rb) and torch.equal(ca, cb)
        # the matching differs between the predictions (else the comparison would not tell them apart)
        assert any(not torch.equal(together[0][0][0], t[0][0]) for t in together[1:]) or num_points


@pytest.mark.parametrize("mask_type", ["afl", "bce", "focal"])
def test_matcher_batch_costs_with_padded_targets_equal_the_per_image_costs(mask_type):
    """The costs of a batch whose images have 2, 0, 3 and 1 targets, computed at once on targets padded to 3,
    equal each image's own cost matrix on its real targets (the AFL weight sums over those only), and the
    batched matching is each image's optimum (brute force)."""
    from adaptiveclick.utils.op_count import count_operators

    g = torch.Generator().manual_seed(11)
    q, counts = 4, (2, 0, 3, 1)
    outputs = {"pred_logits": torch.randn(4, q, 2, generator=g), "pred_masks": torch.randn(4, q, 5, 6, generator=g) * 3}
    targets = [{"labels": torch.randint(0, 2, (m,), generator=g),
                "masks": (torch.rand(m, 5, 6, generator=g) > 0.6).float()} for m in counts]
    matcher = HungarianMatcher(cost_mask_type=mask_type)
    labels, masks, valid = matcher._padded_targets(targets, list(counts))
    assert masks.shape == (4, 3, 5, 6) and valid.tolist() == [[m > j for j in range(3)] for m in counts]
    batch = matcher.batch_costs(outputs["pred_logits"], outputs["pred_masks"], labels, masks, valid)
    assert batch.shape == (4, q, 3) and torch.isfinite(batch).all()
    indices = matcher(outputs, targets)
    for b, m in enumerate(counts):
        if m == 0:
            assert indices[b][0].numel() == 0
            continue
        own = matcher.cost_matrix(outputs["pred_logits"][b], outputs["pred_masks"][b], targets[b]["labels"],
                                  targets[b]["masks"])
        torch.testing.assert_close(batch[b, :, :m], own, rtol=1e-5, atol=1e-6)
        cost = own.double().numpy()
        rows, cols = indices[b]
        assert len(rows) == m and cost[rows.numpy(), cols.numpy()].sum() == pytest.approx(_brute_force_min_cost(cost),
                                                                                        rel=1e-6)
    # the operators dispatched do not grow with the batch (image by image they grew ~25 per image)
    few, _ = count_operators(lambda: matcher.batch_costs(outputs["pred_logits"][:2], outputs["pred_masks"][:2],
                                                         labels[:2], masks[:2], valid[:2]))
    many, _ = count_operators(lambda: matcher.batch_costs(outputs["pred_logits"], outputs["pred_masks"], labels,
                                                          masks, valid))
    assert few["compute"] == many["compute"], (few, many)


def test_matcher_point_sampled_costs_sample_every_query_and_target_at_the_images_points():
    """num_points > 0: image b's queries and targets are all read at the same random points, drawn per image
    (one (B, N, 2) draw), and the costs are the full-grid formulas on those samples."""
    g = torch.Generator().manual_seed(12)
    logits, masks = torch.randn(2, 3, 2, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    tmasks = (torch.rand(2, 2, 8, 8, generator=g) > 0.5).float()
    labels = torch.ones(2, 2, dtype=torch.long)
    matcher = HungarianMatcher(num_points=20)
    torch.manual_seed(3)
    got = matcher.batch_costs(logits, masks, labels, tmasks)
    torch.manual_seed(3)
    coords = torch.rand(2, 20, 2)
    for b in range(2):
        x = torch.stack([point_sample(masks[b, i][None, None], coords[b][None], align_corners=False)[0, 0]
                         for i in range(3)])
        y = torch.stack([point_sample(tmasks[b, j][None, None], coords[b][None], align_corners=False)[0, 0]
                         for j in range(2)])
        expected = (-2 * logits[b].softmax(-1)[:, [1, 1]] + 5 * pairwise_afl_cost(x, y)
                    + 5 * pairwise_dice_cost(x, y))
        torch.testing.assert_close(got[b], expected, rtol=1e-5, atol=1e-6)


def test_matcher_refuses_targets_on_different_grids():
    outputs = {"pred_logits": torch.zeros(2, 3, 2), "pred_masks": torch.zeros(2, 3, 4, 4)}
    targets = [{"labels": torch.ones(1, dtype=torch.long), "masks": torch.ones(1, 4, 4)},
               {"labels": torch.ones(1, dtype=torch.long), "masks": torch.ones(1, 5, 4)}]
    with pytest.raises(ValueError, match="share one grid"):
        HungarianMatcher()(outputs, targets)
    crit = SetCriterion(HungarianMatcher(), _RecordingLoss(), _RecordingLoss())
    with pytest.raises(ValueError, match="share one grid"):
        crit(outputs, targets)
    targets[1]["masks"] = torch.ones(1, 5, 5)
    targets[0]["masks"] = torch.ones(1, 5, 5)
    with pytest.raises(ValueError, match="must share the grid"):
        HungarianMatcher()(outputs, targets)


def test_matcher_names_the_prediction_with_non_finite_costs():
    ok = {"pred_logits": torch.zeros(1, 3, 2), "pred_masks": torch.zeros(1, 3, 4, 4)}
    bad = {"pred_logits": torch.zeros(1, 3, 2), "pred_masks": torch.zeros(1, 3, 4, 4)}
    bad["pred_masks"][0, 1, 2, 2] = float("inf")
    targets = [{"labels": torch.ones(1, dtype=torch.long), "masks": torch.ones(1, 4, 4)}]
    with pytest.raises(FloatingPointError, match="image 0 of prediction 2 contains NaN/inf"):
        HungarianMatcher().match_many([ok, ok, bad], targets)


def test_criterion_reads_one_target_flag_and_copies_the_costs_once(monkeypatch):
    """With deep supervision (here 4 predictions, 8 loss calls) the criterion reads one value (its check of the
    batch's target masks; the losses skip theirs) and copies the matching costs once; per loss call and per
    prediction before (on a GPU each a wait of the host)."""
    from adaptiveclick.losses import adaptive_focal_loss, dice
    from adaptiveclick.modeling import matcher as matcher_module
    from adaptiveclick.utils.op_count import count_operators

    outputs, targets = _criterion_case()
    outputs["aux_outputs"] = [{"pred_logits": outputs["pred_logits"] * s, "pred_masks": outputs["pred_masks"] * s}
                              for s in (0.5, 2.0, -1.0)]
    crit = SetCriterion(HungarianMatcher(), adaptive_focal_loss, dice)
    copies = []
    real = matcher_module.host_arrays
    monkeypatch.setattr(matcher_module, "host_arrays", lambda ts: copies.append(len(ts)) or real(ts))
    counts, losses = count_operators(lambda: crit(outputs, targets))
    assert counts["host_reads"] == 1, counts
    assert copies == [4]
    # the same losses as each prediction matched and its losses checked on their own (the reference path)
    for j, prediction in enumerate([outputs] + outputs["aux_outputs"]):
        (rows, cols), = HungarianMatcher()(prediction, targets)
        x = prediction["pred_masks"][0, rows].flatten(1)
        y = targets[0]["masks"][cols].flatten(1)
        suffix = "" if j == 0 else f"_{j - 1}"
        torch.testing.assert_close(losses[f"loss_mask{suffix}"], adaptive_focal_loss(x, y, 2.0))
        torch.testing.assert_close(losses[f"loss_dice{suffix}"], dice(x, y, 2.0))


def test_pair_indices_number_targets_across_the_batch():
    from adaptiveclick.modeling.criterion import _pair_indices

    first = [(torch.tensor([2, 0]), torch.tensor([1, 0])), (torch.empty(0, dtype=torch.long),) * 2,
             (torch.tensor([1]), torch.tensor([0]))]
    second = [(torch.tensor([0, 1]), torch.tensor([0, 1])), (torch.empty(0, dtype=torch.long),) * 2,
              (torch.tensor([3]), torch.tensor([0]))]
    # image 0 has 2 targets (0, 1), image 1 none, image 2 one (global number 2)
    (img, qry, tgt), (img2, qry2, tgt2) = _pair_indices([first, second], [2, 0, 1], "cpu")
    assert img.tolist() == [0, 0, 2] and qry.tolist() == [2, 0, 1] and tgt.tolist() == [1, 0, 2]
    assert img2.tolist() == [0, 0, 2] and qry2.tolist() == [0, 1, 3] and tgt2.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="2 index pairs for a batch of 3"):
        _pair_indices([first[:2]], [2, 0, 1], "cpu")
    with pytest.raises(ValueError, match="paired 2 queries with 1 targets in image 0"):
        _pair_indices([[(torch.tensor([0, 1]), torch.tensor([0]))] + first[1:]], [2, 0, 1], "cpu")


def test_criterion_operators_do_not_grow_with_the_batch():
    """The criterion's operators (each a kernel launch on a GPU) are the same for a batch of 2 and of 6: the
    matching costs are computed per prediction for the whole batch, the matched pairs indexed at once (image by
    image, a ViT-B-sized step at batch 16 with 10 predictions dispatched ~10300, now ~1200)."""
    from adaptiveclick.losses import adaptive_focal_loss, dice
    from adaptiveclick.utils.op_count import count_operators

    def case(b):
        g = torch.Generator().manual_seed(b)
        pred = lambda: {"pred_logits": torch.randn(b, 3, 2, generator=g),  # noqa: E731
                        "pred_masks": torch.randn(b, 3, 6, 6, generator=g)}
        outputs = pred()
        outputs["aux_outputs"] = [pred(), pred()]
        targets = [{"labels": torch.ones(1, dtype=torch.long),
                    "masks": (torch.rand(1, 6, 6, generator=g) > 0.5).float()} for _ in range(b)]
        return outputs, targets

    crit = SetCriterion(HungarianMatcher(), adaptive_focal_loss, dice)
    small, large = case(2), case(6)
    counts_small, _ = count_operators(lambda: crit(*small))
    counts_large, losses = count_operators(lambda: crit(*large))
    assert counts_small["compute"] == counts_large["compute"], (counts_small, counts_large)
    # and the losses are those of the pairs matched image by image
    outputs, targets = large
    for j, prediction in enumerate([outputs] + outputs["aux_outputs"]):
        indices = HungarianMatcher()(prediction, targets)
        x = torch.cat([prediction["pred_masks"][b, rows] for b, (rows, _) in enumerate(indices)]).flatten(1)
        y = torch.cat([targets[b]["masks"][cols] for b, (_, cols) in enumerate(indices)]).flatten(1)
        suffix = "" if j == 0 else f"_{j - 1}"
        torch.testing.assert_close(losses[f"loss_mask{suffix}"], adaptive_focal_loss(x, y, 6.0))


@pytest.mark.parametrize("bad,message", [(float("nan"), "image 1 contain NaN"), (1.5, r"image 1 must lie in \[0, 1\]"),
                                         (-0.25, r"got values in \[-0.25, 1.0\]")])
def test_criterion_rejects_bad_target_masks(bad, message):
    outputs, targets = _criterion_case()
    outputs = {k: torch.cat([v, v]) for k, v in outputs.items()}
    second = targets[0]["masks"].clone()
    second[1, 2, 3] = bad
    targets = targets + [{"labels": targets[0]["labels"], "masks": second}]
    crit = SetCriterion(HungarianMatcher(), _RecordingLoss(), _RecordingLoss(), deep_supervision=False)
    with pytest.raises(ValueError, match=message):
        crit(outputs, targets)


# ---------------------------------------------------------------- CAAM

def test_pool_click_map_hand_example():
    click = torch.zeros(1, 16, 16)
    click[0, 9, 13] = 1
    # 16 -> 8: rows {4, 5}, cols {6, 7}; 8 -> 4: rows {2, 3}, col {3} (3x3 windows, stride 2, padding 1)
    pooled = pool_click_map(click, (4, 4), input_width=16)
    expected = torch.zeros(4, 4)
    expected[2:4, 3] = 1
    torch.testing.assert_close(pooled[0], expected)
    # n = floor(log2(448 / 16)) = 4 poolings (448 -> 28) then a bilinear shrink to 16 (patch-14 levels): a
    # radius-5 click at (105, 105) ends up below 0.5 everywhere (quirk 11); adaptive max-pooling keeps it
    disk = click_disk_maps(torch.tensor([[[105, 105, 1]]]), (448, 448), 5)[:, 0]
    official = pool_click_map(disk, (16, 16), 448)
    assert official.shape == (1, 16, 16) and 0 < official.max() < 0.5
    adaptive = pool_click_map(disk, (16, 16), 448, "adaptive_max")
    assert adaptive.max() == 1 and adaptive.sum() == 1  # the disk lies inside one 28x28 cell ((105 +- 5) // 28 = 3)
    with pytest.raises(ValueError, match="pooling"):
        pool_click_map(disk, (16, 16), 448, "avg")


def test_caam_mask_rule_hand_example():
    mask_logits = torch.full((1, 3, 4, 4), -1.0)
    mask_logits[0, 0, 0, 0] = 1.0  # query 0 predicts foreground at (0, 0) only
    class_logits = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [-2.0, 3.0]]])  # object, background, object
    pooled = torch.zeros(1, 4, 4)
    pooled[0, 2:4, 3] = 1
    blocked = clicks_aware_attention_mask(mask_logits, class_logits, (4, 4), pooled).view(3, 4, 4)
    open0 = torch.ones(4, 4, dtype=torch.bool)
    open0[0, 0] = open0[2, 3] = open0[3, 3] = False  # mask OR click (object query)
    open2 = torch.ones(4, 4, dtype=torch.bool)
    open2[2, 3] = open2[3, 3] = False  # click only
    assert torch.equal(blocked[0], open0)
    assert torch.equal(blocked[1], torch.ones(4, 4, dtype=torch.bool))  # class 0: plain mask rule, nothing open
    assert torch.equal(blocked[2], open2)
    # CAAM off: plain Mask2Former masking
    plain = clicks_aware_attention_mask(mask_logits, class_logits, (4, 4), None).view(3, 4, 4)
    assert plain[0].sum() == 15 and plain[2].all()
    # a fully blocked row is opened entirely before the cross-attention
    allowed = open_full_rows(blocked.view(1, 3, 16))
    assert allowed[0, 1].all() and not allowed[0, 2].all() and allowed[0, 2].sum() == 2
    # the rule against its plain statement on random rows, some fully blocked
    g = torch.Generator().manual_seed(4)
    rows = torch.rand(2, 6, 9, generator=g) > 0.3
    rows[0, 1] = rows[1, 4] = True
    assert torch.equal(open_full_rows(rows), ~rows | rows.all(-1, keepdim=True))


def _official_caam_blocked(mask_logits, class_logits, target_size, click_map, input_width):
    """The rule as the official code states it (model.md §4.2): resize, sigmoid < 0.5, pool the click map
    multiplied by each query's object flag (argmax == 1) level by level, < 0.5; literal, no shortcuts."""
    resized = F.interpolate(mask_logits.float(), size=target_size, mode="bilinear", align_corners=False)
    g = (class_logits.argmax(-1) == 1).float()  # (B, Q)
    x = (g[:, :, None, None] * click_map[:, None]).flatten(0, 1)[:, None]  # one pooled map per query
    for _ in range(max(0, math.floor(math.log2(input_width / target_size[1])))):
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    if tuple(x.shape[-2:]) != tuple(target_size):
        x = F.interpolate(x, size=target_size, mode="bilinear", align_corners=False)
    clicks = x[:, 0].view(*g.shape, *target_size)
    return ((resized.sigmoid() < 0.5) & (clicks < 0.5)).flatten(2)


@pytest.mark.parametrize("size,levels", [(64, [(2, 2), (4, 4), (8, 8)]), (56, [(2, 2), (4, 4), (8, 8)]),
                                         (96, [(3, 3), (6, 6), (12, 12)])])
def test_caam_mask_equals_the_literal_official_rule(size, levels):
    """Our operator-lean rule (m < 0, shared poolings, one boolean click map per level, logit_1 > logit_0)
    against the literal rule per query, on random logits with tied class logits and patch-14-like sizes."""
    g = torch.Generator().manual_seed(size)
    b, q = 2, 6
    click_map = torch.zeros(b, size, size)
    click_map[0, 5:9, 20:24] = 1
    click_map[1, size - 6:, :4] = 1
    click_map[1, 30:33, 30:33] = 1
    class_logits = torch.randn(b, q, 2, generator=g)
    class_logits[0, 0] = class_logits[1, 2] = 0.5  # ties: argmax 0, not the object
    class_logits[:, 1, 1] = class_logits[:, 1, 0] + 1  # an object query in each image
    pooled = pool_click_maps(click_map, levels, size)
    for lvl, s in enumerate(levels):
        torch.testing.assert_close(pooled[lvl], pool_click_map(click_map, s, size), rtol=0, atol=0)
        mask_logits = torch.randn(b, q, size // 4, size // 4, generator=g)
        expected = _official_caam_blocked(mask_logits, class_logits, s, click_map, size)
        assert not expected.all() and expected.any()
        for clicks in (pooled[lvl], pooled[lvl] >= 0.5):  # the float map or its boolean click pixels
            assert torch.equal(clicks_aware_attention_mask(mask_logits, class_logits, s, clicks), expected)
        resized = F.interpolate(mask_logits, size=s, mode="bilinear", align_corners=False)  # eval: at the level
        assert torch.equal(clicks_aware_attention_mask(resized, class_logits, s, pooled[lvl] >= 0.5), expected)
    # the clicks open something the masks alone keep blocked (else the comparison could not tell)
    plain = clicks_aware_attention_mask(mask_logits, class_logits, levels[-1], None)
    assert not torch.equal(plain, expected)
    # more than 2 classes: argmax == 1 is the object flag
    three = torch.cat([class_logits, torch.full((b, q, 1), -9.0)], -1)
    three[0, 3] = torch.tensor([0.0, 1.0, 2.0])  # class 2 wins: not the object
    expected3 = _official_caam_blocked(mask_logits, three, levels[-1], click_map, size)
    assert torch.equal(clicks_aware_attention_mask(mask_logits, three, levels[-1], pooled[-1]), expected3)


def test_pool_click_maps_share_the_poolings():
    from adaptiveclick.utils.op_count import count_operators

    click_map = torch.zeros(1, 448, 448)
    click_map[0, 100:110, 200:210] = 1
    levels = [(14, 14), (28, 28), (56, 56)]
    counts, pooled = count_operators(lambda: pool_click_maps(click_map, levels, 448))
    assert dict(counts["top_compute"]).get("max_pool2d_with_indices") == 5  # 448 -> 14 takes 5; 28 and 56 on the way
    for p, s in zip(pooled, levels):
        assert torch.equal(p, pool_click_map(click_map, s, 448))
    adaptive = pool_click_maps(click_map, levels, 448, "adaptive_max")
    assert [tuple(p.shape[-2:]) for p in adaptive] == levels and all(p.max() == 1 for p in adaptive)
    with pytest.raises(ValueError, match="pooling"):
        pool_click_maps(click_map, levels, 448, "avg")


def _decoder_outputs(decoder, features, mask_features, click_map):
    with torch.no_grad():
        return decoder(features, mask_features, click_map)


def test_eval_decoder_level_resolution_masks_equal_the_full_resolution_path():
    """Eval mode computes the intermediate masks from the mask features resized to each level; train mode
    (dropout 0: the same function) computes them at full resolution and resizes them. Same final outputs."""
    torch.manual_seed(0)
    dec = CAMDDecoder(16, hidden_dim=16, num_queries=4, nheads=2, dim_feedforward=32, dec_layers=7, mask_dim=16)
    features = [torch.randn(1, 16, 3, 3), torch.randn(1, 16, 6, 5), torch.randn(1, 16, 12, 10)]
    mask_features = torch.randn(1, 16, 24, 20)
    click_map = torch.zeros(1, 96, 80)
    click_map[0, 40:50, 30:40] = 1
    full = _decoder_outputs(dec.train(), features, mask_features, click_map)
    fast = _decoder_outputs(dec.eval(), features, mask_features, click_map)
    assert len(full["aux_outputs"]) == 6 and fast["aux_outputs"] == []
    assert fast["pred_masks"].shape == (1, 4, 24, 20)
    torch.testing.assert_close(fast["pred_masks"], full["pred_masks"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast["pred_logits"], full["pred_logits"], rtol=1e-4, atol=1e-5)
    # negative control: the masks of the wrong level change the result (the attention masks matter here)
    levels = dec._level_mask_features(mask_features, [tuple(f.shape[-2:]) for f in features])
    for lvl, f in zip(levels, features):
        assert lvl.shape[-2:] == f.shape[-2:]
    dec._level_mask_features = lambda mf, sizes: [F.interpolate(mf, size=s, mode="nearest") for s in sizes]
    wrong = _decoder_outputs(dec, features, mask_features, click_map)
    assert not torch.allclose(wrong["pred_masks"], full["pred_masks"], atol=1e-3)


def test_sdpa_attention_equals_nn_multihead_attention_with_per_head_mask():
    torch.manual_seed(0)
    b, q, k, e, h = 2, 5, 7, 16, 4
    ours = SDPAMultiheadAttention(e, h)
    ref = torch.nn.MultiheadAttention(e, h)
    ref.load_state_dict(ours.state_dict())  # same parameter names as the official checkpoints
    query, key, value = torch.randn(b, q, e), torch.randn(b, k, e), torch.randn(b, k, e)
    blocked = torch.rand(b, q, k) > 0.5
    blocked[:, :, 0] = False
    out = ours(query, key, value, ~blocked[:, None])
    ref_mask = blocked[:, None].expand(b, h, q, k).reshape(b * h, q, k)  # Mask2Former layout, True = blocked
    expected = ref(query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1), attn_mask=ref_mask)[0]
    torch.testing.assert_close(out, expected.transpose(0, 1), rtol=1e-5, atol=1e-5)
    from adaptiveclick.utils.op_count import count_operators

    # the boolean mask becomes an additive bias in one operator (where SDPA's own conversion dispatched two
    # scalar_tensor and a where per call), the same attention to the last bit
    counts, again = count_operators(lambda: ours(query, key, value, ~blocked[:, None]), top=50)
    ops = dict(counts["top_compute"])
    assert ops.get("where") == 1 and "scalar_tensor" not in ops and "full" not in ops, counts["top_compute"]
    torch.testing.assert_close(again, out, rtol=0, atol=0)
    with torch.no_grad():
        q_, k_, v_ = (F.linear(t, w, bias) for t, w, bias in zip((query, key, value), ours.in_proj_weight.chunk(3),
                                                                 ours.in_proj_bias.chunk(3)))
        split = lambda t: t.view(b, t.shape[1], h, -1).transpose(1, 2)  # noqa: E731
        plain = F.scaled_dot_product_attention(split(q_), split(k_), split(v_), attn_mask=~blocked[:, None])
        plain = ours.out_proj(plain.transpose(1, 2).reshape(b, q, e))
    torch.testing.assert_close(out.detach(), plain, rtol=0, atol=0)
    with pytest.raises(TypeError, match="boolean"):
        ours(query, key, value, (~blocked[:, None]).float())
    # self-attention passes one tensor as query and key: its two projections are one matrix product

    x, v = torch.randn(b, q, e), torch.randn(b, q, e)
    counts, out = count_operators(lambda: ours(x, x, v), top=50)
    ops = dict(counts["top_compute"])
    assert ops.get("addmm", 0) + ops.get("mm", 0) == 3, counts["top_compute"]  # [q | k], v, out_proj (was 4)
    expected = ref(x.transpose(0, 1), x.transpose(0, 1), v.transpose(0, 1))[0]
    torch.testing.assert_close(out, expected.transpose(0, 1), rtol=1e-5, atol=1e-5)
    ours(x, x, v).square().sum().backward()
    ref(x.transpose(0, 1), x.transpose(0, 1), v.transpose(0, 1))[0].square().sum().backward()
    torch.testing.assert_close(ours.in_proj_weight.grad, ref.in_proj_weight.grad, rtol=1e-4, atol=1e-5)


def test_merge_query_logits():
    cls = torch.tensor([[[0.0, 0.0], [0.0, 2.0]]])
    masks = torch.tensor([[[[1.0, -1.0]], [[3.0, -2.0]]]])  # (1, 2, 1, 2)
    s1 = 1 / (1 + math.exp(-2.0))
    expected = torch.tensor([[[[0.5 * 1 + s1 * 3, 0.5 * -1 + s1 * -2]]]])
    torch.testing.assert_close(merge_query_logits(cls, masks, "weighted_logits"), expected)
    # best query: softmax(cls)[1] x mean sigmoid over sigmoid > 0.5: query 1 (0.88 x 0.95) beats query 0 (0.5 x 0.73)
    torch.testing.assert_close(merge_query_logits(cls, masks, "best_query"), masks[:, 1:2])
    with pytest.raises(ValueError, match="merge mode"):
        merge_query_logits(cls, masks, "max")


# ---------------------------------------------------------------- pixel decoder pieces

def test_position_embedding_sine_hand_values():
    pos = PositionEmbeddingSine(num_pos_feats=4)(torch.zeros(1, 1, 2, 3))
    assert pos.shape == (1, 8, 2, 3)
    y1 = 2 / (2 + 1e-6) * 2 * math.pi  # row index 1 (second row)
    x0 = 1 / (3 + 1e-6) * 2 * math.pi  # column 0
    # features per axis: sin(c), cos(c), sin(c / 100), cos(c / 100)  (T^(2 floor(k/2) / 4) with T = 1e4)
    expected_y = [math.sin(y1), math.cos(y1), math.sin(y1 / 100), math.cos(y1 / 100)]
    expected_x = [math.sin(x0), math.cos(x0), math.sin(x0 / 100), math.cos(x0 / 100)]
    torch.testing.assert_close(pos[0, :, 1, 0], torch.tensor(expected_y + expected_x))


def test_position_embedding_is_made_once_per_size_and_dtype():
    """The encoding depends only on (H, W): it is cached per size, device and dtype, equal to a fresh computation,
    expanded over the batch without a copy, and, filled inside inference mode (as the predictor runs), still a
    normal tensor that a later training forward can use in backward."""
    pe = PositionEmbeddingSine(num_pos_feats=8)
    with torch.inference_mode():
        first = pe(torch.zeros(2, 1, 3, 5))
    assert first.shape == (2, 16, 3, 5) and first.stride(0) == 0  # one cached copy, expanded over the batch
    cached = pe._cache[(3, 5, "cpu", torch.float32)]
    assert not cached.is_inference()
    torch.testing.assert_close(first[1:], pe.encode(3, 5, "cpu"))
    again = pe(torch.zeros(1, 1, 3, 5))
    assert again.data_ptr() == first.data_ptr()  # no recomputation
    half = pe(torch.zeros(1, 1, 3, 5, dtype=torch.bfloat16))
    assert half.dtype == torch.bfloat16 and len(pe._cache) == 2
    torch.testing.assert_close(half.float(), pe.encode(3, 5, "cpu"), atol=1e-2, rtol=0)
    other = pe(torch.zeros(1, 1, 4, 2))
    torch.testing.assert_close(other, pe.encode(4, 2, "cpu"))
    x = torch.randn(1, 16, 3, 5, requires_grad=True)
    (x * pe(x)).sum().backward()  # the cached tensor (made in inference mode) takes part in autograd
    torch.testing.assert_close(x.grad, pe.encode(3, 5, "cpu"))


def test_size_constants_are_not_recomputed_in_a_warm_forward():
    """A warm forward of the model dispatches no operator of the sine encodings or the encoder's reference points
    (arange, sin, cos, meshgrid's expansions): they come from the caches; a cold one makes them."""
    import os

    from adaptiveclick.utils.bench import build_benchmark_model, click_batch, click_inputs, forward_only_fn, load_config
    from adaptiveclick.utils.op_count import count_operators

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    model = build_benchmark_model(load_config(os.path.join(root, "configs", "synthetic", "tiny.yaml"), (), "cpu"))
    forward = forward_only_fn(model, click_batch(*click_inputs(64, 3)))

    def ops():
        with torch.no_grad():
            counts, _ = count_operators(forward, top=10 ** 6)
        return counts["compute"], dict(counts["top_compute"])

    cold_total, cold = ops()
    warm_total, warm = ops()
    assert cold["sin"] > 0 and cold["cos"] > 0 and cold["arange"] > 0
    assert "sin" not in warm and "cos" not in warm and "arange" not in warm
    assert cold_total - warm_total >= cold["sin"] + cold["cos"] + cold["arange"]


def test_encoder_reference_points():
    ref = encoder_reference_points([(1, 2), (2, 2)], 2, "cpu")
    assert ref.shape == (1, 6, 2, 2)
    expected = [[0.25, 0.5], [0.75, 0.5], [0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]  # (x, y)
    torch.testing.assert_close(ref[0, :, 0], torch.tensor(expected))
    torch.testing.assert_close(ref[0, :, 1], ref[0, :, 0])


def test_deformable_encoder_reuses_its_index_tensors():
    """The encoder hands the op the same spatial_shapes / level_start_index tensors every forward (their values
    are then read once, not once per layer and forward: a host sync each on CUDA), with the right values."""
    from adaptiveclick.modeling.pixel_decoder.pmmd import DeformableEncoder

    torch.manual_seed(0)
    enc = DeformableEncoder(d_model=8, nhead=2, num_layers=2, dim_feedforward=16, num_levels=2, n_points=2).eval()
    seen = []
    for layer in enc.encoder.layers:
        layer.register_forward_pre_hook(lambda mod, args: seen.append((args[3], args[4], args[5])))
    srcs = [torch.randn(1, 8, 3, 4), torch.randn(1, 8, 2, 2)]
    with torch.inference_mode():  # as the predictor runs it: the cached tensors must still be normal tensors
        first = enc(srcs, [torch.zeros_like(s) for s in srcs])
        second = enc(srcs, [torch.zeros_like(s) for s in srcs])
    assert not seen[0][0].is_inference() and not seen[0][1].is_inference()
    assert len(seen) == 4 and all(s[0] is seen[0][0] and s[1] is seen[0][1] for s in seen)
    assert seen[0][0].tolist() == [[3, 4], [2, 2]] and seen[0][1].tolist() == [0, 12]
    # the offset normaliser, made once too: rows (W, H) in float32, which the layers use instead of their own
    assert all(s[2] is seen[0][2] for s in seen) and seen[0][2].dtype == torch.float32
    assert seen[0][2].tolist() == [[4.0, 3.0], [2.0, 2.0]]
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b)
    enc([torch.randn(1, 8, 2, 2), torch.randn(1, 8, 1, 1)], [torch.zeros(1, 8, 2, 2), torch.zeros(1, 8, 1, 1)])
    assert seen[-1][0].tolist() == [[2, 2], [1, 1]] and seen[-1][1].tolist() == [0, 4]  # another size: new tensors


# -- no host reads in the network's forward (a CPU stand-in for torch.cuda.set_sync_debug_mode) --------------

# Python-level ways a tensor's values reach the host; on CUDA each one is a device synchronisation
_HOST_READS = ("item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__", "cpu")
# aten operators that read values (.item() from C++) or have value-dependent output shapes
_SYNC_OPS = ("aten::_local_scalar_dense", "aten::is_nonzero", "aten::nonzero", "aten::masked_select",
             "aten::_unique", "aten::unique")


@contextlib.contextmanager
def _record_host_reads():
    """Record (name, caller) of every Python-level tensor value read, and the operators run, in the block."""
    from torch.profiler import profile

    reads, originals = [], {n: getattr(torch.Tensor, n) for n in _HOST_READS}

    def spy(name):
        def read(self, *args, **kwargs):
            frame = traceback.extract_stack(limit=3)[0]
            reads.append((name, f"{frame.filename}:{frame.lineno}"))
            return originals[name](self, *args, **kwargs)
        return read

    for name in _HOST_READS:
        setattr(torch.Tensor, name, spy(name))
    record = {"reads": reads, "ops": set()}
    try:
        with profile() as prof:
            yield record
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)
    record["ops"] = {e.key for e in prof.key_averages()}


@pytest.mark.skipif(not extension_status()["cpu"], reason="the C++ MSDeformAttn kernel is not built")
def test_steady_state_forward_reads_no_values_on_the_host(monkeypatch):
    """After a first forward (which fills the op's index cache), ``model.predict`` reads no tensor value on
    the host and runs no value-dependent operator: nothing in it would synchronise a GPU.  The C++ kernel stands
    in for the CUDA one (the grid_sample reference reads the level shapes by design)."""
    from adaptiveclick.layers.ms_deform_attn import function as msda_function
    from adaptiveclick.layers.ms_deform_attn import ms_deform_attn
    from adaptiveclick.utils.bench import build_benchmark_model, click_batch, click_inputs, load_config

    kernel_calls = []
    kernel = msda_function._msda_forward_op
    monkeypatch.setattr(msda_function, "_msda_forward_op", lambda *a: kernel_calls.append(1) or kernel(*a))

    cfg = load_config(os.path.join(ROOT, "configs", "synthetic", "tiny.yaml"), ["MODEL.MSDA.IMPL", "cpu"])
    model = build_benchmark_model(cfg)
    image, clicks, prev = click_inputs(96, 4)
    with torch.no_grad():
        data = model.preprocess(click_batch(image, clicks, prev))
        first = model.predict(data)
        kernel_calls.clear()
        with _record_host_reads() as record:
            second = model.predict(data)
    assert record["reads"] == [], record["reads"]
    assert not record["ops"] & set(_SYNC_OPS), sorted(record["ops"] & set(_SYNC_OPS))
    torch.testing.assert_close(second["pred_masks"], first["pred_masks"])
    assert len(kernel_calls) == cfg.MODEL.ADAPTIVECLICK.ENC_LAYERS  # the C++ kernel ran, once per encoder layer

    # negative control: the op with index tensors it has not seen yet must read them, and the probe sees it
    value = torch.randn(1, 5, 2, 4)
    shapes, starts = torch.tensor([[2, 2], [1, 1]]), torch.tensor([0, 4])
    loc, w = torch.rand(1, 3, 2, 2, 2, 2), torch.rand(1, 3, 2, 2, 2)
    with _record_host_reads() as record:
        ms_deform_attn(value, shapes, starts, loc, w, impl="cpu")
    assert any(name == "tolist" for name, _ in record["reads"])
    with _record_host_reads() as record:
        bool(torch.tensor(1.0) > 0)
    assert [name for name, _ in record["reads"]] == ["__bool__"]


def test_input_checks_read_one_flag_per_map():
    """The value checks of an input map (finite; in [0, 1] for a previous mask) read one flag on the host: on
    CUDA every read synchronises, and a click checks its previous mask (twice with flip) before the network
    runs.  The details of an error are read only on the error path."""
    from adaptiveclick.modeling.meta_arch import _float_map_check, _read_flags

    def _check_float_map(t, shape, name, unit_range):
        _read_flags([_float_map_check(t, shape, name, unit_range)])

    prev = torch.rand(1, 16, 16)
    for t, unit in ((prev, True), (torch.rand(3, 16, 16) * 255, False)):
        with _record_host_reads() as record:
            _check_float_map(t, t.shape, "m", unit_range=unit)
        assert [name for name, _ in record["reads"]] == ["__bool__"], record["reads"]
    with _record_host_reads() as record:
        _check_float_map(torch.zeros(3, 4, 4, dtype=torch.uint8), (3, 4, 4), "m", unit_range=False)
    assert record["reads"] == []  # an integer image has no value to check
    for bad, match in ((torch.full((1, 4, 4), 1.5), r"must lie in \[0, 1\], got values in \[1.5, 1.5\]"),
                       (torch.full((1, 4, 4), float("inf")), "NaN or infinite"),
                       (torch.full((1, 4, 4), -0.5).half(), r"\[-0.5, -0.5\]")):
        with pytest.raises(ValueError, match=match):
            _check_float_map(bad, (1, 4, 4), "m", unit_range=True)
    # the flag is one pass (minimum and maximum): every kind of bad value must still set it, and a finite
    # image with values far outside 0..255 is not an error (only the previous mask has a range)
    for value in (float("nan"), float("inf"), -float("inf")):
        for unit in (False, True):
            t = torch.full((3, 5, 5), 0.5)
            t[1, 2, 3] = value
            with pytest.raises(ValueError, match="NaN or infinite"):
                _check_float_map(t, t.shape, "m", unit_range=unit)
    _check_float_map(torch.tensor([-1e30, 0.0, 3e38]).view(3, 1, 1), (3, 1, 1), "m", unit_range=False)
    for edge in (0.0, 1.0):
        _check_float_map(torch.full((1, 2, 2), edge), (1, 2, 2), "m", unit_range=True)
    _check_float_map(torch.zeros(3, 0, 4), (3, 0, 4), "m", unit_range=True)  # empty: nothing to check
    with pytest.raises(ValueError, match=r"\[0.0, 2.0\]"):
        _check_float_map(torch.tensor([[[0, 2]]], dtype=torch.uint8), (1, 1, 2), "m", unit_range=True)


def test_a_batch_reads_its_input_flags_once(tiny_model):
    """The value checks of every map of a batch (images, previous masks, training masks) are read as one flag
    per device: a flipped click's two items cost one read, not four.  An error still names the first bad map."""
    def batch():
        return [{"image": torch.rand(3, 16, 16) * 255, "clicks": torch.tensor([[4, 5, 1]]),
                 "prev_mask": torch.rand(1, 16, 16)} for _ in range(2)]

    with _record_host_reads() as record:
        tiny_model._check_inputs(batch(), training=False)
    # the click rows are host tensors, viewed by NumPy (``numpy``: no copy, no read of a device)
    assert [name for name, _ in record["reads"] if name != "numpy"] == ["__bool__"], record["reads"]
    for key, value, match in (("prev_mask", float("nan"), r"batched_inputs\[1\]\['prev_mask'\] contains NaN"),
                              ("prev_mask", 1.25, r"batched_inputs\[1\]\['prev_mask'\] must lie in \[0, 1\]"),
                              ("image", float("inf"), r"batched_inputs\[1\]\['image'\] contains NaN")):
        items = batch()
        items[1][key][0, 3, 3] = value
        with pytest.raises(ValueError, match=match):
            tiny_model._check_inputs(items, training=False)
    items = batch()
    items[0]["prev_mask"][0, 0, 0] = 2.0
    items[1]["image"][0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"batched_inputs\[0\]\['prev_mask'\]"):  # the first in input order
        tiny_model._check_inputs(items, training=False)
    items = batch()
    for item in items:
        item["gt_mask"] = torch.zeros(16, 16)
    items[1]["gt_mask"][2, 2] = 0.5
    with pytest.raises(ValueError, match=r"batched_inputs\[1\]\['gt_mask'\] must be binary"):
        tiny_model._check_inputs(items, training=True)
