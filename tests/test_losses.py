"""Adaptive Focal Loss and the loss zoo, against hand-computed values and formulas written here."""

import math

import pytest
import torch
import torch.nn.functional as F

from adaptiveclick import losses as L

LN2 = math.log(2.0)


def _inputs(k=3, p=40, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(k, p, generator=g) * 3).to(dtype)
    y = (torch.rand(k, p, generator=g) > 0.6).to(dtype)
    return x, y


def _sig(x):
    return 1.0 / (1.0 + math.exp(-x))


# --- hand-computed values ---------------------------------------------------------------------------

def test_afl_hand_computed_two_points():
    # x = [0, 0], y = [1, 0]: p_t = 0.5 everywhere, ce = ln 2.
    # ADA: gamma = 2 + (1 - 0.5 / 1) = 2.5.  b = 0.5^2.5.  AGR: w = 2 / ((1 + 0.4 * 2.5) * 2 * b) so w*b = 0.5.
    # l = 0.5 ln2 + 0.5^3.5, times epsilon weighting 0.5; mean over 2 equal points; num_masks 1.
    expected = 0.5 * (0.5 * LN2 + 0.5 ** 3.5)
    got = L.adaptive_focal_loss(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), 1)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_afl_hand_computed_row_without_foreground():
    # x = [0], y = [0]: no positives, gamma = 3; b = 1/8; w*b = 1 / (1 + 0.4*3) = 1/2.2.
    expected = 0.5 * (LN2 / 2.2 + 0.5 ** 4)
    got = L.adaptive_focal_loss(torch.zeros(1, 1), torch.zeros(1, 1), 1)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_afl_hand_computed_reduction_over_masks():
    # two identical rows, num_masks = 4: (2 * row_loss) / 4
    row = 0.5 * (0.5 * LN2 + 0.5 ** 3.5)
    got = L.adaptive_focal_loss(torch.zeros(2, 2), torch.tensor([[1.0, 0.0], [1.0, 0.0]]), 4)
    assert got.item() == pytest.approx(row / 2, rel=1e-6)


def test_zoo_hand_computed_values():
    x = torch.tensor([[2.0, -1.0]])
    y = torch.tensor([[1.0, 0.0]])
    p = [_sig(2.0), _sig(-1.0)]
    # p_t: point 0 (y=1) p; point 1 (y=0) 1-p
    pt = [p[0], 1 - p[1]]
    ce = [-math.log(pt[0]), -math.log(pt[1])]
    assert L.bce(x, y, 1).item() == pytest.approx(sum(ce) / 2, rel=1e-6)
    assert L.weighted_bce(x, y, 1, pos_weight=3.0).item() == pytest.approx((3 * ce[0] + ce[1]) / 2, rel=1e-6)
    # beta = #neg / #all = 0.5
    assert L.balanced_ce(x, y, 1).item() == pytest.approx((0.5 * ce[0] + 0.5 * ce[1]) / 2, rel=1e-6)
    inter, union = p[0] * 1, max(p[0], 1) + max(p[1], 0)
    assert L.soft_iou(x, y, 1).item() == pytest.approx(1 - inter / (union + 1e-8), rel=1e-6)
    fl = [0.25 * (1 - pt[0]) ** 2 * ce[0], 0.75 * (1 - pt[1]) ** 2 * ce[1]]
    assert L.focal(x, y, 1).item() == pytest.approx(sum(fl) / 2, rel=1e-6)
    beta = [(1 - pt[0]) ** 2, (1 - pt[1]) ** 2]
    scale = 2 / sum(beta)
    nfl = [0.25 * beta[0] * scale * ce[0], 0.75 * beta[1] * scale * ce[1]]
    assert L.normalized_focal(x, y, 1).item() == pytest.approx(sum(nfl) / 2, rel=1e-6)
    pl = [(1 - t) ** 2 * c + (1 - t) ** 3 for t, c in zip(pt, ce)]
    assert L.poly(x, y, 1).item() == pytest.approx(sum(pl) / 2, rel=1e-6)
    d = 1 - (2 * p[0] + 1) / (p[0] + p[1] + 1 + 1)
    assert L.dice(x, y, 1).item() == pytest.approx(d, rel=1e-6)


# --- independent reference of the full AFL and of its reductions --------------------------------------

def _afl_reference(x, y, num_masks, epsilon=0.5, gamma=2.0, delta=0.4, alpha=1.0, eps=1e-12):
    """Loop form of model.md §5.4, in float64 Python scalars."""
    total = 0.0
    for k in range(x.shape[0]):
        xs, ys = x[k].tolist(), y[k].tolist()
        pts = [_sig(a) if b == 1 else 1 - _sig(a) for a, b in zip(xs, ys)]
        ces = [-math.log(t) for t in pts]
        pos = [t for t, b in zip(pts, ys) if b > 0.5]
        g = gamma + (1 - sum(pos) / (len(pos) + eps))
        bs = [(1 - t) ** g for t in pts]
        w = len(xs) / ((1 + delta * g) * sum(bs) + eps)
        row = 0.0
        for t, c, b, lab in zip(pts, ces, bs, ys):
            val = w * b * c + alpha * (1 - t) ** (g + 1)
            if epsilon >= 0:
                val *= epsilon * lab + (1 - epsilon) * (1 - lab)
            row += val
        total += row / len(xs)
    return total / num_masks


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("params", [{}, {"epsilon": 0.25, "gamma": 1.5, "delta": 0.2, "alpha": 0.5},
                                    {"epsilon": -1.0}])
def test_afl_matches_loop_reference(seed, params):
    x, y = _inputs(seed=seed)
    x = x.clamp(-6, 6)  # keep the Python-scalar reference away from log(0)
    got = L.adaptive_focal_loss(x, y, 2.5, **params).item()
    assert got == pytest.approx(_afl_reference(x, y, 2.5, **params), rel=1e-9)


def _ce(x, y):
    return -(y * F.logsigmoid(x) + (1 - y) * F.logsigmoid(-x))


def _one_minus_pt(x, y):
    p = torch.sigmoid(x)
    return 1 - (p * y + (1 - p) * (1 - y))


def test_afl_reductions():
    x, y = _inputs(seed=3)
    x = x.clamp(-8, 8)
    n = 3
    q, ce = _one_minus_pt(x, y), _ce(x, y)
    off = dict(ada=False, agr=False, epsilon=-1.0)
    # ADA and AGR off, no class weighting -> Poly-1 focal loss (PolyLoss, Leng et al. 2022)
    poly1 = (q ** 2 * ce + 1.0 * q ** 3).mean(1).sum() / n
    assert torch.allclose(L.adaptive_focal_loss(x, y, n, **off), poly1, rtol=1e-10)
    assert torch.allclose(L.poly(x, y, n), poly1, rtol=1e-10)
    # also alpha = 0 -> focal loss without alpha-balancing
    fl = (q ** 2 * ce).mean(1).sum() / n
    assert torch.allclose(L.adaptive_focal_loss(x, y, n, alpha=0.0, **off), fl, rtol=1e-10)
    assert torch.allclose(L.focal(x, y, n, alpha=-1.0), fl, rtol=1e-10)
    # also gamma = 0 -> BCE
    bce = ce.mean(1).sum() / n
    assert torch.allclose(L.adaptive_focal_loss(x, y, n, alpha=0.0, gamma=0.0, **off), bce, rtol=1e-10)
    assert torch.allclose(L.bce(x, y, n), bce, rtol=1e-10)
    # with the class weighting on, every reduction is multiplied by epsilon_t
    eps_t = 0.3 * y + 0.7 * (1 - y)
    fl_w = (eps_t * q ** 2 * ce).mean(1).sum() / n
    got = L.adaptive_focal_loss(x, y, n, alpha=0.0, ada=False, agr=False, epsilon=0.3)
    assert torch.allclose(got, fl_w, rtol=1e-10)


def test_ada_and_agr_switch_individually():
    x, y = _inputs(seed=4)
    x = x.clamp(-8, 8)
    q, ce = _one_minus_pt(x, y), _ce(x, y)
    fg = (y > 0.5).double()
    gam = 2.0 + (1 - ((1 - q) * fg).sum(1, keepdim=True) / (fg.sum(1, keepdim=True) + 1e-12))
    # AGR off: w = 1 but gamma adaptive
    ref = (q ** gam * ce + q ** (gam + 1)).mean(1).sum()
    assert torch.allclose(L.adaptive_focal_loss(x, y, 1, agr=False, epsilon=-1), ref, rtol=1e-10)
    # ADA off: gamma = 2 but AGR normaliser on
    b = q ** 2
    w = x.shape[1] / ((1 + 0.4 * 2.0) * b.sum(1, keepdim=True) + 1e-12)
    ref = (w * b * ce + q ** 3).mean(1).sum()
    assert torch.allclose(L.adaptive_focal_loss(x, y, 1, ada=False, epsilon=-1), ref, rtol=1e-10)


# --- gradients -------------------------------------------------------------------------------------------

def test_afl_gradient_treats_gamma_and_w_as_constants():
    """Autograd gradient == central differences of the loss with gamma_k and w_k frozen at x0."""
    x0, y = _inputs(k=2, p=12, seed=5)
    x0 = x0.clamp(-5, 5)
    fg = (y > 0.5).double()
    q0 = _one_minus_pt(x0, y)
    gam = 2.0 + (1 - ((1 - q0) * fg).sum(1, keepdim=True) / (fg.sum(1, keepdim=True) + 1e-12))
    w = 12 / ((1 + 0.4 * gam) * (q0 ** gam).sum(1, keepdim=True) + 1e-12)

    def frozen(x):
        q = _one_minus_pt(x, y)
        return ((w * q ** gam * _ce(x, y) + q ** (gam + 1)) * 0.5).mean(1).sum() / 2

    x = x0.clone().requires_grad_(True)
    L.adaptive_focal_loss(x, y, 2).backward()
    h = 1e-6
    num = torch.zeros_like(x0)
    for idx in range(x0.numel()):
        e = torch.zeros(x0.numel(), dtype=x0.dtype)
        e[idx] = h
        e = e.view_as(x0)
        num.view(-1)[idx] = (frozen(x0 + e) - frozen(x0 - e)) / (2 * h)
    assert torch.allclose(x.grad, num, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", ["bce", "weighted_bce", "balanced_ce", "soft_iou", "focal", "poly", "dice"])
def test_zoo_gradcheck(name):
    x, y = _inputs(k=2, p=6, seed=6)
    x = x.clamp(-4, 4).requires_grad_(True)
    fn = getattr(L, name)
    assert torch.autograd.gradcheck(lambda a: fn(a, y, 2), (x,))


def test_afl_gradcheck_without_adaptive_factors():
    x, y = _inputs(k=2, p=6, seed=7)
    x = x.clamp(-4, 4).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: L.adaptive_focal_loss(a, y, 2, ada=False, agr=False), (x,))


def test_bce_gradient_is_sigmoid_minus_target():
    x, y = _inputs(k=2, p=5, seed=8)
    x.requires_grad_(True)
    L.bce(x, y, 3).backward()
    assert torch.allclose(x.grad, (torch.sigmoid(x.detach()) - y) / (5 * 3), rtol=1e-10)


# --- extreme inputs ------------------------------------------------------------------------------------

ALL = ["adaptive_focal_loss", "bce", "weighted_bce", "balanced_ce", "soft_iou", "focal", "normalized_focal",
       "poly", "dice"]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("case", ["large_logits", "all_fg", "all_bg", "gamma_small"])
def test_finite_on_extreme_inputs(name, case):
    fn = getattr(L, name)
    x = torch.tensor([[100.0, -100.0, 100.0, -100.0, 0.0, 30.0]])
    if case == "large_logits":
        y = torch.tensor([[1.0, 0.0, 0.0, 1.0, 1.0, 0.0]])
    elif case == "all_fg":
        y = torch.ones_like(x)
    else:
        y = torch.zeros_like(x)
    kwargs = {}
    if case == "gamma_small" and name in ("adaptive_focal_loss", "focal", "normalized_focal", "poly"):
        kwargs = {"gamma": 0.5} if name != "adaptive_focal_loss" else {"gamma": 0.0, "ada": False}
        y = torch.tensor([[1.0, 0.0, 1.0, 0.0, 1.0, 1.0]])  # p_t = 1 exactly on the first four points
    x.requires_grad_(True)
    loss = fn(x, y, 1, **kwargs)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", ALL)
def test_no_masks_gives_zero_loss_and_gradient(name):
    x = torch.zeros(0, 16, requires_grad=True)
    loss = getattr(L, name)(x, torch.zeros(0, 16), 0)
    loss.backward()
    assert loss.item() == 0.0 and x.grad is not None and x.grad.shape == (0, 16)


@pytest.mark.parametrize("name", [n for n in ALL if n != "soft_iou"])
def test_a_mask_of_no_points_gives_zero_loss_not_nan(name):
    # the baseline's crop with every pixel ignored: isegm divides by (count + eps) and gets 0 (soft IoU: 1, below)
    x = torch.zeros(1, 0, requires_grad=True)
    loss = getattr(L, name)(x, torch.zeros(1, 0), 1)
    loss.backward()
    assert loss.item() == 0.0 and x.grad.shape == (1, 0)


def test_soft_iou_of_no_points_is_one_as_isegm():
    # isegm SoftIoU: 1 - sum(p*y) / (sum(max(p, y)) + eps) = 1 - 0 / eps
    assert L.soft_iou(torch.zeros(1, 0), torch.zeros(1, 0), 1).item() == 1.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ALL)
def test_half_inputs_computed_in_fp32(name, dtype):
    x, y = _inputs(seed=9, dtype=torch.float32)
    xh = x.to(dtype)
    got = getattr(L, name)(xh, y.to(dtype), 3)
    ref = getattr(L, name)(xh.float(), y, 3)
    assert got.dtype == torch.float32
    assert torch.equal(got, ref)


def test_tensor_num_masks():
    x, y = _inputs(seed=10, dtype=torch.float32)
    assert torch.allclose(L.adaptive_focal_loss(x, y, torch.tensor(2.0)), L.adaptive_focal_loss(x, y, 2))


# --- bad input -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL)
def test_bad_input(name):
    fn = getattr(L, name)
    x = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="shape"):
        fn(x, torch.zeros(2, 5), 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fn(x, torch.full((2, 4), 2.0), 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fn(x, torch.full((2, 4), -1.0), 2)
    with pytest.raises(TypeError, match="logits"):
        fn(torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4), 2)
    with pytest.raises(TypeError, match="targets"):
        fn(x, torch.zeros(2, 4, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="num_masks"):
        fn(x, torch.zeros(2, 4), 0)
    with pytest.raises(ValueError, match="num_masks"):
        fn(x, torch.zeros(2, 4), -1)
    with pytest.raises(ValueError, match="num_masks, num_points"):
        fn(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4), 2)
    with pytest.raises(ValueError, match="NaN"):
        fn(x, torch.full((2, 4), float("nan")), 2)


@pytest.mark.parametrize("name", ALL)
def test_target_checks_read_one_flag(name):
    """The checks of the targets (no NaN, in [0, 1]) read one value on the host: the criterion calls the losses
    on ~20 maps per training step, and on a GPU every read waits for it (the code before read two or three).
    A single bad value among good ones is still caught, with its message."""
    from adaptiveclick.utils.op_count import count_operators

    fn = getattr(L, name)
    x, y = torch.zeros(2, 4), torch.rand(2, 4)
    counts, _ = count_operators(lambda: fn(x, y, 2))
    assert counts["host_reads"] == 1, counts
    for value, match in ((float("nan"), "NaN"), (float("inf"), r"\[0, 1\], got values in \[.*, inf\]"),
                         (-1e-6, r"\[0, 1\]")):
        bad = y.clone()
        bad[1, 2] = value
        with pytest.raises(ValueError, match=match):
            fn(x, bad, 2)


@pytest.mark.parametrize("name", ALL)
def test_targets_checked_skips_only_the_value_read(name):
    """Inside ``targets_checked()`` (the criterion checks a batch's targets once) a loss reads no value, gives
    the same loss, still checks types and shapes, and after the block (an error inside included) checks values
    again."""
    from adaptiveclick.utils.op_count import count_operators

    fn = getattr(L, name)
    x, y = torch.randn(2, 4), torch.rand(2, 4)
    with L.targets_checked():
        counts, inside = count_operators(lambda: fn(x, y, 2))
        assert counts["host_reads"] == 0, counts
        with pytest.raises(ValueError, match="shape"):
            fn(x, torch.zeros(2, 5), 2)
    torch.testing.assert_close(inside, fn(x, y, 2))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fn(x, torch.full((2, 4), 2.0), 2)
    with pytest.raises(RuntimeError, match="boom"):
        with L.targets_checked():
            raise RuntimeError("boom")
    with pytest.raises(ValueError, match="NaN"):
        fn(x, torch.full((2, 4), float("nan")), 2)


# --- registry and config -------------------------------------------------------------------------------

def _cfg():
    from detectron2.config import get_cfg

    from adaptiveclick.config import add_adaptiveclick_config
    cfg = get_cfg()
    add_adaptiveclick_config(cfg)
    return cfg


def test_build_mask_loss_by_name_and_alias():
    cfg = _cfg()
    x, y = _inputs(seed=11, dtype=torch.float32)
    assert isinstance(L.build_mask_loss(cfg), L.AdaptiveFocalLoss)
    for name in ["bce", "weighted_bce", "balanced_ce", "soft_iou", "focal", "normalized_focal", "poly", "dice"]:
        cfg.MODEL.LOSS.NAME = name
        assert torch.equal(L.build_mask_loss(cfg)(x, y, 3), getattr(L, name)(x, y, 3))
    for alias, name in L.ALIASES.items():
        cfg.MODEL.LOSS.NAME = alias.upper()
        assert L.build_mask_loss(cfg)(x, y, 3).item() == pytest.approx(getattr(L, name)(x, y, 3).item())
    cfg.MODEL.LOSS.NAME = "no_such_loss"
    with pytest.raises(KeyError, match="no_such_loss"):
        L.build_mask_loss(cfg)


def test_config_parameters_reach_the_losses():
    cfg = _cfg()
    x, y = _inputs(seed=12, dtype=torch.float32)
    cfg.MODEL.AFL.GAMMA, cfg.MODEL.AFL.DELTA, cfg.MODEL.AFL.EPSILON = 1.0, 0.1, -1.0
    cfg.MODEL.AFL.ADA = False
    got = L.build_mask_loss(cfg)(x, y, 3)
    assert torch.equal(got, L.adaptive_focal_loss(x, y, 3, gamma=1.0, delta=0.1, epsilon=-1.0, ada=False))
    assert not torch.equal(got, L.adaptive_focal_loss(x, y, 3))
    cfg.MODEL.LOSS.NAME = "focal"
    cfg.MODEL.LOSS.FOCAL.ALPHA, cfg.MODEL.LOSS.FOCAL.GAMMA = 0.5, 1.0
    assert torch.equal(L.build_mask_loss(cfg)(x, y, 3), L.focal(x, y, 3, alpha=0.5, gamma=1.0))
    with pytest.raises(ValueError, match="gamma"):
        L.AdaptiveFocalLoss(gamma=-1.0)


# --- the gradient-analysis plot ----------------------------------------------------------------------------

def _plot_tool():
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[1] / "tools" / "plot_loss_gradients.py"
    spec = importlib.util.spec_from_file_location("plot_loss_gradients", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_plot_tool_curves_and_png(tmp_path):
    tool = _plot_tool()
    p_t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64).numpy()
    values, grads = tool.loss_and_gradient(lambda x, y: L.bce_map(x, y), p_t)
    # BCE on foreground pixels: loss -log p_t, |dL/dx| per pixel = 1 - p_t
    assert values == pytest.approx(-torch.log(torch.tensor(p_t)).numpy(), rel=1e-9)
    assert grads == pytest.approx(1 - p_t, rel=1e-9)
    out = tmp_path / "g.png"
    tool.main(["--output", str(out), "--points", "256"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_afl_map_matches_reduction():
    x, y = _inputs(seed=13)
    m = L.adaptive_focal_loss_map(x, y, epsilon=0.2)
    assert m.shape == x.shape
    assert torch.allclose(m.mean(1).sum() / 4, L.adaptive_focal_loss(x, y, 4, epsilon=0.2), rtol=1e-12)
