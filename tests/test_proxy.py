"""projects/AdaptiveClick/run_proxy.py: a two-variant run at toy scale, its outputs and its reuse of results."""

import importlib.util
import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def proxy():
    spec = importlib.util.spec_from_file_location("run_proxy", os.path.join(REPO, "projects/AdaptiveClick/run_proxy.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOY = ["SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0", "INPUT.AUG.CROP_SIZE", "[64, 64]",
       "DATASETS.SYNTHETIC.IMAGE_SIZE", "64", "DATASETS.SYNTHETIC.NUM_TRAIN", "4", "TEST.NOC.MAX_CLICKS", "3",
       "TEST.NOC.FLIP", "False", "TEST.NOC.ZOOM_IN.ENABLED", "False", "TRAINER.TRAIN_IOU_PERIOD", "0"]


def test_markdown_table_and_summary(proxy):
    result = {"max_clicks": 3, "metrics": {"NoC@85": 2.5, "NoC@90": 3.0, "NoF@85": 1, "NoF@90": 2,
                                           "num_instances": 4, "mIoU@1": 0.5, "mIoU@2": 0.75, "mIoU@3": 0.8}}
    with pytest.raises(KeyError):  # mIoU@5 is a column of the table: a 3-click run cannot fill it
        proxy.summarize("v", "V", result)
    proxy_cols = proxy.MIOU_COLUMNS
    try:
        proxy.MIOU_COLUMNS = (1, 3)
        row = proxy.summarize("v", "V", result)
        assert row["miou_curve"] == [0.5, 0.75, 0.8]
        table = proxy.markdown_table([row]).splitlines()
    finally:
        proxy.MIOU_COLUMNS = proxy_cols
    assert table[0] == "| variant | NoC@85 ↓ | NoC@90 ↓ | NoF@85 ↓ | NoF@90 ↓ | mIoU@1 ↑ | mIoU@3 ↑ |"
    assert table[2] == "| V | 2.50 | 3.00 | 1 | 2 | 0.500 | 0.800 |"


def test_bad_arguments(proxy):
    with pytest.raises(SystemExit):
        proxy.parse_args(["--variants", "adaptiveclick_afl,nonsense"])
    with pytest.raises(SystemExit):
        proxy.parse_args(["--iters", "0"])
    with pytest.raises(SystemExit):
        proxy.parse_args(["SOLVER.BASE_LR"])


def test_two_variants_end_to_end_and_reuse(proxy, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ADAPTIVECLICK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(proxy, "MIOU_COLUMNS", (1, 3))
    out = tmp_path / "proxy"
    argv = ["--iters", "2", "--num-val", "1", "--output", str(out), "--variants", "adaptiveclick_afl,baseline_nfl",
            *TOY]
    rows = proxy.main(argv)
    assert [r["variant"] for r in rows] == ["adaptiveclick_afl", "baseline_nfl"]
    report = json.loads((out / "proxy_results.json").read_text())
    assert [r["label"] for r in report["results"]] == ["AdaptiveClick + AFL", "SimpleClick-style baseline + NFL"]
    for r in report["results"]:
        assert 1 <= r["NoC@85"] <= 3 and len(r["miou_curve"]) == 3
        assert all(0.0 <= v <= 1.0 for v in r["miou_curve"])
    # the runs used the variants' losses and the shared budget
    afl_cfg = (out / "adaptiveclick_afl" / "config.yaml").read_text()
    base_cfg = (out / "baseline_nfl" / "config.yaml").read_text()
    assert "NAME: adaptive_focal_loss" in afl_cfg and "META_ARCHITECTURE: SimpleClickBaseline" in base_cfg
    assert "NAME: normalized_focal" in base_cfg and "MAX_ITER: 2" in afl_cfg
    md = (out / "proxy_results.md").read_text()
    assert "| AdaptiveClick + AFL |" in md and (out / "iou_vs_clicks.png").stat().st_size > 1000

    # a second call reuses both evaluations (same settings) and writes the same table
    capsys.readouterr()
    again = proxy.main(argv)
    assert capsys.readouterr().out.count("reusing") == 2
    assert [r["NoC@85"] for r in again] == [r["NoC@85"] for r in rows]
