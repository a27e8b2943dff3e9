"""The paper-reproduction project (projects/AdaptiveClick): its configs and its README.

* every yaml under projects/AdaptiveClick/configs loads with ``add_adaptiveclick_config`` (no unknown key);
* every ablation config sets what its name says, differs from its base config only in the keys that its
  name allows, and names registered datasets;
* every ablation variant trains one step: the changed losses on random logits, the changed architectures as
  the tiny model (configs/synthetic/tiny.yaml) with one forward and backward pass;
* every ``tools/train_net.py`` / ``tools/evaluate_noc.py`` command of the README parses with the tools' own
  argument parsers, its ``--config-file`` exists and its ``KEY VALUE`` overrides merge into that config.
"""

import argparse
import functools
import glob
import importlib.util
import itertools
import os
import re
import shlex

import pytest
import torch

from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser
from detectron2.modeling import build_model

import adaptiveclick.modeling  # noqa: F401  (registers the meta-architectures)
from adaptiveclick.config import add_adaptiveclick_config
from adaptiveclick.data.datasets.builtin import BUILTIN_DATASETS
from adaptiveclick.losses import ALIASES, build_mask_loss

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT = os.path.join(ROOT, "projects", "AdaptiveClick")
README = os.path.join(PROJECT, "README.md")
ABLATION_DIR = os.path.join(PROJECT, "configs", "ablations")
ALL_YAMLS = sorted(glob.glob(os.path.join(PROJECT, "configs", "**", "*.yaml"), recursive=True))
ABLATIONS = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(ABLATION_DIR, "*.yaml")))

# The experiments of the README (file stems); the test fails if a file is added or lost without this list.
LOSS_ROWS = ("bce", "wbce", "balanced_ce", "soft_iou", "focal", "nfl", "poly", "dice")
EXPECTED_ABLATIONS = sorted(
    [f"{p}_loss_{loss}" for p in ("sbd_vit_b", "cocolvis_vit_b") for loss in LOSS_ROWS]
    + ["sbd_vit_b_no_caam", "sbd_vit_b_no_pmmd", "sbd_vit_b_no_caam_no_pmmd",
       "sbd_vit_b_afl_no_ada_no_agr", "sbd_vit_b_afl_ada_only", "sbd_vit_b_afl_agr_only",
       "sbd_vit_b_simpleclick_nfl", "sbd_vit_b_simpleclick_afl", "sbd_vit_b_simpleclick_bce",
       "cocolvis_vit_h_simpleclick_nfl", "cocolvis_vit_h_simpleclick_afl"])

# base config of each name prefix
REFERENCE = {"sbd_vit_b": "configs/sbd/adaptiveclick_vit_b_448.yaml",
             "cocolvis_vit_b": "configs/cocolvis/adaptiveclick_vit_b_448.yaml",
             "cocolvis_vit_h": "configs/cocolvis/adaptiveclick_vit_h_448.yaml"}
TRAIN_SET = {"sbd": ("sbd_train",), "cocolvis": ("cocolvis_train",)}
# (patch, width, depth, heads): ViT-B/16 and ViT-H/14 (model.md §0)
VIT = {"vit_b": (16, 768, 12, 12), "vit_h": (14, 1280, 32, 16)}
# iterations per epoch at batch 32 (model.md §6.1): SBD train has 8498 images; a COCO+LVIS epoch is 30,000 samples
ITERS_PER_EPOCH = {"sbd": 8498 // 32, "cocolvis": 30000 // 32}

# Loss of each name token: registry name and the parameters the README promises (paper / RITM / SimpleClick).
LOSSES = {
    "bce": ("bce", {}),
    "wbce": ("weighted_bce", {"MODEL.LOSS.WBCE.POS_WEIGHT": 2.0}),
    "balanced_ce": ("balanced_ce", {}),
    "soft_iou": ("soft_iou", {}),
    "focal": ("focal", {"MODEL.LOSS.FOCAL.ALPHA": 0.25, "MODEL.LOSS.FOCAL.GAMMA": 2.0}),
    "nfl": ("normalized_focal", {"MODEL.LOSS.NFL.ALPHA": 0.5, "MODEL.LOSS.NFL.GAMMA": 2.0}),
    "poly": ("poly", {"MODEL.LOSS.POLY.ALPHA": -1.0, "MODEL.LOSS.POLY.GAMMA": 2.0,
                      "MODEL.LOSS.POLY.EPSILON": 1.0}),
    "dice": ("dice", {}),
    # the official isegm AdaptiveFocalLossSigmoid(gamma=2, delta=0.4) used when AFL is plugged into SimpleClick
    "afl": ("adaptive_focal_loss", {"MODEL.AFL.EPSILON": -1.0, "MODEL.AFL.GAMMA": 2.0, "MODEL.AFL.DELTA": 0.4,
                                    "MODEL.AFL.ALPHA": 1.0, "MODEL.AFL.ADA": True, "MODEL.AFL.AGR": True}),
}
# SimpleClick's simple-pyramid widths (uncbiag/SimpleClick plainvit_{base,huge}448_*_itermask.py)
SIMPLECLICK_FPN = {"vit_b": [128, 256, 512, 1024], "vit_h": [240, 480, 960, 1920]}
NAME_RE = re.compile(r"^(?P<train>sbd|cocolvis)_(?P<vit>vit_[bh])_(?P<what>.+)$")


def load(path, opts=()):
    cfg = get_cfg()
    add_adaptiveclick_config(cfg)
    cfg.merge_from_file(path)
    cfg.merge_from_list(list(opts))
    return cfg


def ablation_path(stem):
    return os.path.join(ABLATION_DIR, stem + ".yaml")


def flatten(node, prefix=""):
    out = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = tuple(value) if isinstance(value, list) else value
    return out


@functools.lru_cache(maxsize=None)
def _default_keys():
    cfg = get_cfg()
    add_adaptiveclick_config(cfg)
    return frozenset(flatten(cfg))


def expectations(stem):
    """(expected values, keys allowed to differ from the base config) of an ablation, from its name alone."""
    m = NAME_RE.match(stem)
    assert m, f"{stem}: the name must be <sbd|cocolvis>_<vit_b|vit_h>_<experiment>"
    train, vit, what = m["train"], m["vit"], m["what"]
    patch, width, depth, heads = VIT[vit]
    exp = {"DATASETS.TRAIN": TRAIN_SET[train], "MODEL.VIT.PATCH_SIZE": patch, "MODEL.VIT.EMBED_DIM": width,
           "MODEL.VIT.DEPTH": depth, "MODEL.VIT.NUM_HEADS": heads, "OUTPUT_DIR": f"./output/ablations/{stem}",
           "MODEL.META_ARCHITECTURE": "AdaptiveClick", "MODEL.ADAPTIVECLICK.CAAM.MODE": "official",
           "MODEL.ADAPTIVECLICK.ENC_LAYERS": 4, "MODEL.LOSS.NAME": "adaptive_focal_loss",
           "MODEL.AFL.ADA": True, "MODEL.AFL.AGR": True, "TRAINER.FIND_UNUSED_PARAMETERS": False}
    allowed = {"OUTPUT_DIR", "DATASETS.TRAIN"}
    if what.startswith("loss_"):
        name, params = LOSSES[what[len("loss_"):]]
        exp.update({"MODEL.LOSS.NAME": name, **params})
        allowed |= {"MODEL.LOSS.NAME", *params}
    elif what in ("no_caam", "no_pmmd", "no_caam_no_pmmd"):
        if "caam" in what:
            exp["MODEL.ADAPTIVECLICK.CAAM.MODE"] = "off"
        if "pmmd" in what:
            exp["MODEL.ADAPTIVECLICK.ENC_LAYERS"] = 0
        allowed |= {"MODEL.ADAPTIVECLICK.CAAM.MODE", "MODEL.ADAPTIVECLICK.ENC_LAYERS"}
    elif what.startswith("afl_"):
        exp["MODEL.AFL.ADA"], exp["MODEL.AFL.AGR"] = {"afl_no_ada_no_agr": (False, False),
                                                      "afl_ada_only": (True, False),
                                                      "afl_agr_only": (False, True)}[what]
        allowed |= {"MODEL.AFL.ADA", "MODEL.AFL.AGR"}
    elif what.startswith("simpleclick_"):
        name, params = LOSSES[what[len("simpleclick_"):]]
        epoch = ITERS_PER_EPOCH[train]
        exp.update({"MODEL.META_ARCHITECTURE": "SimpleClickBaseline", "MODEL.LOSS.NAME": name, **params,
                    "MODEL.VIT.FPN_OUT_DIMS": tuple(SIMPLECLICK_FPN[vit]),
                    "MODEL.SIMPLE_HEAD.CHANNELS": 256, "MODEL.SIMPLE_HEAD.DROPOUT": 0.1,
                    # SimpleClick: 55 epochs, LR x0.1 after epoch 50
                    "SOLVER.MAX_ITER": 55 * epoch, "SOLVER.STEPS": (50 * epoch,)})
        if train == "sbd":
            exp["INPUT.CLICKS.MIN_OBJECT_AREA"] = 80  # SimpleClick's SBD setting (AdaptiveClick: 20)
        allowed |= {"MODEL.META_ARCHITECTURE", "MODEL.VIT.FPN_OUT_DIMS", "INPUT.CLICKS.MIN_OBJECT_AREA",
                    "SOLVER.MAX_ITER", "SOLVER.STEPS"}
        allowed |= {k for k in _default_keys() if k.startswith(("MODEL.LOSS.", "MODEL.AFL.", "MODEL.SIMPLE_HEAD."))}
    else:
        raise AssertionError(f"{stem}: unknown experiment {what!r}")
    return exp, allowed, REFERENCE[f"{train}_{vit}"]


# ---------------------------------------------------------------- every project yaml

@pytest.mark.parametrize("path", ALL_YAMLS, ids=lambda p: os.path.relpath(p, PROJECT))
def test_project_config_loads(path):
    cfg = load(path)
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        assert name in BUILTIN_DATASETS, f"{path}: dataset {name!r} is not registered"


def test_ablation_set_is_complete():
    assert ABLATIONS == EXPECTED_ABLATIONS


# ---------------------------------------------------------------- ablations: names, values, differences

@pytest.mark.parametrize("stem", EXPECTED_ABLATIONS)
def test_ablation_sets_what_its_name_says(stem):
    cfg = flatten(load(ablation_path(stem)))
    expected, _, _ = expectations(stem)
    got = {k: cfg[k] for k in expected}
    # the loss name may be written as an alias (afl, nfl, ...); compare registry names
    got["MODEL.LOSS.NAME"] = ALIASES.get(got["MODEL.LOSS.NAME"].lower(), got["MODEL.LOSS.NAME"].lower())
    assert got == expected


@pytest.mark.parametrize("stem", EXPECTED_ABLATIONS)
def test_ablation_differs_from_its_base_only_where_its_name_says(stem):
    _, allowed, reference = expectations(stem)
    mine = flatten(load(ablation_path(stem)))
    base = flatten(load(os.path.join(ROOT, reference)))
    assert set(mine) == set(base)
    changed = {k for k in mine if mine[k] != base[k]}
    assert changed <= allowed, f"unexpected changes: {sorted(changed - allowed)}"
    assert "OUTPUT_DIR" in changed


def test_ablation_output_dirs_are_distinct():
    dirs = [load(ablation_path(stem)).OUTPUT_DIR for stem in EXPECTED_ABLATIONS]
    assert len(set(dirs)) == len(dirs)


# ---------------------------------------------------------------- every variant trains one step

def _model_changes(stem):
    """The MODEL.* and TRAINER.* values of an ablation that differ from its base, ViT sizes excluded."""
    _, _, reference = expectations(stem)
    mine = flatten(load(ablation_path(stem)))
    base = flatten(load(os.path.join(ROOT, reference)))
    return tuple(sorted((k, mine[k]) for k in mine if mine[k] != base[k] and k.startswith(("MODEL.", "TRAINER."))
                        and not k.startswith("MODEL.VIT.")))


def _variants():
    groups = {}
    for stem in EXPECTED_ABLATIONS:
        groups.setdefault(_model_changes(stem), []).append(stem)
    return [pytest.param(changes, id="+".join(stems)) for changes, stems in groups.items()]


def _tiny_cfg(changes):
    cfg = load(os.path.join(ROOT, "configs", "synthetic", "tiny.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.merge_from_list([x for kv in changes for x in (kv[0], list(kv[1]) if isinstance(kv[1], tuple) else kv[1])])
    return cfg


def _sample(size=64):
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8)
    gt = torch.zeros(size, size, dtype=torch.uint8)
    gt[10:40, 12:44] = 1
    return {"image": image, "gt_mask": gt, "ignore_mask": torch.zeros(size, size, dtype=torch.bool),
            "clicks": torch.tensor([[20, 24, 1], [50, 50, 0]])}


ARCHITECTURE_KEYS = ("MODEL.META_ARCHITECTURE", "MODEL.ADAPTIVECLICK.")


@pytest.mark.parametrize("changes", _variants())
def test_ablation_variant_trains_one_step(changes):
    cfg = _tiny_cfg(changes)
    torch.manual_seed(0)
    if not any(k.startswith(ARCHITECTURE_KEYS) for k, _ in changes):
        # only the mask loss changes: run it on random logits against a binary target
        loss_fn = build_mask_loss(cfg)
        logits = torch.randn(2, 400, dtype=torch.float64, requires_grad=True)
        targets = (torch.rand(2, 400, dtype=torch.float64) > 0.6).to(torch.float64)
        loss = loss_fn(logits, targets, 2.0)
        loss.backward()
        assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
        assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
        return
    model = build_model(cfg)
    model.train()
    losses = model([_sample(), _sample()])
    total = sum(losses.values())
    assert torch.isfinite(total), losses
    total.backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    if not cfg.TRAINER.FIND_UNUSED_PARAMETERS:
        assert unused == [], "parameters without gradient need TRAINER.FIND_UNUSED_PARAMETERS True"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ---------------------------------------------------------------- the README

def _readme():
    with open(README, encoding="utf-8") as f:
        return f.read()


@functools.lru_cache(maxsize=None)
def _tool_parsers():
    spec = importlib.util.spec_from_file_location("_evaluate_noc_tool", os.path.join(ROOT, "tools", "evaluate_noc.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {"tools/train_net.py": default_argument_parser(), "tools/evaluate_noc.py": module.build_parser()}


def _expand(values):
    out = []
    for v in values:
        if any(c in v for c in "*?["):
            matches = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, v)))
            assert matches, f"the README loops over {v!r}, which matches no file"
            out.extend(matches)
        else:
            out.append(v)
    return out


def _substitute(token, env):
    for var, value in env.items():
        token = token.replace("${" + var + "}", value).replace("$" + var, value)
    assert "$" not in token, f"unresolved shell variable in {token!r}"
    return token


def readme_commands():
    """(script, argument list) of every train/evaluate command in the README's bash blocks, with the
    variables of enclosing ``for`` loops substituted (every combination of values)."""
    text = _readme()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S) + re.findall(r"`(python tools/[^`\n]+)`", text)
    commands = []
    for block in blocks:
        loops = []
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            tokens = shlex.split(line, comments=True)
            if tokens[:1] == ["for"]:  # for VAR in v1 v2 ...; do
                assert tokens[2] == "in" and tokens[-1] == "do" and tokens[-2].endswith(";"), line
                loops.append((tokens[1], _expand(tokens[3:-2] + [tokens[-2][:-1]])))
                continue
            if tokens == ["done"]:
                loops.pop()
                continue
            scripts = [i for i, t in enumerate(tokens) if t in ("tools/train_net.py", "tools/evaluate_noc.py")]
            if not scripts:
                continue
            i = scripts[0]
            names = [name for name, _ in loops]
            for combo in itertools.product(*[values for _, values in loops]):
                env = dict(zip(names, combo))
                commands.append((tokens[i], [_substitute(t, env) for t in tokens[i + 1:]]))
    return commands


README_COMMANDS = readme_commands() if os.path.exists(README) else []


def test_readme_has_the_proxy_section_and_every_config():
    text = _readme()
    assert "## Proxy experiment (synthetic data)" in text
    proxy = text.split("## Proxy experiment (synthetic data)")[1].split("\n## ")[0]
    assert "<!-- PROXY_RESULTS -->" in proxy or "\n|" in proxy  # the marker, or the results table pasted there
    assert "python projects/AdaptiveClick/run_proxy.py" in proxy
    for stem in EXPECTED_ABLATIONS:
        assert f"`{stem}.yaml`" in text, f"{stem}.yaml is not listed in the README"
    assert len(README_COMMANDS) > 30


def test_readme_python_scripts_exist():
    for block in re.findall(r"```bash\n(.*?)```", _readme(), flags=re.S):
        for script in re.findall(r"python (\S+\.py)", block):
            assert os.path.isfile(os.path.join(ROOT, script)), script


@pytest.mark.parametrize("script,args", README_COMMANDS,
                         ids=[f"{i}:{os.path.basename(s)}" for i, (s, _) in enumerate(README_COMMANDS)])
def test_readme_command_is_valid(script, args):
    parser = _tool_parsers()[script]
    parser.exit_on_error = False
    try:
        ns = parser.parse_args(args)
    except (argparse.ArgumentError, SystemExit) as e:
        raise AssertionError(f"{script} rejects {args}: {e}")
    assert ns.config_file, "every command names its config"
    path = os.path.join(ROOT, ns.config_file)
    assert os.path.isfile(path), f"--config-file {ns.config_file} does not exist"
    cfg = load(path, ns.opts)  # unknown keys or wrongly typed values raise here
    if ns.eval_only:
        assert cfg.MODEL.WEIGHTS, "--eval-only needs MODEL.WEIGHTS"
    for name in (getattr(ns, "datasets", "") or "").split(","):
        if name:
            assert name in BUILTIN_DATASETS, f"dataset {name!r} is not registered"
    assert cfg.OUTPUT_DIR.startswith(("./output/", "output/")), cfg.OUTPUT_DIR
