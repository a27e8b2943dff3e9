"""End-to-end tests of the AdaptiveClick model: shapes, parameter counts, MAE loading, training and inference
behaviour, configuration switches and input checking.  The tiny synthetic config is used except for the
ViT-B/448 shape check."""

import glob
import logging
import os

import pytest
import torch
import torch.nn.functional as F

from detectron2.config import get_cfg
from detectron2.modeling import build_model

import adaptiveclick.modeling  # noqa: F401  (registration)
from adaptiveclick.config import add_adaptiveclick_config
from adaptiveclick.modeling import ClickViT
from adaptiveclick.modeling.backbone import load_mae_weights
from adaptiveclick.modeling.meta_arch import merge_query_logits
from adaptiveclick.modeling.targets import build_targets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(name="synthetic/tiny.yaml", **overrides):
    cfg = get_cfg()
    add_adaptiveclick_config(cfg)
    cfg.merge_from_file(os.path.join(ROOT, "configs", name))
    cfg.MODEL.DEVICE = "cpu"
    cfg.merge_from_list([x for kv in overrides.items() for x in kv])
    return cfg


def _model(name="synthetic/tiny.yaml", seed=0, **overrides):
    torch.manual_seed(seed)
    return build_model(_cfg(name, **overrides))


def _sample(size=64, seed=0, clicks=((20, 24, 1), (50, 50, 0), (-1, -1, -1))):
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8)
    gt = torch.zeros(size, size, dtype=torch.uint8)
    gt[10:40, 12:44] = 1
    image[:, gt.bool()] //= 3  # a darker object, so that the mask is learnable
    return {"image": image, "gt_mask": gt, "ignore_mask": torch.zeros(size, size, dtype=torch.bool),
            "clicks": torch.tensor(clicks, dtype=torch.long)}


# ---------------------------------------------------------------- sizes and parameter counts

@pytest.fixture(scope="module")
def vit_b():
    return _model("sbd/adaptiveclick_vit_b_448.yaml").eval()


def test_vit_b_448_shapes_and_parameter_count(vit_b):
    # model.md §0: 121,886,314 official parameters minus 771,304 unused ones (cls token, fc_norm, 1000-way head)
    assert sum(p.numel() for p in vit_b.parameters()) == 121_886_314 - 771_304
    net = vit_b.backbone.net
    assert [blk.window_size for blk in net.blocks] == [14] * 5 + [0] + [14] * 5 + [0]
    assert tuple(net.pos_embed.shape) == (1, 1 + 28 * 28, 768)
    with torch.no_grad():
        data = vit_b.preprocess([{"image": torch.zeros(3, 448, 448, dtype=torch.uint8),
                                  "clicks": torch.tensor([[100, 200, 1]])}])
        feats = vit_b.backbone(data["images"], data["coord_features"])
        assert {k: tuple(v.shape) for k, v in feats.items()} == {
            "res2": (1, 256, 112, 112), "res3": (1, 512, 56, 56), "res4": (1, 1024, 28, 28), "res5": (1, 2048, 14, 14)}
        mask_features, multi_scale = vit_b.pixel_decoder.forward_features(feats)
        assert tuple(mask_features.shape) == (1, 256, 112, 112)
        assert [tuple(m.shape) for m in multi_scale] == [(1, 256, 14, 14), (1, 256, 28, 28), (1, 256, 56, 56)]
        out = vit_b.transformer_decoder(multi_scale, mask_features, data["coord_features"][:, 1])
    assert tuple(out["pred_logits"].shape) == (1, 10, 2) and tuple(out["pred_masks"].shape) == (1, 10, 112, 112)
    assert out["aux_outputs"] == []  # eval mode: intermediate masks only at the attended levels' sizes
    vit_b.transformer_decoder.train()  # dropout 0: the same function, with every prediction at full size
    with torch.no_grad():
        out_train = vit_b.transformer_decoder(multi_scale, mask_features, data["coord_features"][:, 1])
    assert len(out_train["aux_outputs"]) == 9
    assert all(tuple(a["pred_masks"].shape) == (1, 10, 112, 112) for a in out_train["aux_outputs"])


def test_vit_h_parameter_count_and_pyramid():
    # build ViT-H with 2 of its 32 blocks; each missing block has 12 D^2 + 13 D parameters
    # (qkv 3D^2 + 3D, proj D^2 + D, fc1 4D^2 + 4D, fc2 4D^2 + D, two LayerNorms 4D)
    model = _model("sbd/adaptiveclick_vit_h_448.yaml", **{"MODEL.VIT.DEPTH": 2, "MODEL.VIT.GLOBAL_BLOCK_INDEXES": [1]})
    d = 1280
    total = sum(p.numel() for p in model.parameters()) + 30 * (12 * d * d + 13 * d)
    assert total == 708_057_706 - 1_284_840
    net = model.backbone.net
    assert tuple(net.pos_embed.shape) == (1, 1 + 32 * 32, 1280) and net.patch_size == 14 and net.window_size == 16
    shapes = model.backbone.output_shape()
    assert [shapes[k].channels for k in ("res2", "res3", "res4", "res5")] == [512, 1024, 2048, 4096]
    with torch.no_grad():  # the pyramid on a 16x16 grid (224 input): x4, x2, x1, x1/2
        feats = model.backbone.pyramid(torch.zeros(1, 1280, 16, 16))
    assert [tuple(feats[k].shape[-3:]) for k in ("res2", "res3", "res4", "res5")] == [
        (512, 64, 64), (1024, 32, 32), (2048, 16, 16), (4096, 8, 8)]


def test_vit_tokens_are_image_plus_clicks_plus_position():
    torch.manual_seed(0)
    vit = ClickViT(img_size=128, patch_size=16, embed_dim=48, depth=2, num_heads=3, window_size=4,
                   global_block_indexes=(1,)).eval()
    x, c = torch.randn(1, 3, 192, 192), torch.rand(1, 3, 192, 192)
    grid = vit.pos_embed[:, 1:].reshape(1, 8, 8, 48).permute(0, 3, 1, 2)
    pos = F.interpolate(grid, size=(12, 12), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    tokens = vit.patch_embed.proj(x).permute(0, 2, 3, 1) + vit.patch_embed_coords.proj(c).permute(0, 2, 3, 1) + pos
    for blk in vit.blocks:
        tokens = blk(tokens)
    seen = []
    hook = vit.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        out = vit(x, c)
        torch.testing.assert_close(out, tokens.permute(0, 3, 1, 2))
    hook.remove()
    # the blocks get a contiguous (B, H, W, C) grid, not PatchEmbed's permuted channel-major one, and the
    # pyramid gets a channels-last map
    assert seen[0].shape == (1, 12, 12, 48) and seen[0].is_contiguous()
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    # in training mode the pyramid gets a contiguous NCHW map (faster backward), the same values
    vit.train()
    with torch.no_grad():
        out_train = vit(x, c)
    assert out_train.is_contiguous()
    torch.testing.assert_close(out_train, out)
    vit.eval()
    # attention through scaled_dot_product_attention equals the explicit softmax(QK^T / sqrt(d)) V
    attn = vit.blocks[1].attn
    t = torch.randn(2, 3, 5, 48)
    q, k, v = attn.qkv(t).reshape(2, 15, 3, 3, 16).permute(2, 0, 3, 1, 4)
    ref = ((q @ k.transpose(-1, -2)) / 4.0).softmax(-1) @ v
    torch.testing.assert_close(attn(t), attn.proj(ref.transpose(1, 2).reshape(2, 3, 5, 48)), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- MAE weights

def _fake_mae_state(dim=48, depth=2, grid=14, seed=0):
    g = torch.Generator().manual_seed(seed)
    vit = ClickViT(img_size=224, patch_size=16, embed_dim=dim, depth=depth, num_heads=3, window_size=7,
                   global_block_indexes=(depth - 1,))
    state = {k: torch.randn(v.shape, generator=g) for k, v in vit.state_dict().items()
             if not k.startswith("patch_embed_coords")}
    state["cls_token"] = torch.randn(1, 1, dim, generator=g)
    state["norm.weight"], state["norm.bias"] = torch.ones(dim), torch.zeros(dim)
    state["decoder_embed.weight"] = torch.randn(8, dim, generator=g)
    assert state["pos_embed"].shape == (1, 1 + grid * grid, dim)
    return state


def test_mae_loading_maps_keys_and_interpolates(tmp_path):
    state = _fake_mae_state()
    path = tmp_path / "mae.pth"
    torch.save({"model": state}, path)
    vit = ClickViT(img_size=128, patch_size=16, embed_dim=48, depth=2, num_heads=3, window_size=4,
                   global_block_indexes=(1,))
    coords_before = vit.patch_embed_coords.proj.weight.clone()
    report = load_mae_weights(vit, str(path))
    assert report.missing == ["patch_embed_coords.proj.bias", "patch_embed_coords.proj.weight"]
    assert report.unexpected == ["cls_token", "decoder_embed.weight", "norm.bias", "norm.weight"]
    torch.testing.assert_close(vit.blocks[1].attn.qkv.weight, state["blocks.1.attn.qkv.weight"])
    torch.testing.assert_close(vit.patch_embed.proj.bias, state["patch_embed.proj.bias"])
    torch.testing.assert_close(vit.patch_embed_coords.proj.weight, coords_before)
    # 14x14 -> 8x8 bicubic (align_corners=False), class slot unchanged
    src = state["pos_embed"][:, 1:].reshape(1, 14, 14, 48).permute(0, 3, 1, 2)
    expected = F.interpolate(src, size=(8, 8), mode="bicubic", align_corners=False)
    expected = expected.permute(0, 2, 3, 1).reshape(1, 64, 48)
    torch.testing.assert_close(vit.pos_embed[:, 1:], expected)
    torch.testing.assert_close(vit.pos_embed[:, :1], state["pos_embed"][:, :1])


def test_vit_random_init_official_and_detectron2():
    import math

    def vit(init):
        torch.manual_seed(0)
        return ClickViT(img_size=128, patch_size=16, embed_dim=96, depth=2, num_heads=3, window_size=4,
                        global_block_indexes=(1,), init=init)

    official, d2 = vit("official"), vit("detectron2")
    for name, module in official.blocks.named_modules():
        if isinstance(module, torch.nn.Linear):
            fan_out, fan_in = module.weight.shape
            bound = math.sqrt(6 / (fan_in + fan_out))  # xavier-uniform (official models_vit, JAX ViT)
            w = module.weight.detach()
            assert w.abs().max() <= bound and float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.05), name
            assert not module.bias.any(), name
            d2_weight = d2.blocks.get_submodule(name).weight.detach()
            assert float(d2_weight.std()) == pytest.approx(0.02, rel=0.05), name  # detectron2: trunc N(0, 0.02)
    w = official.patch_embed.proj.weight.detach()  # as a linear layer of its flattened 3 x 16 x 16 kernel
    bound = math.sqrt(6 / (w.shape[0] + w[0].numel()))
    assert w.abs().max() <= bound and float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.05)
    assert float(official.pos_embed.detach().std()) == pytest.approx(0.02, rel=0.05)
    # the click embedding keeps PyTorch's default (kaiming-uniform, bound 1 / sqrt(fan_in) for a = sqrt(5))
    coords = official.patch_embed_coords.proj.weight.detach()
    assert coords.abs().max() <= 1 / math.sqrt(coords[0].numel())
    with pytest.raises(ValueError, match="MODEL.VIT.INIT"):
        vit("xavier")
    assert _model().backbone.net.blocks[0].attn.qkv.weight.std() > 0.05  # the config default is "official"


def test_mae_loading_warns_about_a_partial_checkpoint(tmp_path, caplog):
    state = _fake_mae_state()
    vit = ClickViT(img_size=128, patch_size=16, embed_dim=48, depth=2, num_heads=3, window_size=4,
                   global_block_indexes=(1,))
    with caplog.at_level(logging.WARNING, logger="adaptiveclick.modeling.backbone.mae"):
        load_mae_weights(vit, state)  # complete: the click embedding alone is missing, no warning
        assert not caplog.records
        partial = {k: v for k, v in state.items() if not k.startswith("blocks.1.")}
        report = load_mae_weights(vit, partial)
    missing = [k for k in report.missing if not k.startswith("patch_embed_coords.")]
    assert missing and all(k.startswith("blocks.1.") for k in missing)
    assert len(caplog.records) == 1 and f"lacks {len(missing)} ViT tensors" in caplog.records[0].getMessage()


def test_mae_loading_errors(tmp_path):
    vit = ClickViT(img_size=128, patch_size=16, embed_dim=48, depth=2, num_heads=3, window_size=4,
                   global_block_indexes=(1,))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="could not read checkpoint"):
        load_mae_weights(vit, str(corrupt))
    with pytest.raises(FileNotFoundError):
        load_mae_weights(vit, str(tmp_path / "missing.pth"))
    wide = tmp_path / "wide.pth"
    torch.save({"model": _fake_mae_state(dim=96)}, wide)
    with pytest.raises(ValueError, match="does not fit"):
        load_mae_weights(vit, str(wide))
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, unrelated)
    with pytest.raises(ValueError, match="shares no key"):
        load_mae_weights(vit, str(unrelated))


def test_mae_loading_from_config(tmp_path):
    state = _fake_mae_state(dim=96, depth=4)
    path = tmp_path / "mae_tiny.pth"
    torch.save({"model": state}, path)
    model = _model(**{"MODEL.VIT.PRETRAINED": str(path)})
    torch.testing.assert_close(model.backbone.net.blocks[3].mlp.fc2.weight, state["blocks.3.mlp.fc2.weight"])


# ---------------------------------------------------------------- training forward

def test_tiny_forward_backward():
    model = _model().train()
    losses = model([_sample(seed=1), _sample(seed=2, clicks=((30, 30, 1),))])
    # 3 losses for each of the DEC_LAYERS = 4 predictions
    assert set(losses) == {f"loss_{k}{s}" for k in ("ce", "mask", "dice") for s in ("", "_0", "_1", "_2")}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for name in ("backbone.net.patch_embed_coords.proj.weight", "backbone.net.blocks.0.attn.qkv.weight",
                 "backbone.pyramid.down_4.0.weight",
                 "pixel_decoder.transformer.encoder.layers.0.self_attn.value_proj.weight",
                 "pixel_decoder.mask_features.weight", "transformer_decoder.query_feat.weight",
                 "transformer_decoder.transformer_cross_attention_layers.0.multihead_attn.in_proj_weight",
                 "transformer_decoder.class_embed.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


@pytest.mark.parametrize("batch_size", [1, 4])
def test_training_forward_reads_two_values_whatever_the_batch_and_depth(batch_size, monkeypatch):
    """A training forward reads two values on the host (the input checks' flag and the targets' one ``unique``)
    and copies the matching costs of all 4 predictions once; the targets, made by comparisons, are not checked
    again by the criterion or its 8 loss calls (on a GPU every read or copy is a wait of the host; until
    2026-12-07 each loss call read a flag and the matcher copied once per prediction)."""
    from adaptiveclick.modeling import matcher as matcher_module
    from adaptiveclick.utils.op_count import count_operators

    model = _model().train()
    copies = []
    real = matcher_module.host_arrays
    monkeypatch.setattr(matcher_module, "host_arrays", lambda ts: copies.append(len(ts)) or real(ts))
    batch = [_sample(seed=10 + i) for i in range(batch_size)]
    counts, losses = count_operators(lambda: model(batch))
    assert counts["host_reads"] == 2, counts
    assert copies == [4]  # one (B, Q, M) cost tensor per prediction, all in one copy
    assert len(losses) == 12 and all(torch.isfinite(v) for v in losses.values())


def test_official_loss_mix_weights():
    model = _model().train()
    batch = [_sample(seed=3)]
    losses = model(batch)
    with torch.no_grad():
        data = model.preprocess(batch, training=True)
        outputs = model.predict(data)
        raw = model.criterion(outputs, build_targets(data["gt_masks"], outputs["pred_masks"].shape[-2:]))
    # L = sum_j 0.3 * 2 CE_j + 0.3 * 5 Dice_j + 0.4 * 5 AFL_j  (model.md §5.3)
    factors = {"ce": 0.6, "dice": 1.5, "mask": 2.0}
    for key, value in losses.items():
        assert value.item() == pytest.approx(factors[key.split("_")[1]] * raw[key].item(), rel=1e-5), key


def test_overfit_one_batch():
    model = _model(seed=1).train()
    batch = [_sample(seed=4), _sample(seed=5, clicks=((25, 30, 1), (5, 60, 0)))]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(30):
        loss = sum(model(batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert history[-1] < 0.25 * history[0], history


# ---------------------------------------------------------------- inference

def test_inference_sizes_and_official_merge_order():
    model = _model().eval()
    inputs = [{"image": torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8), "clicks": torch.tensor([[10, 20, 1]])},
              {"image": torch.rand(3, 100, 77) * 255, "clicks": torch.tensor([[3.5, 2.25, 1.0], [50.0, 60.0, 0.0]]),
               "prev_mask": torch.rand(1, 100, 77)}]
    with torch.no_grad():
        out = model(inputs)
        assert [tuple(o["mask_logits"].shape) for o in out] == [(1, 64, 64), (1, 100, 77)]
        # official order: upsample every query mask (align_corners=True) to the network input, then
        # sum_q sigmoid(class_q[1]) * mask_q
        data = model.preprocess(inputs)
        pred = model.predict(data)
        up = F.interpolate(pred["pred_masks"], size=data["images"].shape[-2:], mode="bilinear", align_corners=True)
        merged = (pred["pred_logits"][..., 1].sigmoid()[..., None, None] * up).sum(1, keepdim=True)
    assert tuple(data["images"].shape[-2:]) == (128, 128)  # padded to a multiple of 64 (patch 16 x window 4)
    torch.testing.assert_close(out[1]["mask_logits"], merged[1, :, :100, :77], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out[0]["mask_logits"], merged[0, :, :64, :64], rtol=1e-4, atol=1e-4)


def test_clicks_and_prev_mask_reach_the_network():
    model = _model().eval()
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    base = {"image": image, "clicks": torch.tensor([[10, 20, 1]])}
    with torch.no_grad():
        ref = model([base])[0]["mask_logits"]
        moved = model([{**base, "clicks": torch.tensor([[40, 40, 1]])}])[0]["mask_logits"]
        prev = model([{**base, "prev_mask": torch.ones(1, 64, 64)}])[0]["mask_logits"]
        zero_prev = model([{**base, "prev_mask": torch.zeros(1, 64, 64)}])[0]["mask_logits"]
        data = model.preprocess([{**base, "prev_mask": torch.full((1, 64, 64), 0.25)}])
    assert not torch.allclose(ref, moved) and not torch.allclose(ref, prev)
    torch.testing.assert_close(ref, zero_prev)  # a missing previous mask means zeros
    coords = data["coord_features"][0]  # [prev, positive disks, negative disks]
    assert torch.all(coords[0] == 0.25) and coords[1, 10, 20] == 1 and coords[1, 10, 26] == 0 and coords[2].sum() == 0
    torch.testing.assert_close(data["images"][0, :, 0, 0], (image[:, 0, 0].float() - torch.tensor(
        [123.675, 116.28, 103.53])) / torch.tensor([58.395, 57.12, 57.375]))


def test_caam_is_wired_into_the_decoder():
    model = _model().eval()
    with torch.no_grad():
        model.transformer_decoder.class_embed.bias.copy_(torch.tensor([-50.0, 50.0]))  # every query "object"
        data = model.preprocess([{"image": torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8),
                                  "clicks": torch.tensor([[30, 30, 1]])}])
        official = model.predict(data)["pred_masks"]
        model.transformer_decoder.caam_mode = "off"
        plain = model.predict(data)["pred_masks"]
        data["coord_features"][:, 1] = 0  # without positive clicks the two modes agree
        plain_nc = model.predict(data)["pred_masks"]
        model.transformer_decoder.caam_mode = "official"
        official_nc = model.predict(data)["pred_masks"]
    assert not torch.allclose(official, plain)
    torch.testing.assert_close(official_nc, plain_nc)


# ---------------------------------------------------------------- switches and the baseline

def test_clean_switches_build_and_train():
    model = _model(**{"MODEL.ADAPTIVECLICK.CAAM.MODE": "off", "MODEL.ADAPTIVECLICK.MERGE": "best_query",
                      "MODEL.ADAPTIVECLICK.TARGETS": "clean", "MODEL.ADAPTIVECLICK.CLASS_WEIGHTS": "clean",
                      "MODEL.ADAPTIVECLICK.POINT_SAMPLING": True, "MODEL.ADAPTIVECLICK.TRAIN_NUM_POINTS": 100,
                      "MODEL.ADAPTIVECLICK.MATCHER.COST_MASK_TYPE": "bce",
                      "MODEL.ADAPTIVECLICK.MATCHER.NUM_POINTS": 50,
                      "MODEL.ADAPTIVECLICK.LOSS_MIX": [1.0, 1.0, 1.0]})
    assert model.criterion.empty_weight.tolist() == pytest.approx([0.1, 1.0])
    assert model.transformer_decoder.caam_mode == "off" and model.targets_mode == "clean"
    assert model.loss_weights == {"loss_ce": 2.0, "loss_dice": 5.0, "loss_mask": 5.0}
    losses = model.train()([_sample()])
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        data = model.preprocess([_sample()])
        pred = model.predict(data)
        out = model([_sample()])[0]["mask_logits"]
    best = merge_query_logits(pred["pred_logits"], pred["pred_masks"], "best_query")
    up = F.interpolate(best, size=(64, 64), mode="bilinear", align_corners=True)
    torch.testing.assert_close(out, up[0])


def test_simpleclick_baseline_respects_ignore_mask():
    model = _model("synthetic/tiny_baseline.yaml").train()
    sample = _sample()
    sample["ignore_mask"][:, :32] = True
    losses = model([sample])
    assert set(losses) == {"loss_mask"}
    losses["loss_mask"].backward()
    assert model.head.predict.weight.grad.abs().sum() > 0
    model.eval()  # BN and dropout fixed: a change of the GT under the ignore mask leaves the loss unchanged
    other = dict(sample, gt_mask=sample["gt_mask"].clone())
    other["gt_mask"][:, :32] = 1 - other["gt_mask"][:, :32]
    with torch.no_grad():
        assert model.losses([sample])["loss_mask"].item() == pytest.approx(model.losses([other])["loss_mask"].item())
        other["gt_mask"][:, 40:] = 1 - other["gt_mask"][:, 40:]
        assert model.losses([other])["loss_mask"].item() != pytest.approx(model.losses([sample])["loss_mask"].item())
        out = model([{"image": sample["image"], "clicks": sample["clicks"]}])
    assert tuple(out[0]["mask_logits"].shape) == (1, 64, 64)


# ---------------------------------------------------------------- input checking

def _bad(key, value):
    sample = _sample()
    sample[key] = value
    return sample


@pytest.mark.parametrize("sample,error,match", [
    (_bad("clicks", torch.tensor([[70, 10, 1]])), ValueError, r"\['clicks'\].*outside the 64x64 image"),
    (_bad("clicks", torch.tensor([[10, 10, 3]])), ValueError, "is_positive"),
    (_bad("clicks", torch.tensor([10, 10, 1])), ValueError, r"\(N, 3\)"),
    (_bad("prev_mask", torch.zeros(64, 64)), ValueError, r"prev_mask'\] must have shape \(1, 64, 64\)"),
    (_bad("prev_mask", torch.full((1, 64, 64), 2.0)), ValueError, r"prev_mask'\] must lie in \[0, 1\]"),
    (_bad("prev_mask", torch.full((1, 64, 64), float("nan"))), ValueError, "prev_mask'\\] contains NaN"),
    (_bad("image", torch.zeros(4, 64, 64, dtype=torch.uint8)), ValueError, r"image'\] must be a \(3, H, W\) RGB"),
    (_bad("image", torch.full((3, 64, 64), float("nan"))), ValueError, r"image'\] contains NaN"),
    (_bad("gt_mask", torch.full((64, 64), 2, dtype=torch.uint8)), ValueError, "binary"),
    (_bad("gt_mask", torch.zeros(32, 32, dtype=torch.uint8)), ValueError, r"gt_mask'\] must be a \(64, 64\)"),
    (_bad("ignore_mask", torch.zeros(64, 64)), ValueError, "ignore_mask"),
], ids=["click-outside", "click-flag", "click-shape", "prev-shape", "prev-range", "prev-nan", "channels",
        "image-nan", "gt-values", "gt-shape", "ignore-dtype"])
def test_bad_training_inputs(sample, error, match):
    model = _model().train()
    with pytest.raises(error, match=match):
        model([sample])


def test_bad_inference_inputs_and_outside_clicks():
    strict = _model(**{"MODEL.ADAPTIVECLICK.OUTSIDE_CLICKS": "error"}).eval()
    lenient = _model(**{"MODEL.ADAPTIVECLICK.OUTSIDE_CLICKS": "draw"}).eval()
    outside = {"image": torch.zeros(3, 64, 64, dtype=torch.uint8), "clicks": torch.tensor([[10.0, 70.5, 0.0]])}
    with torch.no_grad():
        with pytest.raises(ValueError, match="outside the 64x64 image"):
            strict([outside])
        assert lenient([outside])[0]["mask_logits"].shape == (1, 64, 64)  # zoom-in: partial disk drawn
        with pytest.raises(ValueError, match="has no 'clicks'"):
            strict([{"image": torch.zeros(3, 64, 64, dtype=torch.uint8)}])
        with pytest.raises(TypeError, match="list of dicts"):
            strict(torch.zeros(1, 3, 64, 64))


# ---------------------------------------------------------------- configs

def test_every_config_loads_with_the_documented_backbone():
    expected = {"b": (16, 768, 12, 12, [5, 11], [256, 512, 1024, 2048]),
                "l": (16, 1024, 24, 16, [5, 11, 17, 23], [256, 512, 1024, 2048]),
                "h": (14, 1280, 32, 16, [7, 15, 23, 31], [512, 1024, 2048, 4096])}
    files = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))
    assert len(files) >= 9
    for path in files:
        cfg = _cfg(os.path.relpath(path, os.path.join(ROOT, "configs")))
        assert cfg.INPUT.FORMAT == "RGB"
        name = os.path.basename(path)
        if name.startswith("adaptiveclick_vit_"):
            v = cfg.MODEL.VIT
            got = (v.PATCH_SIZE, v.EMBED_DIM, v.DEPTH, v.NUM_HEADS, list(v.GLOBAL_BLOCK_INDEXES), list(v.FPN_OUT_DIMS))
            assert got == expected[name.split("_")[2]], path
            assert v.WINDOW_SIZE * v.PATCH_SIZE == 224 and cfg.MODEL.VIT.IMG_SIZE == 448
            assert cfg.SOLVER.BASE_LR == 5e-5 and len(cfg.SOLVER.STEPS) == 1
            assert (cfg.INPUT.AUG.SCALE_RANGE[1] == 1.4) == ("cocolvis" in path)


@pytest.mark.parametrize("key, value, message", [
    ("MODEL.ADAPTIVECLICK.NUM_QUERIES", 0, r"num_queries \(MODEL.ADAPTIVECLICK.NUM_QUERIES\) must be an integer >= 1"),
    ("MODEL.VIT.PATCH_SIZE", 0, r"patch_size \(MODEL.VIT.PATCH_SIZE\) must be an integer >= 1"),
    ("MODEL.PIXEL_STD", [0.0, 1.0, 1.0], r"pixel_std \(MODEL.PIXEL_STD.*finite values > 0"),
    ("MODEL.ADAPTIVECLICK.ENC_LAYERS", -1, r"MODEL.ADAPTIVECLICK.ENC_LAYERS\) must be an integer >= 0"),
    ("MODEL.ADAPTIVECLICK.COMMON_STRIDE", 3, r"common_stride .* got 3"),
])
def test_bad_sizes_fail_when_the_model_is_built(key, value, message):
    # each of these used to build and fail later (reshape of 0 elements, division by zero, NaN logits) or
    # to be accepted silently (COMMON_STRIDE 3 gave stride-4 masks)
    with pytest.raises(ValueError, match=message):
        _model(**{key: value})
