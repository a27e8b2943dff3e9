#!/usr/bin/env python
"""Run clicks on an image with a trained model and write the overlay (detectron2's Visualizer).

    python tools/demo/visualize.py --config-file configs/synthetic/quickstart.yaml \\
        --weights output/quickstart/model_final.pth --image photo.jpg --clicks "40,60,+;80,20,-" --output out.png

Clicks are "row,col,sign" separated by ";" (sign "+" positive, "-" negative), applied in order; the picture
shows the final mask and the clicks (green positive, red negative).  ``--mask-output`` also writes the
binary mask as a PNG (0/255).  Trailing KEY VALUE pairs override the config.

The image is read exactly as the browser demo reads an upload, by the same function
(``decode_image`` of ``tools/demo/web.py``, see there): EXIF orientation applied, so clicks are in the
coordinates of the image as displayed; transparency composited on white; 16-bit (and 32-bit) greyscale
scaled by the full range of its sample type (65535 -> 255), floating-point greyscale only in [0, 1].  Unlike
the upload, any type Pillow reads is accepted, with no pixel limit but Pillow's decompression-bomb check.
An unreadable image, or a click outside it, is an error (``error: ...``, exit status 2) before the model
is loaded; so is a bad model argument (a missing config or weights file, weights that are a directory or do
not fit, an unknown config key in the overrides, a device without CUDA), after it.
"""

import argparse
import importlib.util
import logging
import os
import sys

import numpy as np

__all__ = ["parse_clicks", "read_image", "draw_overlay", "main"]

POSITIVE_COLOUR = (0.1, 0.85, 0.1)
NEGATIVE_COLOUR = (0.9, 0.1, 0.1)
MASK_COLOUR = (0.12, 0.45, 1.0)


def parse_clicks(text: str):
    """``"r,c,+;r,c,-"`` -> [(row, col, positive)]; raises ValueError naming the bad entry."""
    clicks = []
    for i, item in enumerate(p.strip() for p in text.split(";")):
        if not item:
            continue
        parts = [p.strip() for p in item.split(",")]
        if len(parts) != 3 or parts[2] not in ("+", "-", "pos", "neg"):
            raise ValueError(f"click {i + 1} {item!r}: expected 'row,col,+' or 'row,col,-'")
        try:
            row, col = int(parts[0]), int(parts[1])
        except ValueError:
            raise ValueError(f"click {i + 1} {item!r}: row and col must be integers") from None
        clicks.append((row, col, parts[2] in ("+", "pos")))
    if not clicks:
        raise ValueError(f"no clicks in {text!r}")
    return clicks


_WEB_DEMO = None


def _web_demo():
    """``tools/demo/web.py`` (loaded from its path: this folder is not a package), for its ``decode_image``.
    Loading it needs no Flask: the web demo imports Flask only to build the server."""
    global _WEB_DEMO
    if _WEB_DEMO is None:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web.py")
        spec = importlib.util.spec_from_file_location("adaptiveclick_demo_web", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _WEB_DEMO = module
    return _WEB_DEMO


def read_image(path: str) -> np.ndarray:
    """uint8 RGB (H, W, 3) of the image file ``path``, decoded like a web demo upload (any Pillow type, no
    pixel limit); ValueError ``cannot read --image PATH: reason`` when the file is missing or unreadable,
    not an image, corrupt or truncated, or has samples out of range."""
    web = _web_demo()
    try:
        with open(path, "rb") as f:
            data = f.read()
        return web.decode_image(data, max_pixels=None, formats=None)
    except OSError as e:
        reason = e.strerror or str(e)
    except web.ImageError as e:
        reason = str(e)
    raise ValueError(f"cannot read --image {path}: {reason}")


def draw_overlay(image: np.ndarray, mask: np.ndarray, clicks) -> np.ndarray:
    """RGB uint8 picture: ``image`` with ``mask`` and the clicks drawn by detectron2's Visualizer."""
    from detectron2.utils.visualizer import Visualizer

    vis = Visualizer(image, scale=1.0)
    if mask.any():
        vis.draw_binary_mask(mask.astype(np.uint8), color=MASK_COLOUR, edge_color=MASK_COLOUR, alpha=0.45)
    radius = max(2.0, 0.012 * max(image.shape[:2]))
    for c in clicks:
        vis.draw_circle((c.col, c.row), color=POSITIVE_COLOUR if c.is_positive else NEGATIVE_COLOUR, radius=radius)
    return vis.get_output().get_image()


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="model config (YAML)")
    parser.add_argument("--weights", default="", help="checkpoint (sets MODEL.WEIGHTS); random weights if none")
    parser.add_argument("--image", required=True,
                        help="input image (any format Pillow reads; decoded like the web demo's uploads)")
    parser.add_argument("--clicks", required=True, help='clicks in order: "row,col,+;row,col,-"')
    parser.add_argument("--output", required=True, help="overlay PNG to write")
    parser.add_argument("--mask-output", default="", help="also write the binary mask here (PNG, 0/255)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: the config's MODEL.DEVICE)")
    parser.add_argument("--no-zoom-in", action="store_true",
                        help="disable the zoom-in of the protocol (default: TEST.NOC.ZOOM_IN.ENABLED of the config)")
    parser.add_argument("--no-flip", action="store_true",
                        help="disable the flip averaging (default: TEST.NOC.FLIP of the config)")
    parser.add_argument("--int8", action="store_true",
                        help="CPU: predict with int8 dynamically quantised linear layers (faster on some CPUs; see "
                             "the README)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from PIL import Image

    # runnable from a checkout without installing the package, like the other tools
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    from adaptiveclick.inference import InteractivePredictor

    log = logging.getLogger("adaptiveclick")
    clicks = parse_clicks(args.clicks)
    image = read_image(args.image)
    h, w = image.shape[:2]
    for i, (row, col, _) in enumerate(clicks):  # checked here too, so that no model is loaded for nothing
        if not (0 <= row < h and 0 <= col < w):
            raise ValueError(f"click {i + 1} ({row}, {col}) is outside the image: {args.image} has {h} rows "
                             f"and {w} columns (as displayed, after its EXIF orientation)")
    predictor = InteractivePredictor.from_config_file(args.config_file, weights=args.weights or None,
                                                      opts=args.opts, device=args.device,
                                                      # None: the config's TEST.NOC.ZOOM_IN.ENABLED / FLIP
                                                      zoom_in=False if args.no_zoom_in else None,
                                                      flip=False if args.no_flip else None,
                                                      quantize="int8" if args.int8 else None)
    predictor.set_image(image)
    result = None
    for row, col, positive in clicks:
        result = predictor.add_click(row, col, positive)
        log.info(f"click ({row}, {col}, {'+' if positive else '-'}): {result.area} mask pixels, "
                 f"{1000 * result.seconds:.1f} ms")
    picture = draw_overlay(image, result.mask, result.clicks)
    for path in filter(None, (args.output, args.mask_output)):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(picture).save(args.output)
    log.info(f"overlay written to {args.output}")
    if args.mask_output:
        Image.fromarray(result.mask.astype(np.uint8) * 255).save(args.mask_output)
        log.info(f"mask written to {args.mask_output}")
    return 0


if __name__ == "__main__":
    from detectron2.utils.logger import setup_logger

    setup_logger(name="adaptiveclick")  # here, not in main(): a caller of main() keeps its own logging
    try:
        sys.exit(main())
    except KeyError as e:  # an unknown config key (overrides or YAML); str() of a KeyError adds quotes
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        sys.exit(2)
    except (ValueError, TypeError, FileNotFoundError, IsADirectoryError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
