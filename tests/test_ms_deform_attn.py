"""Tests of the multi-scale deformable attention op: the reference against a brute-force loop, the C++ kernel
(and the CUDA kernel where a GPU exists) against the reference, fp64 gradchecks, dispatch and input errors."""

import math

import pytest
import torch

from adaptiveclick.layers.ms_deform_attn import (ENV_VAR, MSDeformAttn, extension_status, ms_deform_attn,
                                                 ms_deform_attn_pytorch, resolve_impl)
from adaptiveclick.layers.ms_deform_attn import function as msda_function

HAS_EXT = extension_status()["built"]
needs_ext = pytest.mark.skipif(not HAS_EXT, reason="adaptiveclick._C is not built")


def make_problem(shapes, n=2, lq=5, m=3, d=4, p=2, dtype=torch.float64, device="cpu", spread=(-0.3, 1.3),
                 seed=0):
    """Random inputs; locations drawn from ``spread`` so that some fall outside the map."""
    g = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(shapes, dtype=torch.long)
    areas = spatial_shapes.prod(1)
    level_start_index = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    s, num_levels = int(areas.sum()), len(shapes)
    value = torch.randn(n, s, m, d, generator=g, dtype=dtype)
    lo, hi = spread
    loc = torch.rand(n, lq, m, num_levels, p, 2, generator=g, dtype=dtype) * (hi - lo) + lo
    weights = torch.rand(n, lq, m, num_levels, p, generator=g, dtype=dtype)
    to = dict(device=device)
    return (value.to(**to), spatial_shapes.to(**to), level_start_index.to(**to), loc.to(**to), weights.to(**to))


def brute_force(value, spatial_shapes, level_start_index, loc, weights):
    """Explicit loops over every query/head/level/point with hand-written bilinear interpolation."""
    n, _, m, d = value.shape
    _, lq, _, num_levels, num_points, _ = loc.shape
    out = torch.zeros(n, lq, m, d, dtype=torch.float64)
    for b in range(n):
        for q in range(lq):
            for h in range(m):
                for lvl in range(num_levels):
                    hh, ww = spatial_shapes[lvl].tolist()
                    start = int(level_start_index[lvl])
                    for k in range(num_points):
                        x = float(loc[b, q, h, lvl, k, 0]) * ww - 0.5
                        y = float(loc[b, q, h, lvl, k, 1]) * hh - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                            for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                                if 0 <= xx < ww and 0 <= yy < hh:
                                    v = value[b, start + yy * ww + xx, h].double()
                                    out[b, q, h] += float(weights[b, q, h, lvl, k]) * wx * wy * v
    return out.view(n, lq, m * d)


SHAPE_SETS = [
    [(4, 5), (2, 3), (1, 1)],  # H != W and a 1x1 level
    [(3, 3)],
    [(1, 1), (6, 2)],
    [(7, 4), (4, 7), (2, 2), (1, 3)],
]


@pytest.mark.parametrize("shapes", SHAPE_SETS)
def test_reference_matches_brute_force(shapes):
    args = make_problem(shapes, n=1, lq=3, m=2, d=3, p=2)
    torch.testing.assert_close(ms_deform_attn_pytorch(*args), brute_force(*args), rtol=1e-12, atol=1e-12)


def test_hand_computed_values():
    # One 2x2 map, one head, D = 1, values [[1, 2], [3, 4]].
    value = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64).view(1, 4, 1, 1)
    shapes = torch.tensor([[2, 2]])
    starts = torch.tensor([0])
    # pixel centres are at 0.25 and 0.75; the map centre (0.5, 0.5) averages all four; (0.25, 0.75) is
    # exactly pixel (row 1, col 0) = 3; (1.0, 0.25) is x = 1.5: half of pixel (0, 1) and half zero padding.
    # (-0.25, 0.5) is x = -1: fully outside.
    loc = torch.tensor([[0.5, 0.5], [0.25, 0.75], [1.0, 0.25], [-0.25, 0.5]], dtype=torch.float64)
    loc = loc.view(1, 4, 1, 1, 1, 2)
    weights = torch.full((1, 4, 1, 1, 1), 2.0, dtype=torch.float64)
    expected = torch.tensor([2.5, 3.0, 1.0, 0.0], dtype=torch.float64).view(1, 4, 1) * 2
    impls = ["pytorch"] + (["cpu"] if HAS_EXT else [])
    for impl in impls:
        out = ms_deform_attn(value, shapes, starts, loc, weights, impl=impl)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-12, msg=impl)


def _forward_backward(args, impl, seed=1):
    value, shapes, starts, loc, weights = [a.clone() for a in args]
    for t in (value, loc, weights):
        t.requires_grad_(True)
    out = ms_deform_attn(value, shapes, starts, loc, weights, impl=impl)
    g = torch.Generator().manual_seed(seed)
    upstream = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out)
    grads = torch.autograd.grad(out, (value, loc, weights), upstream)
    return (out,) + grads


@needs_ext
@pytest.mark.parametrize("shapes", SHAPE_SETS)
@pytest.mark.parametrize("d", [1, 4, 33])
def test_cpu_kernel_matches_reference(shapes, d):
    args = make_problem(shapes, d=d, seed=d)
    ours = _forward_backward(args, "cpu")
    ref = _forward_backward(args, "pytorch")
    for name, a, b in zip(("output", "grad_value", "grad_loc", "grad_weights"), ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)


@needs_ext
def test_cpu_kernel_gradcheck_fp64():
    value, shapes, starts, loc, weights = make_problem([(3, 4), (1, 1), (2, 3)], n=1, lq=3, m=2, d=3, p=2, seed=3)
    inputs = tuple(t.requires_grad_(True) for t in (value, loc, weights))
    assert torch.autograd.gradcheck(lambda v, l, w: ms_deform_attn(v, shapes, starts, l, w, impl="cpu"), inputs)


@needs_ext
def test_locations_on_pixel_borders_and_outside():
    # Locations exactly on pixel edges (multiples of 1 / W) and outside the map: the kernel agrees with
    # grid_sample's zero padding, including the values on the boundary lines x = 0 and x = 1.
    shapes = [(4, 4), (2, 5)]
    value, ss, st, _, weights = make_problem(shapes, n=1, lq=6, m=2, d=3, p=3)
    grid = torch.tensor([0.0, 0.25, 0.5, 1.0, -0.5, 1.75], dtype=torch.float64)
    loc = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)  # 36 points
    loc = loc.repeat(2, 1).reshape(1, 6, 2, 2, 3, 2)
    a = ms_deform_attn(value, ss, st, loc, weights, impl="cpu")
    b = ms_deform_attn(value, ss, st, loc, weights, impl="pytorch")
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    far = torch.full_like(loc, 5.0)
    assert ms_deform_attn(value, ss, st, far, weights, impl="cpu").abs().max() == 0


LOW_PRECISION = [(torch.float32, 1e-5), (torch.float16, 5e-3), (torch.bfloat16, 3e-2)]


def _low_precision_errors(impl, dtype, device="cpu"):
    """Largest error of the output and the three gradients of ``impl`` in ``dtype``, relative to the largest
    value of each, against the reference in fp64 on the same rounded inputs.  The reference must see the
    rounded inputs: rounding moves some sampling locations across a pixel edge, where bilinear interpolation
    has a kink, and their location gradient then changes by about its own size (measured against the
    unrounded fp64 inputs: 0.75 of the largest value in fp16, 0.97 in bf16)."""
    args = make_problem([(14, 14), (7, 7), (4, 4)], n=2, lq=50, m=8, d=32, p=4, spread=(0.0, 1.0), seed=11,
                        device=device)
    low = [a.to(dtype) if a.dtype.is_floating_point else a for a in args]
    ref = _forward_backward([a.double() if a.dtype.is_floating_point else a for a in low], "pytorch")
    ours = _forward_backward(low, impl)
    errors = {}
    for name, a, b in zip(("output", "grad_value", "grad_loc", "grad_weights"), ours, ref):
        assert a.dtype == dtype and a.device == b.device, name
        assert torch.isfinite(a.float()).all(), name
        errors[name] = (a.double() - b).abs().max().item() / (b.abs().max().item() + 1e-6)
    return errors


@needs_ext
@pytest.mark.parametrize("dtype,tol", LOW_PRECISION)
def test_cpu_kernel_low_precision(dtype, tol):
    """Output and gradients in fp32/fp16/bf16 (fp32 accumulation); the same check as the CUDA kernel's."""
    errors = _low_precision_errors("cpu", dtype)
    assert all(e <= tol * 4 for e in errors.values()), errors


@needs_ext
def test_empty_query_set():
    value, ss, st, loc, w = make_problem([(2, 2)], lq=0)
    out = ms_deform_attn(value.requires_grad_(True), ss, st, loc, w, impl="cpu")
    assert out.shape == (2, 0, value.shape[2] * value.shape[3])
    out.sum().backward()
    assert value.grad.abs().sum() == 0


def test_index_values_are_read_once_per_tensor_and_reread_after_changes(monkeypatch):
    """The op reads spatial_shapes / level_start_index values once per tensor (on CUDA each read is a host
    synchronisation); an in-place change or a new tensor is read and checked again."""
    import gc

    value, ss, st, loc, w = make_problem([(3, 4), (2, 2)])
    expected = ms_deform_attn(value, ss, st, loc, w, impl="pytorch")
    calls = []
    real_tolist = torch.Tensor.tolist

    def counting_tolist(t):
        calls.append(id(t))
        return real_tolist(t)

    monkeypatch.setattr(torch.Tensor, "tolist", counting_tolist)
    for _ in range(3):
        torch.testing.assert_close(ms_deform_attn(value, ss, st, loc, w, impl="cpu"), expected)
    assert id(ss) not in calls and id(st) not in calls  # read by the first call above, never again
    ss[0, 1] = 5  # in place: the version counter changes, the values are read and checked again
    with pytest.raises(ValueError, match="level_start_index|sum to"):
        ms_deform_attn(value, ss, st, loc, w, impl="cpu")
    assert id(ss) in calls
    fresh = torch.tensor([[3, 4], [2, 2]])
    torch.testing.assert_close(ms_deform_attn(value, fresh, st, loc, w, impl="cpu"), expected)
    key = id(fresh)
    assert key in msda_function._INDEX_CACHE
    del fresh
    gc.collect()
    assert key not in msda_function._INDEX_CACHE  # entries die with their tensor


# ---------------------------------------------------------------- dispatch


def test_dispatch_env_var_and_errors(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "pytorch")
    assert resolve_impl(None, "cpu") == "pytorch"
    assert resolve_impl("cpu" if HAS_EXT else "pytorch", "cpu") == ("cpu" if HAS_EXT else "pytorch")
    monkeypatch.setenv(ENV_VAR, "tpu")
    with pytest.raises(ValueError, match="tpu"):
        resolve_impl(None, "cpu")
    monkeypatch.delenv(ENV_VAR)
    with pytest.raises(RuntimeError, match="CUDA tensors"):
        resolve_impl("cuda", "cpu")
    assert resolve_impl(None, "cpu") == ("cpu" if HAS_EXT else "pytorch")


def test_dispatch_without_extension(monkeypatch):
    monkeypatch.setattr(msda_function, "_EXT", (None, "adaptiveclick._C could not be imported (test)"))
    assert resolve_impl(None, "cpu") == "pytorch"
    with pytest.raises(RuntimeError, match="could not be imported"):
        resolve_impl("cpu", "cpu")
    args = make_problem([(2, 3)])
    torch.testing.assert_close(ms_deform_attn(*args), ms_deform_attn_pytorch(*args))


# ---------------------------------------------------------------- input errors


def test_bad_inputs_raise_clear_errors():
    value, ss, st, loc, w = make_problem([(4, 5), (2, 3)])
    with pytest.raises(ValueError, match="value must be"):
        ms_deform_attn(value[0], ss, st, loc, w)
    with pytest.raises(ValueError, match="level_start_index|sum to"):
        ms_deform_attn(value[:, :-1], ss, st, loc, w)
    with pytest.raises(TypeError, match="spatial_shapes must be an integer"):
        ms_deform_attn(value, ss.double(), st, loc, w)
    with pytest.raises(ValueError, match="must be positive"):
        ms_deform_attn(value, torch.tensor([[0, 5], [2, 3]]), st, loc, w)
    with pytest.raises(ValueError, match="level_start_index"):
        ms_deform_attn(value, ss, torch.tensor([0, 19]), loc, w)
    with pytest.raises(TypeError, match="share one dtype"):
        ms_deform_attn(value, ss, st, loc.float(), w)
    with pytest.raises(ValueError, match="attention_weights must have shape"):
        ms_deform_attn(value, ss, st, loc, w[..., :1])
    with pytest.raises(ValueError, match="levels"):
        ms_deform_attn(value, ss[:1], st[:1], loc, w)
    with pytest.raises(ValueError, match="is on meta"):
        ms_deform_attn(value, ss, st, loc.to("meta"), w)


# ---------------------------------------------------------------- the layer


def test_module_init_follows_deformable_detr():
    layer = MSDeformAttn(d_model=32, n_levels=2, n_heads=8, n_points=3)
    bias = layer.sampling_offsets.bias.view(8, 2, 3, 2)
    # head 0 looks along +x, head 1 along (1, 1) (45 degrees, scaled so max |component| = 1), head 2 along +y
    torch.testing.assert_close(bias[0, 0, :, 0], torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(bias[1, 1, 2], torch.tensor([3.0, 3.0]))
    torch.testing.assert_close(bias[2, 0, 1], torch.tensor([0.0, 2.0]), atol=1e-6, rtol=0)
    assert layer.sampling_offsets.weight.abs().sum() == 0 and layer.attention_weights.weight.abs().sum() == 0


def test_module_forward_backward_and_padding():
    torch.manual_seed(0)
    layer = MSDeformAttn(d_model=16, n_levels=2, n_heads=2, n_points=2, impl="pytorch")
    ss = torch.tensor([[4, 3], [2, 2]])
    st = torch.tensor([0, 12])
    x = torch.randn(2, 16, 16)
    q = torch.randn(2, 5, 16, requires_grad=True)
    ref = torch.rand(2, 5, 2, 2)
    out = layer(q, ref, x, ss, st)
    assert out.shape == (2, 5, 16)
    out.square().sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()
    # a fully padded input behaves as zero values: only the output projection's bias remains
    pad = torch.ones(2, 16, dtype=torch.bool)
    out_pad = layer(q, ref, x, ss, st, input_padding_mask=pad)
    torch.testing.assert_close(out_pad, layer.output_proj.bias.expand_as(out_pad))
    if HAS_EXT:
        layer.impl = "cpu"
        torch.testing.assert_close(layer(q, ref, x, ss, st), out, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="reference_points"):
        layer(q, ref[:, :, :1], x, ss, st)


def test_module_divides_offsets_by_level_width_and_height(monkeypatch):
    """Sampling locations = reference point + pixel offset / (W_l, H_l) (Deformable DETR Eq. 3, x by the width);
    a given ``offset_normalizer`` gives the same output as the one the module makes, a wrong one is refused."""
    from adaptiveclick.layers.ms_deform_attn import module as module_lib

    torch.manual_seed(1)
    layer = MSDeformAttn(d_model=8, n_levels=2, n_heads=2, n_points=1, impl="pytorch")
    torch.nn.init.normal_(layer.sampling_offsets.weight)
    ss, st = torch.tensor([[4, 3], [2, 5]]), torch.tensor([0, 12])
    q, ref, x = torch.randn(1, 3, 8), torch.rand(1, 3, 2, 2), torch.randn(1, 22, 8)
    captured = []
    real = module_lib.ms_deform_attn
    monkeypatch.setattr(module_lib, "ms_deform_attn", lambda *a, **k: captured.append(a[3]) or real(*a, **k))
    out = layer(q, ref, x, ss, st)
    offsets = layer.sampling_offsets(q).view(1, 3, 2, 2, 1, 2).detach()
    for lvl, (h, w) in enumerate([(4, 3), (2, 5)]):
        expected_x = ref[:, :, None, lvl, None, 0] + offsets[:, :, :, lvl, :, 0] / w
        expected_y = ref[:, :, None, lvl, None, 1] + offsets[:, :, :, lvl, :, 1] / h
        torch.testing.assert_close(captured[0][:, :, :, lvl, :, 0].detach(), expected_x)
        torch.testing.assert_close(captured[0][:, :, :, lvl, :, 1].detach(), expected_y)
    normalizer = module_lib.offset_normalizer_of(ss)
    assert normalizer.dtype == torch.float32 and normalizer.tolist() == [[3.0, 4.0], [5.0, 2.0]]
    torch.testing.assert_close(layer(q, ref, x, ss, st, offset_normalizer=normalizer), out, rtol=0, atol=0)
    with pytest.raises(ValueError, match="offset_normalizer must be a float32 \\(2, 2\\)"):
        layer(q, ref, x, ss, st, offset_normalizer=normalizer[:1])
    with pytest.raises(ValueError, match="offset_normalizer"):
        layer(q, ref, x, ss, st, offset_normalizer=ss)


# ---------------------------------------------------------------- CUDA (run on the GPU machine)


@pytest.mark.cuda
@needs_ext
@pytest.mark.parametrize("d", [3, 32, 40])
def test_cuda_kernel_matches_reference_fp64(d):
    assert extension_status()["cuda"], "the CUDA kernel was not built"
    args = make_problem(SHAPE_SETS[3], d=d, lq=37, seed=d, device="cuda")
    ours = _forward_backward(args, "cuda")
    ref = _forward_backward(args, "pytorch")
    for name, a, b in zip(("output", "grad_value", "grad_loc", "grad_weights"), ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=name)


@pytest.mark.cuda
@needs_ext
def test_cuda_kernel_gradcheck_fp64():
    value, ss, st, loc, w = make_problem([(3, 4), (1, 1)], n=1, lq=3, m=2, d=3, p=2, seed=5, device="cuda")
    inputs = tuple(t.requires_grad_(True) for t in (value, loc, w))
    assert torch.autograd.gradcheck(lambda v, l, a: ms_deform_attn(v, ss, st, l, a, impl="cuda"), inputs)


@pytest.mark.cuda
@needs_ext
@pytest.mark.parametrize("dtype,tol", LOW_PRECISION)
def test_cuda_kernel_low_precision(dtype, tol):
    errors = _low_precision_errors("cuda", dtype, device="cuda")
    assert all(e <= tol * 4 for e in errors.values()), errors


def test_index_tensors_made_in_inference_mode_are_read_every_time():
    value, ss, st, loc, w = make_problem([(3, 4), (2, 2)])
    with torch.inference_mode():
        ss_inf, st_inf = ss.clone(), st.clone()
        out = ms_deform_attn(value, ss_inf, st_inf, loc, w, impl="cpu")
    assert id(ss_inf) not in msda_function._INDEX_CACHE
    torch.testing.assert_close(out, ms_deform_attn(value, ss, st, loc, w, impl="pytorch"))


# -- the kernels as PyTorch operators (torch.library) -----------------------------------------------------------


@pytest.mark.skipif(not HAS_EXT, reason="extension not built")
def test_kernel_operators_pass_opcheck():
    """torch.library.opcheck: schema, fake (meta) implementation against the real one, autograd registration."""
    value, ss, lsi, loc, w = make_problem([(3, 4), (2, 2)], n=1, lq=3, m=2, d=4, p=2, dtype=torch.float64)
    for t in (value, loc, w):
        t.requires_grad_(True)
    torch.library.opcheck(msda_function._msda_forward_op, (value, ss, lsi, loc, w))
    grad = torch.randn(1, 3, 8, dtype=torch.float64)
    torch.library.opcheck(msda_function._msda_backward_op,
                          (value.detach(), ss, lsi, loc.detach(), w.detach(), grad))


@pytest.mark.skipif(not HAS_EXT, reason="extension not built")
def test_compiles_without_graph_breaks():
    """torch.compile(fullgraph=True) traces the checked entry point and the layer in one graph (no host reads,
    no opaque extension call), and the compiled layer gives the eager result and gradients."""
    torch.manual_seed(0)
    layer = MSDeformAttn(d_model=16, n_levels=2, n_heads=2, n_points=2, impl="cpu").double()
    shapes = torch.tensor([[3, 4], [2, 2]])
    starts = torch.tensor([0, 12])
    query = torch.randn(1, 16, 16, dtype=torch.float64)
    ref_points = torch.rand(1, 16, 2, 2, dtype=torch.float64)
    src = torch.randn(1, 16, 16, dtype=torch.float64, requires_grad=True)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    out = compiled(query, ref_points, src, shapes, starts)
    expected = layer(query, ref_points, src, shapes, starts)
    torch.testing.assert_close(out, expected)
    (g_compiled,) = torch.autograd.grad(out.sum(), src)
    (g_eager,) = torch.autograd.grad(expected.sum(), src)
    torch.testing.assert_close(g_compiled, g_eager)
