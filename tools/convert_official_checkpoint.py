#!/usr/bin/env python
r"""Convert an official AdaptiveClick checkpoint (lab206/AdaptiveClick) into a checkpoint of our model.

    python tools/convert_official_checkpoint.py OFFICIAL.pth OURS.pth          # config chosen from the weights
    python tools/convert_official_checkpoint.py --input adaptiveclick_base448_sbd.pth \
        --config-file configs/sbd/adaptiveclick_vit_b_448.yaml --output adaptiveclick_vit_b_448_sbd.pth \
        [--official-root /path/to/AdaptiveClick] [--trust-pickle] [KEY VALUE ...]

Without ``--config-file`` our SBD config of the same ViT width is used (768 -> ViT-B, 1024 -> ViT-L,
1280 -> ViT-H; the official models are 448 px); pass the config explicitly for anything else.

The output ``{"model": state_dict, "__author__": ..., "matching_heuristics": False, "conversion": {...}}`` is
written atomically, then loaded back into a model built from the config with strict key and shape checks.
With ``--official-root`` (a checkout of the official code) the official model is built from the same
settings, the official weights are loaded into it strictly, and one random image with 2 clicks (and a random
previous mask) is run through both; the maximum absolute difference of the logits is printed.  Use the result
with ``--weights`` / ``MODEL.WEIGHTS`` of the other tools.  Trailing ``KEY VALUE`` pairs override config keys.
"""

import argparse
import hashlib
import json
import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

logger = logging.getLogger("adaptiveclick.convert")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default="", help="official checkpoint (.pth); or the first positional argument")
    parser.add_argument("--config-file", default="",
                        help="our config describing the same model (default: chosen from the ViT width)")
    parser.add_argument("--output", default="", help="our checkpoint to write (.pth); or the second positional")
    parser.add_argument("--official-root", default="",
                        help="official AdaptiveClick checkout: verify the conversion against the official forward")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow a full (unsafe) unpickle if the file holds objects outside the allow-list")
    parser.add_argument("--seed", type=int, default=0, help="seed of the verification image and clicks")
    parser.add_argument("opts", nargs="*", default=[],
                        help="[OFFICIAL.pth OURS.pth] then config overrides: KEY VALUE ...")
    return parser


WIDTH_CONFIGS = {768: "adaptiveclick_vit_b_448.yaml", 1024: "adaptiveclick_vit_l_448.yaml",
                 1280: "adaptiveclick_vit_h_448.yaml"}


def parse_args(argv=None):
    """Options anywhere; without --input/--output the first two positionals are the input and output files."""
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    opts = list(args.opts)
    for name in ("input", "output"):
        if not getattr(args, name):
            if not opts or not opts[0].endswith((".pth", ".pt", ".pkl", ".ckpt")):
                parser.error(f"give the {name} checkpoint, as --{name} or as a positional .pth path")
            setattr(args, name, opts.pop(0))
    args.opts = opts
    return args


def default_config_file(official_sd):
    """Our SBD config whose ViT width matches the official weights (``backbone.patch_embed.proj.weight``)."""
    weight = official_sd.get("backbone.patch_embed.proj.weight")
    if weight is None or weight.ndim != 4 or int(weight.shape[0]) not in WIDTH_CONFIGS:
        raise ValueError("cannot tell the model size from the checkpoint (backbone.patch_embed.proj.weight "
                         f"{None if weight is None else tuple(weight.shape)}): pass --config-file")
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "sbd")
    return os.path.normpath(os.path.join(root, WIDTH_CONFIGS[int(weight.shape[0])]))


def load_cfg(config_file, opts):
    from adaptiveclick.config import load_config_file

    cfg = load_config_file(config_file, opts)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.VIT.PRETRAINED = ""  # the converted weights replace any MAE initialisation
    cfg.MODEL.WEIGHTS = ""
    cfg.freeze()
    return cfg


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_against_official(cfg, model, official_sd, official_root, seed):
    """Max |logit difference| between the official model and ours on one random image with 2 clicks."""
    import numpy as np
    import torch

    from adaptiveclick.utils import official

    size, img_size, overrides = official.official_kwargs_from_cfg(cfg)
    official_model = official.build_official_model(official_root, size=size, img_size=img_size, **overrides)
    missing, unexpected = official_model.load_state_dict(official_sd, strict=True)
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(img_size, img_size, 3), dtype=np.uint8)
    prev = rng.random((img_size, img_size)).astype(np.float32)
    clicks = [(int(rng.integers(img_size)), int(rng.integers(img_size)), 1),
              (int(rng.integers(img_size)), int(rng.integers(img_size)), 0)]
    theirs = official.official_forward(official_model, image, clicks, prev)
    with torch.no_grad():
        ours = model([{"image": torch.from_numpy(image).permute(2, 0, 1).contiguous(),
                       "clicks": torch.tensor(clicks, dtype=torch.int64),
                       "prev_mask": torch.from_numpy(prev)[None]}])[0]["mask_logits"][0]
    return float((theirs - ours).abs().max()), float(theirs.abs().max())


def main(argv=None):
    args = parse_args(argv)
    import torch
    from detectron2.modeling import build_model

    import adaptiveclick.modeling  # noqa: F401  (registers the meta-architecture)
    from adaptiveclick.engine.checkpoint import AtomicCheckpointer, atomic_write
    from adaptiveclick.utils import official
    from adaptiveclick.utils.run_info import run_info

    official_sd, official_config = official.read_official_checkpoint(args.input, trust_pickle=args.trust_pickle)
    official.refuse_mae_checkpoint(official_sd, f"{args.input!r}")
    if not args.config_file:
        args.config_file = default_config_file(official_sd)
        logger.info(f"config chosen from the checkpoint's ViT width: {args.config_file}")
    cfg = load_cfg(args.config_file, args.opts)
    model = build_model(cfg).eval()
    state = official.convert_official_state_dict(official_sd, cfg, template=model.state_dict(),
                                                 official_config=official_config)
    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    checkpoint = {
        "model": state,
        "__author__": "lab206/AdaptiveClick (converted by adaptiveclick tools/convert_official_checkpoint.py)",
        "matching_heuristics": False,
        "conversion": {
            "source": os.path.abspath(args.input),
            "source_sha256": sha256(args.input),
            "config_file": os.path.abspath(args.config_file),
            "opts": list(args.opts),
            # plain JSON types only, so that the file loads with torch.load(weights_only=True)
            "run_info": json.loads(json.dumps(run_info("cpu"), default=str)),
        },
    }
    atomic_write(args.output, lambda f: torch.save(checkpoint, f))

    # load the file as the other tools do (AtomicCheckpointer) into the model, which still has its random
    # initialisation, then check strictly: the same key set as our model, every tensor equal to the converted one
    fresh = model
    AtomicCheckpointer(fresh).load(args.output)
    reloaded = torch.load(args.output, map_location="cpu", weights_only=True)["model"]
    fresh.load_state_dict(reloaded, strict=True)  # raises on missing/unexpected keys or shapes
    for key, value in fresh.state_dict().items():
        if not torch.equal(value, state[key]):
            raise RuntimeError(f"reloaded tensor {key} differs from the converted one")
    num_params = sum(p.numel() for p in fresh.parameters())
    report = {"output": os.path.abspath(args.output), "tensors": len(state), "parameters": num_params}
    print(f"wrote {args.output}: {len(state)} tensors, {num_params:,} parameters; strict reload OK")

    if args.official_root:
        diff, scale = verify_against_official(cfg, fresh, official_sd, args.official_root, args.seed)
        report.update(max_abs_logit_diff=diff, max_abs_logit=scale)
        print(f"official vs converted: max abs logit difference {diff:.3e} (max |logit| {scale:.3f})")
    print(json.dumps(report))
    return report


def cli(argv=None):
    """Run :func:`main`; a bad input (``ValueError``/``FileNotFoundError``) prints ``error: ...`` and returns 2."""
    try:
        main(argv)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from detectron2.utils.logger import setup_logger

    setup_logger(name="adaptiveclick")  # here, not in main(): a caller of main()/cli() keeps its own logging
    sys.exit(cli())
