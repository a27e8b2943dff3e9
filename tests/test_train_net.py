"""tools/train_net.py end to end: two CPU processes (gloo) with evaluation, and SIGKILL + --resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")

# a very small run of the tiny model on 64 px synthetic images
SMALL = ["MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2",
         "INPUT.AUG.CROP_SIZE", "[64, 64]", "DATASETS.SYNTHETIC.IMAGE_SIZE", "64",
         "DATASETS.SYNTHETIC.NUM_TRAIN", "8", "DATASETS.SYNTHETIC.NUM_VAL", "2",
         "TEST.NOC.MAX_CLICKS", "2", "TEST.NOC.ZOOM_IN.TARGET_SIZE", "[64, 64]", "TEST.NOC.FLIP", "False",
         "TRAINER.EXAMPLE_CLICKS", "[1, 2]", "TRAINER.TRAIN_IOU_PERIOD", "1", "SEED", "5"]


def _env(tmp_path):
    env = dict(os.environ)
    env["ADAPTIVECLICK_CACHE"] = str(tmp_path / "cache")
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _cmd(out, *args):
    return [sys.executable, TRAIN_NET, "--config-file", os.path.join(REPO, "configs/synthetic/tiny.yaml"),
            *args, "OUTPUT_DIR", str(out), *SMALL]


def _metrics(out):
    with open(out / "metrics.json") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_two_processes_on_cpu_train_evaluate_and_draw(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(_cmd(out, "--num-gpus", "2", "--dist-url", f"file://{tmp_path / 'rendezvous'}",
                               "SOLVER.MAX_ITER", "3", "SOLVER.CHECKPOINT_PERIOD", "100"),
                          env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # both ranks ran: detectron2's default_setup logs the world size on every process
    assert "World size: 2" in (out / "log.txt").read_text()
    assert "World size: 2" in (out / "log.txt.rank1").read_text()
    final = torch.load(out / "model_final.pth", weights_only=False)
    assert final["iteration"] == 2
    rows = [r for r in _metrics(out) if "total_loss" in r]
    assert rows and all(r["click_rounds"] in (0.0, 1.0, 2.0, 3.0) for r in rows)
    assert any("train_iou" in r for r in rows)
    with open(out / "noc" / "results.json") as f:
        results = json.load(f)["results"]
    metrics = results["synthetic_val"]["noc"]
    assert 1.0 <= metrics["NoC@85"] <= 2.0 and 1.0 <= metrics["NoC@90"] <= 2.0
    assert (out / "example.png").stat().st_size > 1000


def _last_checkpoint(out):
    path = out / "last_checkpoint"
    return path.read_text().strip() if path.exists() else None


def test_sigkill_then_resume_continues_from_the_last_checkpoint(tmp_path):
    out = tmp_path / "out"
    env = _env(tmp_path)
    # a long run with a checkpoint every iteration, killed once two checkpoints exist
    proc = subprocess.Popen(_cmd(out, "SOLVER.MAX_ITER", "100000", "SOLVER.CHECKPOINT_PERIOD", "1",
                                 "TRAINER.EVAL_AFTER_TRAIN", "False"),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and _last_checkpoint(out) in (None, "model_0000000.pth"):
            assert proc.poll() is None, "training stopped before it was killed"
            time.sleep(0.05)
        assert _last_checkpoint(out) is not None, "no checkpoint within 300 s"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    last = _last_checkpoint(out)
    saved = torch.load(out / last, weights_only=False)  # the tagged checkpoint is complete
    done = saved["iteration"]
    assert done >= 1 and last == f"model_{done:07d}.pth"

    # resume and run two more iterations
    resumed = subprocess.run(_cmd(out, "--resume", "SOLVER.MAX_ITER", str(done + 3),
                                  "SOLVER.CHECKPOINT_PERIOD", "1000", "TRAINER.EVAL_AFTER_TRAIN", "False"),
                             env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Starting training from iteration {done + 1}" in (out / "log.txt").read_text()
    final = torch.load(out / "model_final.pth", weights_only=False)
    assert final["iteration"] == done + 2
    # the optimizer state came back: Adam's step count continues from the checkpoint
    steps = {int(s["step"]) for s in final["trainer"]["_trainer"]["optimizer"]["state"].values()}
    assert steps == {done + 3}
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


def test_bad_config_key_is_named(tmp_path):
    proc = subprocess.run(_cmd(tmp_path / "out", "SOLVER.MAX_ITERS", "3"), env=_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "SOLVER.MAX_ITERS" in proc.stderr


@pytest.mark.parametrize("content", [b"", b"not a checkpoint"])
def test_corrupt_weights_give_a_clear_error(tmp_path, content):
    weights = tmp_path / "broken.pth"
    weights.write_bytes(content)
    proc = subprocess.run(_cmd(tmp_path / "out", "--eval-only", "MODEL.WEIGHTS", str(weights)), env=_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert str(weights) in proc.stderr


def test_eval_only_without_weights_stops_with_a_message(tmp_path):
    env = _env(tmp_path)
    proc = subprocess.run(_cmd(tmp_path / "out", "--eval-only"), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "--eval-only has nothing to evaluate: MODEL.WEIGHTS is empty" in proc.stderr
    assert not (tmp_path / "out" / "noc").exists()
    proc = subprocess.run(_cmd(tmp_path / "out", "--eval-only", "--resume"), env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "has no checkpoint" in proc.stderr
    # evaluate_noc.py the same way, unless --random-weights asks for the random initialisation
    evaluate = [sys.executable, os.path.join(REPO, "tools", "evaluate_noc.py"), "--config-file",
                os.path.join(REPO, "configs/synthetic/tiny.yaml"), "OUTPUT_DIR", str(tmp_path / "out")]
    proc = subprocess.run(evaluate, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "nothing to evaluate" in proc.stderr and "--random-weights" in proc.stderr


def _tool(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_{name}_tool", os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_argument_checks(tmp_path):
    tiny = os.path.join(REPO, "configs/synthetic/tiny.yaml")
    train_net = _tool("train_net")
    parser = train_net.build_parser()
    assert parser.parse_args(["--config-file", tiny, "--partial-weights"]).partial_weights
    with pytest.raises(SystemExit) as e:
        train_net.check_args(parser, parser.parse_args(["--config-file", tiny, "--eval-only", "--partial-weights",
                                                        "MODEL.WEIGHTS", "w.pth"]))
    assert e.value.code == 2
    train_net.check_args(parser, parser.parse_args(["--config-file", tiny, "--eval-only", "MODEL.WEIGHTS", "w.pth"]))
    out = tmp_path / "out"
    out.mkdir()
    (out / "last_checkpoint").write_text("model_0000009.pth")
    args = parser.parse_args(["--config-file", tiny, "--eval-only", "--resume", "OUTPUT_DIR", str(out)])
    train_net.check_args(parser, args)
    cfg = train_net.load_config_file(args.config_file, args.opts)
    assert train_net.weights_to_evaluate(cfg, True) == str(out / "model_0000009.pth")

    evaluate_noc = _tool("evaluate_noc")
    parser = evaluate_noc.build_parser()
    evaluate_noc.check_args(parser, parser.parse_args(["--config-file", tiny, "--random-weights"]))
    evaluate_noc.check_args(parser, parser.parse_args(["--config-file", tiny, "--weights", "w.pth"]))
    for extra in ([], ["--weights", "w.pth", "--resume"], ["--weights", "w.pth", "--eval-only"]):
        with pytest.raises(SystemExit) as e:  # no weights; train_net's flags, which this tool does not read
            evaluate_noc.check_args(parser, parser.parse_args(["--config-file", tiny] + extra))
        assert e.value.code == 2
    assert "--weights model.pth" in parser.epilog


def test_eval_only_refuses_weights_that_do_not_fit(tmp_path):
    weights = tmp_path / "empty_model.pth"
    torch.save({"model": {}}, weights)
    proc = subprocess.run(_cmd(tmp_path / "out", "--eval-only", "MODEL.WEIGHTS", str(weights)), env=_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "CheckpointError" in proc.stderr and str(weights) in proc.stderr
    assert "not in the checkpoint: backbone." in proc.stderr
    assert not (tmp_path / "out" / "noc").exists()
