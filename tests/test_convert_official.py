"""Official AdaptiveClick (lab206/AdaptiveClick) -> our model: checkpoint conversion and equivalence.

The reference is the official code itself, imported from a local checkout ($ADAPTIVECLICK_OFFICIAL_ROOT,
default /tmp/official_adaptiveclick); tests that need it are skipped when it is absent.  A small official
model (ViT width 96, depth 8, patch 28 at 448 px: a 16x16 token grid in 2x2 windows of 8x8 tokens, as the
official 224-px windows give; pyramid levels 64/32/16/8, so the CAAM click pooling ends with the bilinear
shrink; 64-wide pixel decoder and decoder, 5 queries) gets random weights, is converted, and both models must
produce the same logits for the same image, clicks and previous mask.

Tolerance: |official - ours| <= 1e-5 * max|official logit| (fp32).  Both sides run the same maths in a
different order (SDPA vs explicit softmax attention, per-query upsampling then weighted sum vs the reverse,
ImageNet normalisation on the 0..1 vs 0..255 scale, a different click rasteriser); the measured difference is
1.0e-6 to 1.5e-6 of the largest logit over 5 seeds x 3 click sets (1e-5 absolute for logits ~10; ViT-B/448:
4.0e-5 for logits up to 22.4), i.e. a few fp32 ulps accumulated over ~40 layers.  A real discrepancy is
orders of magnitude larger: the negative control (our CAAM switched off) differs by > 1e-2.
"""

import json
import os
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from adaptiveclick.utils import official

REPO = pathlib.Path(__file__).resolve().parents[1]
TOL_REL = 1e-5  # of the largest |logit|; see the module docstring

# the small official model and the matching keys of ours (configs/synthetic/tiny.yaml + these overrides)
SMALL_OFFICIAL = dict(patch_size=28, embed_dim=96, depth=8, num_heads=3, fpn_out_dims=[32, 64, 96, 128], conv_dim=64,
                      mask_dim=64, enc_layers=2, hidden_dim=64, nheads=4, dim_feedforward=128, num_queries=5,
                      dec_layers=5)
SMALL_OPTS = [
    "MODEL.VIT.PATCH_SIZE", 28, "MODEL.VIT.EMBED_DIM", 96, "MODEL.VIT.DEPTH", 8, "MODEL.VIT.NUM_HEADS", 3,
    "MODEL.VIT.IMG_SIZE", 448,
    # official: windows of 224 px = 8 tokens of 28 px; depth 8 -> runs of depth // 4 = 2 blocks, the last global
    "MODEL.VIT.WINDOW_SIZE", 8, "MODEL.VIT.GLOBAL_BLOCK_INDEXES", [1, 3, 5, 7],
    "MODEL.VIT.FPN_OUT_DIMS", [32, 64, 96, 128],
    "MODEL.ADAPTIVECLICK.CONVS_DIM", 64, "MODEL.ADAPTIVECLICK.MASK_DIM", 64, "MODEL.ADAPTIVECLICK.ENC_LAYERS", 2,
    # official: the deformable encoder uses the decoder's heads and DIM_FEEDFORWARD // 2
    "MODEL.ADAPTIVECLICK.ENC_NHEADS", 4, "MODEL.ADAPTIVECLICK.ENC_DIM_FEEDFORWARD", 64,
    "MODEL.ADAPTIVECLICK.HIDDEN_DIM", 64, "MODEL.ADAPTIVECLICK.NHEADS", 4, "MODEL.ADAPTIVECLICK.DIM_FEEDFORWARD", 128,
    "MODEL.ADAPTIVECLICK.NUM_QUERIES", 5, "MODEL.ADAPTIVECLICK.DEC_LAYERS", 5,
    # official behaviour (these are also our defaults; spelled out because the test depends on them)
    "MODEL.ADAPTIVECLICK.CAAM.MODE", "official", "MODEL.ADAPTIVECLICK.CAAM.POOLING", "official",
    "MODEL.ADAPTIVECLICK.MERGE", "weighted_logits", "MODEL.ADAPTIVECLICK.CLICK_RADIUS", 5.0,
]
SIZE = 448


def _official_root():
    root = os.environ.get(official.OFFICIAL_ROOT_ENV, official.DEFAULT_OFFICIAL_ROOT)
    if not os.path.isfile(os.path.join(root, "isegm", "model", "is_adaptiveclick_model.py")):
        pytest.skip(f"official AdaptiveClick checkout not found at {root!r} (set {official.OFFICIAL_ROOT_ENV})")
    return root


def _small_cfg(extra=()):
    from detectron2.config import get_cfg

    from adaptiveclick.config import add_adaptiveclick_config

    cfg = get_cfg()
    add_adaptiveclick_config(cfg)
    cfg.merge_from_file(str(REPO / "configs" / "synthetic" / "tiny.yaml"))
    cfg.merge_from_list(SMALL_OPTS + list(extra))
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def _our_model(cfg):
    from detectron2.modeling import build_model

    import adaptiveclick.modeling  # noqa: F401

    return build_model(cfg).eval()


def _ours_forward(model, image, clicks, prev):
    integral = all(float(v).is_integer() for click in clicks for v in click)
    with torch.no_grad():
        out = model([{"image": torch.from_numpy(image).permute(2, 0, 1).contiguous(),
                      "clicks": torch.tensor(clicks, dtype=torch.int64 if integral else torch.float32),
                      "prev_mask": torch.from_numpy(prev)[None]}])
    return out[0]["mask_logits"][0]


@pytest.fixture(scope="module")
def small():
    root = _official_root()
    torch.manual_seed(0)
    model = official.build_official_model(root, size="base", img_size=SIZE, **SMALL_OFFICIAL)
    cfg = _small_cfg()
    ours = _our_model(cfg)
    ns = types.SimpleNamespace(root=root, official=model, sd=model.state_dict(), cfg=cfg, ours=ours,
                               template=ours.state_dict(), cases=_cases())
    # reference logits of the official model for every case
    ns.reference = [official.official_forward(model, image, clicks, prev) for _, image, clicks, prev in ns.cases]
    return ns


def _cases():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
    zeros = np.zeros((SIZE, SIZE), np.float32)
    prev = rng.random((SIZE, SIZE)).astype(np.float32)
    return [
        ("first click, no previous mask", image, [(200, 120, 1)], zeros),
        ("4 clicks incl. image corners, previous mask", image,
         [(100, 200, 1), (300, 50, 0), (0, 447, 0), (447, 0, 1)], prev),
        # zoom-in crops give fractional clicks, and clicks outside the crop (drawn partially by both models)
        ("fractional and outside clicks", image, [(120.4, 333.7, 1), (-3.5, 200.25, 1), (260.5, 449.0, 0)], prev),
    ]


def test_official_model_is_built_as_configured(small):
    m = small.official
    assert not m.training and not any(x.training for x in m.modules())
    assert tuple(m.backbone.patch_embed.grid_size) == (16, 16)
    assert len(m.backbone.blocks) == 8 and m.backbone.blocks[0].attn.num_heads == 3
    assert m.click_aware_decoder.num_layers == 4 and m.click_aware_decoder.query_feat.weight.shape == (5, 64)
    assert official.official_global_blocks(12) == [5, 11]
    assert official.official_global_blocks(32) == [7, 15, 23, 31]
    assert official.official_global_blocks(8) == [1, 3, 5, 7]


def test_official_points_format():
    # BasePredictor.get_points_nd: positives first, then negatives, each padded to K = max(#pos, #neg)
    points = official.official_points([(1, 2, 1), (3, 4, 0), (5, 6, 1)])
    assert points.tolist() == [[[1, 2, 0], [5, 6, 2], [3, 4, 1], [-1, -1, -1]]]
    assert official.official_points([]).tolist() == [[[-1, -1, -1], [-1, -1, -1]]]
    with pytest.raises(ValueError, match=r"clicks\[0\]"):
        official.official_points([(1, 2, 3)])


def test_converted_model_matches_official_forward(small):
    state = official.convert_official_state_dict(small.sd, small.cfg, template=small.template)
    small.ours.load_state_dict(state, strict=True)
    diffs = {}
    for (name, image, clicks, prev), theirs in zip(small.cases, small.reference):
        ours = _ours_forward(small.ours, image, clicks, prev)
        assert theirs.shape == ours.shape == (SIZE, SIZE)
        assert theirs.abs().max() > 0.1, "degenerate reference output"
        diffs[name] = float((theirs - ours).abs().max())
        assert diffs[name] <= TOL_REL * float(theirs.abs().max()), (name, diffs[name], float(theirs.abs().max()))
    print("max abs logit differences:", diffs)


def test_converted_model_matches_official_at_another_input_size(small):
    """DAVIS protocol: the official evaluation resizes the position embedding to a 672 px input
    (interpolate_pos_embed_inference; a 24x24 grid = 3x3 windows here); ours resizes it on the fly."""
    import copy

    big = official.official_set_inference_size(copy.deepcopy(small.official), 672)
    ours = small.ours
    ours.load_state_dict(official.convert_official_state_dict(small.sd, template=small.template), strict=True)
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(672, 672, 3), dtype=np.uint8)
    prev = rng.random((672, 672)).astype(np.float32)
    clicks = [(500, 100, 1), (30, 640, 0), (336, 336, 1)]
    theirs = official.official_forward(big, image, clicks, prev)
    diff = float((theirs - _ours_forward(ours, image, clicks, prev)).abs().max())
    print("max abs logit difference at 672:", diff)
    assert theirs.shape == (672, 672) and diff <= TOL_REL * float(theirs.abs().max())
    with pytest.raises(ValueError, match="built for 672x672 inputs, got a 448x448 image"):
        official.official_forward(big, small.cases[0][1], [(1, 1, 1)])


def test_difference_is_detected_when_behaviour_differs(small):
    """Negative control: with CAAM off our model must visibly differ, so the comparison above is sensitive."""
    cfg = _small_cfg(["MODEL.ADAPTIVECLICK.CAAM.MODE", "off"])
    ours = _our_model(cfg)
    ours.load_state_dict(official.convert_official_state_dict(small.sd, template=small.template), strict=True)
    _, image, clicks, prev = small.cases[1]
    diff = float((small.reference[1] - _ours_forward(ours, image, clicks, prev)).abs().max())
    print("negative control (CAAM off) max abs logit difference:", diff)
    assert diff > 1e-2, diff


def test_every_official_key_is_accounted_for(small):
    state = official.convert_official_state_dict(small.sd, small.cfg, template=small.template)
    assert list(state) == list(small.template)
    # the same tensors, renamed: spot-check one of each family against the official module tensors
    o = small.official
    pairs = {
        "backbone.net.patch_embed_coords.proj.weight": o.patch_embed_coords.proj.weight,
        "backbone.net.pos_embed": o.backbone.pos_embed,
        "backbone.net.blocks.7.mlp.fc2.bias": o.backbone.blocks[7].mlp.fc2.bias,
        "backbone.pyramid.down_32.3.weight": o.pixel_decoder.neck.down_32[3].weight,
        "pixel_decoder.transformer.encoder.layers.1.self_attn.sampling_offsets.bias":
            o.pixel_decoder.transformer.encoder.layers[1].self_attn.sampling_offsets.bias,
        "pixel_decoder.lateral_convs.0.0.weight": o.pixel_decoder.adapter_1[0].weight,
        "transformer_decoder.transformer_cross_attention_layers.3.multihead_attn.in_proj_weight":
            o.click_aware_decoder.transformer_cross_attention_layers[3].multihead_attn.in_proj_weight,
        "transformer_decoder.mask_embed.layers.2.weight": o.click_aware_decoder.mask_embed.layers[2].weight,
    }
    for key, tensor in pairs.items():
        assert torch.equal(state[key], tensor.detach()), key
    # official keys = ours + 5 never used by the official forward (cls_token, fc_norm, 1000-way head) + the 8
    # duplicate names of the FPN convs (adapter_1 / layer_1 = lateral_convs.0 / output_convs.0)
    assert len(small.sd) == len(small.template) + 5 + 8


@pytest.mark.parametrize("corruption, pattern", [
    ("drop", r"our keys the official state dict does not provide \(1\): \['transformer_decoder\.class_embed\.bias'\]"),
    ("extra", r"official keys with no counterpart in our model \(1\): "
              r"\['click_aware_decoder\.bogus\.weight -> transformer_decoder\.bogus\.weight'\]"),
    ("unknown_prefix", r"no counterpart.*'somewhere\.else'"),
    ("shape", r"shape mismatches.*backbone\.blocks\.0\.attn\.qkv\.weight -> "
              r"backbone\.net\.blocks\.0\.attn\.qkv\.weight: official \(10, 96\) vs ours \(288, 96\)"),
    ("duplicate", r"duplicate FPN convs that differ.*pixel_decoder\.adapter_1\.0\.weight"),
])
def test_unmappable_state_dicts_are_refused_naming_keys(small, corruption, pattern):
    sd = dict(small.sd)
    if corruption == "drop":
        del sd["click_aware_decoder.class_embed.bias"]
    elif corruption == "extra":
        sd["click_aware_decoder.bogus.weight"] = torch.zeros(3)
    elif corruption == "unknown_prefix":
        sd["somewhere.else"] = torch.zeros(1)
    elif corruption == "shape":
        sd["backbone.blocks.0.attn.qkv.weight"] = torch.zeros(10, 96)
    elif corruption == "duplicate":
        sd["pixel_decoder.adapter_1.0.weight"] = sd["pixel_decoder.adapter_1.0.weight"] + 1
    with pytest.raises(ValueError, match=pattern):
        official.convert_official_state_dict(sd, small.cfg, template=small.template)


def test_data_parallel_prefix_is_stripped(small):
    plain = official.convert_official_state_dict(small.sd, template=small.template)
    prefixed = official.convert_official_state_dict({"module." + k: v for k, v in small.sd.items()},
                                                    template=small.template)
    assert list(prefixed) == list(plain) and all(torch.equal(prefixed[k], plain[k]) for k in plain)


def test_not_a_state_dict_is_refused(small):
    with pytest.raises(ValueError, match=r"not \(name, tensor\) pairs: \['config'\]"):
        official.convert_official_state_dict({"config": {"x": 1}, **small.sd}, template=small.template)
    with pytest.raises(ValueError, match="holds no state dict"):
        official.convert_official_state_dict([1, 2], template=small.template)


@pytest.mark.parametrize("opts, pattern", [
    (["MODEL.VIT.WINDOW_SIZE", 14], r"MODEL\.VIT\.WINDOW_SIZE is 14; the official windows are 224 px = 8 tokens"),
    (["MODEL.VIT.GLOBAL_BLOCK_INDEXES", [3, 7]], r"GLOBAL_BLOCK_INDEXES is \[3, 7\].*\[1, 3, 5, 7\]"),
    (["MODEL.ADAPTIVECLICK.ENC_NHEADS", 8], r"ENC_NHEADS 8 != NHEADS 4"),
])
def test_config_without_official_equivalent_is_refused(small, opts, pattern):
    with pytest.raises(ValueError, match=pattern):
        official.convert_official_state_dict(small.sd, _small_cfg(opts), template=small.template)


def test_stored_official_config_must_agree(small):
    model_cfg = official.official_model_cfg(small.root, "base", SIZE, **dict(SMALL_OFFICIAL, num_heads=6))
    config = {"class": "isegm.model.is_adaptiveclick_model.AdaptiveClickModel",
              "params": {"cfg": {"type": "builtin", "value": model_cfg, "specified": True},
                         "norm_radius": {"type": "builtin", "value": 5, "specified": True}}}
    with pytest.raises(ValueError, match=r"ViT heads \(MODEL\.VIT\.NUM_HEADS\): checkpoint 6, config 3"):
        official.convert_official_state_dict({"state_dict": small.sd, "config": config}, small.cfg,
                                             template=small.template)


def test_import_official_rejects_a_wrong_root(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path)):
        official.import_official(str(tmp_path))
    with pytest.raises(ValueError, match="does not exist"):
        official.import_official(str(tmp_path / "nope"))


class _Unknown:
    pass


def _save_official_format(path, state_dict, model_cfg, extra=None):
    """Write a checkpoint as the official trainer does: {'state_dict', 'config'} whose config holds an
    easydict.EasyDict, pathlib paths and a torch.device (a stand-in 'easydict' module is registered while
    saving, so the pickle names easydict.EasyDict even where easydict is not installed)."""
    fake = types.ModuleType("easydict")

    class EasyDict(dict):
        def __init__(self, d=None):
            super().__init__()
            for k, v in (d or {}).items():
                v = EasyDict(v) if isinstance(v, dict) else v
                self[k] = v
                self.__dict__[k] = v

    EasyDict.__module__, EasyDict.__qualname__ = "easydict", "EasyDict"
    fake.EasyDict = EasyDict
    cfg = EasyDict(dict(model_cfg, EXP_PATH=pathlib.PosixPath("/exp/run"), device=torch.device("cpu"),
                        gpu_ids=[0], **(extra or {})))
    config = {"class": "isegm.model.is_adaptiveclick_model.AdaptiveClickModel",
              "params": {"cfg": {"type": "builtin", "value": cfg, "specified": True},
                         "with_prev_mask": {"type": "builtin", "value": True, "specified": True},
                         "norm_radius": {"type": "builtin", "value": 5, "specified": True}}}
    with _module_registered("easydict", fake):
        torch.save({"state_dict": state_dict, "config": config}, path)
    return fake


class _module_registered:
    """Context manager: ``sys.modules[name] = module`` inside, the previous state restored after."""

    def __init__(self, name, module):
        self.name, self.module = name, module

    def __enter__(self):
        self.saved = sys.modules.get(self.name)
        sys.modules[self.name] = self.module

    def __exit__(self, *exc):
        if self.saved is None:
            del sys.modules[self.name]
        else:
            sys.modules[self.name] = self.saved


def test_read_official_checkpoint_formats(small, tmp_path):
    model_cfg = official.official_model_cfg(small.root, "base", SIZE, **SMALL_OFFICIAL)
    path = tmp_path / "official.pth"
    _save_official_format(path, small.sd, model_cfg)
    sd, config = official.read_official_checkpoint(path)
    assert sd.keys() == small.sd.keys() and all(torch.equal(sd[k], small.sd[k]) for k in sd)
    stored = config["params"]["cfg"]["value"]
    assert stored.MODEL.BACKBONE.EMBED_DIM == 96 and str(stored["EXP_PATH"]) == "/exp/run"
    # plain {"model": sd} and bare state dicts load with weights_only
    for obj in ({"model": small.sd}, small.sd):
        torch.save(obj, tmp_path / "plain.pth")
        sd, config = official.read_official_checkpoint(tmp_path / "plain.pth")
        assert config is None and sd.keys() == small.sd.keys()
    # a global outside the allow-list needs trust_pickle
    fake_easydict = _save_official_format(tmp_path / "odd.pth", small.sd, model_cfg, extra={"odd": _Unknown()})
    with pytest.raises(ValueError, match=r"odd\.pth.*_Unknown is not on the allow-list.*trust_pickle"):
        official.read_official_checkpoint(tmp_path / "odd.pth")
    with _module_registered("easydict", fake_easydict):  # a full unpickle needs every pickled class importable
        sd, config = official.read_official_checkpoint(tmp_path / "odd.pth", trust_pickle=True)
    assert isinstance(config["params"]["cfg"]["value"]["odd"], _Unknown) and sd.keys() == small.sd.keys()
    # broken files name the file
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.pth.*is empty"):
        official.read_official_checkpoint(tmp_path / "empty.pth")
    (tmp_path / "cut.pth").write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"cut\.pth"):
        official.read_official_checkpoint(tmp_path / "cut.pth")
    # a legacy-format (non-zip) stream of garbage is corrupt, not "untrusted"
    (tmp_path / "garbage.pth").write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    with pytest.raises(ValueError, match=r"garbage\.pth' is not a valid PyTorch checkpoint") as info:
        official.read_official_checkpoint(tmp_path / "garbage.pth")
    assert "trust" not in str(info.value)
    with pytest.raises(FileNotFoundError, match="missing"):
        official.read_official_checkpoint(tmp_path / "missing.pth")


def _load_tool():
    import importlib.util

    spec = importlib.util.spec_from_file_location("convert_official_checkpoint",
                                                  REPO / "tools" / "convert_official_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_cli(args):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, str(REPO / "tools" / "convert_official_checkpoint.py")] + args,
                          capture_output=True, text=True, cwd=str(REPO), env=env, timeout=300)


def _opts_args():
    return [str(x) for x in SMALL_OPTS]  # detectron2 parses each value with literal_eval


def test_cli_end_to_end(small, tmp_path, capsys):
    from adaptiveclick.engine.checkpoint import AtomicCheckpointer

    model_cfg = official.official_model_cfg(small.root, "base", SIZE, **SMALL_OFFICIAL)
    src = tmp_path / "official.pth"
    _save_official_format(src, small.sd, model_cfg)
    out = tmp_path / "out" / "ours.pth"
    proc = _run_cli(["--input", str(src), "--config-file", str(REPO / "configs" / "synthetic" / "tiny.yaml"),
                     "--output", str(out), "--official-root", small.root] + _opts_args())
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print("CLI report:", report)
    assert "official vs converted: max abs logit difference" in proc.stdout
    assert report["max_abs_logit"] > 0.1
    assert report["max_abs_logit_diff"] <= TOL_REL * report["max_abs_logit"]
    assert report["tensors"] == len(small.template)
    # the file loads through our checkpointer into a fresh model and equals the converted weights
    ours = _our_model(small.cfg)
    assert not torch.equal(ours.state_dict()["backbone.net.pos_embed"], small.sd["backbone.pos_embed"])
    AtomicCheckpointer(ours).load(str(out))
    expected = official.convert_official_state_dict(small.sd, template=small.template)
    for key, value in ours.state_dict().items():
        assert torch.equal(value, expected[key]), key
    assert torch.load(out, weights_only=True)["__author__"].startswith("lab206/AdaptiveClick")

    # an unmappable input: exit code 2, the key named, no output written (in-process: same entry point)
    bad = dict(small.sd)
    del bad["backbone.blocks.3.norm2.weight"]
    torch.save({"state_dict": bad}, tmp_path / "bad.pth")
    tool = _load_tool()
    code = tool.cli(["--input", str(tmp_path / "bad.pth"), "--config-file",
                     str(REPO / "configs" / "synthetic" / "tiny.yaml"), "--output", str(tmp_path / "bad_out.pth")]
                    + _opts_args())
    assert code == 2
    assert "backbone.net.blocks.3.norm2.weight" in capsys.readouterr().err
    assert not (tmp_path / "bad_out.pth").exists()


def test_cli_positional_form_and_config_from_width(tmp_path):
    """`convert_official_checkpoint.py OFFICIAL.pth OURS.pth [KEY VALUE ...]`; the config follows the ViT width."""
    tool = _load_tool()
    args = tool.parse_args(["a.pth", "b.pth", "--seed", "3", "MODEL.DEVICE", "cpu"])
    assert (args.input, args.output, args.seed, args.opts) == ("a.pth", "b.pth", 3, ["MODEL.DEVICE", "cpu"])
    args = tool.parse_args(["--input", "a.pth", "--output", "b.pth", "SOLVER.BASE_LR", "0.1"])
    assert (args.input, args.output, args.opts) == ("a.pth", "b.pth", ["SOLVER.BASE_LR", "0.1"])
    with pytest.raises(SystemExit):
        tool.parse_args(["a.pth"])  # no output
    for width, name in ((768, "adaptiveclick_vit_b_448.yaml"), (1024, "adaptiveclick_vit_l_448.yaml"),
                        (1280, "adaptiveclick_vit_h_448.yaml")):
        path = tool.default_config_file({"backbone.patch_embed.proj.weight": torch.zeros(width, 3, 1, 1)})
        assert path == str((REPO / "configs" / "sbd" / name).resolve()) and os.path.isfile(path)
    with pytest.raises(ValueError, match="--config-file"):
        tool.default_config_file({"backbone.patch_embed.proj.weight": torch.zeros(96, 3, 1, 1)})
    with pytest.raises(ValueError, match="--config-file"):
        tool.default_config_file({})
    assert tool.cli([str(tmp_path / "missing.pth"), str(tmp_path / "out.pth")]) == 2


def test_an_mae_checkpoint_is_pointed_to_model_vit_pretrained(tmp_path, capsys):
    mae = {"patch_embed.proj.weight": torch.zeros(8, 3, 16, 16), "blocks.0.attn.qkv.weight": torch.zeros(24, 8),
           "pos_embed": torch.zeros(1, 5, 8), "cls_token": torch.zeros(1, 1, 8)}
    torch.save({"model": mae}, tmp_path / "mae.pth")
    tool = _load_tool()
    assert tool.cli([str(tmp_path / "mae.pth"), str(tmp_path / "out.pth")]) == 2
    assert "MODEL.VIT.PRETRAINED" in capsys.readouterr().err and not (tmp_path / "out.pth").exists()
    with pytest.raises(ValueError, match="MODEL.VIT.PRETRAINED"):
        official.convert_official_state_dict(mae, template={})
