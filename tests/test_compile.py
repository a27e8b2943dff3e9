"""Opt-in torch.compile of the inference network (adaptiveclick.utils.compile, model.compile_network, the
predictor's ``compile=``): the compiled network gives the eager probabilities, and a failing compiler falls
back to eager execution with one warning, while errors of the inputs still reach the caller."""

import logging
import os

import numpy as np
import pytest
import torch

from adaptiveclick.inference import InteractivePredictor
from adaptiveclick.layers.ms_deform_attn import extension_status
from adaptiveclick.utils.compile import CompiledOrEager, compile_failure_types, default_compile_mode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "synthetic", "tiny.yaml")


def _failing_compiler(exc):
    def compiler(fn, mode):
        def compiled(*args, **kwargs):
            compiled.calls += 1
            raise exc

        compiled.calls = 0
        compiler.compiled = compiled
        return compiled

    return compiler


def _dynamo_error():
    from torch._dynamo.exc import BackendCompilerFailed

    try:  # its constructor differs between torch versions; any instance of the class will do
        return BackendCompilerFailed("inductor", RuntimeError("no C++ compiler"))
    except TypeError:
        return BackendCompilerFailed.__new__(BackendCompilerFailed)


def test_compile_failure_falls_back_to_eager_once(caplog):
    compiler = _failing_compiler(_dynamo_error())
    wrapper = CompiledOrEager(lambda x: x * 2 + 1, compiler=compiler)
    assert wrapper.active
    with caplog.at_level(logging.WARNING, logger="adaptiveclick.utils.compile"):
        assert wrapper(torch.tensor(3.0)).item() == 7.0
        assert wrapper(torch.tensor(4.0)).item() == 9.0
    assert not wrapper.active and isinstance(wrapper.failure, compile_failure_types())
    assert wrapper.failure_repr == repr(wrapper.failure)[:500] and CompiledOrEager(lambda x: x).failure_repr is None
    assert compiler.compiled.calls == 1  # never retried after the failure
    assert (wrapper.compiled_calls, wrapper.eager_calls) == (0, 2)
    warnings = [r for r in caplog.records if "running it eagerly" in r.getMessage()]
    assert len(warnings) == 1 and "BackendCompilerFailed" in warnings[0].getMessage()


def test_input_errors_are_not_compile_failures():
    compiler = _failing_compiler(ValueError("clicks[0] lies outside the image"))
    wrapper = CompiledOrEager(lambda x: x, compiler=compiler)
    with pytest.raises(ValueError, match="outside the image"):
        wrapper(torch.zeros(1))
    assert wrapper.active and wrapper.eager_calls == 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="compile mode"):
        CompiledOrEager(lambda x: x, mode="fastest")
    with pytest.raises(TypeError, match="callable"):
        CompiledOrEager(3)
    assert default_compile_mode("cpu") == "default" and default_compile_mode("cuda") == "reduce-overhead"


def test_predictor_rejects_bad_compile_values(tiny_model):
    with pytest.raises(TypeError, match="compile must be"):
        InteractivePredictor(tiny_model, compile=3)

    class Plain(torch.nn.Module):
        def forward(self, batched_inputs):
            return [{"mask_logits": torch.zeros(1, 8, 8)} for _ in batched_inputs]

    with pytest.raises(TypeError, match="compile_network"):
        InteractivePredictor(Plain(), compile=True)
    assert tiny_model.compiled_network is None  # nothing was switched on by the failed constructions


def test_compiled_predictor_matches_eager(tiny_model):
    """The real torch.compile (Inductor, CPU) on the tiny model: same probabilities as eager, click by click."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (96, 112, 3), dtype=np.uint8)
    clicks = [(40, 50, True), (70, 20, False), (30, 90, True)]
    eager = InteractivePredictor(tiny_model, zoom_in=False, flip=True)
    eager.set_image(image)
    expected = [eager.add_click(*c).probs for c in clicks]
    try:
        compiled = InteractivePredictor(tiny_model, zoom_in=False, flip=True, compile=True)
        wrapper = tiny_model.compiled_network
        assert wrapper is not None and wrapper.mode == "default"
        compiled.set_image(image)
        for c, probs in zip(clicks, expected):
            np.testing.assert_allclose(compiled.add_click(*c).probs, probs, atol=1e-5)
    finally:
        tiny_model.uncompile_network()
    assert wrapper.failure is None, f"torch.compile failed here: {wrapper.failure!r}"
    # one network call per click (the flipped copy runs in the same batch), all of them compiled
    assert wrapper.compiled_calls == len(clicks) and wrapper.eager_calls == 0
    assert tiny_model.compiled_network is None


def test_cuda_graph_modes_mark_a_new_step_per_call(monkeypatch):
    marks = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    for mode, expected in (("reduce-overhead", 2), ("max-autotune", 2), ("default", 0),
                           ("max-autotune-no-cudagraphs", 0)):
        marks.clear()
        wrapper = CompiledOrEager(lambda x: x + 1, mode=mode, compiler=lambda fn, mode: fn)
        wrapper(torch.zeros(1))
        wrapper(torch.zeros(1))
        assert len(marks) == expected, mode


@pytest.mark.skipif(not extension_status()["cpu"], reason="the C++ MSDeformAttn kernel is not built (the grid_sample "
                                                          "reference reads the level sizes on the host)")
@pytest.mark.parametrize("warm", [False, True])
def test_network_traces_as_one_graph(warm):
    """The whole inference network is one Dynamo graph (no graph break: no host read, no opaque extension call),
    so a CUDA-graph capture covers all of it.  Before the deformable-attention kernels became torch.library
    operators, the tiny model traced as 12 graphs (11 breaks: the index check's .tolist() and the extension call
    in every encoder layer).  Also on a cold model (compiled before any eager call, as ``compile=True`` on a
    fresh predictor): the PMMD's index tensors and reference points and the sine encodings are made inside the
    graph and kept out of their caches (written there, they were graph outputs that CUDA graphs may overwrite at
    the next replay)."""
    import torch._dynamo

    from adaptiveclick.utils.bench import build_benchmark_model, click_batch, click_inputs, load_config

    from adaptiveclick.modeling.position_encoding import PositionEmbeddingSine

    model = build_benchmark_model(load_config(TINY, (), "cpu"))
    # the size-keyed caches: the PMMD's index tensors and reference points, the sine encodings of PMMD and CAMD
    caches = [model.pixel_decoder.transformer._index_cache] + \
        [m._cache for m in model.modules() if isinstance(m, PositionEmbeddingSine)]
    assert len(caches) == 3
    image, clicks, prev = click_inputs(96, 4)
    with torch.no_grad():
        data = model.preprocess(click_batch(image, clicks, prev))
        if warm:
            model.predict(data)  # eager first: the op checks and caches its index values
        cached = [dict(c) for c in caches]
        assert all(bool(c) == warm for c in cached)
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(model._network)(data)
    assert explanation.graph_break_count == 0, [str(b.reason)[:300] for b in explanation.break_reasons]
    assert explanation.graph_count == 1
    for cache, before in zip(caches, cached):  # tracing neither filled nor replaced a cache
        assert cache.keys() == before.keys() and all(cache[k] is before[k] for k in cache)


def test_extension_is_loaded_at_import():
    """Loaded on first use instead, the first use could be inside torch.compile, where Dynamo cannot trace
    ``importlib`` (a cold compiled model traced as 11 graphs)."""
    import subprocess
    import sys

    code = ("import adaptiveclick.layers.ms_deform_attn.function as f; "
            "assert f._EXT is not None and (f._EXT[0] is not None or f._EXT[1]), f._EXT")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)
