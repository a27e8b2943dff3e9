"""The official trainer's step and click rounds, driven from our data (adaptiveclick.utils.official, training half).

``official_training_batch`` is pure tensor plumbing and is tested everywhere against hand-written batches.  The
step and the click rounds run the official code itself, imported from a local checkout
($ADAPTIVECLICK_OFFICIAL_ROOT, default /tmp/official_adaptiveclick); those tests are skipped without it.
Independent references: Adam's first step moves every parameter with a non-zero gradient by lr * |g| / (|g| + eps)
(so by at most lr, and by nearly lr where |g| >> eps); a new training click of round i sits in the slot the
official click index rule gives it, on a pixel the prediction of that round got wrong.
"""

import os

import numpy as np
import pytest
import torch

from adaptiveclick.utils import official

SIZE = 224
# a small official model (a 224-px input is one 224-px window; depth 4 -> every block global)
SMALL = dict(patch_size=16, embed_dim=64, depth=4, num_heads=2, fpn_out_dims=[32, 32, 32, 32], conv_dim=32,
             mask_dim=32, enc_layers=1, hidden_dim=32, nheads=4, dim_feedforward=64, num_queries=3, dec_layers=3)


def _sample(clicks, size=8, seed=0):
    rng = np.random.default_rng(seed)
    gt = np.zeros((size, size), np.uint8)
    gt[2:6, 1:5] = 1
    return {"image": torch.from_numpy(rng.integers(0, 256, (3, size, size), dtype=np.uint8)),
            "gt_mask": torch.from_numpy(gt), "clicks": torch.tensor(clicks, dtype=torch.int64)}


def test_training_batch_layout_by_hand():
    # K = 3 slots per sign: our rows (row, col, is_positive), unused (-1, -1, -1)
    a = _sample([[5, 6, 1], [-1, -1, -1], [-1, -1, -1], [7, 0, 0], [3, 3, 0], [-1, -1, -1]], seed=0)
    b = _sample([[1, 2, 1], [4, 4, 1], [-1, -1, -1], [-1, -1, -1], [-1, -1, -1], [-1, -1, -1]], seed=1)
    batch = official.official_training_batch([a, b])
    assert set(batch) == {"images", "instances", "points"}
    # official MultiPointSampler: the first click gets index 0, the other initial clicks 100
    expected_a = [[5, 6, 0], [-1, -1, -1], [-1, -1, -1], [7, 0, 100], [3, 3, 100], [-1, -1, -1]]
    expected_b = [[1, 2, 0], [4, 4, 100], [-1, -1, -1], [-1, -1, -1], [-1, -1, -1], [-1, -1, -1]]
    assert batch["points"].dtype == torch.float32
    assert batch["points"].tolist() == [expected_a, expected_b]
    assert batch["images"].shape == (2, 3, 8, 8) and batch["instances"].shape == (2, 1, 8, 8)
    assert batch["images"][1, 2, 3, 4].item() == pytest.approx(b["image"][2, 3, 4].item() / 255.0)
    assert batch["images"].max() <= 1.0 and batch["images"].min() >= 0.0
    assert batch["instances"][0, 0].sum().item() == 16 and batch["instances"][0, 0, 2, 1].item() == 1.0
    assert batch["instances"][0, 0, 0, 0].item() == 0.0


@pytest.mark.parametrize("samples, pattern", [
    ([], "at least one sample"),
    ([_sample([[1, 1, 1], [-1, -1, -1]]), _sample([[1, 1, 1], [-1, -1, -1]], size=10)], "share one image shape"),
    ([_sample([[-1, -1, -1], [-1, -1, -1]])], "no click"),
    ([_sample([[1, 1, 1], [-1, -1, -1], [2, 2, 0]])], r"clicks.*\(2K, 3\)"),
    ([dict(_sample([[1, 1, 1], [-1, -1, -1]]), gt_mask=torch.zeros(4, 4, dtype=torch.uint8))], "gt_mask"),
    ([dict(_sample([[1, 1, 1], [-1, -1, -1]]), image=torch.zeros(3, 8, 8))], "uint8"),
])
def test_training_batch_errors(samples, pattern):
    with pytest.raises(ValueError, match=pattern):
        official.official_training_batch(samples)


# -- with the official checkout ---------------------------------------------------------------------------


def _official_root():
    root = os.environ.get(official.OFFICIAL_ROOT_ENV, official.DEFAULT_OFFICIAL_ROOT)
    if not os.path.isfile(os.path.join(root, "isegm", "model", "is_adaptiveclick_model.py")):
        pytest.skip(f"official AdaptiveClick checkout not found at {root!r} (set {official.OFFICIAL_ROOT_ENV})")
    return root


def _object_batch(n=2, seed=0):
    """n samples of SIZE x SIZE with a rectangle object and one positive click inside it (24 slots per sign)."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        gt = np.zeros((SIZE, SIZE), np.uint8)
        top, left = 40 + 10 * i, 30 + 5 * i
        gt[top:top + 100, left:left + 120] = 1
        clicks = -np.ones((48, 3), np.int64)
        clicks[0] = (top + 50, left + 60, 1)
        samples.append({"image": torch.from_numpy(rng.integers(0, 256, (3, SIZE, SIZE), dtype=np.uint8)),
                        "gt_mask": torch.from_numpy(gt), "clicks": torch.from_numpy(clicks)})
    return official.official_training_batch(samples)


@pytest.fixture(scope="module")
def model_and_root():
    root = _official_root()
    torch.manual_seed(0)
    return official.build_official_model(root, size="base", img_size=SIZE, **SMALL), root


def test_official_optimizer_is_its_recipe(model_and_root):
    model, root = model_and_root
    optimizer = official.build_official_optimizer(model, root)
    assert type(optimizer) is torch.optim.Adam
    # the official get_optimizer makes one group per parameter tensor
    assert len(optimizer.param_groups) == len(list(model.parameters()))
    assert {g["lr"] for g in optimizer.param_groups} == {5e-5}
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.999) and optimizer.param_groups[0]["eps"] == 1e-8


def test_official_train_step_is_one_adam_step(model_and_root):
    model, root = model_and_root
    torch.manual_seed(1)
    optimizer = official.build_official_optimizer(model, root)
    batch = _object_batch()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = official.official_train_step(model, optimizer, batch)
    assert loss.ndim == 0 and not loss.requires_grad and torch.isfinite(loss) and loss.item() > 0
    lr = official.OFFICIAL_OPTIMIZER_PARAMS["lr"]
    moved, near_lr = 0, 0
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        delta = (p.detach() - before[name]).abs()
        g = p.grad.abs()
        # Adam, first step: |delta| = lr * |g| / (|g| + eps) (bias corrections cancel), up to the fp32 rounding
        # of the updated value (one ulp of |p|, e.g. 1.2e-7 near 1.0, i.e. 0.2 % of lr)
        expected = lr * g / (g + 1e-8)
        ulp = torch.finfo(torch.float32).eps * torch.maximum(before[name].abs(), p.detach().abs())
        assert bool(((delta - expected).abs() <= 1e-4 * expected + ulp + 1e-12).all()), name
        moved += int((delta > 0).sum())
        near_lr += int((delta > 0.99 * lr).sum())
    assert moved > 0.5 * sum(p.numel() for p in model.parameters())
    assert near_lr > 0.5 * moved


def test_build_puts_the_model_and_its_criterion_on_the_device():
    """The official model and criterion keep ``cfg.device`` as attributes (the criterion moves its class targets
    there): ``build_official_model(device=...)`` sets them with the parameters."""
    root = _official_root()
    model = official.build_official_model(root, size="base", img_size=SIZE, device="cpu", **SMALL)
    assert model.device == torch.device("cpu") and model.criterion.device == torch.device("cpu")
    assert {p.device for p in model.parameters()} == {torch.device("cpu")}


@pytest.mark.cuda
def test_official_train_step_runs_on_cuda():
    """On CUDA the official criterion indexes its host-built targets with labels of the target masks (an error
    with CUDA labels since torch 1.13) and puts its class targets on ``criterion.device``: the step must run,
    give a finite loss and move the weights."""
    root = _official_root()
    torch.manual_seed(0)
    model = official.build_official_model(root, size="base", img_size=SIZE, device="cuda", **SMALL)
    optimizer = official.build_official_optimizer(model, root)
    batch = {k: v.cuda() for k, v in _object_batch().items()}
    before = [p.detach().clone() for p in model.parameters()]
    loss = official.official_train_step(model, optimizer, batch)
    assert loss.is_cuda and torch.isfinite(loss) and loss.item() > 0
    assert any(not torch.equal(a, p.detach()) for a, p in zip(before, model.parameters()))
    prev, points = official.official_click_rounds(model, batch, 1, root)
    assert prev.is_cuda and points.shape == batch["points"].shape


@pytest.mark.parametrize("rounds", [1, 2])
def test_official_click_rounds_add_one_click_per_round(model_and_root, rounds):
    model, root = model_and_root
    batch = _object_batch()
    np.random.seed(0)  # the official get_next_points draws with np.random
    prev, points = official.official_click_rounds(model, batch, rounds, root)
    assert prev.shape == (2, 1, SIZE, SIZE) and float(prev.min()) >= 0 and float(prev.max()) <= 1
    assert torch.equal(batch["points"][:, 0], points[:, 0])  # the initial click is kept
    half = points.shape[1] // 2
    for b in range(2):
        new = [(slot, points[b, slot].tolist()) for slot in range(points.shape[1])
               if not torch.equal(points[b, slot], batch["points"][b, slot])]
        # round i writes slot half - i (positive) or 2 * half - i (negative) with index i (if any error is left)
        assert 1 <= len(new) <= rounds
        for slot, (row, col, index) in new:
            i = int(index)
            assert 1 <= i <= rounds and slot in (half - i, 2 * half - i)
            positive = slot < half
            assert batch["instances"][b, 0, int(row), int(col)].item() == float(positive)
    if rounds == 1:
        # the one new click corrects an error of that round's prediction (threshold 0.49 of get_next_points)
        for b in range(2):
            for slot in (half - 1, 2 * half - 1):
                row, col, index = points[b, slot].tolist()
                if index == 1:
                    p = prev[b, 0, int(row), int(col)].item()
                    assert (p < 0.49) if slot < half else (p > 0.49)
