"""Tests of adaptiveclick.engine: click rounds, the training step, optimizer/schedule, atomic checkpoints,
non-finite losses, resume, and the example picture.  Models are stubs or the tiny AdaptiveClick at 64 px."""

import copy
import logging
import multiprocessing
import os
import shutil
import signal

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.utils.events import EventStorage
from PIL import Image
from torch import nn

from adaptiveclick.clicks import Click
from adaptiveclick.config import add_adaptiveclick_config
from adaptiveclick.engine import (AtomicCheckpointer, ClickTrainer, IterativeClickTrainer, add_training_clicks,
                                  atomic_write, build_optimizer, clip_gradients, draw_example, lr_factor_function,
                                  random_init_warning, run_example_session, training_iou, vit_layer_id)
from adaptiveclick.evaluation import NoCProtocol

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = 4  # clicks per polarity in the stub samples


# ----------------------------------------------------------------------------------------------------------
# helpers


def make_sample(gt, clicks=(), ignore=None):
    """A mapped training sample (data contract) with a grey image, ``gt`` and clicks in the 2K slot layout."""
    gt = np.asarray(gt, dtype=np.uint8)
    arr = np.full((2 * K, 3), -1, dtype=np.int64)
    pos = [c for c in clicks if c[2] == 1]
    neg = [c for c in clicks if c[2] == 0]
    for i, c in enumerate(pos):
        arr[i] = c
    for i, c in enumerate(neg):
        arr[K + i] = c
    h, w = gt.shape
    return {"image": torch.full((3, h, w), 128, dtype=torch.uint8), "gt_mask": torch.from_numpy(gt),
            "ignore_mask": torch.zeros(h, w, dtype=torch.bool) if ignore is None else torch.from_numpy(ignore),
            "clicks": torch.from_numpy(arr), "height": h, "width": w}


def rect(h, w, r0, r1, c0, c1):
    m = np.zeros((h, w), dtype=np.uint8)
    m[r0:r1 + 1, c0:c1 + 1] = 1
    return m


def toy_prediction(clicks, h, w):
    """protocol.md C7's toy predictor: within distance 3 of a positive click, minus within 2 of a negative."""
    rr, cc = np.mgrid[:h, :w]
    pred = np.zeros((h, w), dtype=bool)
    for r, c, p in np.asarray(clicks).tolist():
        if r < 0:
            continue
        d2 = (rr - r) ** 2 + (cc - c) ** 2
        if p == 1:
            pred |= d2 <= 9
    for r, c, p in np.asarray(clicks).tolist():
        if r >= 0 and p == 0:
            pred &= ~((rr - r) ** 2 + (cc - c) ** 2 <= 4)
    return pred


class ToyModel(nn.Module):
    """Records every call.  Eval: logits +-8 of the toy predictor.  Train: losses of one parameter; the loss
    term ``loss_b`` becomes NaN at the training calls listed in ``nan_at``."""

    def __init__(self, nan_at=(), nan_logits=False, nan_grad_at=()):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, -2.0]))
        self.calls = []
        self.train_calls = 0
        self.nan_at = set(nan_at)
        self.nan_logits = nan_logits
        self.nan_grad_at = set(nan_grad_at)

    def forward(self, batched_inputs):
        self.calls.append({"training": self.training, "grad": torch.is_grad_enabled(),
                           "clicks": [x["clicks"].clone() for x in batched_inputs],
                           "prev": [None if x.get("prev_mask") is None else x["prev_mask"].clone()
                                    for x in batched_inputs]})
        if self.training:
            self.train_calls += 1
            b = self.w.sum() * (float("nan") if self.train_calls in self.nan_at else 1.0)
            if self.train_calls in self.nan_grad_at:  # value 0, gradient 0.5 / sqrt(0) = inf
                b = b + torch.sqrt(self.w - self.w.detach()).sum()
            return {"loss_a": (self.w ** 2).sum(), "loss_b": b}
        out = []
        for x in batched_inputs:
            h, w = x["image"].shape[-2:]
            logits = torch.where(torch.from_numpy(toy_prediction(x["clicks"], h, w)), 8.0, -8.0)[None]
            out.append({"mask_logits": logits * float("nan") if self.nan_logits else logits})
        return out


def tiny_cfg(tmp_path, *opts):
    cfg = get_cfg()
    add_adaptiveclick_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs/synthetic/tiny.yaml"))
    cfg.merge_from_list(["OUTPUT_DIR", str(tmp_path), "TRAINER.EVAL_AFTER_TRAIN", False, "SEED", 3,
                         "INPUT.CLICKS.MAX_NUM_POINTS", K] + list(opts))
    return cfg


def repeat_loader(batch):
    while True:
        yield [dict(x) for x in batch]


# ----------------------------------------------------------------------------------------------------------
# one click round


def test_add_training_clicks_positive_from_false_negatives():
    # protocol.md C12: GT rows 1..5, cols 1..4 of 7 x 7, empty prediction -> positive click among six pixels
    gt = rect(7, 7, 1, 5, 1, 4)
    expected = {(2, 2), (2, 3), (3, 2), (3, 3), (4, 2), (4, 3)}
    seen = set()
    sample = make_sample(gt, [(3, 3, 1)])
    before = sample["clicks"].clone()
    probs = [torch.zeros(1, 7, 7)]
    for seed in range(60):
        out = add_training_clicks([sample], probs, 1, np.random.default_rng(seed))[0]
        row = tuple(out["clicks"][K - 1].tolist())
        assert row[2] == 1 and row[:2] in expected
        seen.add(row[:2])
        # every other slot unchanged, the input sample untouched, prev_mask is the prediction
        keep = [i for i in range(2 * K) if i != K - 1]
        assert torch.equal(out["clicks"][keep], before[keep])
        assert torch.equal(sample["clicks"], before)
        assert out["prev_mask"].dtype == torch.float32 and torch.equal(out["prev_mask"], probs[0])
    assert seen == expected  # uniform over the candidates: all six occur in 60 draws
    # round 2 writes slot K - 2
    out = add_training_clicks([sample], probs, 2, np.random.default_rng(0))[0]
    assert out["clicks"][K - 2, 2] == 1 and tuple(out["clicks"][K - 1].tolist()) == (-1, -1, -1)


def test_add_training_clicks_negative_none_and_ignore():
    h = w = 9
    # background-only sample, prediction 0.9 on rows 0..8 cols 0..2: FP -> negative click in slot 2K - 1
    prev = torch.zeros(1, h, w)
    prev[0, :, :3] = 0.9
    out = add_training_clicks([make_sample(np.zeros((h, w)))], [prev], 1, np.random.default_rng(1))[0]
    r, c, p = out["clicks"][2 * K - 1].tolist()
    assert p == 0 and c <= 2
    assert (out["clicks"][:2 * K - 1] == -1).all()
    # perfect prediction: no click, clicks unchanged
    gt = rect(h, w, 2, 5, 2, 6)
    sample = make_sample(gt, [(3, 3, 1)])
    out = add_training_clicks([sample], [torch.from_numpy(gt).float()[None]], 1, np.random.default_rng(0))[0]
    assert torch.equal(out["clicks"], sample["clicks"])
    # an ignored object is no error either
    sample = make_sample(gt, [(3, 3, 1)], ignore=gt.astype(bool))
    out = add_training_clicks([sample], [torch.zeros(1, h, w)], 1, np.random.default_rng(0))[0]
    assert torch.equal(out["clicks"], sample["clicks"])
    with pytest.raises(ValueError, match="probs\\[0\\]"):
        add_training_clicks([sample], [torch.zeros(h, w)], 1, np.random.default_rng(0))


def test_training_iou_hand_computed():
    gt = rect(6, 6, 0, 1, 0, 2)  # 6 px
    prob = torch.zeros(1, 6, 6)
    prob[0, 1, 1:3] = 0.8  # 2 px inside the object
    prob[0, 4, 4:6] = 0.5  # 2 px outside
    prob[0, 5, 5] = 0.49  # exactly the threshold: not predicted
    assert training_iou([make_sample(gt)], [prob]) == pytest.approx(2 / 8)
    ignore = np.zeros((6, 6), dtype=bool)
    ignore[4, 5] = True
    assert training_iou([make_sample(gt, ignore=ignore)], [prob]) == pytest.approx(2 / 7)
    assert training_iou([make_sample(np.zeros((6, 6)))], [torch.zeros(1, 6, 6)]) is None


# ----------------------------------------------------------------------------------------------------------
# the training step with a stub model


def _trainer(model, batch, **kw):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return IterativeClickTrainer(model, repeat_loader(batch), opt, **kw)


def test_run_step_click_rounds_feed_clicks_and_prev_mask():
    h = w = 32
    big = rect(h, w, 4, 19, 4, 27)  # the toy's radius-3 disk leaves a large false-negative area
    small = rect(h, w, 10, 11, 10, 11)  # the disk overflows a 2 x 2 object: false positives win
    batch = [make_sample(big, [(12, 15, 1)]), make_sample(small, [(10, 10, 1)])]
    model = ToyModel()
    trainer = _trainer(model, batch, max_click_rounds=3, seed=5, train_iou_period=1)
    rounds_seen = []
    with EventStorage(0) as storage:
        for it in range(40):
            trainer.iter = storage.iter = it
            model.calls.clear()
            trainer.run_step()
            # calls: n no-grad rounds, the training forward, the no-grad train-IoU forward on its inputs
            evals, train, iou_call = model.calls[:-2], model.calls[-2], model.calls[-1]
            assert train["training"] and train["grad"]
            assert all(not c["training"] and not c["grad"] for c in evals + [iou_call])
            assert model.training  # train mode restored
            assert all(torch.equal(a, b) for a, b in zip(iou_call["clicks"], train["clicks"]))
            assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(iou_call["prev"], train["prev"]))
            n = len(evals)
            assert 0 <= n <= 3
            rounds_seen.append(n)
            assert storage.latest()["click_rounds"][0] == n
            # round i sees the clicks of round i - 1 plus one click from its error, and its prediction
            sequence = evals + [train]
            assert all(p is None for p in sequence[0]["prev"])
            for i in range(1, n + 1):
                prev_call, call = sequence[i - 1], sequence[i]
                for j, sample in enumerate(batch):
                    pred = toy_prediction(prev_call["clicks"][j], h, w)
                    expected_prev = torch.sigmoid(torch.where(torch.from_numpy(pred), 8.0, -8.0))[None]
                    assert torch.equal(call["prev"][j], expected_prev)
                    changed = (call["clicks"][j] != prev_call["clicks"][j]).any(1).nonzero().flatten().tolist()
                    assert len(changed) == 1
                    r, c, p = call["clicks"][j][changed[0]].tolist()
                    gt = sample["gt_mask"].numpy().astype(bool)
                    if p == 1:
                        assert changed[0] == K - i and gt[r, c] and not pred[r, c]  # a false negative
                    else:
                        assert changed[0] == 2 * K - i and not gt[r, c] and pred[r, c]  # a false positive
                    if j == 1:
                        assert p == 0 or i > 1  # the small object's first extra click is negative
            clicks = [int(((x[:, 0] >= 0)).sum()) for x in train["clicks"]]
            assert storage.latest()["num_clicks"][0] == pytest.approx(np.mean(clicks))
            assert 0.0 <= storage.latest()["train_iou"][0] <= 1.0
    assert set(rounds_seen) == {0, 1, 2, 3}
    # SGD step on loss_a + loss_b = |w|^2 + sum(w): 40 steps of w <- w - 0.1 (2w + 1) reach -0.5
    assert torch.allclose(model.w.detach(), torch.tensor([-0.5, -0.5]), atol=1e-3)
    assert storage.latest()["total_loss"][0] == pytest.approx(-0.5, abs=1e-3)


def test_click_rounds_are_reproducible_per_iteration():
    batch = [make_sample(rect(24, 24, 2, 20, 2, 20), [(11, 11, 1)])]
    runs = []
    for _ in range(2):
        model = ToyModel()
        trainer = _trainer(model, batch, max_click_rounds=3, seed=11, train_iou_period=0)
        with EventStorage(7) as storage:
            trainer.iter = storage.iter = 7
            trainer.run_step()
        runs.append(model.calls[-1]["clicks"][0])
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("model_kw, amp_dtype, message", [
    ({"nan_at": {2}}, None, r"iteration 1: loss_b = nan"),
    # a finite loss whose gradient is not: caught before the optimizer step, unless fp16's scaler handles it
    ({"nan_grad_at": {2}}, None, r"non-finite gradients at iteration 1 \(the loss was finite\) in w"),
    ({"nan_grad_at": {2}}, torch.bfloat16, r"non-finite gradients at iteration 1 \(the loss was finite\) in w"),
])
def test_non_finite_loss_or_gradient_names_iteration_and_keeps_weights(model_kw, amp_dtype, message):
    model = ToyModel(**model_kw)
    trainer = _trainer(model, [make_sample(rect(16, 16, 2, 9, 2, 9), [(5, 5, 1)])], max_click_rounds=0,
                       amp_dtype=amp_dtype)
    with EventStorage(0) as storage:
        trainer.run_step()
        before = model.w.detach().clone()
        trainer.iter = storage.iter = 1
        with pytest.raises(FloatingPointError, match=message):
            trainer.run_step()
    assert torch.equal(model.w.detach(), before) and torch.isfinite(before).all()


def test_all_finite_per_dtype_and_device_group_leaves_values_alone():
    from adaptiveclick.engine.trainer import all_finite

    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        t = torch.tensor([1.5, -3.0, 65000.0 if dtype == torch.float16 else 1e30], dtype=dtype)
        before = t.clone()
        assert all_finite([torch.ones(2), t]) and torch.equal(t, before)
        for bad in (float("nan"), float("inf"), float("-inf")):
            u = before.clone()
            u[1] = bad
            assert not all_finite([torch.ones(2), u]), (dtype, bad)
    assert all_finite([]) and all_finite([torch.arange(3)])


def test_fp16_scaler_skips_a_non_finite_gradient_step_itself():
    model = ToyModel(nan_grad_at={1})
    trainer = _trainer(model, [make_sample(rect(16, 16, 2, 9, 2, 9), [(5, 5, 1)])], max_click_rounds=0,
                       amp_dtype=torch.float16)
    before = model.w.detach().clone()
    scale = trainer.grad_scaler.get_scale()
    with EventStorage(0):
        trainer.run_step()  # no error: the scaler finds the inf, skips the step and lowers the scale
    assert torch.equal(model.w.detach(), before) and trainer.grad_scaler.get_scale() < scale


def test_non_finite_round_prediction_raises():
    model = ToyModel(nan_logits=True)
    trainer = _trainer(model, [make_sample(rect(16, 16, 2, 9, 2, 9), [(5, 5, 1)])], max_click_rounds=3)
    with EventStorage(0) as storage:
        for it in range(20):  # some iteration draws >= 1 round
            trainer.iter = storage.iter = it
            if np.random.default_rng(np.random.SeedSequence([0, 0, it])).integers(0, 4):
                with pytest.raises(FloatingPointError, match=f"iteration {it}, click round 1"):
                    trainer.run_step()
                break
        else:
            pytest.fail("no iteration drew a click round")


def test_inner_trainer_argument_checks():
    model = ToyModel()
    for kw, msg in [({"max_click_rounds": -1}, "max_click_rounds"), ({"amp_dtype": torch.float64}, "amp_dtype"),
                    ({"clip_type": "l3"}, "clip_type"), ({"seed": -2}, "seed"), ({"train_iou_period": 1.5},
                                                                                  "train_iou_period")]:
        with pytest.raises(ValueError, match=msg):
            _trainer(model, [], **kw)


# ----------------------------------------------------------------------------------------------------------
# optimizer, schedule, clipping


def test_vit_layer_ids_and_lr_factors():
    assert vit_layer_id("backbone.net.patch_embed.proj.weight", 4) == 0
    assert vit_layer_id("backbone.net.pos_embed", 4) == 0
    assert vit_layer_id("backbone.net.blocks.0.attn.qkv.weight", 4) == 1
    assert vit_layer_id("backbone.net.blocks.3.mlp.fc2.bias", 4) == 4
    assert vit_layer_id("backbone.pyramid.down_4.0.weight", 4) == 5
    names = [f"backbone.net.blocks.{i}.w" for i in range(4)] + ["backbone.net.pos_embed", "head.w"]
    f = lr_factor_function(names, backbone_multiplier=0.1, layer_decay=0.5)
    assert f("head.w") == 1.0
    assert f("backbone.net.pos_embed") == pytest.approx(0.1 * 0.5 ** 5)
    assert f("backbone.net.blocks.0.w") == pytest.approx(0.1 * 0.5 ** 4)
    assert f("backbone.net.blocks.3.w") == pytest.approx(0.1 * 0.5)
    assert f("backbone.pyramid.x") == pytest.approx(0.1)
    with pytest.raises(ValueError, match="layer_decay"):
        lr_factor_function(names, layer_decay=1.5)
    with pytest.raises(ValueError, match="backbone_multiplier"):
        lr_factor_function(names, backbone_multiplier=0)


def test_build_optimizer_official_adam_and_multipliers(tmp_path):
    import adaptiveclick.modeling  # noqa: F401
    from detectron2.modeling import build_model

    cfg = tiny_cfg(tmp_path, "SOLVER.BASE_LR", 5e-5)
    model = build_model(cfg)
    opt = build_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.Adam)
    for g in opt.param_groups:
        assert g["lr"] == 5e-5 and g["betas"] == (0.9, 0.999) and g["eps"] == 1e-8 and g["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))

    cfg = tiny_cfg(tmp_path, "SOLVER.BASE_LR", 1e-4, "SOLVER.BACKBONE_MULTIPLIER", 0.1, "SOLVER.LAYER_DECAY", 0.5)
    opt = build_optimizer(cfg, model)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert lr_of[id(named["transformer_decoder.class_embed.weight"])] == pytest.approx(1e-4)
    assert lr_of[id(named["backbone.pyramid.down_4.0.weight"])] == pytest.approx(1e-5)
    assert lr_of[id(named["backbone.net.blocks.3.attn.qkv.weight"])] == pytest.approx(1e-5 * 0.5)
    assert lr_of[id(named["backbone.net.blocks.0.attn.qkv.weight"])] == pytest.approx(1e-5 * 0.5 ** 4)
    assert lr_of[id(named["backbone.net.pos_embed"])] == pytest.approx(1e-5 * 0.5 ** 5)

    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_optimizer(tiny_cfg(tmp_path, "SOLVER.OPTIMIZER", "LION"), model)


def test_build_optimizer_fused_by_default_same_update_and_fallback(tmp_path, monkeypatch, caplog):
    """SOLVER.FUSED (default on): Adam with PyTorch's fused kernel, a few operators per step instead of ~18 per
    parameter, giving the default implementation's update up to float rounding; a torch or device without the
    kernel falls back to the default implementation with a log line; SOLVER.FUSED must be a boolean."""
    import logging

    import adaptiveclick.modeling  # noqa: F401
    from detectron2.modeling import build_model

    from adaptiveclick.utils.op_count import count_operators

    cfg = tiny_cfg(tmp_path, "SOLVER.BASE_LR", 1e-3)
    torch.manual_seed(0)
    fused_model = build_model(cfg)
    plain_model = copy.deepcopy(fused_model)
    fused = build_optimizer(cfg, fused_model)
    plain = build_optimizer(tiny_cfg(tmp_path, "SOLVER.BASE_LR", 1e-3, "SOLVER.FUSED", False), plain_model)
    assert fused.defaults["fused"] is True and not plain.defaults["fused"]
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        for p, q in zip(fused_model.parameters(), plain_model.parameters()):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        fused_counts, _ = count_operators(fused.step)
        plain_counts, _ = count_operators(plain.step)
    n = len(list(fused_model.parameters()))
    assert fused_counts["compute"] < 10 < n < plain_counts["compute"], (fused_counts, plain_counts, n)
    moved = max(float((p.detach() - q.detach()).abs().max()) for p, q in zip(fused_model.parameters(),
                                                                            plain_model.parameters()))
    assert moved < 1e-6  # the two updates agree (each step moves a weight by up to ~1e-3)

    real_adam = torch.optim.Adam

    def no_fused(params, **kwargs):
        if kwargs.get("fused"):
            raise RuntimeError("`fused=True` requires all the params to be on a supported device")
        return real_adam(params, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", no_fused)
    with caplog.at_level(logging.INFO, logger="adaptiveclick.engine.solver"):
        opt = build_optimizer(cfg, fused_model)
    assert not opt.defaults["fused"] and "fused ADAM unavailable" in caplog.text
    bad = tiny_cfg(tmp_path)
    bad.SOLVER.FUSED = "yes"  # (merge_from_list refuses it already: yacs keeps the default's type)
    with pytest.raises(ValueError, match="SOLVER.FUSED must be true or false"):
        build_optimizer(bad, fused_model)


def test_clip_gradients_hand_computed():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(1))

    def set_grads():
        a.grad = torch.tensor([3.0, 4.0])
        b.grad = torch.tensor([12.0])

    set_grads()
    total = clip_gradients([a, b], "full_model", 6.5)  # total norm 13 -> scale 0.5
    assert float(total) == pytest.approx(13.0)
    assert torch.allclose(a.grad, torch.tensor([1.5, 2.0]), atol=1e-5) and torch.allclose(b.grad, torch.tensor([6.0]))
    set_grads()
    clip_gradients([a, b], "norm", 2.5)  # per parameter: a 5 -> 2.5, b 12 -> 2.5
    assert torch.allclose(a.grad, torch.tensor([1.5, 2.0]), atol=1e-5) and torch.allclose(b.grad, torch.tensor([2.5]))
    set_grads()
    clip_gradients([a, b], "value", 3.5)
    assert torch.equal(a.grad, torch.tensor([3.0, 3.5])) and torch.equal(b.grad, torch.tensor([3.5]))
    with pytest.raises(ValueError, match="clip_type"):
        clip_gradients([a], "max", 1.0)


# ----------------------------------------------------------------------------------------------------------
# ClickTrainer: checkpoints, non-finite loss, resume


class StubTrainer(ClickTrainer):
    """ClickTrainer with an injected model factory and a fixed-batch loader."""

    model_factory = None
    batch = None

    @classmethod
    def build_model(cls, cfg):
        return cls.model_factory()

    @classmethod
    def build_train_loader(cls, cfg):
        return repeat_loader(cls.batch)


def _stub_trainer(model_factory, batch):
    return type("T", (StubTrainer,), {"model_factory": staticmethod(model_factory), "batch": batch})


def test_non_finite_loss_stops_training_and_keeps_last_good_checkpoint(tmp_path):
    model = ToyModel(nan_at={4})
    cls = _stub_trainer(lambda: model, [make_sample(rect(16, 16, 2, 9, 2, 9), [(5, 5, 1)])])
    trainer = cls(tiny_cfg(tmp_path, "SOLVER.MAX_ITER", 10, "SOLVER.CHECKPOINT_PERIOD", 1,
                           "TRAINER.EVAL_AFTER_TRAIN", True))
    trainer.resume_or_load(resume=False)
    with pytest.raises(FloatingPointError, match=r"iteration 3: loss_b = nan"):
        trainer.train()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000002.pth"
    assert not (tmp_path / "model_final.pth").exists() and not (tmp_path / "noc").exists()
    saved = torch.load(tmp_path / "model_0000002.pth", weights_only=False)
    assert saved["iteration"] == 2 and torch.equal(saved["model"]["w"], model.w.detach())


def test_training_a_vit_from_random_weights_is_warned_about(tmp_path, caplog):
    cfg = tiny_cfg(tmp_path)
    assert not cfg.MODEL.WEIGHTS and not cfg.MODEL.VIT.PRETRAINED
    assert "MODEL.VIT.PRETRAINED" in random_init_warning(cfg, resumed=False)
    assert random_init_warning(cfg, resumed=True) is None
    assert random_init_warning(tiny_cfg(tmp_path, "MODEL.VIT.PRETRAINED", "mae.pth"), resumed=False) is None
    assert random_init_warning(tiny_cfg(tmp_path, "MODEL.WEIGHTS", "model.pth"), resumed=False) is None
    model = ToyModel()
    cls = _stub_trainer(lambda: model, [make_sample(rect(16, 16, 2, 9, 2, 9), [(5, 5, 1)])])
    with caplog.at_level(logging.WARNING, logger="adaptiveclick.engine.trainer"):
        cls(cfg).resume_or_load(resume=False)
    assert any("trains from random initialisation" in r.getMessage() for r in caplog.records)


def _fixed_batch(size=64):
    rng = np.random.default_rng(0)
    batch = []
    for r0, c0 in ((8, 10), (20, 6)):
        gt = rect(size, size, r0, r0 + 24, c0, c0 + 30)
        img = rng.integers(0, 120, (3, size, size)).astype(np.uint8)
        img[:, gt.astype(bool)] += 120
        s = make_sample(gt, [(r0 + 12, c0 + 15, 1)])
        s["image"] = torch.from_numpy(img)
        batch.append(s)
    return batch


def test_resume_restores_iteration_optimizer_scheduler_scaler_exactly(tmp_path):
    import adaptiveclick.modeling  # noqa: F401
    from detectron2.modeling import build_model

    opts = ["SOLVER.MAX_ITER", 4, "SOLVER.STEPS", (3,), "SOLVER.CHECKPOINT_PERIOD", 1, "SOLVER.IMS_PER_BATCH", 2,
            "INPUT.AUG.CROP_SIZE", [64, 64], "SOLVER.AMP.ENABLED", True, "SOLVER.AMP.PRECISION", "float16",
            "TRAINER.TRAIN_IOU_PERIOD", 2]
    batch = _fixed_batch()
    full_dir, resumed_dir = tmp_path / "full", tmp_path / "resumed"
    cfg = tiny_cfg(full_dir, *opts)
    cls = _stub_trainer(lambda: build_model(cfg), batch)

    torch.manual_seed(0)
    full = cls(cfg)
    full.resume_or_load(resume=False)
    full.train()
    assert full.scheduler.get_last_lr()[0] == pytest.approx(1e-5)  # x0.1 after step 3

    # a run interrupted after iteration 1: only its checkpoint exists
    resumed_dir.mkdir()
    shutil.copy(full_dir / "model_0000001.pth", resumed_dir / "model_0000001.pth")
    (resumed_dir / "last_checkpoint").write_text("model_0000001.pth")
    torch.manual_seed(1)  # a different initialisation, overwritten by the checkpoint
    resumed = cls(tiny_cfg(resumed_dir, *opts))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2
    saved = torch.load(resumed_dir / "model_0000001.pth", weights_only=False)["trainer"]
    opt_state = resumed.optimizer.state_dict()
    assert opt_state["param_groups"] == saved["_trainer"]["optimizer"]["param_groups"]
    for key, state in saved["_trainer"]["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(opt_state["state"][key][name], value)
    assert resumed.scheduler.state_dict() == saved["hooks"]["LRScheduler"]
    assert resumed._trainer.grad_scaler.state_dict() == saved["_trainer"]["grad_scaler"]
    assert saved["_trainer"]["grad_scaler"]["scale"] > 0  # fp16: a real scaler was saved

    resumed.train()
    for (name, a), (_, b) in zip(full.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(a, b), name
    final = torch.load(resumed_dir / "model_final.pth", weights_only=False)
    assert final["iteration"] == 3


def test_bf16_autocast_step_on_cpu(tmp_path):
    import adaptiveclick.modeling  # noqa: F401
    from detectron2.modeling import build_model

    cfg = tiny_cfg(tmp_path, "SOLVER.MAX_ITER", 1, "INPUT.AUG.CROP_SIZE", [64, 64], "SOLVER.AMP.ENABLED", True,
                   "SOLVER.AMP.PRECISION", "bfloat16", "SOLVER.CLIP_GRADIENTS.ENABLED", True,
                   "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "full_model", "SOLVER.CHECKPOINT_PERIOD", 100)
    trainer = _stub_trainer(lambda: build_model(cfg), _fixed_batch())(cfg)
    assert trainer._trainer.amp_dtype == torch.bfloat16 and not trainer._trainer.grad_scaler.is_enabled()
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) > len(before) // 2
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    with pytest.raises(ValueError, match="SOLVER.AMP.PRECISION"):
        ClickTrainer.inner_trainer_kwargs(tiny_cfg(tmp_path, "SOLVER.AMP.PRECISION", "float8"))


# ----------------------------------------------------------------------------------------------------------
# atomic checkpoints


def _save_then_get_killed(save_dir):
    """Child process: one good checkpoint, then a SIGKILL in the middle of writing the next one."""
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ckpt = AtomicCheckpointer(model, save_dir=save_dir)
    ckpt.save("model_0000000")
    with torch.no_grad():
        model.weight.fill_(2.0)

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = dying_save
    ckpt.save("model_0000001")


def test_checkpoint_killed_mid_write_keeps_last_good(tmp_path):
    proc = multiprocessing.get_context("fork").Process(target=_save_then_get_killed, args=(str(tmp_path),))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    files = sorted(os.listdir(tmp_path))
    temps = [f for f in files if f.endswith(".tmp")]
    assert len(temps) == 1 and temps[0].startswith(".model_0000001.pth.")
    assert "model_0000001.pth" not in files
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000000.pth"

    model = nn.Linear(3, 2)
    ckpt = AtomicCheckpointer(model, save_dir=str(tmp_path))
    assert ckpt.get_all_checkpoint_files() == [str(tmp_path / "model_0000000.pth")]
    ckpt.resume_or_load("", resume=True)
    assert torch.equal(model.weight.detach(), torch.ones(2, 3))
    assert ckpt.remove_stale_temp_files() == [str(tmp_path / temps[0])]
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_atomic_write_failure_leaves_old_file(tmp_path):
    path = tmp_path / "data.bin"
    atomic_write(str(path), lambda f: f.write(b"old"))

    def broken(f):
        f.write(b"new, partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(str(path), broken)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["data.bin"]
    umask = os.umask(0)
    os.umask(umask)
    assert (os.stat(path).st_mode & 0o777) == (0o666 & ~umask)


# ----------------------------------------------------------------------------------------------------------
# the example picture


class ToyPredictor:
    """Probability predictor of protocol.md C7."""

    def __call__(self, image, clicks, prev_mask):
        rows = [(c.row, c.col, int(c.is_positive)) for c in clicks]
        return toy_prediction(np.array(rows), *image.shape[:2]).astype(np.float32)


def test_example_session_matches_protocol_c7_and_draws(tmp_path):
    gt = np.zeros((10, 10), dtype=bool)
    gt[1:9, 1:5] = True
    gt[5:9, 5:9] = True
    image = np.zeros((10, 10, 3), dtype=np.uint8)
    snaps = run_example_session(ToyPredictor(), image, gt, NoCProtocol(), [1, 3, 5])
    assert [s["clicks"] for s in snaps] == [1, 3, 5]
    # protocol.md C7: IoU after 1, 3, 5 clicks and the clicks themselves
    assert [round(s["iou"], 4) for s in snaps] == [0.5098, 0.6761, 0.6719]
    assert snaps[-1]["click_list"] == [Click(True, 6, 3), Click(True, 2, 2), Click(True, 7, 7), Click(False, 0, 0),
                                       Click(False, 0, 3)]
    path = tmp_path / "pics" / "example.png"
    draw_example(image, gt, snaps, str(path), title="toy")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 3 * im.size[1]  # four panels side by side
    with pytest.raises(ValueError, match="click_counts"):
        run_example_session(ToyPredictor(), image, gt, NoCProtocol(), [0, 2])


# ----------------------------------------------------------------------------------------------------------
# pinned training batches (issue 10's data-loading lever)


def test_pin_train_batches_only_for_cuda_training(tmp_path, monkeypatch):
    from adaptiveclick.engine.trainer import pin_train_batches

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pin_train_batches(tiny_cfg(tmp_path, "MODEL.DEVICE", "cuda")) is True
    assert pin_train_batches(tiny_cfg(tmp_path, "MODEL.DEVICE", "cuda:1")) is True
    assert pin_train_batches(tiny_cfg(tmp_path, "MODEL.DEVICE", "cuda", "DATALOADER.PIN_MEMORY", False)) is False
    assert pin_train_batches(tiny_cfg(tmp_path, "MODEL.DEVICE", "cpu")) is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pin_train_batches(tiny_cfg(tmp_path, "MODEL.DEVICE", "cuda")) is False


def test_train_loader_gets_the_pin_memory_setting(tmp_path, monkeypatch):
    import adaptiveclick.engine.trainer as trainer_module

    seen = {}

    def fake_loader(cfg, mapper, **kwargs):
        seen.update(kwargs, mapper=type(mapper).__name__)
        return "loader"

    monkeypatch.setattr(trainer_module, "build_click_train_loader", fake_loader)
    assert ClickTrainer.build_train_loader(tiny_cfg(tmp_path, "MODEL.DEVICE", "cpu")) == "loader"
    assert seen == {"pin_memory": False, "mapper": "ClickTrainingMapper"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    ClickTrainer.build_train_loader(tiny_cfg(tmp_path, "MODEL.DEVICE", "cuda"))
    assert seen["pin_memory"] is True


def test_training_loader_keeps_images_without_objects(tmp_path):
    # RITM / official: an image whose objects were all filtered out is still drawn, as a background sample
    from detectron2.data import DatasetCatalog

    name = "test_engine_empty_images"
    from adaptiveclick.data.datasets.common import make_annotation

    dicts = []
    for stem, objects in (("with", [rect(16, 16, 2, 9, 2, 9)]), ("without", [])):
        Image.fromarray(np.full((16, 16, 3), 100, dtype=np.uint8)).save(tmp_path / f"{stem}.png")
        dicts.append({"file_name": str(tmp_path / f"{stem}.png"), "height": 16, "width": 16, "image_id": stem,
                      "annotations": [make_annotation(m.astype(bool)) for m in objects]})
    DatasetCatalog.register(name, lambda: dicts)
    try:
        cfg = tiny_cfg(tmp_path, "DATASETS.TRAIN", (name,), "DATALOADER.NUM_WORKERS", 0, "SOLVER.IMS_PER_BATCH", 8,
                       "INPUT.AUG.CROP_SIZE", [16, 16])
        assert cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS is False
        batch = next(iter(ClickTrainer.build_train_loader(cfg)))
        files = {os.path.basename(s["file_name"]) for s in batch}
        assert files == {"with.png", "without.png"}
        assert all(not s["gt_mask"].any() for s in batch if s["file_name"].endswith("without.png"))
    finally:
        DatasetCatalog.remove(name)


@pytest.mark.cuda
def test_pinned_loader_batches_train_on_cuda(tmp_path):
    """On a GPU: the real training loader pins the mapped tensors, and a training step on them works."""
    cfg = tiny_cfg(tmp_path, "MODEL.DEVICE", "cuda", "DATALOADER.NUM_WORKERS", 1, "SOLVER.IMS_PER_BATCH", 2)
    batch = next(iter(ClickTrainer.build_train_loader(cfg)))
    assert len(batch) == 2
    assert all(s["image"].is_pinned() and s["gt_mask"].is_pinned() and s["clicks"].is_pinned() for s in batch)
    from detectron2.modeling import build_model

    model = build_model(cfg).train()
    with EventStorage(0):
        losses = model(batch)
    total = sum(losses.values())
    assert torch.isfinite(total) and total.device.type == "cuda"
    total.backward()


# ----------------------------------------------------------------------------------------------------------
# strict checkpoint loading


def _saved(tmp_path, name, state):
    path = tmp_path / name
    torch.save({"model": state}, path)
    return str(path)


def test_strict_load_rejects_other_shapes_and_names_them(tmp_path):
    from adaptiveclick.engine import CheckpointError

    source = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    path = _saved(tmp_path, "narrow.pth", source.state_dict())
    model = nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as e:
        AtomicCheckpointer(model).load(path)
    message = str(e.value)
    assert path in message and "3 tensor(s) of another shape" in message
    assert "0.weight (checkpoint (4, 3), model (5, 3))" in message and "1.bias" not in message
    assert "strict=False" in message
    # non-strict: detectron2's behaviour, the mis-shaped tensors keep their values, the others load
    AtomicCheckpointer(model, strict=False).load(path)
    assert torch.equal(model[1].bias, source[1].bias)
    assert torch.equal(model[0].weight, before["0.weight"])


def test_strict_load_rejects_missing_keys_listing_ten_and_the_count(tmp_path):
    from adaptiveclick.engine import CheckpointError

    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(8)])  # 16 tensors
    with pytest.raises(CheckpointError, match=r"16 model parameter\(s\)/buffer\(s\) not in the checkpoint: "
                                              r"0\.weight, 0\.bias, .*4\.bias, \.\.\. \(6 more\)") as e:
        AtomicCheckpointer(model).load(_saved(tmp_path, "empty.pth", {}))
    assert "empty.pth" in str(e.value) and "5.weight" not in str(e.value)
    partial = {k: v for k, v in model.state_dict().items() if k != "7.bias"}
    with pytest.raises(CheckpointError, match=r"1 model parameter\(s\)/buffer\(s\) not in the checkpoint: 7\.bias\. "):
        AtomicCheckpointer(model).load(_saved(tmp_path, "partial.pth", partial))
    # buffers count, non-persistent ones do not (they are never saved)
    with_buffers = nn.BatchNorm1d(2)
    with_buffers.register_buffer("scratch", torch.zeros(2), persistent=False)
    state = with_buffers.state_dict()
    del state["running_var"]
    with pytest.raises(CheckpointError, match="running_var"):
        AtomicCheckpointer(with_buffers).load(_saved(tmp_path, "bn.pth", state))


def test_unexpected_keys_only_warn(tmp_path, caplog):
    model = nn.Linear(3, 2)
    state = dict(model.state_dict(), **{"extra.weight": torch.ones(1), "head.bias": torch.zeros(3)})
    target = nn.Linear(3, 2)
    with caplog.at_level(logging.WARNING, logger="adaptiveclick.engine.checkpoint"):
        AtomicCheckpointer(target).load(_saved(tmp_path, "extra.pth", state))
    assert torch.equal(target.weight, model.weight) and torch.equal(target.bias, model.bias)
    warnings = [r.getMessage() for r in caplog.records if r.name == "adaptiveclick.engine.checkpoint"]
    assert len(warnings) == 1
    assert "extra.pth" in warnings[0] and "2 key(s)" in warnings[0]
    assert "extra.weight" in warnings[0] and "head.bias" in warnings[0]


def test_strict_round_trip_of_the_tiny_model_and_another_width_refused(tmp_path):
    from detectron2.modeling import build_model

    from adaptiveclick.engine import CheckpointError
    from adaptiveclick.modeling import AdaptiveClick  # registers the meta-architectures

    torch.manual_seed(0)
    model = build_model(tiny_cfg(tmp_path))
    assert isinstance(model, AdaptiveClick)
    AtomicCheckpointer(model, save_dir=str(tmp_path)).save("model_final")
    torch.manual_seed(1)
    fresh = build_model(tiny_cfg(tmp_path))
    assert not torch.equal(fresh.state_dict()["backbone.net.pos_embed"], model.state_dict()["backbone.net.pos_embed"])
    AtomicCheckpointer(fresh).load(str(tmp_path / "model_final.pth"))  # strict by default: nothing missing
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key

    # the audit's case: a ViT of width 48 into the 96-wide tiny model
    narrow = build_model(tiny_cfg(tmp_path, "MODEL.VIT.EMBED_DIM", 48))
    AtomicCheckpointer(narrow, save_dir=str(tmp_path / "narrow")).save("model_final")
    with pytest.raises(CheckpointError, match=r"tensor\(s\) of another shape: .*\(checkpoint \(1, \d+, 48\), "
                                              r"model \(1, \d+, 96\)\).*\(\d+ more\)"):
        AtomicCheckpointer(fresh).load(str(tmp_path / "narrow" / "model_final.pth"))


def test_trainer_loads_weights_strictly_unless_asked_and_always_resumes_strictly(tmp_path):
    from adaptiveclick.engine import CheckpointError

    batch = [make_sample(rect(16, 16, 2, 9, 2, 9), [(5, 5, 1)])]
    weights = _saved(tmp_path, "other.pth", {"w": torch.ones(3)})  # ToyModel's w has 2 values
    cfg = tiny_cfg(tmp_path / "run", "MODEL.WEIGHTS", weights)
    trainer = _stub_trainer(ToyModel, batch)(cfg)
    with pytest.raises(CheckpointError, match=r"other\.pth.*w \(checkpoint \(3,\), model \(2,\)\)"):
        trainer.resume_or_load(resume=False)
    trainer.resume_or_load(resume=False, strict=False)  # fine-tuning: what fits (nothing here) is loaded
    assert torch.equal(trainer.model.w.detach(), torch.tensor([1.0, -2.0])) and trainer.checkpointer.strict

    # a checkpoint in OUTPUT_DIR of another model: resuming is strict even with strict=False
    AtomicCheckpointer(nn.Linear(2, 2), save_dir=str(tmp_path / "run")).save("model_0000004")
    with pytest.raises(CheckpointError, match=r"model_0000004\.pth.*not in the checkpoint: w"):
        _stub_trainer(ToyModel, batch)(cfg).resume_or_load(resume=True, strict=False)


def test_host_arrays_and_loss_scalars():
    """The values come back unchanged, CPU tensors as views; a loss that is not a scalar is named."""
    from adaptiveclick.engine.trainer import host_arrays, loss_scalars

    tensors = [torch.arange(6.0).view(1, 2, 3), torch.tensor(2.5), torch.ones(1, 4, 4, dtype=torch.float64)]
    arrays = host_arrays(tensors)
    for t, a in zip(tensors, arrays):
        np.testing.assert_array_equal(a, t.numpy())
        assert a.shape == tuple(t.shape) and np.shares_memory(a, t.numpy())
    losses = {"loss_a": torch.tensor(0.25), "loss_b": torch.tensor([1.5]), "loss_c": torch.tensor(float("nan"))}
    values = loss_scalars(losses)
    assert list(values) == ["loss_a", "loss_b", "loss_c"] and values["loss_a"] == 0.25 and values["loss_b"] == 1.5
    assert np.isnan(values["loss_c"])
    with pytest.raises(TypeError, match="loss 'loss_x' must be a one-element tensor"):
        loss_scalars({"loss_x": torch.zeros(2)})


class ManyLosses(nn.Module):
    """No value read inside: eval logits are constants, training returns 30 loss terms (as many as the
    decoder's auxiliary losses give)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, -2.0]))

    def forward(self, batched_inputs):
        if self.training:
            return {f"loss_{i}": (self.w * 0.01 * (i + 1)).pow(2).sum() for i in range(30)}
        return [{"mask_logits": torch.full((1,) + tuple(x["image"].shape[-2:]), 3.0) + self.w.sum() * 0}
                for x in batched_inputs]


@pytest.mark.parametrize("batch_size", [1, 4])
def test_a_training_step_reads_few_values_whatever_the_batch_and_losses(batch_size):
    """A step with a click round reads: one finiteness flag of the round's logits, and one of the gradients;
    the losses come to the host in one copy (checked and logged from there), the round's probabilities in one.
    On a GPU each read or copy is a wait of the host; the code before read one flag per sample and two values per
    loss term (here 1 + 30 + 30 + 1 with one sample)."""
    from adaptiveclick.utils.op_count import count_operators

    batch = [make_sample(rect(16, 16, 2, 9, 2, 9), [(5, 5, 1)]) for _ in range(batch_size)]
    model = ManyLosses()
    trainer = _trainer(model, batch, max_click_rounds=1, seed=0, train_iou_period=0)
    seen = set()
    with EventStorage(0) as storage:
        for it in range(8):
            trainer.iter = storage.iter = it
            w = model.w.detach().clone()
            counts, _ = count_operators(trainer.run_step)
            rounds = int(storage.latest()["click_rounds"][0])
            seen.add(rounds)
            assert counts["host_reads"] == 1 + rounds, (it, rounds, counts)
            # the logged losses are the step's (before the update), read from the one host copy
            assert storage.latest()["loss_29"][0] == pytest.approx(float((w * 0.3).pow(2).sum()), rel=1e-6)
    assert seen == {0, 1}


@pytest.mark.cuda
def test_host_arrays_copy_a_gpu_batch_at_once():
    """B maps on the GPU come back in one synchronising copy, not B (torch.cuda.set_sync_debug_mode)."""
    import warnings

    from adaptiveclick.engine.trainer import host_arrays

    tensors = [torch.rand(1, 8, 8, device="cuda") for _ in range(4)]
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            arrays = host_arrays(tensors)
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower()]
    assert len(syncs) == 1, syncs
    for t, a in zip(tensors, arrays):
        np.testing.assert_array_equal(a, t.cpu().numpy())
