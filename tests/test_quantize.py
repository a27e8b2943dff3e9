"""Opt-in int8 inference (adaptiveclick.utils.quantize, the predictor's ``quantize="int8"``, evaluate_noc --int8)."""

import importlib.util
import os

import numpy as np
import pytest
import torch

from adaptiveclick.inference import InteractivePredictor
from adaptiveclick.utils.quantize import count_quantized_linears, quantize_dynamic_int8

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "synthetic", "tiny.yaml")


def _inputs(seed=0, size=96):
    rng = np.random.default_rng(seed)
    image = torch.from_numpy(rng.integers(0, 256, (3, size, size), dtype=np.uint8))
    clicks = torch.tensor([[40, 50, 1], [70, 20, 0]])
    return [{"image": image, "clicks": clicks, "prev_mask": torch.zeros(1, size, size)}]


def test_quantized_copy_leaves_the_model_alone_and_stays_close(tiny_model):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    linears = sum(type(m) is torch.nn.Linear for m in tiny_model.modules())
    q = quantize_dynamic_int8(tiny_model)
    assert q is not tiny_model and not q.training
    assert count_quantized_linears(q) == linears > 0 and count_quantized_linears(tiny_model) == 0
    assert all(torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())
    with torch.no_grad():
        ref = tiny_model(_inputs())[0]["mask_logits"]
        out = q(_inputs())[0]["mask_logits"]
    assert out.shape == ref.shape and torch.isfinite(out).all()
    diff = (out - ref).abs().max().item()
    # int8 weights and activations: close to fp32, but really quantised (not the fp32 result)
    assert 0 < diff < 0.05 * ref.abs().max().item(), (diff, ref.abs().max().item())


def test_quantize_refuses_what_it_cannot_do(tiny_model):
    with pytest.raises(TypeError, match="nn.Module"):
        quantize_dynamic_int8(lambda x: x)
    with pytest.raises(ValueError, match="no nn.Linear"):
        quantize_dynamic_int8(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1)).eval())
    with pytest.raises(ValueError, match="model.eval"):
        quantize_dynamic_int8(torch.nn.Linear(2, 2).train())
    with pytest.raises(ValueError, match="CPU only.*meta"):
        quantize_dynamic_int8(torch.nn.Linear(2, 2, device="meta").eval())
    tiny_model.compile_network()
    try:
        with pytest.raises(ValueError, match="compiled"):
            quantize_dynamic_int8(tiny_model)
    finally:
        tiny_model.uncompile_network()


def test_quantize_says_when_this_torch_lacks_the_int8_api(monkeypatch):
    """torch.ao.quantization is deprecated upstream: a torch without it gets a clear error, not an AttributeError
    from deep inside, and the warnings the deprecated path still prints are kept out of the user's way."""
    import re
    import sys
    import warnings

    from adaptiveclick.utils import quantize as quantize_module

    model = torch.nn.Sequential(torch.nn.Linear(4, 4)).eval()
    real = quantize_module._quantize_dynamic()

    def noisy(*args, **kwargs):  # what torch 2.14 prints (its C++ warning fires once per process: made here)
        warnings.warn("torch.ao.quantization is deprecated", DeprecationWarning)
        warnings.warn("torch.quantize_per_tensor ... are deprecated", UserWarning)
        return real(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(quantize_module, "_quantize_dynamic", lambda: noisy)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any warning that reaches the caller fails here
            assert count_quantized_linears(quantize_dynamic_int8(model)) == 1
        with pytest.warns(UserWarning, match="other"):  # other warnings still reach the user
            m.setattr(quantize_module, "_quantize_dynamic",
                      lambda: lambda *a, **k: (warnings.warn("other", UserWarning), real(*a, **k))[1])
            quantize_dynamic_int8(model)
    monkeypatch.setitem(sys.modules, "torch.ao.quantization", None)  # importing it now raises ImportError
    with pytest.raises(RuntimeError, match=rf"torch\.ao\.quantization\.quantize_dynamic.*{re.escape(torch.__version__)}"):
        quantize_dynamic_int8(model)


def test_predictor_int8_option(tiny_model):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (96, 112, 3), dtype=np.uint8)
    fp32 = InteractivePredictor(tiny_model, zoom_in=False, flip=False)
    int8 = InteractivePredictor(tiny_model, zoom_in=False, flip=False, quantize="int8")
    by_hand = InteractivePredictor(quantize_dynamic_int8(tiny_model), zoom_in=False, flip=False)
    assert fp32.quantize is None and int8.quantize == "int8"
    assert int8.model is not tiny_model and count_quantized_linears(int8.model) > 0
    assert fp32.model is tiny_model
    for p in (fp32, int8, by_hand):
        p.set_image(image)
    a, b, c = fp32.add_click(40, 50), int8.add_click(40, 50), by_hand.add_click(40, 50)
    np.testing.assert_allclose(b.probs, c.probs, atol=1e-6)  # the option is exactly the quantised copy
    assert 0 < np.abs(a.probs - b.probs).max() < 0.2 and b.mask.shape == (96, 112)
    with pytest.raises(ValueError, match="quantize must be"):
        InteractivePredictor(tiny_model, quantize="fp16")


def test_evaluate_noc_has_the_int8_switch():
    spec = importlib.util.spec_from_file_location("_evaluate_noc_int8", os.path.join(ROOT, "tools", "evaluate_noc.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = module.build_parser().parse_args(["--config-file", TINY, "--int8"])
    assert args.int8 is True
    assert module.build_parser().parse_args(["--config-file", TINY]).int8 is False


def test_visualize_demo_int8(tmp_path):
    from PIL import Image

    path = os.path.join(ROOT, "tools", "demo", "visualize.py")
    spec = importlib.util.spec_from_file_location("_visualize_int8", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    image = np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "in.png")
    module.main(["--config-file", TINY, "--image", str(tmp_path / "in.png"), "--clicks", "20,30,+",
                 "--output", str(tmp_path / "overlay.png"), "--mask-output", str(tmp_path / "mask.png"),
                 "--device", "cpu", "--int8"])
    assert np.asarray(Image.open(tmp_path / "overlay.png")).shape[:2] == (48, 64)
    assert np.asarray(Image.open(tmp_path / "mask.png")).shape == (48, 64)
