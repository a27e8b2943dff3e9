"""The browser demo (tools/demo/web.py): JSON API through Flask's test client, the command line in a real
process, and one end-to-end run of the page in headless Chromium (skipped without /usr/bin/chromium or the
playwright package: ``bash tools/install_browser_deps.sh`` installs both).

Most checks use a stub network whose logits are positive inside a disk of ``RADIUS`` pixels around each
positive click and negative around negative clicks, so the expected mask is known exactly; the API checks
also run on the tiny AdaptiveClick with random weights, compared against an InteractivePredictor used
directly.
"""

import http.client
import importlib.util
import io
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import uuid

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("flask", reason="the web demo needs Flask (pip install flask)")

from adaptiveclick.evaluation.zoom_in import ZoomInParams  # noqa: E402
from adaptiveclick.inference import InteractivePredictor  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEB_PY = os.path.join(ROOT, "tools", "demo", "web.py")
TINY_CFG = os.path.join(ROOT, "configs", "synthetic", "tiny.yaml")
CHROMIUM = "/usr/bin/chromium"
RADIUS = 10
H, W = 96, 128


def _load_web():
    spec = importlib.util.spec_from_file_location("adaptiveclick_web_demo", WEB_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


web = _load_web()


# ------------------------------------------------------------------------------------------ helpers
class DiskModel(torch.nn.Module):
    """Stub network: logits +10 inside a disk of ``radius`` px around each positive click, -10 elsewhere and
    inside the disks around negative clicks (in the coordinates of the input it is given)."""

    def __init__(self, radius=RADIUS):
        super().__init__()
        self.radius = radius

    def forward(self, batched_inputs):
        outputs = []
        for x in batched_inputs:
            _, h, w = x["image"].shape
            rows = torch.arange(h, dtype=torch.float32)[:, None]
            cols = torch.arange(w, dtype=torch.float32)[None, :]
            positive = torch.zeros(h, w, dtype=torch.bool)
            negative = torch.zeros(h, w, dtype=torch.bool)
            for r, c, pos in x["clicks"].float().tolist():
                if pos < 0:
                    continue
                disk = (rows - r) ** 2 + (cols - c) ** 2 <= self.radius ** 2
                if pos > 0:
                    positive |= disk
                else:
                    negative |= disk
            logits = torch.where(positive & ~negative, 10.0, -10.0)
            outputs.append({"mask_logits": logits[None]})
        return outputs


def reference_mask(shape, clicks, radius=RADIUS):
    """Union of the positive disks minus the union of the negative disks; clicks are (row, col, positive)."""
    rows, cols = np.mgrid[:shape[0], :shape[1]]
    pos = np.zeros(shape, bool)
    neg = np.zeros(shape, bool)
    for r, c, p in clicks:
        disk = (rows - r) ** 2 + (cols - c) ** 2 <= radius ** 2
        if p:
            pos |= disk
        else:
            neg |= disk
    return pos & ~neg


def make_image(h=H, w=W, seed=0):
    """A textured background with a bright disk (the object) near the middle."""
    rng = np.random.RandomState(seed)
    img = rng.randint(0, 80, size=(h, w, 3)).astype(np.uint8)
    rows, cols = np.mgrid[:h, :w]
    obj = (rows - h // 2) ** 2 + (cols - w // 2) ** 2 <= (min(h, w) // 4) ** 2
    img[obj] = (230, 180, 40)
    return img


def encode(img, fmt="PNG", **kwargs):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def upload(client, data, name="object.png"):
    return client.post("/api/image", data={"image": (io.BytesIO(data), name)}, content_type="multipart/form-data")


def click(client, row, col, positive=True):
    return client.post("/api/click", json={"row": row, "col": col, "positive": positive})


def decode_data_url(url):
    import base64

    head, b64 = url.split(",", 1)
    assert head.startswith("data:image/")
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def get_mask(client):
    resp = client.get("/api/mask.png")
    assert resp.status_code == 200, resp.get_json()
    assert resp.mimetype == "image/png"
    img = Image.open(io.BytesIO(resp.data))
    img.load()
    assert img.mode == "L"
    arr = np.asarray(img)
    assert set(np.unique(arr).tolist()) <= {0, 255}, "the mask PNG must be binary"
    return arr == 255


def error_of(resp, status):
    assert resp.status_code == status, (resp.status_code, resp.data[:300])
    body = resp.get_json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body
    return body["error"]


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tiny_model():
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from adaptiveclick.config import add_adaptiveclick_config

    importlib.import_module("adaptiveclick.modeling")  # registers the architecture with detectron2

    torch.manual_seed(0)
    cfg = get_cfg()
    add_adaptiveclick_config(cfg)
    cfg.merge_from_file(TINY_CFG)
    cfg.MODEL.DEVICE = "cpu"
    return build_model(cfg).eval()


TINY_ZOOM = ZoomInParams(target_size=(128, 128), min_crop_size=32)


def stub_factory():
    model = DiskModel()
    return lambda: InteractivePredictor(model, zoom_in=False, flip=False)


@pytest.fixture(params=["stub", "tiny"])
def kind(request):
    return request.param


@pytest.fixture
def factory(kind, request):
    if kind == "stub":
        return stub_factory()
    model = request.getfixturevalue("tiny_model")
    return lambda: InteractivePredictor(model, zoom_in=TINY_ZOOM, flip=True)


@pytest.fixture
def app(factory):
    return web.create_app(factory)


# ------------------------------------------------------------------------------------------ uploads
def test_create_app_checks_arguments():
    f = stub_factory()
    with pytest.raises(ValueError, match="max_sessions"):
        web.create_app(f, max_sessions=0)
    with pytest.raises(ValueError, match="max_upload_bytes"):
        web.create_app(f, max_upload_bytes=-5)
    with pytest.raises(TypeError, match="predictor_factory"):
        web.create_app("not callable")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "WEBP"])
def test_upload_formats(fmt):
    img = make_image()
    client = web.create_app(stub_factory()).test_client()
    resp = upload(client, encode(img, fmt), f"object.{fmt.lower()}")
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert (body["height"], body["width"], body["n_clicks"]) == (H, W, 0)
    assert body["session"] and client.get_cookie(web.SESSION_COOKIE).value == body["session"]
    shown = np.asarray(decode_data_url(body["image"]).convert("RGB"))
    assert shown.shape == (H, W, 3)
    if fmt in ("PNG", "BMP"):  # lossless: the server decoded exactly the pixels sent
        np.testing.assert_array_equal(shown, img)
    # the predictor got the decoded image; the (empty) mask has the image size
    assert get_mask(client).shape == (H, W)


def test_upload_alpha_and_exif_orientation():
    client = web.create_app(stub_factory()).test_client()
    rgba = np.zeros((8, 12, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :6, 3] = 255  # left half opaque red, right half transparent
    body = upload(client, encode(rgba)).get_json()
    shown = np.asarray(decode_data_url(body["image"]).convert("RGB"))
    np.testing.assert_array_equal(shown[:, :6], np.broadcast_to([200, 0, 0], (8, 6, 3)))
    np.testing.assert_array_equal(shown[:, 6:], np.full((8, 6, 3), 255))  # composited on white
    # EXIF orientation 6 (rotate 90 clockwise): a 20 x 40 stored image is shown 40 x 20
    exif = Image.Exif()
    exif[0x0112] = 6
    body = upload(client, encode(np.zeros((20, 40, 3), np.uint8), "JPEG", exif=exif), "photo.jpg").get_json()
    assert (body["height"], body["width"]) == (40, 20)


def test_upload_rejections_keep_the_server_up():
    img = make_image()
    png = encode(img)
    limit = len(png) - 1
    client = web.create_app(stub_factory(), max_upload_bytes=limit, max_pixels=H * W).test_client()
    # just over the file limit (checked by the upload handler) and far over (the request body limit)
    assert "too large" in error_of(upload(client, png), 413)
    assert "too large" in error_of(upload(client, png + b"\0" * (200 * 1024)), 413)
    # more pixels than allowed, checked before decoding
    small = web.create_app(stub_factory(), max_pixels=H * W - 1).test_client()
    assert "pixels" in error_of(upload(small, png), 413)
    # not an image (whatever the file name says), truncated, empty
    assert "not an image" in error_of(upload(client, b"hello, this is text", "fake.png"), 400)
    assert error_of(upload(client, png[: len(png) // 2]), 400)
    assert "empty" in error_of(upload(client, b""), 400)
    # an image of a type that is not accepted
    gif = encode(img, "GIF")
    assert "GIF" in error_of(upload(client, gif, "anim.gif"), 415)
    # wrong form field, or no multipart form at all
    assert "'image'" in error_of(client.post("/api/image", data={"file": (io.BytesIO(png), "a.png")},
                                             content_type="multipart/form-data"), 400)
    assert "'image'" in error_of(client.post("/api/image", json={"image": "x"}), 400)
    # no session was started by any of these
    assert client.get_cookie(web.SESSION_COOKIE) is None
    # the server still works
    ok = upload(client, encode(make_image(40, 30)))
    assert ok.status_code == 200 and (ok.get_json()["height"], ok.get_json()["width"]) == (40, 30)


def _scaled(values, top):
    """Hand-computed expectation of decode_image: round(v * 255 / top), grey in all three channels."""
    grey = np.floor(np.asarray(values, np.float64) * 255.0 / top + 0.5).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def test_decode_16_bit_greyscale_by_its_full_range():
    values = np.array([[0, 128, 129, 257, 32896], [40000, 65279, 65280, 65534, 65535]], np.uint16)
    png = encode(values)
    assert Image.open(io.BytesIO(png)).mode in ("I;16", "I")  # Pillow keeps the 16 bits
    expected = np.array([[0, 0, 1, 1, 128], [156, 254, 254, 255, 255]], np.uint8)  # round(v / 257)
    np.testing.assert_array_equal(expected, _scaled(values, 65535)[..., 0])
    decoded = web.decode_image(png)
    np.testing.assert_array_equal(decoded, np.repeat(expected[..., None], 3, axis=-1))
    # a nearly black 16-bit image stays nearly black (no stretch), a nearly white one stays white
    dark = (np.arange(24, dtype=np.uint16) * 10).reshape(4, 6)
    assert web.decode_image(encode(dark)).max() == 1
    bright = np.full((4, 6), 65535, np.uint16)
    bright[0, 0] = 0
    np.testing.assert_array_equal(web.decode_image(encode(bright))[..., 0], _scaled(bright, 65535)[..., 0])
    # big-endian 16-bit TIFF (any type is accepted with formats=None) gives the same pixels
    tiff = encode(values, "TIFF")
    np.testing.assert_array_equal(web.decode_image(tiff, formats=None), decoded)
    # the one transparent value of a 16-bit PNG (tRNS) is composited on white
    with_trns = web.decode_image(encode(values, transparency=0))
    assert (with_trns[0, 0] == 255).all() and (with_trns[1:, :] == decoded[1:, :]).all()
    # through the server: the model gets (and the page shows) the scaled image, not a white one
    client = web.create_app(stub_factory()).test_client()
    body = upload(client, png).get_json()
    shown = np.asarray(decode_data_url(body["image"]).convert("RGB"))
    np.testing.assert_array_equal(shown, decoded)


def test_decode_32_bit_and_float_greyscale():
    i32 = np.array([[0, 2 ** 23, 2 ** 30], [2 ** 31 - 2 ** 23, 2 ** 31 - 1, 12345]], np.int32)
    got = web.decode_image(encode(i32, "TIFF"), formats=None)
    np.testing.assert_array_equal(got, _scaled(i32, 2 ** 31 - 1))
    np.testing.assert_array_equal(got[..., 0], [[0, 1, 128], [254, 255, 0]])
    with pytest.raises(web.ImageError, match="negative"):
        web.decode_image(encode(np.array([[-5, 7]], np.int32), "TIFF"), formats=None)
    f = np.array([[0.0, 0.25, 0.5], [0.75, 1.0, 0.002]], np.float32)
    got = web.decode_image(encode(f, "TIFF"), formats=None)
    np.testing.assert_array_equal(got[..., 0], [[0, 64, 128], [191, 255, 1]])  # round(v * 255)
    for bad, match in ((np.array([[0.0, 2.0]], np.float32), r"\[0, 2\]"),
                       (np.array([[-1.0, 0.5]], np.float32), r"\[-1, 0.5\]"),
                       (np.array([[np.nan, 0.5]], np.float32), "NaN")):
        with pytest.raises(web.ImageError, match=match) as info:
            web.decode_image(encode(bad, "TIFF"), formats=None)
        assert info.value.status == 400 and "[0, 1]" in str(info.value)
    # the server takes PNG, JPEG, BMP and WebP only
    with pytest.raises(web.ImageError, match="TIFF") as info:
        web.decode_image(encode(f, "TIFF"))
    assert info.value.status == 415


def test_decode_exif_orientation_and_alpha_by_pixel():
    stored = np.zeros((2, 3, 3), np.uint8)
    stored[0, 0] = (255, 0, 0)  # top left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    got = web.decode_image(encode(stored, exif=exif))
    assert got.shape == (3, 2, 3)
    np.testing.assert_array_equal(got[0, 1], (255, 0, 0))  # now the top right
    np.testing.assert_array_equal(got, np.rot90(stored, k=-1))
    la = np.zeros((2, 2, 2), np.uint8)
    la[..., 0] = 100
    la[0, :, 1] = 255  # top row opaque grey 100, bottom row transparent
    got = web.decode_image(encode(la))
    np.testing.assert_array_equal(got[0], np.full((2, 3), 100))
    np.testing.assert_array_equal(got[1], np.full((2, 3), 255))


def test_decode_corrupt_images_name_the_reason():
    png = encode(make_image(20, 30))
    with pytest.raises(web.ImageError, match="truncated") as info:
        web.decode_image(png[: len(png) - 40])
    assert info.value.status == 400
    for data in (png[:30], b"\x89PNG\r\n\x1a\n" + b"x" * 40, b"not an image at all"):
        with pytest.raises(web.ImageError) as info:
            web.decode_image(data, formats=None)
        assert info.value.status == 400 and "image" in str(info.value)


# ------------------------------------------------------------------------------------------ clicks
def test_bad_requests_get_json_errors_and_the_server_stays_up(app):
    client = app.test_client()
    assert "upload" in error_of(click(client, 5, 5), 400)  # click before any upload
    assert "upload" in error_of(client.post("/api/undo"), 400)
    assert "upload" in error_of(client.get("/api/mask.png"), 400)
    unknown = client.post("/api/click", json={"row": 1, "col": 1, "positive": True},
                          headers={web.SESSION_HEADER: "no-such-session"})
    assert "unknown" in error_of(unknown, 404)
    assert upload(client, encode(make_image())).status_code == 200
    assert "JSON" in error_of(client.post("/api/click", data="row=1&col=2",
                                          content_type="application/x-www-form-urlencoded"), 415)
    assert "not valid JSON" in error_of(client.post("/api/click", data="{row: 1",
                                                    content_type="application/json"), 400)
    assert "object" in error_of(client.post("/api/click", json=[1, 2, True]), 400)
    assert "positive" in error_of(client.post("/api/click", json={"row": 1, "col": 2}), 400)
    assert "row, col" in error_of(client.post("/api/click", json={"positive": True}), 400)
    assert "row" in error_of(click(client, 1.5, 2), 400)
    assert "col" in error_of(click(client, 1, True), 400)
    assert "col" in error_of(click(client, 1, "2"), 400)
    assert "positive" in error_of(click(client, 1, 2, positive="yes"), 400)
    for row, col in ((H, 0), (0, W), (-1, 3), (3, -1), (10 ** 9, 10 ** 9)):
        assert "outside" in error_of(click(client, row, col), 400), (row, col)
    assert "undo" in error_of(client.post("/api/undo"), 400)  # nothing to undo
    assert get_mask(client).sum() == 0
    # none of the bad requests left a trace: the first good click is click number 1
    ok = click(client, H // 2, W // 2)
    assert ok.status_code == 200, ok.get_json()
    assert ok.get_json()["n_clicks"] == 1


def test_oversized_json_body_gets_413_naming_the_limit():
    app = web.create_app(stub_factory(), max_upload_bytes=1000)
    limit = app.config["MAX_CONTENT_LENGTH"]
    client = app.test_client()
    assert upload(client, encode(make_image(8, 10))).status_code == 200  # a PNG under 1000 bytes
    big = json.dumps({"row": 1, "col": 2, "positive": True, "pad": "x" * limit})
    message = error_of(client.post("/api/click", data=big, content_type="application/json"), 413)
    assert "too large" in message and str(limit) in message
    # an upload over the request limit still names the file limit
    assert "1000 bytes" in error_of(upload(client, b"\0" * (limit + 10)), 413)
    # and the session still works
    ok = click(client, 4, 5)
    assert ok.status_code == 200 and ok.get_json()["n_clicks"] == 1


@pytest.mark.parametrize("args, name", [
    (["--max-upload-mb", "nan"], "--max-upload-mb"), (["--max-upload-mb", "inf"], "--max-upload-mb"),
    (["--max-upload-mb", "-inf"], "--max-upload-mb"), (["--max-upload-mb", "0"], "--max-upload-mb"),
    (["--max-upload-mb", "-2"], "--max-upload-mb"), (["--max-upload-mb", "1e-9"], "--max-upload-mb"),
    (["--max-upload-mb", "1e300"], "--max-upload-mb"), (["--max-upload-mb", "ten"], "--max-upload-mb"),
    (["--port", "70000"], "--port"), (["--port", "-1"], "--port"), (["--port", "80.5"], "--port"),
    (["--max-pixels", "0"], "--max-pixels"), (["--max-pixels", "nan"], "--max-pixels"),
    (["--max-sessions", "0"], "--max-sessions"), (["--max-sessions", "-3"], "--max-sessions"),
    (["MODEL.DEVICE"], "KEY VALUE"),
])
def test_command_line_numbers_are_checked_before_loading_a_model(args, name, capsys):
    # the config file does not exist: reaching the model loader would fail differently
    with pytest.raises(SystemExit) as info:
        web.main(["--config-file", "no/such/config.yaml", *args])
    assert info.value.code == 2
    assert name in capsys.readouterr().err


def test_command_line_accepts_good_numbers():
    args = web.build_parser().parse_args(["--config-file", "c.yaml", "--max-upload-mb", "0.5", "--port", "0",
                                          "--max-pixels", "100", "--max-sessions", "1"])
    assert (args.max_upload_mb, args.port, args.max_pixels, args.max_sessions) == (0.5, 0, 100, 1)
    assert not args.cuda_graph and web.build_parser().parse_args(["--config-file", "c.yaml", "--cuda-graph"]).cuda_graph


def test_docstring_command_uses_the_quick_start_model():
    """The usage example at the top of web.py (also the first lines of --help) runs the model the README's
    quick start trains: configs/synthetic/quickstart.yaml with the model_final.pth in its OUTPUT_DIR, the
    example's lines kept apart (an escaped line continuation)."""
    from adaptiveclick.config import load_config_file

    doc = web.__doc__
    config = re.search(r"--config-file (\S+)", doc).group(1)
    weights = re.search(r"--weights (\S+)", doc).group(1)
    assert config == "configs/synthetic/quickstart.yaml"
    output_dir = load_config_file(os.path.join(ROOT, config)).OUTPUT_DIR
    assert os.path.normpath(weights) == os.path.normpath(os.path.join(output_dir, "model_final.pth"))
    assert "quickstart.yaml \\\n        --weights" in doc


def test_click_undo_reset_with_stub_mask():
    client = web.create_app(stub_factory()).test_client()
    upload(client, encode(make_image()), "my object.png")
    first = (40, 60, True)
    body = click(client, *first[:2]).get_json()
    expected1 = reference_mask((H, W), [first])
    assert body["n_clicks"] == 1 and body["clicks"] == [{"row": 40, "col": 60, "positive": True}]
    assert body["mask_area"] == expected1.sum() and body["ms"] > 0
    np.testing.assert_array_equal(get_mask(client), expected1)
    # the overlay: image size, tinted exactly on the mask apart from the dot, green dot at the click
    overlay = np.asarray(decode_data_url(body["overlay"]))
    assert overlay.shape == (H, W, 4)
    r = web.dot_radius((H, W)) * 2
    rows, cols = np.mgrid[:H, :W]
    away = (rows - 40) ** 2 + (cols - 60) ** 2 > r * r
    np.testing.assert_array_equal((overlay[..., 3] > 0) & away, expected1 & away)
    np.testing.assert_array_equal(overlay[40, 60], (*web.POSITIVE_RGB, 255))

    second = (40, 68, False)
    body = click(client, *second[:2], positive=False).get_json()
    expected2 = reference_mask((H, W), [first, second])
    assert body["n_clicks"] == 2 and body["mask_area"] == expected2.sum() < expected1.sum()
    np.testing.assert_array_equal(get_mask(client), expected2)
    np.testing.assert_array_equal(np.asarray(decode_data_url(body["overlay"]))[40, 68], (*web.NEGATIVE_RGB, 255))

    body = client.post("/api/undo").get_json()
    assert body["n_clicks"] == 1 and body["mask_area"] == expected1.sum()
    np.testing.assert_array_equal(get_mask(client), expected1)
    body = client.post("/api/undo").get_json()
    assert body["n_clicks"] == 0 and body["mask_area"] == 0 and not get_mask(client).any()
    click(client, 10, 10)
    click(client, 80, 100)
    body = client.post("/api/reset").get_json()
    assert body["n_clicks"] == 0 and body["clicks"] == [] and body["mask_area"] == 0
    assert not np.asarray(decode_data_url(body["overlay"]))[..., 3].any()
    assert not get_mask(client).any()
    resp = client.get("/api/mask.png")
    assert "attachment" in resp.headers["Content-Disposition"]
    assert "my_object_mask.png" in resp.headers["Content-Disposition"]
    # a click after reset starts from scratch
    body = click(client, 50, 30).get_json()
    np.testing.assert_array_equal(get_mask(client), reference_mask((H, W), [(50, 30, True)]))


def test_tiny_model_server_matches_direct_predictor(tiny_model):
    """The server gives the mask an InteractivePredictor gives for the same image and clicks (so the image
    reaches the model unchanged and row / col are not swapped)."""
    client = web.create_app(lambda: InteractivePredictor(tiny_model, zoom_in=TINY_ZOOM, flip=True)).test_client()
    img = make_image(seed=3)
    upload(client, encode(img))
    direct = InteractivePredictor(tiny_model, zoom_in=TINY_ZOOM, flip=True)
    direct.set_image(img)
    for row, col, positive in ((30, 90, True), (70, 20, False)):
        body = click(client, row, col, positive).get_json()
        result = direct.add_click(row, col, positive=positive)
        served = get_mask(client)
        assert served.shape == (H, W)
        np.testing.assert_array_equal(served, result.mask)
        assert body["mask_area"] == int(result.mask.sum())
    body = client.post("/api/undo").get_json()
    np.testing.assert_array_equal(get_mask(client), direct.undo().mask)
    assert body["n_clicks"] == 1


def test_session_isolation(app, kind):
    a, b = app.test_client(), app.test_client()
    upload(a, encode(make_image()))
    upload(b, encode(make_image(60, 50, seed=1)))
    assert a.get_cookie(web.SESSION_COOKIE).value != b.get_cookie(web.SESSION_COOKIE).value
    click(a, 40, 60)
    click(a, 45, 62)
    # b sees none of a's clicks, and its mask has b's image size
    mask_b = get_mask(b)
    assert mask_b.shape == (60, 50) and not mask_b.any()
    body_b = click(b, 30, 25).get_json()
    assert body_b["n_clicks"] == 1 and body_b["clicks"] == [{"row": 30, "col": 25, "positive": True}]
    # b's undo and reset leave a alone
    b.post("/api/undo")
    b.post("/api/reset")
    body_a = a.post("/api/undo").get_json()
    assert body_a["n_clicks"] == 1 and body_a["clicks"] == [{"row": 40, "col": 60, "positive": True}]
    if kind == "stub":
        np.testing.assert_array_equal(get_mask(a), reference_mask((H, W), [(40, 60, True)]))
    # a session id given in the header selects that session (the upload returns it)
    sid_a = a.get_cookie(web.SESSION_COOKIE).value
    third = app.test_client()
    body = third.post("/api/undo", headers={web.SESSION_HEADER: sid_a}).get_json()
    assert body["n_clicks"] == 0 and body["width"] == W


def test_least_recently_used_session_is_dropped():
    app = web.create_app(stub_factory(), max_sessions=2)
    a, b, c = (app.test_client() for _ in range(3))
    png = encode(make_image())
    upload(a, png)
    upload(b, png)
    assert click(a, 5, 5).status_code == 200  # a is now the most recently used
    upload(c, png)  # a third session: b goes
    assert "unknown" in error_of(click(b, 5, 5), 404)
    assert click(a, 6, 6).get_json()["n_clicks"] == 2
    assert click(c, 7, 7).get_json()["n_clicks"] == 1
    # b uploading again starts a new session; a (used before c) is now the least recently used and goes
    upload(b, png)
    assert "unknown" in error_of(click(a, 5, 5), 404)
    assert click(b, 5, 5).get_json()["n_clicks"] == 1


def test_page_is_served():
    client = web.create_app(stub_factory()).test_client()
    resp = client.get("/")
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    html = resp.get_data(as_text=True)
    for element_id in ("file", "canvas", "undo", "reset", "download", "status"):
        assert f'id="{element_id}"' in html
    assert "http://" not in html and "https://" not in html  # nothing from elsewhere
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200


# ------------------------------------------------------------------------------------------ command line
def _multipart(field, filename, data):
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_command_line_serves_the_tiny_model(tmp_path):
    cmd = [sys.executable, WEB_PY, "--config-file", TINY_CFG, "--port", "0", "--device", "cpu",
           "--max-sessions", "4", "TEST.NOC.PRED_THRESHOLD", "0.49", "OUTPUT_DIR", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        port, seen = None, []
        while port is None:
            try:
                line = lines.get(timeout=90)
            except queue.Empty:
                pytest.fail("the server did not start within 90 s:\n" + "".join(seen))
            seen.append(line)
            m = re.search(r"open http://127\.0\.0\.1:(\d+)/", line)
            port = int(m.group(1)) if m else None
            if proc.poll() is not None and lines.empty():
                pytest.fail("the server exited:\n" + "".join(seen))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.status == 200 and b'id="canvas"' in resp.read()
        body, ctype = _multipart("image", "x.png", encode(make_image()))
        conn.request("POST", "/api/image", body=body, headers={"Content-Type": ctype})
        resp = conn.getresponse()
        state = json.loads(resp.read())
        assert resp.status == 200, state
        conn.request("POST", "/api/click", body=json.dumps({"row": 48, "col": 64, "positive": True}),
                     headers={"Content-Type": "application/json", web.SESSION_HEADER: state["session"]})
        resp = conn.getresponse()
        state = json.loads(resp.read())
        assert resp.status == 200 and state["n_clicks"] == 1 and state["width"] == W, state
        conn.request("POST", "/api/click", body=b"{", headers={"Content-Type": "application/json",
                                                               web.SESSION_HEADER: state["session"]})
        resp = conn.getresponse()
        assert resp.status == 400 and "JSON" in json.loads(resp.read())["error"]
        conn.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------------------ browser
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_browser_end_to_end(tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (bash tools/install_browser_deps.sh installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is missing (bash tools/install_browser_deps.sh installs it)")
    from werkzeug.serving import make_server

    radius = 26
    model = DiskModel(radius)
    app = web.create_app(lambda: InteractivePredictor(model, zoom_in=False, flip=True))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/"
    h, w = 120, 160
    image_path = tmp_path / "object.png"
    Image.fromarray(make_image(h, w, seed=5)).save(image_path)
    obj = (60, 80)  # centre of the object in make_image
    neg = (60, 104)
    status_is = "([key, value]) => document.getElementById('status').dataset[key] === value"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(viewport={"width": 1000, "height": 800}, accept_downloads=True)
                page = context.new_page()
                errors = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.goto(url)
                assert page.get_attribute("#status", "data-state") == "empty"
                assert page.is_disabled("#undo")

                page.set_input_files("#file", str(image_path))
                page.wait_for_function(status_is, arg=["state", "ready"], timeout=30000)
                assert page.evaluate("[document.getElementById('canvas').width, document.getElementById('canvas').height]") == [w, h]

                box = page.locator("#canvas").bounding_box()
                assert box["width"] > w  # shown enlarged: the click must be mapped back to image pixels

                def at(row, col):
                    return (box["x"] + (col + 0.5) * box["width"] / w, box["y"] + (row + 0.5) * box["height"] / h)

                def mask():
                    resp = context.request.get(url + "api/mask.png")  # shares the page's cookies
                    assert resp.ok, resp.text()
                    return np.asarray(Image.open(io.BytesIO(resp.body()))) == 255

                page.mouse.click(*at(*obj))
                page.wait_for_function(status_is, arg=["clicks", "1"], timeout=30000)
                page.wait_for_function(status_is, arg=["state", "ready"], timeout=30000)
                assert page.get_attribute("#status", "data-last-click") == f"{obj[0]},{obj[1]},1"
                expected1 = reference_mask((h, w), [(*obj, True)], radius)
                np.testing.assert_array_equal(mask(), expected1)
                assert page.get_attribute("#status", "data-area") == str(expected1.sum())
                assert float(page.get_attribute("#status", "data-ms")) > 0
                assert "ms" in page.text_content("#stats")
                # the canvas shows the green dot at the click
                pixel = page.evaluate("([r, c]) => Array.from(document.getElementById('canvas').getContext('2d')"
                                      ".getImageData(c, r, 1, 1).data)", list(obj))
                assert pixel == [*web.POSITIVE_RGB, 255]

                page.mouse.click(*at(*neg), button="right")
                page.wait_for_function(status_is, arg=["clicks", "2"], timeout=30000)
                page.wait_for_function(status_is, arg=["state", "ready"], timeout=30000)
                assert page.get_attribute("#status", "data-last-click") == f"{neg[0]},{neg[1]},0"
                expected2 = reference_mask((h, w), [(*obj, True), (*neg, False)], radius)
                assert 0 < expected2.sum() < expected1.sum()
                np.testing.assert_array_equal(mask(), expected2)
                shot = tmp_path / "web_demo.png"
                page.screenshot(path=str(shot), full_page=True)
                out_dir = os.environ.get("ADAPTIVECLICK_SCREENSHOT_DIR")
                if out_dir:
                    os.makedirs(out_dir, exist_ok=True)
                    shutil.copy(shot, os.path.join(out_dir, "web_demo.png"))

                page.click("#undo")
                page.wait_for_function(status_is, arg=["clicks", "1"], timeout=30000)
                page.wait_for_function(status_is, arg=["state", "ready"], timeout=30000)
                np.testing.assert_array_equal(mask(), expected1)

                with page.expect_download() as download:
                    page.click("#download")
                saved = Image.open(download.value.path())
                assert saved.size == (w, h)
                np.testing.assert_array_equal(np.asarray(saved) == 255, expected1)

                page.click("#reset")
                page.wait_for_function(status_is, arg=["clicks", "0"], timeout=30000)
                assert not mask().any()
                assert errors == [], errors
            finally:
                browser.close()
    finally:
        server.shutdown()
        thread.join(timeout=10)
