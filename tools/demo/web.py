#!/usr/bin/env python
"""Browser demo of interactive segmentation: open an image, click the object, download the mask.

    python tools/demo/web.py --config-file configs/synthetic/quickstart.yaml \\
        --weights output/quickstart/model_final.pth    # the model the README's quick start trains
    # then open http://127.0.0.1:8000/ : left click = positive, right click = negative

Options: ``--host`` (default 127.0.0.1, this machine only: the server has no authentication, so bind a
public address only on a network you trust), ``--port``, ``--max-upload-mb``, ``--max-pixels``,
``--max-sessions``, ``--device``, ``--no-zoom-in``, ``--no-flip`` and trailing ``KEY VALUE`` config
overrides.  The numbers are checked when the arguments are parsed, before the model is loaded.

The server uses Flask: it is small and well kept, it is a plain WSGI application much like the standard
library's servers (no build step, no JavaScript tool chain, no async framework), and its test client drives
the whole application without opening a socket, so the tests run anywhere.  The page
(``tools/demo/static``) is plain HTML and JavaScript with no framework and nothing fetched from elsewhere.

One model is shared by every browser session; each session (a random id in a cookie, also returned by the
upload) has its own :class:`~adaptiveclick.inference.InteractivePredictor` state: image, clicks and masks.
A lock serialises the use of the model.  At most ``max_sessions`` sessions are kept; the least recently
used one is dropped when a new one starts.

JSON API (errors are 4xx/5xx JSON ``{"error": message}``; the server keeps running):

* ``POST /api/image``: multipart form with a file field ``image`` (PNG, JPEG, BMP or WebP, checked by
  decoding it with Pillow; EXIF orientation applied; alpha composited on white; 16-bit greyscale scaled
  by its full range, see :func:`decode_image`).  413 when the upload or its pixel count is over the limit,
  415 for another image type, 400 when it is not a readable image.
  Starts (or reuses) a session and drops its clicks.  Returns ``session``, ``width``, ``height`` and
  ``image`` (a data URL of the image as the server decoded it, for display).
* ``POST /api/click`` ``{"row": int, "col": int, "positive": bool}`` (0-based pixel of the image, row
  first), ``POST /api/undo``, ``POST /api/reset``: return the state: ``clicks``, ``n_clicks``, ``ms``
  (model time of the last click, 0 for a restored state), ``server_ms``, ``mask_area``, ``width``,
  ``height`` and ``overlay`` (a data URL of an RGBA PNG of the image size: tinted mask, its outline, and
  green / red dots at the positive / negative clicks, to draw over the image).  A JSON body larger than
  the request limit gets 413 naming it.
* ``GET /api/mask.png``: the current mask as a PNG (mode L, 0 background / 255 object) of the image size.
* ``GET /``: the page.
"""

import argparse
import base64
import io
import ipaddress
import logging
import math
import os
import secrets
import sys
import threading
import time
import warnings
from collections import OrderedDict
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Flask (and Werkzeug) are imported where the server is built, in create_app() and main(): decode_image() is
# also the image reader of tools/demo/visualize.py, which must work without them.
if TYPE_CHECKING:
    import flask

__all__ = ["create_app", "decode_image", "render_overlay", "mask_png", "ImageError", "build_parser", "main"]

logger = logging.getLogger("adaptiveclick")

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
SESSION_COOKIE = "adaptiveclick_session"
SESSION_HEADER = "X-Session-Id"
ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "WEBP")
DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_PIXELS = 12_000_000
DEFAULT_MAX_SESSIONS = 32
# room for the multipart framing around the file when the whole request body is limited
_MULTIPART_SLACK = 64 * 1024

MASK_RGBA = (30, 144, 255, 110)
OUTLINE_RGBA = (30, 144, 255, 230)
POSITIVE_RGB = (0, 200, 0)
NEGATIVE_RGB = (230, 0, 0)


class ImageError(ValueError):
    """An upload that is not an acceptable image; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class ApiError(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


# ------------------------------------------------------------------------------------------ images
_FORMAT_NAMES = {"WEBP": "WebP"}
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def _format_list(formats) -> str:
    names = [_FORMAT_NAMES.get(f, f) for f in formats]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _raw_mode(img: Image.Image) -> str:
    """How the file stores the samples (the raw mode of the first tile: "I;16B" for a 16-bit PNG, "I;32S"
    for a signed 32-bit TIFF, ...); "" when unknown.  Read it before loading: loading clears the tiles."""
    try:
        args = img.tile[0][3]
    except (AttributeError, IndexError, TypeError):
        return ""
    raw = args[0] if isinstance(args, tuple) and args else args
    return raw if isinstance(raw, str) else ""


def _integer_sample_type(mode: str, raw_mode: str):
    """numpy type of the samples of an integer greyscale image (Pillow mode I or I;16*) as the file has them."""
    if mode.startswith("I;16") or raw_mode.startswith("I;16"):
        return np.int16 if raw_mode.startswith("I;16") and raw_mode.endswith("S") else np.uint16
    if raw_mode.startswith("I;32") and not raw_mode.endswith("S"):
        return np.uint32
    return np.int32  # how Pillow itself keeps mode I


def _wide_grey_to_rgb(img: Image.Image, raw_mode: str) -> np.ndarray:
    """uint8 RGB of a greyscale image with more than 8 bits a sample (mode I;16*, I or F); see decode_image."""
    values = np.asarray(img)
    if img.mode == "F":
        finite = np.isfinite(values)
        if not finite.all() or values.min() < 0.0 or values.max() > 1.0:
            lo, hi = (values[finite].min(), values[finite].max()) if finite.any() else (np.nan, np.nan)
            extra = " and NaN or infinite samples" if not finite.all() else ""
            raise ImageError(f"floating-point (mode F) image with samples in [{lo:g}, {hi:g}]{extra}: only "
                             "values in [0, 1] are accepted (0 black, 1 white); convert it to 8 bits first")
        grey = np.floor(values.astype(np.float64) * 255.0 + 0.5)
    else:
        kind = _integer_sample_type(img.mode, raw_mode)
        samples = values.astype(np.int64)
        if kind is np.uint32:
            samples &= 0xFFFFFFFF  # Pillow keeps unsigned 32-bit samples in int32: undo the wrap-around
        top = int(np.iinfo(kind).max)
        if samples.min() < 0:
            raise ImageError(f"{np.dtype(kind).name} greyscale image with negative samples (down to "
                             f"{int(samples.min())}): only 0 (black) .. {top} (white) are accepted; "
                             "convert it to 8 bits first")
        grey = np.floor(np.minimum(samples, top) * (255.0 / top) + 0.5)
    grey = grey.astype(np.uint8)
    transparent = img.info.get("transparency")
    if isinstance(transparent, (int, float)) and not isinstance(transparent, bool):
        grey[values == transparent] = 255  # the one transparent value (PNG tRNS), composited on white
    return np.repeat(grey[:, :, None], 3, axis=2)


def decode_image(data: bytes, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
                 formats: Optional[Sequence[str]] = ALLOWED_FORMATS) -> np.ndarray:
    """Decode image bytes into uint8 RGB (H, W, 3); raise :class:`ImageError` saying why not.

    The one image reader of both demos, so that they cannot drift apart: the upload of this server (the
    defaults) and ``tools/demo/visualize.py --image`` (``max_pixels=None, formats=None``).

    * The type is what Pillow recognises in the bytes, not a file name or a declared content type; it must
      be one of ``formats`` (Pillow format names; ``None``: any type Pillow reads), else status 415.
    * ``max_pixels`` is checked from the header, before the pixels are decoded (status 413); with ``None``
      only Pillow's own decompression-bomb limit applies.
    * The EXIF orientation is applied: rows and columns are those of the image as displayed.
    * Transparency (RGBA, LA, PA, a palette or a single transparent value) is composited on white.
    * Greyscale with more than 8 bits a sample is scaled by the full range of its sample type, never by the
      values it happens to hold (no min-max stretch).  16-bit (mode I;16*, or mode I read from 16-bit
      samples): v -> round(v / 257), so 0..65535 -> 0..255; unsigned 32-bit: v -> round(v * 255 / (2**32 - 1));
      signed types (int16, int32 -- Pillow's mode I) map 0..max to 0..255 and an image with a negative
      sample is rejected.  Floating-point images (mode F) are accepted only with every sample in [0, 1]
      (v -> round(v * 255)); other values, NaN or infinity are rejected with their range, not guessed at.
    * Other modes (1, L, P, RGB, CMYK, YCbCr, ...) are converted to RGB by Pillow.

    Status of the error: 413 for too many pixels, 415 for a type not in ``formats``, 400 otherwise
    (empty, unreadable, corrupt or truncated data, or samples out of range as above).
    """
    if not data:
        raise ImageError("the file is empty")
    expected = f" (expected {_format_list(formats)})" if formats else ""
    try:
        with warnings.catch_warnings():
            if max_pixels is not None:  # checked below, with a clearer message than Pillow's warning
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=list(formats) if formats else None)
    except Image.DecompressionBombError as e:
        raise ImageError(f"image too large: {e}", 413) from None
    except UnidentifiedImageError:
        kind = None
        if formats:  # name the type when it is an image of a type we do not accept
            try:
                with Image.open(io.BytesIO(data)) as other:
                    kind = other.format
            except Exception:
                pass
        if kind:
            raise ImageError(f"unsupported image type {kind}: use {_format_list(formats)}", 415) from None
        raise ImageError(f"not an image Pillow can read{expected}") from None
    except Exception as e:  # a header Pillow recognises but cannot parse
        raise ImageError(f"not a readable image{expected}: {type(e).__name__}: {e}") from None
    with img:
        fmt, raw_mode = img.format, _raw_mode(img)
        w, h = img.size
        if w < 1 or h < 1:
            raise ImageError(f"image has an empty size {w}x{h}")
        if max_pixels is not None and w * h > max_pixels:
            raise ImageError(f"image has {w}x{h} = {w * h} pixels, more than the limit of {max_pixels}", 413)
        try:
            img.load()
        except Exception as e:  # truncated or corrupt pixel data
            raise ImageError(f"cannot decode the {fmt} image (corrupt or truncated): {e}") from None
        try:
            oriented = ImageOps.exif_transpose(img)
        except Exception:  # an unreadable EXIF block leaves the pixels as stored
            oriented = img
        mode = oriented.mode
        if mode in ("I", "F") or mode.startswith("I;16"):
            return _wide_grey_to_rgb(oriented, raw_mode)
        try:
            if mode in _ALPHA_MODES or "transparency" in oriented.info:
                rgba = oriented.convert("RGBA")
                rgb = Image.new("RGB", rgba.size, (255, 255, 255))
                rgb.paste(rgba, mask=rgba.getchannel("A"))
            else:
                rgb = oriented.convert("RGB")
        except Exception as e:  # a mode Pillow cannot turn into RGB
            raise ImageError(f"cannot convert the {fmt} image of mode {mode} to RGB: {e}") from None
        return np.asarray(rgb, dtype=np.uint8).copy()


def _png_bytes(img: Image.Image, compress_level: int = 1) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def _data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def mask_png(mask: np.ndarray) -> bytes:
    """A bool (H, W) mask as a PNG, mode L: 0 background, 255 object."""
    return _png_bytes(Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L"), compress_level=6)


def dot_radius(shape) -> int:
    """Radius in pixels of the click dots drawn on an image of ``shape`` (H, W)."""
    return max(3, int(round(min(shape[:2]) * 0.012)))


def render_overlay(mask: np.ndarray, clicks) -> np.ndarray:
    """RGBA uint8 (H, W, 4) to draw over the image: the tinted mask with its outline, and one dot per click
    (green positive, red negative, white rim), later clicks on top."""
    h, w = mask.shape
    out = np.zeros((h, w, 4), dtype=np.uint8)
    mask = np.asarray(mask, dtype=bool)
    out[mask] = MASK_RGBA
    # outline: object pixels with a 4-neighbour outside the object (or on the image border)
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    out[mask & ~interior] = OUTLINE_RGBA
    r = dot_radius(mask.shape)
    rim = r + max(1, r // 3)
    for c in clicks:
        r0, r1 = max(0, c.row - rim), min(h, c.row + rim + 1)
        c0, c1 = max(0, c.col - rim), min(w, c.col + rim + 1)
        rows, cols = np.ogrid[r0:r1, c0:c1]
        d2 = (rows - c.row) ** 2 + (cols - c.col) ** 2
        patch = out[r0:r1, c0:c1]
        patch[d2 <= rim * rim] = (255, 255, 255, 255)
        patch[d2 <= r * r] = (*(POSITIVE_RGB if c.is_positive else NEGATIVE_RGB), 255)
    return out


# ------------------------------------------------------------------------------------------ sessions
class _Session:
    def __init__(self, sid: str, predictor):
        self.id = sid
        self.predictor = predictor
        self.filename = "image"
        self.last_ms = 0.0


class _SessionStore:
    """Sessions by id, least recently used first; the oldest is dropped when a new one would exceed the limit."""

    def __init__(self, factory: Callable, max_sessions: int):
        self._factory = factory
        self._max = max_sessions
        self._sessions: "OrderedDict[str, _Session]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, sid: Optional[str]) -> Optional[_Session]:
        with self._lock:
            session = self._sessions.get(sid) if sid else None
            if session is not None:
                self._sessions.move_to_end(sid)
            return session

    def create(self) -> _Session:
        predictor = self._factory()  # outside the lock: it may take a moment
        session = _Session(secrets.token_urlsafe(24), predictor)
        with self._lock:
            while len(self._sessions) >= self._max:
                self._sessions.popitem(last=False)
                logger.info("web demo: session limit %d reached, dropped the least recently used session",
                            self._max)
            self._sessions[session.id] = session
        return session

    def __len__(self):
        with self._lock:
            return len(self._sessions)

    def __contains__(self, sid):
        with self._lock:
            return sid in self._sessions


# ------------------------------------------------------------------------------------------ the app
def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def create_app(predictor_factory: Callable, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
               max_sessions: int = DEFAULT_MAX_SESSIONS, max_pixels: int = DEFAULT_MAX_PIXELS) -> "flask.Flask":
    """The Flask application of the demo.

    ``predictor_factory()`` returns a fresh :class:`~adaptiveclick.inference.InteractivePredictor` (or an
    object with its interface) for each new session; let every one share one model, e.g.
    ``lambda: InteractivePredictor(model, zoom_in=True, flip=True)``.  ``max_upload_bytes`` limits the
    uploaded file, ``max_pixels`` its decoded size, ``max_sessions`` the sessions kept at once.
    """
    if not callable(predictor_factory):
        raise TypeError(f"predictor_factory must be callable, got {type(predictor_factory).__name__}")
    _positive_int("max_upload_bytes", max_upload_bytes)
    _positive_int("max_sessions", max_sessions)
    _positive_int("max_pixels", max_pixels)
    from flask import Flask, jsonify, request, send_file, send_from_directory
    from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
    from werkzeug.utils import secure_filename

    app = Flask(__name__, static_folder=STATIC_DIR, static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = max_upload_bytes + _MULTIPART_SLACK
    app.json.sort_keys = False
    store = _SessionStore(predictor_factory, max_sessions)
    model_lock = threading.Lock()  # one shared model: one prediction at a time
    app.extensions["adaptiveclick_demo"] = {"sessions": store, "model_lock": model_lock,
                                            "max_upload_bytes": max_upload_bytes, "max_pixels": max_pixels}

    # ---- errors: always JSON with a message for the API
    @app.errorhandler(ApiError)
    def _api_error(e):
        return jsonify(error=e.message), e.status

    @app.errorhandler(HTTPException)
    def _http_error(e):
        if e.code == 413 and request.path == "/api/image":
            msg = (f"upload too large: the limit is {max_upload_bytes} bytes "
                   f"({max_upload_bytes / 2 ** 20:.1f} MiB)")
        elif e.code == 413:
            msg = f"request body too large: the limit is {app.config['MAX_CONTENT_LENGTH']} bytes"
        else:
            msg = e.description or e.name
        return jsonify(error=msg), e.code

    @app.errorhandler(Exception)
    def _internal_error(e):
        logger.exception("web demo: unexpected error on %s %s", request.method, request.path)
        return jsonify(error=f"internal error: {type(e).__name__}: {e}"), 500

    @app.after_request
    def _headers(resp):
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
        if request.path.startswith("/api/"):
            resp.headers["Cache-Control"] = "no-store"
        return resp

    # ---- helpers
    def session_id():
        return request.headers.get(SESSION_HEADER) or request.cookies.get(SESSION_COOKIE)

    def current_session() -> _Session:
        sid = session_id()
        if not sid:
            raise ApiError("no image in this session: upload one first (POST /api/image)", 400)
        session = store.get(sid)
        if session is None:
            raise ApiError("unknown or expired session (the server keeps the most recent "
                           f"{max_sessions}): upload the image again", 404)
        return session

    def json_body() -> dict:
        if not request.is_json:
            raise ApiError(f"send a JSON object with Content-Type: application/json, got "
                           f"{request.content_type or 'no content type'!r}", 415)
        try:
            body = request.get_json(force=True, silent=False)
        except RequestEntityTooLarge:
            raise  # 413 naming the limit (_http_error), not "not valid JSON"
        except HTTPException:
            raise ApiError("the request body is not valid JSON", 400) from None
        if not isinstance(body, dict):
            raise ApiError(f"the JSON body must be an object, got {type(body).__name__}", 400)
        return body

    def state(session: _Session, result, started: float) -> dict:
        p = session.predictor
        h, w = p.image.shape[:2]
        clicks = tuple(result.clicks) if result is not None else ()
        mask = result.mask if result is not None else np.zeros((h, w), dtype=bool)
        overlay = _png_bytes(Image.fromarray(render_overlay(mask, clicks), mode="RGBA"))
        return {
            "session": session.id,
            "width": int(w),
            "height": int(h),
            "n_clicks": len(clicks),
            "clicks": [{"row": c.row, "col": c.col, "positive": c.is_positive} for c in clicks],
            "ms": round(session.last_ms, 3),
            "server_ms": round((time.perf_counter() - started) * 1000.0, 3),
            "mask_area": int(mask.sum()),
            "overlay": _data_url(overlay, "image/png"),
        }

    def run(session: _Session, fn):
        """Run one predictor call under the model lock; its ValueError/TypeError become 400 answers."""
        with model_lock:
            try:
                result = fn(session.predictor)
            except (ValueError, TypeError) as e:
                raise ApiError(str(e), 400) from None
        session.last_ms = float(result.seconds) * 1000.0 if result is not None else 0.0
        return result

    # ---- routes
    @app.get("/")
    def index():
        return send_from_directory(STATIC_DIR, "index.html")

    @app.post("/api/image")
    def upload():
        started = time.perf_counter()
        f = request.files.get("image")
        if f is None:
            raise ApiError("send the image as a multipart/form-data file field named 'image'", 400)
        data = f.stream.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise ApiError(f"upload too large: the limit is {max_upload_bytes} bytes", 413)
        try:
            image = decode_image(data, max_pixels)
        except ImageError as e:
            raise ApiError(str(e), e.status) from None
        session = store.get(session_id()) or store.create()
        with model_lock:
            try:
                session.predictor.set_image(image)
            except (ValueError, TypeError) as e:
                raise ApiError(str(e), 400) from None
        session.last_ms = 0.0
        stem = secure_filename(os.path.splitext(f.filename or "")[0]) or "image"
        session.filename = stem
        h, w = image.shape[:2]
        preview = Image.fromarray(image)
        buf = io.BytesIO()
        if h * w <= 1_000_000:  # small: lossless
            preview.save(buf, format="PNG", compress_level=1)
            mime = "image/png"
        else:
            preview.save(buf, format="JPEG", quality=92)
            mime = "image/jpeg"
        resp = jsonify(session=session.id, width=int(w), height=int(h), n_clicks=0, clicks=[], mask_area=0,
                       image=_data_url(buf.getvalue(), mime),
                       server_ms=round((time.perf_counter() - started) * 1000.0, 3))
        resp.set_cookie(SESSION_COOKIE, session.id, httponly=True, samesite="Strict", path="/")
        return resp

    @app.post("/api/click")
    def click():
        started = time.perf_counter()
        body = json_body()
        session = current_session()
        missing = [k for k in ("row", "col", "positive") if k not in body]
        if missing:
            raise ApiError(f"missing field(s) {', '.join(missing)}: send {{\"row\": int, \"col\": int, "
                           f"\"positive\": bool}}", 400)
        row, col, positive = body["row"], body["col"], body["positive"]
        for name, value in (("row", row), ("col", col)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ApiError(f"{name} must be an integer pixel index, got {value!r}", 400)
        if not isinstance(positive, bool):
            raise ApiError(f"positive must be true or false, got {positive!r}", 400)
        result = run(session, lambda p: p.add_click(row, col, positive=positive))
        return jsonify(state(session, result, started))

    @app.post("/api/undo")
    def undo():
        started = time.perf_counter()
        session = current_session()
        result = run(session, lambda p: p.undo())  # ValueError (-> 400) when there is no click
        return jsonify(state(session, result, started))

    @app.post("/api/reset")
    def reset():
        started = time.perf_counter()
        session = current_session()
        run(session, lambda p: p.reset())
        return jsonify(state(session, None, started))

    @app.get("/api/mask.png")
    def mask_download():
        session = current_session()
        with model_lock:
            p = session.predictor
            result = p.result
            shape = p.image.shape[:2]
        mask = result.mask if result is not None else np.zeros(shape, dtype=bool)
        resp = send_file(io.BytesIO(mask_png(mask)), mimetype="image/png", as_attachment=True,
                         download_name=f"{session.filename}_mask.png")
        return resp

    return app


# ------------------------------------------------------------------------------------------ command line
MAX_UPLOAD_MB = 2.0 ** 20  # 1 TiB: far beyond any image, and the byte count stays a machine-size integer


def _int_arg(lo: int, hi: Optional[int] = None) -> Callable[[str], int]:
    """argparse type: an integer in ``lo..hi`` (no upper bound when ``hi`` is None)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            bound = f"in {lo}..{hi}" if hi is not None else f"at least {lo}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value
    return parse


def _upload_mb_arg(text: str) -> float:
    """argparse type of ``--max-upload-mb``: a finite number of MiB, at least one byte, at most 1 TiB."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of MiB, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of MiB greater than 0, got {text!r}")
    if int(value * 2 ** 20) < 1:
        raise argparse.ArgumentTypeError(f"must be at least one byte ({2.0 ** -20:.3g} MiB), got {text!r}")
    if value > MAX_UPLOAD_MB:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_UPLOAD_MB:.0f} (1 TiB), got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE", help="model config (YAML)")
    parser.add_argument("--weights", default="", help="checkpoint (sets MODEL.WEIGHTS); random weights if none")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; there is no authentication)")
    parser.add_argument("--port", type=_int_arg(0, 65535), default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--max-upload-mb", type=_upload_mb_arg, default=DEFAULT_MAX_UPLOAD_BYTES / 2 ** 20,
                        help="largest accepted upload in MiB (default 10)")
    parser.add_argument("--max-pixels", type=_int_arg(1), default=DEFAULT_MAX_PIXELS,
                        help=f"largest accepted image in pixels (default {DEFAULT_MAX_PIXELS})")
    parser.add_argument("--max-sessions", type=_int_arg(1), default=DEFAULT_MAX_SESSIONS,
                        help="browser sessions kept at once, least recently used dropped first (default 32)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default MODEL.DEVICE)")
    parser.add_argument("--no-zoom-in", action="store_true",
                        help="predict on the whole image every click (default: TEST.NOC.ZOOM_IN.ENABLED of the config)")
    parser.add_argument("--no-flip", action="store_true",
                        help="no horizontal-flip averaging (default: TEST.NOC.FLIP of the config)")
    parser.add_argument("--int8", action="store_true",
                        help="CPU: predict with int8 dynamically quantised linear layers (faster on some CPUs; see "
                             "the README)")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="CUDA: replay the network from CUDA graphs (each image size recorded at its second "
                             "click; see the README)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides, e.g. TEST.NOC.PRED_THRESHOLD 0.5")
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)  # the numbers are checked by their argparse types, before any model loads
    if len(args.opts) % 2:
        parser.error(f"config overrides must be KEY VALUE pairs, got {args.opts}")
    from detectron2.utils.logger import setup_logger
    from werkzeug.serving import make_server

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    from adaptiveclick.inference import InteractivePredictor

    setup_logger(name="adaptiveclick")
    base = InteractivePredictor.from_config_file(args.config_file, weights=args.weights or None, opts=args.opts,
                                                 device=args.device, zoom_in=False if args.no_zoom_in else None,
                                                 flip=False if args.no_flip else None,
                                                 quantize="int8" if args.int8 else None, cuda_graph=args.cuda_graph)

    # every session shares the one model (int8 or CUDA graphs already applied: the graphs belong to the model,
    # and the server's threads take turns at them) and the settings of ``base``
    def factory():
        return InteractivePredictor(base.model, device=base.device,
                                    zoom_in=base.zoom_in_params if base.zoom_in_params is not None else False,
                                    flip=base.flip, threshold=base.threshold)

    app = create_app(factory, max_upload_bytes=int(args.max_upload_mb * 2 ** 20),
                     max_sessions=args.max_sessions, max_pixels=args.max_pixels)
    try:
        if not ipaddress.ip_address(args.host).is_loopback:
            logger.warning("web demo: binding %s, reachable from other machines; it has no authentication",
                           args.host)
    except ValueError:  # a host name
        logger.warning("web demo: binding host name %s; it has no authentication", args.host)
    server = make_server(args.host, args.port, app, threaded=True)
    host = f"[{args.host}]" if ":" in args.host else args.host
    logger.info("web demo: model on %s, zoom-in %s, flip %s; open http://%s:%d/", base.device,
                base.zoom_in_params is not None, base.flip, host, server.server_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
