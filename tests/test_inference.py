"""InteractivePredictor and the visualizer demo."""

import contextlib
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from adaptiveclick.clicks import Click
from adaptiveclick.evaluation import InteractiveSession, ModelPredictor, NoCProtocol
from adaptiveclick.evaluation.zoom_in import ZoomInParams
from adaptiveclick.inference import InteractivePredictor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "synthetic", "tiny.yaml")


class DiskModel(torch.nn.Module):
    """Contract-following stub: logit +8 within `radius` of a positive click, -8 elsewhere; a negative click's
    disk is background.  Records what it was given."""

    def __init__(self, radius=6.0):
        super().__init__()
        self.radius = radius
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the module a device
        self.calls = []

    def forward(self, batched_inputs):
        outs = []
        for x in batched_inputs:
            self.calls.append({k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in x.items()})
            h, w = x["image"].shape[-2:]
            rr, cc = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                    indexing="ij")
            logits = torch.full((h, w), -8.0)
            for r, c, p in x["clicks"].float().tolist():
                inside = (rr - r) ** 2 + (cc - c) ** 2 <= self.radius ** 2
                logits[inside] = 8.0 if p > 0.5 else -8.0
            outs.append({"mask_logits": logits[None] + self.anchor})
        return outs


def disk(shape, r, c, radius):
    rr, cc = np.mgrid[:shape[0], :shape[1]]
    return (rr - r) ** 2 + (cc - c) ** 2 <= radius ** 2


def rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def tiny_cfg(**overrides):
    from detectron2.config import get_cfg

    from adaptiveclick.config import add_adaptiveclick_config

    cfg = get_cfg()
    add_adaptiveclick_config(cfg)
    cfg.merge_from_file(TINY)
    cfg.MODEL.DEVICE = "cpu"
    for k, v in overrides.items():
        cfg.merge_from_list([k, v])
    return cfg


@pytest.fixture(scope="module")
def tiny_model():
    from detectron2.modeling import build_model

    import adaptiveclick.modeling  # noqa: F401

    torch.manual_seed(0)
    return build_model(tiny_cfg()).eval()


# ------------------------------------------------------------------------------------------ stub model
def test_mask_follows_the_clicks_without_transforms():
    p = InteractivePredictor(DiskModel(), zoom_in=False, flip=False)
    p.set_image(rgb(40, 50))
    r1 = p.add_click(10, 12)
    np.testing.assert_array_equal(r1.mask, disk((40, 50), 10, 12, 6))
    assert r1.probs.dtype == np.float32 and r1.probs.shape == (40, 50)
    assert r1.clicks == (Click(True, 10, 12),) and r1.area == disk((40, 50), 10, 12, 6).sum()
    r2 = p.add_click(30, 40)
    np.testing.assert_array_equal(r2.mask, disk((40, 50), 10, 12, 6) | disk((40, 50), 30, 40, 6))
    r3 = p.add_click(30, 40, positive=False)
    np.testing.assert_array_equal(r3.mask, disk((40, 50), 10, 12, 6))
    assert p.clicks == (Click(True, 10, 12), Click(True, 30, 40), Click(False, 30, 40))
    # the previous prediction is the next click's previous-mask input
    model = p.model
    np.testing.assert_allclose(model.calls[0]["prev_mask"].numpy(), 0.0)
    np.testing.assert_allclose(model.calls[1]["prev_mask"][0].numpy(), r1.probs, atol=1e-6)
    np.testing.assert_allclose(model.calls[2]["prev_mask"][0].numpy(), r2.probs, atol=1e-6)
    assert model.calls[2]["clicks"].tolist() == [[10, 12, 1], [30, 40, 1], [30, 40, 0]]


def test_threshold_is_strict():
    # logits exactly 0 -> probs 0.5 > 0.49 (object); with threshold 0.5, not the object
    class Zero(DiskModel):
        def forward(self, batched_inputs):
            return [{"mask_logits": torch.zeros((1,) + tuple(x["image"].shape[-2:])) + self.anchor}
                    for x in batched_inputs]

    for threshold, expected in ((0.49, True), (0.5, False)):
        p = InteractivePredictor(Zero(), zoom_in=False, flip=False, threshold=threshold)
        p.set_image(rgb(8, 8))
        assert p.add_click(1, 1).mask.all() == expected


def test_undo_restores_the_previous_state_and_next_input():
    p = InteractivePredictor(DiskModel(), zoom_in=False, flip=False)
    p.set_image(rgb(40, 50))
    r1 = p.add_click(10, 12)
    p.add_click(30, 40)
    back = p.undo()
    np.testing.assert_array_equal(back.mask, r1.mask)
    np.testing.assert_array_equal(back.probs, r1.probs)
    assert back.clicks == r1.clicks and p.clicks == r1.clicks
    p.add_click(5, 45)
    np.testing.assert_allclose(p.model.calls[-1]["prev_mask"][0].numpy(), r1.probs, atol=1e-6)
    assert p.undo().clicks == r1.clicks
    empty = p.undo()
    assert empty.clicks == () and not empty.mask.any() and empty.mask.shape == (40, 50)
    assert p.result is None
    with pytest.raises(ValueError, match="no click to undo"):
        p.undo()


def test_reset_and_new_image_drop_clicks():
    p = InteractivePredictor(DiskModel(), zoom_in=False, flip=False)
    p.set_image(rgb(20, 20))
    p.add_click(5, 5)
    p.reset()
    assert p.clicks == () and p.result is None
    p.add_click(3, 3)
    np.testing.assert_allclose(p.model.calls[-1]["prev_mask"].numpy(), 0.0)
    p.set_image(rgb(30, 10, seed=1))
    assert p.clicks == () and p.image.shape == (30, 10, 3)
    assert p.add_click(29, 9).mask.shape == (30, 10)


def test_flip_averages_the_mirrored_logits():
    # logits linear in the column: the flip average of f(col) and f(W-1-col) is the same at every pixel
    class Ramp(DiskModel):
        def forward(self, batched_inputs):
            out = []
            for x in batched_inputs:
                h, w = x["image"].shape[-2:]
                out.append({"mask_logits": (torch.arange(w, dtype=torch.float32) - 3.0).expand(1, h, w)
                            + self.anchor})
            return out

    w = 9
    expected = 1.0 / (1.0 + np.exp(-((w - 1) / 2.0 - 3.0)))
    flipped = InteractivePredictor(Ramp(), zoom_in=False, flip=True)
    flipped.set_image(rgb(5, w))
    np.testing.assert_allclose(flipped.add_click(2, 2).probs, expected, rtol=1e-6)
    plain = InteractivePredictor(Ramp(), zoom_in=False, flip=False)
    plain.set_image(rgb(5, w))
    np.testing.assert_allclose(plain.add_click(2, 2).probs[0], 1 / (1 + np.exp(-(np.arange(w) - 3.0))), rtol=1e-6)


def test_zoom_in_feeds_the_target_size_and_returns_image_resolution():
    model = DiskModel(radius=3)  # about 14 x 19 pixels of the image after the resize back
    p = InteractivePredictor(model, zoom_in=ZoomInParams(target_size=(64, 64), min_crop_size=40), flip=False)
    p.set_image(rgb(300, 400))
    r1 = p.add_click(150, 200)
    assert r1.mask.shape == (300, 400)
    assert tuple(model.calls[0]["image"].shape) == (3, 64, 64)  # the whole image resized (empty previous mask)
    p.add_click(160, 210)
    roi = p._zoom.roi
    assert roi[0] > 100 and roi[1] < 200 and roi[2] > 130 and roi[3] < 270, roi  # the object's region
    assert tuple(model.calls[1]["image"].shape) == (3, 64, 64)
    # undo restores the region of the remaining click
    p.undo()
    assert p._zoom.roi == (0, 299, 0, 399)


def test_bad_input_gets_clear_errors():
    p = InteractivePredictor(DiskModel(), zoom_in=False, flip=False)
    with pytest.raises(RuntimeError, match="set_image"):
        p.add_click(0, 0)
    with pytest.raises(RuntimeError, match="set_image"):
        p.undo()
    with pytest.raises(ValueError, match="grey"):
        p.set_image(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="RGBA"):
        p.set_image(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        p.set_image(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(TypeError, match="numpy array"):
        p.set_image([[0, 0, 0]])
    with pytest.raises(ValueError, match="empty"):
        p.set_image(np.zeros((0, 4, 3), np.uint8))
    p.set_image(rgb(10, 20))
    for row, col in ((10, 0), (0, 20), (-1, 3), (3, -1)):
        with pytest.raises(ValueError, match="outside the image"):
            p.add_click(row, col)
    with pytest.raises(TypeError, match="integer"):
        p.add_click(1.5, 2)
    with pytest.raises(TypeError, match="positive"):
        p.add_click(1, 2, positive="yes")
    assert p.clicks == ()  # nothing was added by the failed calls
    with pytest.raises(TypeError, match="CfgNode or a torch.nn.Module"):
        InteractivePredictor("configs/synthetic/tiny.yaml")
    with pytest.raises(ValueError, match="threshold"):
        InteractivePredictor(DiskModel(), threshold=1.0)
    with pytest.raises(TypeError, match="zoom_in"):
        InteractivePredictor(DiskModel(), zoom_in="on")


def test_nan_logits_are_reported():
    class NaN(DiskModel):
        def forward(self, batched_inputs):
            return [{"mask_logits": torch.full((1,) + tuple(x["image"].shape[-2:]), float("nan"))}
                    for x in batched_inputs]

    p = InteractivePredictor(NaN(), zoom_in=False, flip=False)
    p.set_image(rgb(8, 8))
    with pytest.raises(ValueError, match="NaN"):
        p.add_click(1, 1)
    assert p.clicks == ()


def test_reset_before_set_image_is_an_error_like_undo():
    p = InteractivePredictor(DiskModel(), zoom_in=False, flip=False)
    for call, name in ((p.reset, "reset"), (p.undo, "undo")):
        with pytest.raises(RuntimeError, match=rf"{name} needs an image: call set_image\(\) first"):
            call()
    p.set_image(rgb(10, 10))
    p.reset()  # with an image: fine, also without clicks
    assert p.clicks == () and p.result is None


def test_click_coordinates_are_integers_and_positive_a_bool():
    p = InteractivePredictor(DiskModel(), zoom_in=False, flip=False)
    p.set_image(rgb(40, 50))
    # integer-valued scalars of NumPy and torch are pixel indices too
    accepted = [((np.int64(10), np.uint8(12), True), Click(True, 10, 12)),
                ((torch.tensor(20), torch.tensor(30, dtype=torch.int32), np.True_), Click(True, 20, 30)),
                ((5, 6, np.False_), Click(False, 5, 6))]
    for args, click in accepted:
        result = p.add_click(*args)
        assert result.clicks[-1] == click and type(result.clicks[-1].row) is int
    before = p.clicks
    refused = [((10.0, 20), r"row must be an integer pixel index .*round float coordinates first, e.g. "
                            r"int\(round\(y\)\); got 10\.0 \(float\)"),
               ((10, np.float64(20)), r"col must be an integer pixel index .*int\(round\(x\)\)"),
               ((torch.tensor(10.0), 3), r"row must be an integer pixel index .*round float coordinates"),
               ((torch.tensor([1, 2]), 3), r"row must be an integer pixel index .*pass one number, not an array "
                                           r"of shape \(2,\)"),
               ((True, 3), r"row must be an integer pixel index .*got True \(bool\)"),
               ((1, 2, 1), r"positive must be a bool: pass True .* or False .*got 1 \(int\)"),
               ((1, 2, "yes"), r"positive must be a bool: pass True")]
    for args, match in refused:
        with pytest.raises(TypeError, match=match):
            p.add_click(*args)
    assert p.clicks == before  # nothing was added by the failed calls


def test_results_are_read_only_copies_that_cannot_change_the_state(tiny_model):
    """Writing into a returned array raises, and whatever a caller does with its result (here: a forced
    write) leaves the next click's previous-mask input, the undo history and ``result`` as a clean run has
    them.  Before, on the CPU, ``result.probs`` was the stored step's memory."""
    image = rgb(60, 70, seed=5)

    def run(tamper):
        p = InteractivePredictor(tiny_model, zoom_in=False, flip=False)
        p.set_image(image)
        r1 = p.add_click(30, 35)
        first = np.array(r1.probs)
        if tamper:
            for array in (r1.probs, r1.mask, p.result.probs, p.result.mask):
                assert not array.flags.writeable
                with pytest.raises(ValueError, match="read-only"):
                    array[...] = 1
            for array in (p.result.probs, p.result.mask):
                assert not np.shares_memory(array, r1.probs) and not np.shares_memory(array, r1.mask)
            try:  # what a determined caller could do: make it writable and write
                r1.probs.setflags(write=True)
                r1.probs[...] = 0.25
            except ValueError:
                pass
        np.testing.assert_array_equal(p.result.probs, first)
        r2 = p.add_click(10, 10, positive=False)
        back = p.undo()
        return first, r2.probs, back.probs, p.add_click(50, 60).probs

    for clean, tampered in zip(run(False), run(True)):
        np.testing.assert_array_equal(tampered, clean)
    # the empty state of an undo is read-only too
    p = InteractivePredictor(DiskModel(), zoom_in=False, flip=False)
    p.set_image(rgb(8, 8))
    p.add_click(1, 1)
    empty = p.undo()
    assert not empty.mask.flags.writeable and not empty.probs.flags.writeable


class SlowDiskModel(DiskModel):
    """DiskModel that sleeps in its forward (releasing the GIL), so that threads interleave there."""

    def forward(self, batched_inputs):
        time.sleep(0.005)
        return super().forward(batched_inputs)


def test_one_predictor_shared_by_threads_serialises_the_clicks():
    """Threads adding clicks to one predictor: every returned state equals the serial replay of the clicks in
    the order the predictor recorded them (before the lock, a click could be predicted without the click
    another thread had just added, and its mask was wrong)."""
    shape, threads, per_thread = (60, 80), 4, 5
    p = InteractivePredictor(SlowDiskModel(radius=4), zoom_in=False, flip=False)
    p.set_image(rgb(*shape))
    returned, errors = [], []
    start = threading.Barrier(threads)

    def worker(i):
        try:
            start.wait()
            for k in range(per_thread):
                returned.append(p.add_click(8 + 10 * k, 8 + 20 * i, positive=(k != 3)))
        except Exception as e:  # reported below: an assertion in a thread would be lost
            errors.append(e)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors, errors
    final = p.clicks
    assert len(final) == threads * per_thread and len(set(final)) == len(final)
    serial = InteractivePredictor(DiskModel(radius=4), zoom_in=False, flip=False)
    serial.set_image(rgb(*shape))
    replay = [serial.add_click(c.row, c.col, c.is_positive) for c in final]
    assert sorted(len(r.clicks) for r in returned) == list(range(1, len(final) + 1))
    for r in returned:
        k = len(r.clicks)
        assert r.clicks == final[:k]
        np.testing.assert_array_equal(r.mask, replay[k - 1].mask, err_msg=f"state after click {k}")
    np.testing.assert_array_equal(p.result.mask, replay[-1].mask)


def test_from_config_file_bad_arguments_get_clear_errors(tmp_path):
    with pytest.raises(TypeError, match=r"opts must be a list like \['KEY', value, \.\.\.\].*got str"):
        InteractivePredictor.from_config_file(TINY, opts="TEST.NOC.FLIP False")
    # an unknown key in the overrides is the same error as one in a YAML file (not yacs' AssertionError)
    with pytest.raises(KeyError, match=r"Non-existent config key: TEST\.NOC\.FLIPP \(in opts\)"):
        InteractivePredictor.from_config_file(TINY, opts=["TEST.NOC.FLIPP", "False"])
    typo = tmp_path / "typo.yaml"
    typo.write_text(f'_BASE_: "{TINY}"\nTEST:\n  NOC:\n    FLIPP: False\n')
    with pytest.raises(KeyError, match=r"Non-existent config key: TEST\.NOC\.FLIPP"):
        InteractivePredictor.from_config_file(str(typo))
    with pytest.raises(IsADirectoryError, match=r"MODEL.WEIGHTS is a directory, not a checkpoint file: .*model_final"):
        InteractivePredictor.from_config_file(TINY, weights=str(tmp_path), opts=["MODEL.DEVICE", "cpu"])
    if not torch.cuda.is_available():
        for kwargs in (dict(device="cuda"), dict(opts=["MODEL.DEVICE", "cuda"])):
            with pytest.raises(RuntimeError, match=r"'cuda' but CUDA is not available on this machine"):
                InteractivePredictor.from_config_file(TINY, **kwargs)
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            InteractivePredictor(DiskModel(), device="cuda")


# ------------------------------------------------------------------------------------------ real model
def test_same_probabilities_as_the_noc_protocol(tiny_model):
    """Replaying the oracle's clicks in the predictor gives the session's probabilities (zoom-in and flip on)."""
    image = rgb(150, 170, seed=3)
    gt = disk((150, 170), 70, 90, 30)
    params = ZoomInParams(target_size=(128, 128), min_crop_size=60)
    session = InteractiveSession(ModelPredictor(tiny_model), image, gt,
                                 protocol=NoCProtocol(max_clicks=4, stop_iou=1.01, zoom_in=params, flip=True))
    p = InteractivePredictor(tiny_model, zoom_in=params, flip=True)
    p.set_image(image)
    for _ in range(4):
        session.step()
        c = session.clicks[-1]
        result = p.add_click(c.row, c.col, c.is_positive)
        np.testing.assert_allclose(result.probs, session.probs, atol=1e-6)
        np.testing.assert_array_equal(result.mask, session.prediction)


@pytest.mark.parametrize("zoom_in,flip", [(False, False), (False, True), (True, False), (True, True)])
def test_a_click_reads_one_value_on_the_host(tiny_model, zoom_in, flip):
    """``add_click`` reads one tensor value on the host, the flag of the model's input checks (one for the whole
    batch, the flipped copy included): on a GPU each read makes the host wait.  The zoom-in region and the
    probabilities come back as host copies, and NaN logits are found in the copy.  The code before read 6
    (plain click) to 15 values (zoom-in + flip: integrality and value flags per batch item, click checks, three
    reads for the region, NaN checks of the logits and of the probabilities)."""
    from adaptiveclick.utils.op_count import count_operators

    params = ZoomInParams(target_size=(96, 96), min_crop_size=40) if zoom_in else False
    p = InteractivePredictor(tiny_model, zoom_in=params, flip=flip)
    p.set_image(rgb(100, 120))
    p.add_click(50, 60)
    counts, result = count_operators(lambda: p.add_click(30, 40, False))
    assert counts["host_reads"] == 1, counts
    assert len(result.clicks) == 2 and result.mask.shape == (100, 120)


@pytest.mark.cuda
def test_cuda_click_synchronises_three_times_at_most(tiny_model):
    """On CUDA a warm zoom-in + flip click synchronises the host with the GPU at most three times: the flag of
    the model's input checks, the zoom-in region's row and column flags, and the probabilities copied back
    (``torch.cuda.set_sync_debug_mode`` reports each)."""
    import copy
    import warnings

    p = InteractivePredictor(copy.deepcopy(tiny_model), device="cuda",
                             zoom_in=ZoomInParams(target_size=(96, 96), min_crop_size=40), flip=True)
    p.set_image(rgb(100, 120))
    for row, col, pos in ((50, 60, True), (20, 30, False)):  # warm: the op's index tensors, the shape caches
        p.add_click(row, col, pos)
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            p.add_click(70, 80, True)
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower()]
    assert 1 <= len(syncs) <= 3, syncs


def test_from_config_loads_weights_and_any_image_size(tmp_path, tiny_model):
    from adaptiveclick.engine.checkpoint import AtomicCheckpointer, CheckpointError

    AtomicCheckpointer(tiny_model, save_dir=str(tmp_path)).save("weights")
    path = str(tmp_path / "weights.pth")
    p = InteractivePredictor.from_config_file(TINY, weights=path, opts=["MODEL.DEVICE", "cpu"])
    for (name, a), b in zip(tiny_model.state_dict().items(), p.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert p.zoom_in_params.target_size == (128, 128) and p.flip and p.threshold == pytest.approx(0.49)
    for h, w in ((97, 211), (33, 40)):
        p.set_image(rgb(h, w))
        r = p.add_click(h // 2, w // 3)
        assert r.mask.shape == (h, w) and np.isfinite(r.probs).all()
    with pytest.raises(FileNotFoundError, match="MODEL.WEIGHTS"):
        InteractivePredictor(tiny_cfg(**{"MODEL.WEIGHTS": str(tmp_path / "missing.pth")}))
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="broken.pth"):
        InteractivePredictor(tiny_cfg(**{"MODEL.WEIGHTS": str(tmp_path / "broken.pth")}))
    with pytest.raises(FileNotFoundError, match="config file"):
        InteractivePredictor.from_config_file(str(tmp_path / "none.yaml"))


def test_zoom_in_and_flip_default_to_the_config_and_threshold_takes_any_real(tmp_path):
    off = InteractivePredictor.from_config_file(TINY, opts=["MODEL.DEVICE", "cpu", "TEST.NOC.FLIP", False,
                                                            "TEST.NOC.ZOOM_IN.ENABLED", False])
    assert off.zoom_in_params is None and not off.flip
    on = InteractivePredictor.from_config_file(TINY, opts=["MODEL.DEVICE", "cpu"], flip=False)
    assert on.zoom_in_params is not None and not on.flip  # an explicit argument wins over the config
    p = InteractivePredictor(on.model, threshold=np.float32(0.5))
    assert p.threshold == 0.5 and isinstance(p.threshold, float) and p.flip and p.zoom_in_params is not None
    with pytest.raises(ValueError, match=r"a real number in \[0, 1\)"):
        InteractivePredictor(on.model, threshold=np.bool_(True))


@contextlib.contextmanager
def full_fp32_on_cuda():
    """cuDNN runs fp32 convolutions in TF32 unless told not to (and cuBLAS matmuls if allowed).  Set and restored
    by hand: pytest's monkeypatch cannot restore torch 2.11's ``cuda.matmul.allow_tf32`` (a ``__getattr__``
    attribute, which it deletes on undo)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.cuda
def test_cuda_matches_cpu(tiny_model):
    import copy

    image = rgb(100, 120)
    cpu = InteractivePredictor(tiny_model, zoom_in=True, flip=True)
    gpu = InteractivePredictor(copy.deepcopy(tiny_model), device="cuda", zoom_in=True, flip=True)
    for p in (cpu, gpu):
        p.set_image(image)
    # in TF32, emulated on this test's inputs, the probabilities moved by up to 2.1e-3, past the tolerance; in
    # full fp32 the devices differ by rounding only
    with full_fp32_on_cuda():
        for row, col, pos in ((50, 60, True), (20, 30, False), (70, 80, True)):
            a, b = cpu.add_click(row, col, pos), gpu.add_click(row, col, pos)
            np.testing.assert_allclose(a.probs, b.probs, atol=2e-3)


# ------------------------------------------------------------------------------------------ visualizer CLI
def _visualize_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo_visualize", os.path.join(ROOT, "tools", "demo", "visualize.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parse_clicks():
    parse = _visualize_module().parse_clicks
    assert parse("1,2,+; 30,4,-;") == [(1, 2, True), (30, 4, False)]
    for bad, match in (("1,2", "expected"), ("a,2,+", "integers"), ("1,2,*", "expected"), (" ; ", "no clicks")):
        with pytest.raises(ValueError, match=match):
            parse(bad)


def test_visualize_cli_writes_overlay_and_mask(tmp_path):
    from PIL import Image

    image = rgb(60, 80)
    image[20:40, 30:50] = (250, 200, 0)
    Image.fromarray(image).save(tmp_path / "in.png")
    out, mask = tmp_path / "out" / "overlay.png", tmp_path / "mask.png"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "demo", "visualize.py"), "--config-file", TINY,
                           "--image", str(tmp_path / "in.png"), "--clicks", "30,40,+;5,5,-", "--output", str(out),
                           "--mask-output", str(mask), "--device", "cpu"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    overlay = np.asarray(Image.open(out))
    assert overlay.shape[:2] == (60, 80)
    # the clicks are drawn: green near the positive click, red near the negative one
    g, r = overlay[30, 40].astype(int), overlay[5, 5].astype(int)
    assert g[1] > g[0] + 60 and g[1] > g[2] + 60, g
    assert r[0] > r[1] + 60 and r[0] > r[2] + 60, r
    m = np.asarray(Image.open(mask))
    assert m.shape == (60, 80) and set(np.unique(m)) <= {0, 255}
    # bad input: a clear error (the script turns it into exit status 2 and an "error:" line)
    with pytest.raises(ValueError, match="outside the image"):
        _visualize_module().main(["--config-file", TINY, "--image", str(tmp_path / "in.png"), "--clicks", "60,1,+",
                                  "--output", str(out), "--device", "cpu"])


def test_visualize_bad_model_arguments_are_error_lines(tmp_path):
    """A misspelt config override (and weights that are a directory) end like every other bad input: one
    ``error: ...`` line and exit status 2, not a traceback with status 1."""
    from PIL import Image

    Image.fromarray(rgb(20, 30)).save(tmp_path / "in.png")
    script = os.path.join(ROOT, "tools", "demo", "visualize.py")
    common = ["--config-file", TINY, "--image", str(tmp_path / "in.png"), "--clicks", "5,5,+", "--output",
              str(tmp_path / "out.png"), "--device", "cpu"]
    proc = subprocess.run([sys.executable, script] + common + ["TEST.NOC.FLIPP", "False"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert "error: Non-existent config key: TEST.NOC.FLIPP (in opts)" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    with pytest.raises(IsADirectoryError, match="is a directory"):  # caught by the script like the others
        _visualize_module().main(common + ["--weights", str(tmp_path)])
    assert not (tmp_path / "out.png").exists()


def test_predictor_refuses_a_checkpoint_that_does_not_fit(tmp_path, tiny_model):
    from adaptiveclick.engine.checkpoint import AtomicCheckpointer, CheckpointError

    AtomicCheckpointer(tiny_model, save_dir=str(tmp_path)).save("width96")
    path = str(tmp_path / "width96.pth")
    with pytest.raises(CheckpointError, match=r"width96\.pth does not fit the model .*tensor\(s\) of another shape: "
                                              r".*\(checkpoint \(1, \d+, 96\), model \(1, \d+, 48\)\)"):
        InteractivePredictor(tiny_cfg(**{"MODEL.WEIGHTS": path, "MODEL.VIT.EMBED_DIM": 48}))
    torch.save({"model": {}}, tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match=r"empty\.pth .*model parameter\(s\)/buffer\(s\) not in the checkpoint"):
        InteractivePredictor(tiny_cfg(**{"MODEL.WEIGHTS": str(tmp_path / "empty.pth")}))


def _encoded(array, fmt="PNG", **kwargs):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _exif_rotated_jpeg():
    """A JPEG stored 20 x 40 (left half white, right half black) with EXIF orientation 6: displayed 40 x 20
    (rotated 90 degrees clockwise: white on top)."""
    from PIL import Image

    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encoded(stored, "JPEG", exif=exif, quality=95)


def test_visualize_reads_images_like_the_web_demo(tmp_path):
    vis = _visualize_module()
    web = vis._web_demo()  # tools/demo/web.py: its decode_image is the one reader of both demos
    assert web.decode_image is vis._web_demo().decode_image
    grey16 = np.array([[0, 128, 129, 257], [32896, 40000, 65280, 65535]], np.uint16)
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 2] = 180
    rgba[:, :2, 3] = 255  # left half opaque blue, right half transparent
    cases = {"grey16.png": _encoded(grey16), "grey16.tif": _encoded(grey16, "TIFF"), "rgba.png": _encoded(rgba),
             "rotated.jpg": _exif_rotated_jpeg(),
             "float.tif": _encoded(np.array([[0.0, 0.5], [0.75, 1.0]], np.float32), "TIFF")}
    decoded = {}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        decoded[name] = vis.read_image(str(tmp_path / name))
        assert decoded[name].dtype == np.uint8 and decoded[name].shape[2] == 3
        np.testing.assert_array_equal(decoded[name], web.decode_image(data, max_pixels=None, formats=None))
    # 16-bit: round(v / 257) in every channel (PIL's convert("RGB") used to clip this to 0 / 255)
    expected16 = np.array([[0, 0, 1, 1], [128, 156, 254, 255]], np.uint8)
    np.testing.assert_array_equal(decoded["grey16.png"], np.repeat(expected16[..., None], 3, axis=2))
    np.testing.assert_array_equal(decoded["grey16.tif"], decoded["grey16.png"])
    np.testing.assert_array_equal(decoded["float.tif"][..., 0], [[0, 128], [191, 255]])
    # alpha composited on white, as the web demo does
    np.testing.assert_array_equal(decoded["rgba.png"][:, :2], np.broadcast_to([0, 0, 180], (3, 2, 3)))
    np.testing.assert_array_equal(decoded["rgba.png"][:, 2:], np.full((3, 2, 3), 255))
    # EXIF orientation applied: 40 rows x 20 columns, white on top
    rotated = decoded["rotated.jpg"].astype(int)
    assert rotated.shape == (40, 20, 3)
    assert rotated[:18].min() > 200 and rotated[22:].max() < 55


def test_visualize_uses_displayed_coordinates(tmp_path):
    from PIL import Image

    (tmp_path / "rotated.jpg").write_bytes(_exif_rotated_jpeg())
    out, mask = tmp_path / "overlay.png", tmp_path / "mask.png"
    # row 35 exists only in the displayed (rotated) image, which has 40 rows
    assert _visualize_module().main(["--config-file", TINY, "--image", str(tmp_path / "rotated.jpg"),
                                     "--clicks", "35,5,+", "--output", str(out), "--mask-output", str(mask),
                                     "--device", "cpu", "--no-zoom-in"]) == 0
    assert np.asarray(Image.open(out)).shape[:2] == (40, 20)
    assert np.asarray(Image.open(mask)).shape == (40, 20)
    # a click outside the displayed image is an error before any model is loaded (the config does not exist)
    with pytest.raises(ValueError, match=r"click 2 \(5, 20\) is outside the image.* 40 rows and 20 columns"):
        _visualize_module().main(["--config-file", "no/such/config.yaml", "--image", str(tmp_path / "rotated.jpg"),
                                  "--clicks", "35,5,+;5,20,+", "--output", str(out)])


def test_visualize_unreadable_images_are_clear_errors(tmp_path):
    png = _encoded(rgb(30, 40))
    files = {"truncated.png": (png[: len(png) - 50], "truncated"), "header.png": (png[:30], "image"),
             "text.png": (b"this is not an image", "not an image"), "empty.png": (b"", "empty"),
             "neg.tif": (_encoded(np.array([[-3, 4]], np.int32), "TIFF"), "negative")}
    for name, (data, reason) in files.items():
        (tmp_path / name).write_bytes(data)
    files["missing.png"] = (None, "No such file")
    files[""] = (None, "directory")  # tmp_path itself
    for name, (_, reason) in files.items():
        path = str(tmp_path / name) if name else str(tmp_path)
        with pytest.raises(ValueError) as info:  # before loading a model: the config does not exist
            _visualize_module().main(["--config-file", "no/such/config.yaml", "--image", path, "--clicks", "1,1,+",
                                      "--output", str(tmp_path / "out.png")])
        message = str(info.value)
        assert message.startswith(f"cannot read --image {path}: ") and reason in message, message
    # the script: one "error:" line naming the file, exit status 2, no traceback
    bad = str(tmp_path / "truncated.png")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "demo", "visualize.py"), "--config-file", TINY,
                           "--image", bad, "--clicks", "1,1,+", "--output", str(tmp_path / "out.png")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert f"error: cannot read --image {bad}: " in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "out.png").exists()
