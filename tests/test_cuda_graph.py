"""Opt-in CUDA graphs of the inference network (adaptiveclick.utils.cuda_graph, model.graph_network, the
predictor's ``cuda_graph=``).

On the CPU the wrapper's bookkeeping is tested with a stand-in backend that keeps CudaGraphBackend's contract:
its "graph" re-runs the recorded call on the recorded input tensors and writes the results into the recorded
output tensors, as a replay does.  So a wrapper that forgot to refill the inputs would return the recorded
call's values, and one that returned the recorded outputs themselves would have them overwritten by the next
replay: both are checked.  The real recording runs in the CUDA tests (GPU machine)."""

import copy
import logging

import numpy as np
import pytest
import torch

from adaptiveclick.inference import InteractivePredictor
from adaptiveclick.utils.cuda_graph import CudaGraphBackend, GraphedOrEager, flatten, unflatten


class StandInBackend:
    """CudaGraphBackend's contract on the CPU (module docstring)."""

    def __init__(self, capture_error=None):
        self.capture_error = capture_error
        self.warm_ups = 0
        self.captured_dtypes = []

    def eligible(self, tensors):
        return bool(tensors) and all(t.device.type == "cpu" for t in tensors)

    def warm_up(self, run, device, autocast_dtype):
        self.warm_ups += 1
        run()

    def capture(self, run, device, autocast_dtype):
        if self.capture_error is not None:
            raise self.capture_error
        self.captured_dtypes.append(autocast_dtype)
        out = run()
        recorded, _ = flatten(out)

        def graph():
            fresh, _ = flatten(run())
            for r, f in zip(recorded, fresh):
                r.copy_(f)

        return graph, out

    def replay(self, graph):
        graph()


def affine(data):
    return {"y": data["x"] * 2 + data["shift"], "parts": [data["x"].sum(), None], "size": data["size"]}


def call(wrapper, x, shift=1.0, size=(2, 3)):
    with torch.no_grad():
        return wrapper({"x": x, "shift": shift, "size": size})


def test_flatten_round_trip_and_unsupported_leaves():
    data = {"a": torch.ones(2), "b": [1, 2.5, None, "s", (torch.zeros(1), True)]}
    tensors, spec = flatten(data)
    assert len(tensors) == 2 and hash(spec) == hash(flatten(data)[1])
    rebuilt = unflatten(spec, tensors)
    assert rebuilt["b"][:4] == [1, 2.5, None, "s"] and isinstance(rebuilt["b"][4], tuple)
    assert rebuilt["a"] is tensors[0] and rebuilt["b"][4][0] is tensors[1] and rebuilt["b"][4][1] is True
    assert flatten({"n": 1})[1] != flatten({"n": 1.0})[1] != flatten({"n": True})[1]  # types are part of the key
    with pytest.raises(TypeError, match="cannot record a object leaf"):
        flatten([object()])


def test_second_call_records_and_later_calls_replay_with_fresh_inputs():
    backend = StandInBackend()
    w = GraphedOrEager(affine, backend=backend)
    xs = [torch.arange(6.0).view(2, 3) + i for i in range(4)]
    outs = [call(w, x) for x in xs]
    # call 1 eager; call 2 warms up, records and replays; calls 3-4 replay
    assert (w.eager_calls, w.captures, w.replays, backend.warm_ups) == (1, 1, 3, 1)
    assert w.counters() == {"captures": 1, "replays": 3, "eager_calls": 1, "failure": None}  # as reports show it
    for x, out in zip(xs, outs):  # each result is its own input's, and earlier results were not overwritten
        torch.testing.assert_close(out["y"], x * 2 + 1, rtol=0, atol=0)
        assert out["parts"][0].item() == x.sum().item() and out["parts"][1] is None and out["size"] == (2, 3)
    recorded = w._graphs[next(iter(w._graphs))]
    assert all(o["y"].data_ptr() != r.data_ptr() for o in outs for r in recorded.out_tensors)


def test_keys_limits_and_eager_cases():
    backend = StandInBackend()
    w = GraphedOrEager(affine, max_graphs=2, backend=backend)
    x = torch.ones(2, 3)
    for _ in range(2):
        call(w, x)
        call(w, x, shift=2.0)  # another constant: another graph
    assert (w.captures, w.num_graphs) == (2, 2)
    assert call(w, x, shift=2.0)["y"][0, 0].item() == 4.0
    call(w, torch.ones(4, 3))
    call(w, torch.ones(4, 3))  # a third shape: the least recently used graph (shift 1.0) goes
    assert (w.captures, w.num_graphs) == (3, 2)
    replays = w.replays
    call(w, x)
    assert w.replays == replays and w.eager_calls == 4  # shift 1.0 must be seen twice again
    with torch.inference_mode():  # inference mode is part of the key (its tensors cannot be refilled outside)
        w({"x": x, "shift": 2.0, "size": (2, 3)})
    assert w.eager_calls == 5
    w({"x": x, "shift": 2.0, "size": (2, 3)})  # gradients on: never recorded or replayed
    assert w.eager_calls == 6
    with torch.no_grad(), pytest.raises(TypeError, match="unsupported operand"):
        w({"x": object()})  # not a pytree of tensors and constants: run eagerly (here the function's own error)
    assert w.eager_calls == 7
    w.reset()
    assert w.num_graphs == 0


def test_autocast_dtype_is_part_of_the_key_and_passed_to_the_capture():
    backend = StandInBackend()
    w = GraphedOrEager(affine, capture_after=1, backend=backend)
    x = torch.ones(2, 3)
    call(w, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        call(w, x)
    # the CPU stand-in is keyed on the CPU's autocast state, as the real backend on the CUDA one
    assert backend.captured_dtypes == [None, torch.bfloat16] and w.num_graphs == 2


def test_capture_failure_falls_back_once_and_warm_up_errors_propagate(caplog):
    backend = StandInBackend(capture_error=RuntimeError("operation not permitted when stream is capturing"))
    w = GraphedOrEager(affine, capture_after=1, backend=backend)
    x = torch.ones(2, 3)
    with caplog.at_level(logging.WARNING, logger="adaptiveclick.utils.cuda_graph"):
        outs = [call(w, x + i) for i in range(3)]
    assert not w.active and "stream is capturing" in str(w.failure)
    assert w.failure_repr == "RuntimeError('operation not permitted when stream is capturing')"
    assert w.eager_calls == 3 and backend.warm_ups == 1 and w.num_graphs == 0
    assert w.counters() == {"captures": 0, "replays": 0, "eager_calls": 3, "failure": w.failure_repr}
    assert [o["y"][0, 0].item() for o in outs] == [3.0, 5.0, 7.0]
    assert len([r for r in caplog.records if "running it eagerly" in r.getMessage()]) == 1

    def broken(data):
        if data["x"].shape[0] == 5:
            raise ValueError("the network's own error")
        return data["x"]

    w = GraphedOrEager(broken, capture_after=1, backend=StandInBackend())
    with pytest.raises(ValueError, match="own error"):
        call(w, torch.ones(5, 1))
    assert w.active and w.num_graphs == 0


def test_bad_arguments_and_the_cuda_backend_off_cuda():
    for kwargs in (dict(max_graphs=0), dict(capture_after=True), dict(max_graphs=1.5)):
        with pytest.raises(ValueError, match="positive integer"):
            GraphedOrEager(affine, **kwargs)
    with pytest.raises(TypeError, match="callable"):
        GraphedOrEager(3)
    backend = CudaGraphBackend()
    assert not backend.eligible([]) and not backend.eligible([torch.ones(1)])
    w = GraphedOrEager(affine)  # the real backend: CPU tensors always run eagerly
    for _ in range(3):
        assert call(w, torch.ones(2, 3))["y"][0, 0].item() == 3.0
    assert (w.eager_calls, w.captures, w.replays) == (3, 0, 0)


def test_model_graph_network_resets_on_move_and_copies_fresh(tiny_model):
    model = copy.deepcopy(tiny_model)
    wrapper = model.graph_network()
    wrapper.backend = StandInBackend()
    wrapper._graphs["k"] = "a recorded graph"
    model.to("cpu")
    assert wrapper.num_graphs == 0  # ``_apply`` (to / half / cuda ...) drops graphs of the old tensors
    wrapper._graphs["k"] = "a recorded graph"
    clone = copy.deepcopy(model)
    assert clone.compiled_network is not wrapper and clone.compiled_network.num_graphs == 0
    assert clone.compiled_network.fn.__self__ is clone  # bound to the copy's network
    assert clone.compiled_network.keep_alive.__self__ is clone  # and keeps the copy's tensors alive, not ours
    calls = []
    model.set_network_wrapper(lambda data: calls.append(1))
    batch = [{"image": torch.zeros(3, 32, 32, dtype=torch.uint8), "clicks": torch.tensor([[5, 6, 1]]),
              "prev_mask": torch.zeros(1, 32, 32)}]
    with torch.no_grad():
        data = model.preprocess(batch)
        model.train()
        assert "pred_masks" in model._inference_network(data) and not calls  # training mode: never the wrapper
        model.eval()
        model._inference_network(data)
    assert calls == [1]
    model.set_network_wrapper(wrapper)
    with pytest.raises(TypeError, match="wrapper must be callable or None"):
        model.set_network_wrapper(3)
    assert model.set_network_wrapper(None) is wrapper and model.compiled_network is None
    assert model.set_network_wrapper(wrapper) is None and model.compiled_network is wrapper
    model.uncompile_network()
    assert model.compiled_network is None


def test_collecting_constants_sees_every_value_handed_out():
    from adaptiveclick.modeling.shape_cache import collecting_constants, shape_constant

    cache = {}
    made = shape_constant(cache, "a", lambda: torch.ones(2))  # outside: collected nowhere
    with collecting_constants() as kept:
        assert shape_constant(cache, "a", lambda: torch.zeros(2)) is made  # a cache hit is collected too
        fresh = shape_constant(cache, "b", lambda: torch.zeros(3))
    assert len(kept) == 2 and kept[0] is made and kept[1] is fresh
    shape_constant(cache, "c", lambda: torch.zeros(1))
    assert len(kept) == 2  # the block is over


@pytest.mark.parametrize("made_by", ["graph_network", "benchmark"])
def test_recorded_graphs_keep_the_cached_constants_they_read_alive(tiny_model, made_by):
    """A graph reads the shape caches' tensors (position encodings, the PMMD's index tensors, the attention
    bias scalars) by address: while it lives they must survive their cache starting over, or a replay would
    read freed memory.  The same for the wrapper the benchmarks time (bench.graphed_click_fns)."""
    import gc
    import weakref

    model = copy.deepcopy(tiny_model).eval()
    if made_by == "graph_network":
        wrapper = model.graph_network(capture_after=1)
        batch = [{"image": torch.zeros(3, 48, 64, dtype=torch.uint8), "clicks": torch.tensor([[5, 6, 1]]),
                  "prev_mask": torch.zeros(1, 48, 64)}]
        run = lambda: model(batch)  # noqa: E731
    else:
        from adaptiveclick.utils.bench import graphed_click_fns

        forward, _, wrapper = graphed_click_fns(model, np.zeros((48, 64, 3), np.uint8), np.array([[5, 6, 1]]),
                                                np.zeros((48, 64), np.float32), 0.5)
        wrapper.capture_after = 1
        run = forward
    wrapper.backend = StandInBackend()
    with torch.no_grad():
        run()
    assert wrapper.captures == 1
    caches = [c for m in model.modules() for c in (getattr(m, n, None) for n in ("_cache", "_index_cache",
                                                                                   "_bias_values")) if c]
    values = [t for c in caches for v in c.values() for t in (v if isinstance(v, tuple) else (v,))]
    assert len(caches) >= 3 and any(t.dtype == torch.long for t in values)  # the index tensors among them
    refs = [weakref.ref(t) for t in values]
    del values
    for c in caches:
        c.clear()  # as a cache does past MAX_ENTRIES sizes
    gc.collect()
    assert all(r() is not None for r in refs)  # kept by the recorded graph
    # weights replaced without _apply (assign=True): the graph keeps the old tensors it reads alive too
    old = [weakref.ref(p) for p in model.parameters()]
    model.load_state_dict({k: v.clone() for k, v in model.state_dict().items()}, assign=True)
    gc.collect()
    assert all(r() is not None for r in old) and all(a is not r() for a, r in zip(model.parameters(), old))
    wrapper.reset()
    gc.collect()
    assert all(r() is None for r in refs + old)  # and freed with it


def test_graphed_predictor_matches_eager_click_by_click(tiny_model):
    from adaptiveclick.evaluation.zoom_in import ZoomInParams

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)
    clicks = [(50, 60, True), (20, 30, False), (70, 80, True), (40, 100, False), (60, 40, True)]
    params = ZoomInParams(target_size=(96, 96), min_crop_size=40)
    eager = InteractivePredictor(tiny_model, zoom_in=params, flip=True)
    eager.set_image(image)
    expected = [eager.add_click(*c).probs for c in clicks]
    model = copy.deepcopy(tiny_model)
    graphed = InteractivePredictor(model, zoom_in=params, flip=True, cuda_graph=True)
    wrapper = model.compiled_network
    wrapper.backend = StandInBackend()
    graphed.set_image(image)
    for c, probs in zip(clicks, expected):
        np.testing.assert_array_equal(graphed.add_click(*c).probs, probs)
    assert wrapper.captures >= 1 and wrapper.replays >= 1 and wrapper.active
    assert wrapper.eager_calls + wrapper.replays == len(clicks)  # one network call per click (flip in the batch)


def test_from_config_file_passes_cuda_graph():
    import os

    from adaptiveclick.utils.cuda_graph import GraphedOrEager

    tiny = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "synthetic",
                        "tiny.yaml")
    p = InteractivePredictor.from_config_file(tiny, opts=["MODEL.DEVICE", "cpu"], cuda_graph=True)
    assert isinstance(p.model.compiled_network, GraphedOrEager)
    assert InteractivePredictor.from_config_file(tiny, opts=["MODEL.DEVICE", "cpu"]).model.compiled_network is None


def test_predictor_cuda_graph_arguments(tiny_model, caplog):
    with pytest.raises(TypeError, match="cuda_graph must be a bool"):
        InteractivePredictor(tiny_model, cuda_graph="yes")
    with pytest.raises(ValueError, match="compile or cuda_graph"):
        InteractivePredictor(tiny_model, cuda_graph=True, compile=True)
    with pytest.raises(ValueError, match="int8"):
        InteractivePredictor(tiny_model, cuda_graph=True, quantize="int8")

    class Plain(torch.nn.Module):
        def forward(self, batched_inputs):
            return [{"mask_logits": torch.zeros(1, 8, 8)} for _ in batched_inputs]

    with pytest.raises(TypeError, match="graph_network"):
        InteractivePredictor(Plain(), cuda_graph=True)
    assert tiny_model.compiled_network is None
    model = copy.deepcopy(tiny_model)
    with caplog.at_level(logging.WARNING, logger="adaptiveclick"):
        p = InteractivePredictor(model, cuda_graph=True)
    assert any("CUDA graphs need a CUDA device" in r.getMessage() for r in caplog.records)
    p.set_image(np.zeros((40, 40, 3), np.uint8))
    for _ in range(3):
        p.add_click(20, 20)
    assert model.compiled_network.eager_calls == 3 and model.compiled_network.replays == 0


# ---------------------------------------------------------------------------------------------- CUDA
def _session(predictor, image, clicks):
    predictor.set_image(image)
    return [predictor.add_click(*c).probs for c in clicks]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_cuda_graphed_predictor_matches_eager(tiny_model, dtype):
    """Recorded and replayed on the GPU: the probabilities of eager clicks, fp32 and under bf16 autocast, with
    zoom-in (two input sizes: the image and the crop) and flip."""
    import contextlib

    from adaptiveclick.evaluation.zoom_in import ZoomInParams

    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)
    clicks = [(50, 60, True), (20, 30, False), (70, 80, True), (40, 100, False), (60, 40, True), (30, 60, False)]
    params = ZoomInParams(target_size=(96, 96), min_crop_size=40)
    model = copy.deepcopy(tiny_model).to("cuda")
    amp = torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with amp:
        expected = _session(InteractivePredictor(model, zoom_in=params, flip=True), image, clicks)
        graphed = InteractivePredictor(model, zoom_in=params, flip=True, cuda_graph=True)
        got = _session(graphed, image, clicks)
    wrapper = model.compiled_network
    assert wrapper.failure is None, f"recording failed: {wrapper.failure!r}"
    assert wrapper.captures >= 1 and wrapper.replays >= 2, (wrapper.captures, wrapper.replays)
    for a, b in zip(got, expected):
        # the same kernels on the same inputs; the tolerance only allows for another cuBLAS/cuDNN algorithm
        # choice inside a capture (TF32 / bf16 rounding): a stale input or output is off by far more
        np.testing.assert_allclose(a, b, atol=1e-3 if dtype is None else 1e-2)


@pytest.mark.cuda
def test_cuda_graph_replays_see_weights_loaded_in_place_and_do_not_synchronise(tiny_model):
    import warnings

    model = copy.deepcopy(tiny_model).to("cuda").eval()
    wrapper = model.graph_network(capture_after=1)
    rng = np.random.default_rng(3)
    batch = [{"image": torch.as_tensor(rng.integers(0, 256, (3, 64, 80), dtype=np.uint8)).cuda(),
              "clicks": torch.tensor([[30, 40, 1]]).cuda(), "prev_mask": torch.zeros(1, 64, 80).cuda()}]
    with torch.inference_mode():
        model(batch)  # recorded
        data = model.preprocess(batch)
        previous = torch.cuda.get_sync_debug_mode()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                replayed = model._inference_network(data)
            finally:
                torch.cuda.set_sync_debug_mode(previous)
        assert not [w for w in caught if "synchroniz" in str(w.message).lower()]
        eager = model._network(data)
        torch.testing.assert_close(replayed["pred_masks"], eager["pred_masks"], atol=1e-3, rtol=1e-3)
        state = {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v
                 for k, v in model.state_dict().items()}
        model.load_state_dict(state)
        replays = wrapper.replays
        changed = model._network(data)["pred_masks"]
        assert (changed - eager["pred_masks"]).abs().max() > 0.05  # the new weights matter ...
        torch.testing.assert_close(model._inference_network(data)["pred_masks"], changed, atol=1e-3, rtol=1e-3)
    assert wrapper.replays == replays + 1 and wrapper.failure is None


def test_evaluate_noc_cuda_graph_needs_cuda(capsys):
    """``tools/evaluate_noc.py --cuda-graph`` stops before any work when the config's device is not CUDA, or
    with --int8 (CPU only)."""
    import importlib.util
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("_evaluate_noc_cg", os.path.join(root, "tools", "evaluate_noc.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tiny = os.path.join(root, "configs", "synthetic", "tiny.yaml")
    for extra, message in ((["MODEL.DEVICE", "cpu"], "--cuda-graph needs a CUDA device; MODEL.DEVICE is 'cpu'"),
                           (["--int8", "MODEL.DEVICE", "cpu"], "--int8 runs on the CPU only: choose one")):
        parser = tool.build_parser()
        args = parser.parse_args(["--config-file", tiny, "--random-weights", "--cuda-graph"] + extra)
        with pytest.raises(SystemExit) as exit_info:
            tool.check_args(parser, args)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    parser = tool.build_parser()
    tool.check_args(parser, parser.parse_args(["--config-file", tiny, "--random-weights", "MODEL.DEVICE", "cpu"]))
