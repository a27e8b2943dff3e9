"""The benchmark tools (tools/benchmark_{inference,train,official,dispatch}.py) and adaptiveclick.utils.bench.

The tools run as subprocesses on the tiny config (64 px; 224 px for the official comparison, the smallest
input the official ViT's 224-px windows allow) with a couple of iterations; the tests check the JSON they
write (structure, finite positive numbers, values that must agree with each other or with a model built
here) and that bad arguments stop them with a message naming the problem.  Speed itself is never asserted.
"""

import contextlib
import io
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from adaptiveclick.utils import bench

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "tools")
TINY = os.path.join(ROOT, "configs", "synthetic", "tiny.yaml")
OFFICIAL_ROOT = os.environ.get("ADAPTIVECLICK_OFFICIAL_ROOT", "/tmp/official_adaptiveclick")
HAS_OFFICIAL = os.path.isfile(os.path.join(OFFICIAL_ROOT, "isegm", "model", "is_adaptiveclick_model.py"))
# tiny config with an official equivalent: 224 px (14-token windows = 224 px), all 4 blocks global
# (official rule for depth 4), deformable-encoder FFN = DIM_FEEDFORWARD // 2
TINY_OFFICIAL_OPTS = ["MODEL.VIT.IMG_SIZE", "224", "MODEL.VIT.WINDOW_SIZE", "14",
                      "MODEL.VIT.GLOBAL_BLOCK_INDEXES", "[0,1,2,3]", "MODEL.ADAPTIVECLICK.ENC_DIM_FEEDFORWARD", "64"]


def _start_tool(name, args):
    # one thread per process: the three tool runs go concurrently (fixture below)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, os.path.join(TOOLS, name)] + args, cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


_FINISHED = {}


def _finish(run, timeout=170):
    """(report, stdout) of a tool started by ``tool_runs``; waited for once, then remembered (several tests read
    the same run)."""
    if id(run) not in _FINISHED:
        _FINISHED[id(run)] = _wait(run, timeout)
    return _FINISHED[id(run)]


def _wait(run, timeout):
    name, proc, out = run
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        pytest.fail(f"{name} did not finish within {timeout} s:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    assert proc.returncode == 0, f"{name} failed ({proc.returncode}):\n{stdout[-3000:]}\n{stderr[-3000:]}"
    return json.loads(out.read_text()), stdout


@pytest.fixture(scope="module")
def tool_runs(tmp_path_factory):
    """The three tools on the tiny config, started together (they spend most of their time importing)."""
    tmp = tmp_path_factory.mktemp("benchmarks")
    specs = {
        "inference": ("benchmark_inference.py",
                      ["--config-file", TINY, "--size", "64", "--iters", "2", "--warmup", "0", "--device", "cpu",
                       "--dtype", "fp32", "bf16", "int8", "--predictor", "--predictor-clicks", "2", "--cuda-graph"]),
        "train": ("benchmark_train.py",
                  ["--config-file", TINY, "--batch", "2", "--size", "64", "--iters", "2", "--warmup", "0",
                   "--click-rounds", "2", "--amp", "none", "--device", "cpu"]),
    }
    if HAS_OFFICIAL:
        specs["official"] = ("benchmark_official.py",
                             ["--official-root", OFFICIAL_ROOT, "--config-file", TINY, "--iters", "2", "--warmup",
                              "0", "--dtype", "fp32", "int8", "--device", "cpu", "--cuda-graph"])
        specs["official_train"] = ("benchmark_official.py",
                                   ["--official-root", OFFICIAL_ROOT, "--config-file", TINY, "--train", "--batch", "2",
                                    "--iters", "2", "--warmup", "0", "--click-rounds", "1", "--device", "cpu"])
    specs["dispatch"] = ("benchmark_dispatch.py",
                         ["--config-file", TINY, "--iters", "2", "--warmup", "0", "--device", "cpu"]
                         + (["--official-root", OFFICIAL_ROOT] if HAS_OFFICIAL else ["--no-official"]))
    runs = {}
    for key, (script, args) in specs.items():
        out = tmp / f"{key}.json"
        # config overrides (KEY VALUE) must come last
        extra = TINY_OFFICIAL_OPTS if key.startswith("official") or key == "dispatch" else []
        runs[key] = (script, _start_tool(script, args + ["--output", str(out)] + extra), out)
    yield runs
    for _, proc, _ in runs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _check_timing(t, iters):
    assert set(t) >= {"median_ms", "mean_ms", "p10", "p90", "n"}
    assert t["n"] == iters
    for key in ("median_ms", "mean_ms", "p10", "p90"):
        assert math.isfinite(t[key]) and t[key] > 0, (key, t)
    assert t["p10"] <= t["median_ms"] <= t["p90"]


def _check_run_info(report, device="cpu"):
    run = report["run"]
    assert run["torch"] == torch.__version__
    assert "CPU" in run["device"] if device == "cpu" else run["device"]
    # what else ran on the machine, and on which CPU: needed to judge a number measured on a shared host
    assert run["cpu_model"] is None or (isinstance(run["cpu_model"], str) and run["cpu_model"])
    if hasattr(os, "getloadavg"):
        assert len(run["load_average"]) == 3 and all(math.isfinite(v) and v >= 0 for v in run["load_average"])
    else:
        assert run["load_average"] is None


def _tiny_params(opts=()):
    cfg = bench.load_config(TINY, list(opts), "cpu")
    return sum(p.numel() for p in bench.build_benchmark_model(cfg).parameters())


def _load_tool(module_name):
    """``tools/<module_name>.py`` imported as a module (its main() not run); ``module_name`` may name a
    subfolder (``device/prebuilt``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_bench_{module_name.replace('/', '_')}",
                                                  os.path.join(TOOLS, module_name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _main_exit(module_name, argv):
    """Run ``tools/<module_name>.py``'s main(argv) in this process; returns (exit code, stderr)."""
    module = _load_tool(module_name)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
        module.main(argv)
    return exc.value.code, err.getvalue()


# -- adaptiveclick.utils.bench ----------------------------------------------------------------------------


def test_time_fn_statistics_match_numpy(monkeypatch):
    # a fake clock: call k of fn takes durations[k] seconds; warm-up calls are not timed
    durations = [5.0, 5.0, 0.010, 0.030, 0.020, 0.050, 0.040]
    calls = {"n": 0}
    clock = {"t": 100.0}

    def fn():
        clock["t"] += durations[calls["n"]]
        calls["n"] += 1

    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock["t"])
    out = bench.time_fn(fn, warmup=2, iters=5, device="cpu")
    assert calls["n"] == 7
    timed = np.array(durations[2:]) * 1000
    assert set(out) == {"median_ms", "mean_ms", "p10", "p90", "n"}
    assert out["n"] == 5
    assert out["median_ms"] == pytest.approx(np.median(timed))
    assert out["mean_ms"] == pytest.approx(np.mean(timed))
    assert out["p10"] == pytest.approx(np.percentile(timed, 10))
    assert out["p90"] == pytest.approx(np.percentile(timed, 90))


def test_time_interleaved_rotates_the_order_and_pairs_rounds(monkeypatch):
    clock = {"t": 0.0}
    calls = []
    slow = {"factor": 1.0}

    def make(name, ms):
        def fn():
            calls.append(name)
            clock["t"] += ms / 1000.0 * slow["factor"]
        return fn

    def drift():  # the machine slows down by 2x every round, as a drifting shared host
        slow["factor"] *= 2.0

    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock["t"])
    fns = {"a": make("a", 10.0), "b": make("b", 40.0), "c": make("c", 20.0)}
    fns_with_drift = dict(fns)
    fns_with_drift["c"] = lambda: (fns["c"](), drift())  # c's time is taken before the slow-down
    out = bench.time_interleaved(fns_with_drift, warmup=1, iters=3, device="cpu")
    # warm-up round in the given order, then rounds rotated by one: abc, bca, cab
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")
    # the speed factor is 2 in round 0, doubles right after every call of c: abc at 2 | b c at 4, a at 8 |
    # c at 8, a b at 16
    assert out["a"]["times_ms"] == pytest.approx([20.0, 80.0, 160.0])
    assert out["b"]["times_ms"] == pytest.approx([80.0, 160.0, 640.0])
    assert out["c"]["times_ms"] == pytest.approx([40.0, 80.0, 160.0])
    assert out["a"]["median_ms"] == pytest.approx(80.0) and out["a"]["n"] == 3
    # per-round ratio a/b: 0.25, 0.5, 0.25 -> 0.25 (a is 4x faster whenever both run at the same speed);
    # the ratio of the medians, 80 / 160, is thrown off by the drift
    assert bench.paired_ratio(out["a"], out["b"]) == pytest.approx(0.25)
    assert bench.paired_ratio(out["b"], out["c"]) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="same rounds"):
        bench.paired_ratio(out["a"], {"times_ms": [1.0]})
    with pytest.raises(ValueError, match="at least one"):
        bench.time_interleaved({}, warmup=0, iters=1)
    with pytest.raises(TypeError, match="not callable"):
        bench.time_interleaved({"x": 3}, warmup=0, iters=1)


def test_time_interleaved_stages_share_the_rounds(monkeypatch):
    """Forward and whole click of each contestant in the same rounds: with the machine slowing down 3x after
    every round, the per-round ratio of a whole click to its forward stays that of their costs, and so does
    the paired ratio of two contestants in each stage."""
    clock = {"t": 0.0, "factor": 1.0}
    calls = []

    def make(name, ms):
        def fn():
            calls.append(name)
            clock["t"] += ms / 1000.0 * clock["factor"]
        return fn

    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock["t"])
    real_round_done = bench._Progress.round_done

    def round_done(self, timed, k):  # the drift: every round after the first runs 3x slower than the one before
        clock["factor"] *= 3.0
        return real_round_done(self, timed, k)

    monkeypatch.setattr(bench._Progress, "round_done", round_done)
    stages = {"forward": {"ours": make("of", 10.0), "official": make("xf", 20.0)},
              "whole click": {"ours": make("oc", 12.0), "official": make("xc", 25.0)}}
    out = bench.time_interleaved_stages(stages, warmup=1, iters=3, device="cpu", label="t")
    assert set(out) == {"forward", "whole click"} and all(set(v) == {"ours", "official"} for v in out.values())
    rounds = [calls[4 * k:4 * k + 4] for k in range(4)]
    assert all(sorted(r) == ["oc", "of", "xc", "xf"] for r in rounds) and rounds[1] != rounds[2]  # rotated
    fwd, click = out["forward"], out["whole click"]
    assert fwd["ours"]["times_ms"] == pytest.approx([30.0, 90.0, 270.0])  # 10 ms at 3x, 9x, 27x
    assert bench.paired_ratio(click["ours"], fwd["ours"]) == pytest.approx(1.2)
    assert bench.paired_ratio(fwd["ours"], fwd["official"]) == pytest.approx(0.5)
    assert bench.paired_ratio(click["ours"], click["official"]) == pytest.approx(12.0 / 25.0)


def test_time_interleaved_reports_page_faults_and_system_time():
    def fresh_memory():  # 512 MiB of new pages, every 4 KiB page written
        block = np.empty(512 * 2 ** 20, dtype=np.uint8)
        block[::4096] = 1
        del block

    out = bench.time_interleaved({"fresh": fresh_memory, "idle": lambda: None}, warmup=0, iters=3, device="cpu")
    for name in ("fresh", "idle"):
        assert len(out[name]["sys_ms"]) == len(out[name]["minor_faults"]) == 3
        assert min(out[name]["sys_ms"]) >= 0 and min(out[name]["minor_faults"]) >= 0
    if sys.platform.startswith("linux"):
        # glibc maps an allocation this large afresh every time (mmap) and the kernel faults its pages in: one
        # fault per 4 KiB page, or per 2 MiB with transparent huge pages, which NumPy asks for (256; ~770 here)
        assert min(out["fresh"]["minor_faults"]) >= 200
        assert max(out["idle"]["minor_faults"]) < 50


def test_long_timings_report_progress_on_stderr(monkeypatch, capsys):
    # fake clock: every call takes 12 s; a line at most every PROGRESS_EVERY_S = 30 s of rounds
    clock = {"t": 0.0}
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock["t"])
    monkeypatch.setattr(bench, "PROGRESS_EVERY_S", 30.0)

    def call():
        clock["t"] += 12.0

    bench.time_interleaved({"ours": call, "official": call}, warmup=1, iters=4, device="cpu", label="base fp32")
    lines = capsys.readouterr().err.strip().splitlines()
    # rounds are 24 s; they end at 24 (warm-up), 48, 72, 96, 120 s: lines at 48 (48 - 0 >= 30), 96 (96 - 48 >=
    # 30); at 72 and 120 only 24 s have passed since the last line.  Time left after k of 5 rounds: t / k * (5 - k)
    assert lines == ["[bench] base fp32: timed round 1/4 done, 48 s elapsed, about 72 s left",
                     "[bench] base fp32: timed round 3/4 done, 96 s elapsed, about 24 s left"]
    # short timings print nothing; time_fn names the callable by default
    clock["t"] = 0.0
    bench.time_fn(call, warmup=0, iters=2)
    assert capsys.readouterr().err == ""

    def step():
        clock["t"] += 31.0

    bench.time_fn(step, warmup=1, iters=1)
    assert capsys.readouterr().err.splitlines() == [
        "[bench] step: warm-up round 1/1 done, 31 s elapsed, about 31 s left",
        "[bench] step: timed round 1/1 done, 62 s elapsed, about 0 s left"]


def test_training_setups_are_timed_interleaved_with_their_throughput(monkeypatch):
    # fake clock: "ours" steps take 100 ms, "official" 300 ms, click rounds 30 / 60 ms; the machine is 2x
    # slower from the second timed round of steps on (a drift the paired ratio cancels)
    clock = {"t": 0.0, "slow": 1.0}
    calls, checks = [], []
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock["t"])

    def cost(name, ms):
        def fn():
            calls.append(name)
            clock["t"] += ms / 1000.0 * clock["slow"]
        return fn

    setups = {
        "ours": bench.TrainingSetup(cost("ours step", 100.0), cost("ours rounds", 30.0), 1.5, {"who": "ours"},
                                    lambda: checks.append("ours")),
        "official": bench.TrainingSetup(cost("official step", 300.0), cost("official rounds", 60.0), 1.5, {},
                                        lambda: checks.append("official")),
    }
    steps = setups["official"].step

    def official_step_then_drift():
        steps()
        if calls.count("official step") == 2:  # after the warm-up call and the first timed one
            clock["slow"] = 2.0

    setups["official"].step = official_step_then_drift
    rows = bench.time_training_interleaved(setups, batch_size=4, click_rounds=2, device="cpu", iters=3, warmup=1,
                                           label="tiny")
    # steps first (warm-up round, then rounds rotated: ours-official, official-ours, ours-official), then rounds
    assert calls[:8] == ["ours step", "official step"] * 2 + ["official step", "ours step", "ours step",
                                                                "official step"]
    assert calls[8:] == ["ours rounds", "official rounds"] * 2 + ["official rounds", "ours rounds",
                                                                   "ours rounds", "official rounds"]
    assert sorted(checks) == ["official", "ours"]
    ours, official = rows["ours"], rows["official"]
    assert ours["step"]["times_ms"] == pytest.approx([100.0, 200.0, 200.0])
    assert official["step"]["times_ms"] == pytest.approx([300.0, 600.0, 600.0])
    assert ours["samples_per_s"] == pytest.approx(4 / 0.2) and official["samples_per_s"] == pytest.approx(4 / 0.6)
    assert bench.paired_ratio(ours["step"], official["step"]) == pytest.approx(1 / 3)
    # click rounds all at the slow speed: 60 / 120 ms for 2 rounds
    assert ours["click_round_ms"] == pytest.approx(30.0) and official["click_round_ms"] == pytest.approx(60.0)
    assert ours["click_rounds"]["rounds"] == 2
    assert ours["expected_iteration_ms"] == pytest.approx(200.0 + 1.5 * 30.0)
    assert ours["expected_samples_per_s"] == pytest.approx(4 / 0.245)
    assert "step_peak_memory_mb" not in ours  # measured alone, not here
    with pytest.raises(ValueError, match="no rounds"):
        bench.time_training_interleaved({"x": bench.TrainingSetup(lambda: None, None, 1.5, {})}, 1, 1, "cpu", 1, 0,
                                        "x")


def test_prepare_train_step_rejects_an_unknown_amp():
    cfg = bench.load_config(TINY, [], "cpu")
    with pytest.raises(ValueError, match="amp must be one of .*'fp8'"):
        bench.prepare_train_step(cfg, TINY, 1, "fp8", "cpu")


def test_training_peak_memory_counts_the_steps_of_a_setup():
    kept, checks = [], []

    def step():  # every step keeps 80 MiB more, as a first step that creates optimizer state would
        kept.append(np.ones(80 * 2 ** 20 // 8))

    setup = bench.TrainingSetup(step, lambda: np.ones(120 * 2 ** 20 // 8).sum(), 1.5, {},
                                lambda: checks.append(True))
    bench.reset_peak_memory("cpu")
    if bench.peak_memory_mb("cpu")["kind"] != "cpu_max_rss_since_reset":
        pytest.skip("no resettable peak RSS on this OS")
    base = bench.peak_memory_mb("cpu")["peak_memory_mb"]
    row = bench.training_peak_memory(setup, click_rounds=1, device="cpu", steps=2)
    assert len(kept) == 2 and checks == [True]
    assert row["peak_memory_kind"] == "cpu_max_rss_since_reset"
    assert row["step_peak_memory_mb"] >= base + 150
    # the rounds' peak restarts from the RSS after the steps (which holds their 160 MiB) and adds its 120 MiB
    assert row["click_rounds_peak_memory_mb"] >= row["step_peak_memory_mb"] + 100
    assert "click_rounds_peak_memory_mb" not in bench.training_peak_memory(setup, 0, "cpu", steps=1)
    kept.clear()
    with pytest.raises(ValueError, match="steps"):
        bench.training_peak_memory(setup, 0, "cpu", steps=0)


@pytest.mark.parametrize("kwargs", [dict(warmup=-1, iters=3), dict(warmup=0, iters=0), dict(warmup=1.5, iters=2)])
def test_time_fn_rejects_bad_counts(kwargs):
    with pytest.raises(ValueError, match="warmup|iters"):
        bench.time_fn(lambda: None, device="cpu", **kwargs)


def test_cpu_peak_memory_sees_an_allocation():
    bench.reset_peak_memory("cpu")
    before = bench.peak_memory_mb("cpu")
    block = np.ones(160 * 2 ** 20 // 8)  # 160 MiB, every page touched
    after = bench.peak_memory_mb("cpu")
    del block
    assert before["kind"] in ("cpu_max_rss_since_reset", "cpu_max_rss_process")
    assert after["peak_memory_mb"] >= before["peak_memory_mb"] + 150
    if before["kind"] == "cpu_max_rss_since_reset":
        # after the block is freed, a new reset brings the high-water mark back down
        bench.reset_peak_memory("cpu")
        assert bench.peak_memory_mb("cpu")["peak_memory_mb"] < after["peak_memory_mb"] - 100


def _heap_left_by_freed_blocks():
    # 2000 blocks of 100 KiB come from the malloc heap (under glibc's mmap threshold); the last one stays
    # alive, so the heap cannot shrink from its top when the others are freed
    blocks = [np.ones(12_800) for _ in range(2000)]
    pin = blocks[-1]
    del blocks
    return pin


def test_cpu_peak_reset_hands_freed_heap_back(monkeypatch):
    bench.reset_peak_memory("cpu")
    if bench.peak_memory_mb("cpu")["kind"] != "cpu_max_rss_since_reset" or bench._vm_hwm_bytes() is None:
        pytest.skip("no resettable peak RSS on this OS")
    base = bench.peak_memory_mb("cpu")["peak_memory_mb"]
    pin = _heap_left_by_freed_blocks()
    bench.reset_peak_memory("cpu")
    trimmed = bench.peak_memory_mb("cpu")["peak_memory_mb"]
    assert trimmed < base + 60, (base, trimmed)  # the ~200 MiB freed are not counted
    del pin
    # negative control: without the trim the freed blocks stay in the RSS the peak restarts from
    monkeypatch.setattr(bench, "_release_freed_heap", lambda: None)
    bench.reset_peak_memory("cpu")
    base = bench.peak_memory_mb("cpu")["peak_memory_mb"]
    pin = _heap_left_by_freed_blocks()
    bench.reset_peak_memory("cpu")
    assert bench.peak_memory_mb("cpu")["peak_memory_mb"] > base + 150
    del pin


def test_autocast_dtypes_and_errors():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with bench.autocast("cpu", "fp32"):
        assert (a @ b).dtype == torch.float32
    with bench.autocast("cpu", "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="'fp8'"):
        bench.autocast("cpu", "fp8")
    with pytest.raises(ValueError, match="'tpu'"):
        bench.check_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            bench.check_device("cuda")


def test_count_parameters_and_click_inputs():
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2, bias=False))
    module[1].weight.requires_grad_(False)
    assert bench.count_parameters(module) == {"total": 3 * 4 + 4 + 4 * 2, "trainable": 3 * 4 + 4}
    image, clicks, prev = bench.click_inputs((40, 60), num_clicks=3, seed=1)
    assert image.shape == (40, 60, 3) and image.dtype == np.uint8
    assert clicks.shape == (3, 3) and clicks.dtype == np.int64 and list(clicks[:, 2]) == [1, 0, 1]
    assert ((clicks[:, 0] >= 0) & (clicks[:, 0] < 40) & (clicks[:, 1] >= 0) & (clicks[:, 1] < 60)).all()
    assert prev.shape == (40, 60) and prev.dtype == np.float32 and 0 <= prev.min() and prev.max() <= 1
    with pytest.raises(ValueError, match="num_clicks"):
        bench.click_inputs(64, num_clicks=0)


# -- tools ------------------------------------------------------------------------------------------------


def test_benchmark_inference_tiny(tool_runs):
    report, stdout = _finish(tool_runs["inference"])
    assert report["benchmark"] == "inference"
    _check_run_info(report)
    assert report["config"]["iters"] == 2 and report["config"]["image_size"] == [64, 64]
    results = report["results"]
    assert [r["dtype"] for r in results] == ["fp32", "bf16", "int8"]
    params = _tiny_params()
    for r in results:
        assert r["config_file"] == TINY and r["device"] == "cpu" and r["batch"] == 1
        assert r["params"]["total"] == params
        _check_timing(r["forward"], 2)
        _check_timing(r["whole_click"], 2)
        assert r["peak_memory_mb"] > 0 and r["peak_memory_kind"].startswith("cpu_max_rss")
        assert set(r["predictor_add_click"]) == {"plain", "zoom_in+flip", "plain+graph", "zoom_in+flip+graph"}
        for name, p in r["predictor_add_click"].items():
            _check_timing(p, 2)
            assert (p["zoom_in"], p["flip"]) == ((False, False) if name.startswith("plain") else (True, True))
            assert p["cuda_graph"] == name.endswith("+graph") and not p["compile"]
            if p["cuda_graph"]:  # on the CPU nothing is recorded: 2 timed clicks, one network call each
                counts = (p["graph_captures"], p["graph_replays"], p["eager_calls"], p["graph_failure"])
                assert counts == (0, 0, 2, None)
    assert "whole click ms" in stdout and "add_click zoom_in+flip ms" in stdout  # the table


def test_benchmark_train_tiny(tool_runs):
    report, stdout = _finish(tool_runs["train"])
    assert report["benchmark"] == "train"
    _check_run_info(report)
    (r,) = report["results"]
    assert r["batch"] == 2 and r["amp"] == "none" and r["crop_size"] == [64, 64]
    assert r["optimizer"] == "Adam"  # Base-AdaptiveClick: the official Adam recipe through build_optimizer
    assert r["params"]["total"] == _tiny_params()
    _check_timing(r["step"], 2)
    _check_timing(r["click_rounds"], 2)
    assert r["click_rounds"]["rounds"] == 2
    assert r["samples_per_s"] == pytest.approx(2 / (r["step"]["median_ms"] / 1000))
    assert r["click_round_ms"] == pytest.approx(r["click_rounds"]["median_ms"] / 2)
    # the trainer draws 0..MAX_NUM_NEXT_CLICKS (3) rounds uniformly: 1.5 on average
    assert r["expected_rounds_per_iteration"] == 1.5
    assert r["expected_iteration_ms"] == pytest.approx(r["step"]["median_ms"] + 1.5 * r["click_round_ms"])
    assert 0 < r["expected_samples_per_s"] < r["samples_per_s"]
    assert r["step_peak_memory_mb"] > 0 and r["click_rounds_peak_memory_mb"] > 0
    assert "samples/s incl. rounds" in stdout  # the table


@pytest.mark.skipif(not HAS_OFFICIAL, reason=f"no official AdaptiveClick checkout at {OFFICIAL_ROOT}")
def test_benchmark_official_tiny(tool_runs):
    report, stdout = _finish(tool_runs["official"])
    assert report["benchmark"] == "official_vs_ours"
    _check_run_info(report)
    r, r8 = report["results"]
    assert r["dtype"] == "fp32" and r8["dtype"] == "int8" and r["image_size"] == [224, 224]
    # int8: both models quantised; and ours in int8 against the official fp32 from the same run
    assert "ratio_ours_over_official_fp32" not in r and "official_fp32_same_rounds" not in r
    same_rounds = r8["official_fp32_same_rounds"]  # the fp32 official model timed in the int8 rounds
    assert r8["ratio_ours_over_official_fp32"]["forward_median"] == pytest.approx(
        r8["ours"]["forward"]["median_ms"] / same_rounds["forward"]["median_ms"])
    assert r8["ratio_ours_over_official_fp32"]["whole_click_paired"] == pytest.approx(np.median(
        np.array(r8["ours"]["whole_click"]["times_ms"]) / np.array(same_rounds["whole_click"]["times_ms"])))
    assert r["ours"]["params"]["total"] == _tiny_params(TINY_OFFICIAL_OPTS)
    assert r["official"]["params"]["total"] > 0
    assert r["official"]["build"]["overrides"]["embed_dim"] == 96
    for side in ("ours", "official"):
        _check_timing(r[side]["forward"], 2)
        _check_timing(r[side]["whole_click"], 2)
        assert r[side]["peak_memory_mb"] > 0
    ratio = r["ratio_ours_over_official"]
    assert ratio["forward_median"] == pytest.approx(r["ours"]["forward"]["median_ms"]
                                                    / r["official"]["forward"]["median_ms"])
    assert ratio["whole_click_median"] == pytest.approx(r["ours"]["whole_click"]["median_ms"]
                                                        / r["official"]["whole_click"]["median_ms"])
    for kind in ("forward", "whole_click"):  # interleaved rounds: per-round ratios
        per_round = np.array(r["ours"][kind]["times_ms"]) / np.array(r["official"][kind]["times_ms"])
        assert len(per_round) == 2 and ratio[f"{kind}_paired"] == pytest.approx(np.median(per_round))
    assert "click official ms" in stdout and "paired ratio" in stdout
    for row in (r, r8):  # --cuda-graph: ours again in the same rounds; on the CPU every call runs eagerly
        g = row["ours_cuda_graph"]
        _check_timing(g["forward"], 2)
        _check_timing(g["whole_click"], 2)
        assert (g["captures"], g["replays"], g["eager_calls"], g["failure"]) == (0, 0, 4, None)
        per_round = np.array(g["whole_click"]["times_ms"]) / np.array(row["official"]["whole_click"]["times_ms"])
        assert g["ratio_over_official"]["whole_click_paired"] == pytest.approx(np.median(per_round))
    assert "ratio_over_official_fp32" not in r["ours_cuda_graph"]
    assert "ratio_over_official_fp32" in r8["ours_cuda_graph"]
    assert "ours with CUDA graphs" in stdout


def test_count_operators_hand_example():
    from adaptiveclick.utils.op_count import count_operators

    x = torch.arange(6.0).reshape(2, 3)

    def fn():
        y = x.t()  # view: metadata
        torch.empty(3)  # allocation: metadata
        z = (y + 1).sum()  # two compute operators
        return z.item()  # _local_scalar_dense: a host read

    counts, result = count_operators(fn)
    assert result == 21.0
    assert counts == {"total": 5, "compute": 2, "metadata": 2, "host_reads": 1,
                      "top_compute": [["add", 1], ["sum", 1]]}
    assert count_operators(fn, top=1)[0]["top_compute"] == [["add", 1]]


def test_benchmark_dispatch_tiny(tool_runs):
    report, stdout = _finish(tool_runs["dispatch"])
    assert report["benchmark"] == "dispatch"
    _check_run_info(report)
    (r,) = report["results"]
    who = ["official", "ours"] if HAS_OFFICIAL else ["ours"]
    assert sorted(r["operators"]) == who and r["image_size"] == [224, 224]
    for w in who:
        for kind in ("forward", "whole_click"):
            c = r["operators"][w][kind]
            assert c["total"] == c["compute"] + c["metadata"] + c["host_reads"]
            assert 0 < sum(n for _, n in c["top_compute"]) <= c["compute"]
            _check_timing(r["narrow"][w][kind], 2)
    ours = r["operators"]["ours"]
    # hand count of the tiny model's linear layers (each one addmm): ViT 4 blocks x (qkv, proj, fc1, fc2),
    # 1 deformable encoder layer x (value, offsets, weights, output, 2 FFN), DEC_LAYERS 4 = 3 decoder layers
    # (Mask2Former counts the prediction before the first one) x (cross-attention q, k, v, out; self-attention
    # [q | k] in one product, v, out; 2 FFN), and 4 predictions x (3-layer mask MLP + class head)
    assert dict(ours["forward"]["top_compute"])["addmm"] == 4 * 4 + 6 + 3 * 9 + 4 * 4
    assert ours["forward"]["host_reads"] == 0  # the network reads no device value on the host
    assert ours["whole_click"]["host_reads"] == 1  # a whole click does: the flag of the input checks
    assert ours["whole_click"]["compute"] > ours["forward"]["compute"]
    narrow = r["narrow"]
    assert narrow["image_size"] == [224, 224]  # one 14-token window of 16 px
    opts = dict(zip(narrow["overrides"][::2], narrow["overrides"][1::2]))
    assert opts["MODEL.VIT.EMBED_DIM"] == "12" and opts["MODEL.ADAPTIVECLICK.HIDDEN_DIM"] == "32"  # 3 heads x 4
    if HAS_OFFICIAL:
        assert r["operators"]["official"]["forward"]["host_reads"] > 0  # its .item() calls in the forward
        for kind in ("forward", "whole_click"):
            per_round = np.array(narrow["ours"][kind]["times_ms"]) / np.array(narrow["official"][kind]["times_ms"])
            assert narrow["ratio_ours_over_official"][f"{kind}_paired"] == pytest.approx(np.median(per_round))
    assert "forward compute ops" in stdout and "narrow forward ms" in stdout


@pytest.mark.skipif(not HAS_OFFICIAL, reason=f"no official AdaptiveClick checkout at {OFFICIAL_ROOT}")
def test_benchmark_official_train_tiny(tool_runs):
    report, stdout = _finish(tool_runs["official_train"])
    assert report["benchmark"] == "official_vs_ours_train"
    _check_run_info(report)
    assert report["config"]["mode"] == "train" and report["config"]["amp"] == ["none"]
    (r,) = report["results"]
    # both train on the official model's fixed input size, whatever the config's crop
    assert r["batch"] == 2 and r["amp"] == "none" and r["crop_size"] == [224, 224]
    ours, theirs = r["ours"], r["official"]
    assert ours["crop_size"] == [224, 224]
    assert ours["params"]["total"] == _tiny_params(TINY_OFFICIAL_OPTS)
    assert ours["optimizer"] == theirs["optimizer"] == "Adam" and theirs["amp"] == "none"
    # the official get_optimizer: one parameter group per parameter tensor
    assert theirs["param_groups"] > 100
    for side in (ours, theirs):
        _check_timing(side["step"], 2)
        _check_timing(side["click_rounds"], 2)
        assert side["samples_per_s"] == pytest.approx(2 / (side["step"]["median_ms"] / 1000))
        assert side["expected_rounds_per_iteration"] == 1.5  # both recipes: 0..3 rounds
    for side in (ours, theirs):  # peak memory from each alone
        assert side["peak_memory_kind"].startswith("cpu_max_rss")
        assert side["step_peak_memory_mb"] > 0 and side["click_rounds_peak_memory_mb"] > 0
    ratio = r["ratio_ours_over_official"]
    assert ratio["samples_per_s"] == pytest.approx(ours["samples_per_s"] / theirs["samples_per_s"])
    assert ratio["expected_samples_per_s"] == pytest.approx(ours["expected_samples_per_s"]
                                                            / theirs["expected_samples_per_s"])
    # timed interleaved: per-round ratios of the steps (throughput ratio = official time / our time)
    for kind, key, invert in (("step", "samples_per_s_paired", True), ("click_rounds", "click_round_ms_paired", False)):
        per_round = np.array(ours[kind]["times_ms"]) / np.array(theirs[kind]["times_ms"])
        assert len(per_round) == 2
        assert ratio[key] == pytest.approx(1 / np.median(per_round) if invert else np.median(per_round))
    assert "samples/s official" in stdout and "paired" in stdout


def test_benchmark_inference_compiled_predictor_settings(tmp_path, monkeypatch):
    """--compile adds the compiled predictor settings and records how the wrapper ran; torch.compile is
    replaced by an identity here (the real compiler is tested in tests/test_compile.py)."""
    compiled = []

    def fake_compile(fn, mode):
        compiled.append(mode)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    out = tmp_path / "inference.json"
    report = _load_tool("benchmark_inference").main([
        "--config-file", TINY, "--size", "64", "--iters", "2", "--warmup", "1", "--device", "cpu", "--dtype", "fp32",
        "--predictor", "--predictor-clicks", "2", "--compile", "--output", str(out)])
    assert json.loads(out.read_text())["config"]["compile"] is True
    (r,) = report["results"]
    settings = r["predictor_add_click"]
    assert set(settings) == {"plain", "zoom_in+flip", "plain+compile", "zoom_in+flip+compile"}
    assert compiled == ["default", "default"]  # one wrapper per compiled setting, CPU default mode
    for name, p in settings.items():
        assert p["compile"] == name.endswith("+compile")
        if p["compile"]:
            # 1 warm-up + 2 timed clicks, each one network call, all through the (fake) compiled function
            assert (p["compiled_calls"], p["eager_calls"], p["compile_failure"]) == (3, 0, None)
            assert p["compile_mode"] == "default"


class _StoppedByTimeLimit(KeyboardInterrupt):
    """What `timeout --signal=INT` raises in a benchmark that runs out of its GPU lease."""


def _second_call_stops(first):
    calls = []

    def measure(*args, **kwargs):
        calls.append(args)
        if len(calls) > 1:
            raise _StoppedByTimeLimit()
        return first(*args, **kwargs)

    return measure


def test_benchmarks_keep_what_they_measured_when_stopped(tmp_path, monkeypatch):
    """A run stopped after its first model (a time limit) leaves a JSON report with that model's row, marked
    incomplete; a finished run is marked complete."""
    train = _load_tool("benchmark_train")
    fake_train_row = {"model": "tiny", "amp": "none", "batch": 2, "step": {"median_ms": 50.0}, "samples_per_s": 40.0,
                      "step_peak_memory_mb": 100.0}
    monkeypatch.setattr(train, "measure_train_step", _second_call_stops(lambda *a, **k: dict(fake_train_row)))
    out = tmp_path / "train.json"
    with pytest.raises(_StoppedByTimeLimit):
        train.main(["--config-file", TINY, "--batch", "2", "--amp", "none", "bf16", "--device", "cpu",
                    "--output", str(out)])
    report = json.loads(out.read_text())
    assert report["complete"] is False and report["results"] == [fake_train_row]
    assert report["config"]["amp"] == ["none", "bf16"]

    inference = _load_tool("benchmark_inference")
    timing = {"median_ms": 5.0, "mean_ms": 5.0, "p10": 5.0, "p90": 5.0, "n": 1}
    fake_click = {"forward": dict(timing), "whole_click": dict(timing), "peak_memory_mb": 10.0}

    def stopped_inference(argv, output):
        monkeypatch.setattr(inference, "measure_click_model", _second_call_stops(lambda *a, **k: dict(fake_click)))
        with pytest.raises(_StoppedByTimeLimit):
            inference.main(argv + ["--size", "64", "--device", "cpu", "--output", str(output)])
        return json.loads(output.read_text())

    out = tmp_path / "inference.json"
    argv = ["--configs", TINY, TINY, "--dtype", "fp32"]
    report = stopped_inference(argv, out)
    assert report["complete"] is False and len(report["results"]) == 1
    assert report["results"][0]["forward"] == timing and report["results"][0]["config_file"] == TINY
    # stopped in the second precision of a single config (e.g. compiling past a time limit): the first kept
    report = stopped_inference(["--config-file", TINY, "--dtype", "fp32", "bf16"], tmp_path / "one_config.json")
    assert report["complete"] is False and [r["dtype"] for r in report["results"]] == ["fp32"]
    argv += ["--size", "64", "--device", "cpu", "--output", str(out)]
    # not stopped: one complete report with both rows
    monkeypatch.setattr(inference, "measure_click_model", lambda *a, **k: dict(fake_click))
    report = inference.main(argv)
    assert report["complete"] is True and len(report["results"]) == 2
    assert json.loads(out.read_text())["complete"] is True


@pytest.mark.skipif(not HAS_OFFICIAL, reason=f"no official AdaptiveClick checkout at {OFFICIAL_ROOT}")
def test_benchmark_official_keeps_the_sizes_it_finished(tmp_path, monkeypatch):
    official = _load_tool("benchmark_official")
    fake = [{"name": "base", "dtype": "fp32"}]
    monkeypatch.setattr(official, "compare", _second_call_stops(lambda *a, **k: list(fake)))
    out = tmp_path / "official.json"
    with pytest.raises(_StoppedByTimeLimit):
        official.main(["--official-root", OFFICIAL_ROOT, "--sizes", "base", "huge", "--device", "cpu",
                       "--output", str(out)])
    report = json.loads(out.read_text())
    assert report["benchmark"] == "official_vs_ours" and report["complete"] is False
    assert report["results"] == fake and [r["name"] for r in report["config"]["runs"]] == ["base", "huge"]


def test_check_cuda_sync_dry_run_on_cpu(tmp_path):
    """tools/check_cuda_sync.py runs its steps on the CPU without the debug mode (its GPU run needs a GPU)."""
    out = tmp_path / "sync.json"
    report = _load_tool("check_cuda_sync").main(["--config-file", TINY, "--size", "64", "--warmup", "1",
                                                 "--device", "cpu", "--output", str(out)])
    assert json.loads(out.read_text())["config"]["sync_debug"] == "unavailable"
    assert set(report["results"]) == {"network", "whole_click", "predictor_click", "predictor_click_graph",
                                      "training_step", "click_round"}
    assert report["config"]["train_batch"] == 4 and report["config"]["amp"] == "none"
    for stage in report["results"].values():
        assert stage["syncs"] is None and stage["events"] == []
        ops = stage["operators"]
        assert ops["compute"] > 0 and ops["total"] == ops["compute"] + ops["metadata"] + ops["host_reads"]
    network, whole = report["results"]["network"]["operators"], report["results"]["whole_click"]["operators"]
    assert network["host_reads"] == 0 and whole["host_reads"] > 0  # the input checks' flags
    assert whole["compute"] > network["compute"]
    # the predictor's click (zoom-in and flip, as the tiny config sets them) reads one value: the flag of the
    # model's input checks (the zoom-in region and the result come back as host copies, not as reads)
    predictor = report["results"]["predictor_click"]["operators"]
    assert predictor["host_reads"] == 1 and predictor["compute"] > network["compute"]
    # with cuda_graph=True on the CPU nothing is recorded: the same click, every network call eager (4 warm-up
    # clicks, 1 measured under the debug mode, 1 counted)
    graphed = report["results"]["predictor_click_graph"]
    assert graphed["cuda_graph"] == {"captures": 0, "replays_measured": 0, "eager_calls": 6, "failure": None}
    assert {k: graphed["operators"][k] for k in ("compute", "host_reads")} == \
           {k: predictor[k] for k in ("compute", "host_reads")}
    # a training step (no click round) reads three values: the input checks' flag, the targets' one unique and
    # the gradients' finiteness flag (the fused optimizer reads none: the default Adam read one per parameter);
    # a click round reads its logits' flag
    step = report["results"]["training_step"]["operators"]
    assert step["host_reads"] == 3 and step["compute"] > 2 * network["compute"], step
    assert report["results"]["click_round"]["operators"]["host_reads"] == 1
    skipped = _load_tool("check_cuda_sync").main(["--config-file", TINY, "--size", "64", "--warmup", "1",
                                                  "--device", "cpu", "--train-batch", "0", "--output", str(out)])
    assert set(skipped["results"]) == {"network", "whole_click", "predictor_click", "predictor_click_graph"}


def test_run_info_records_the_cpu_model_and_load_average(monkeypatch):
    from adaptiveclick.utils import run_info

    info = run_info.run_info("cpu")
    _check_run_info({"run": info})
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.split(":", 1)[0].strip() == "model name"]
        if names:
            assert info["cpu_model"] == names[0]
    assert "cuda_fp32" not in info
    # on CUDA, what fp32 means there (cuDNN's TF32 convolutions are on by default)
    monkeypatch.setattr(run_info, "device_name", lambda device: "a GPU")
    gpu = run_info.run_info("cuda")["cuda_fp32"]
    assert gpu["cudnn_allow_tf32"] is torch.backends.cudnn.allow_tf32
    assert gpu["matmul_allow_tf32"] is torch.backends.cuda.matmul.allow_tf32
    monkeypatch.setattr(run_info.os, "getloadavg", lambda: (0.123, 1.0, 2.555))
    assert run_info.load_average() == [0.12, 1.0, 2.56]

    def no_loadavg():
        raise OSError("no load average here")

    monkeypatch.setattr(run_info.os, "getloadavg", no_loadavg)
    assert run_info.load_average() is None
    def no_proc(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr(run_info, "open", no_proc, raising=False)  # the module's open(), not the builtin
    monkeypatch.setattr(run_info.platform, "processor", lambda: "Some CPU")
    assert run_info.cpu_model() == "Some CPU"
    monkeypatch.setattr(run_info.platform, "processor", lambda: "")
    assert run_info.cpu_model() is None


def test_default_precisions_depend_on_the_device(tmp_path, monkeypatch):
    """bf16 autocast is timed by default on CUDA only (on CPUs without bf16 units it is an emulation: ~30 s per
    ViT-B click on an AVX2 CPU); an explicit --dtype / --amp is kept as given."""
    assert bench.default_dtypes("cpu") == ["fp32"] and bench.default_dtypes("cuda:0") == ["fp32", "bf16"]
    assert bench.default_amp("cpu") == ["none"] and bench.default_amp("cuda") == ["none", "bf16"]
    ap = bench.benchmark_parser("test", "x.json", 1, 0, clicks=True)
    args = ap.parse_args(["--device", "cpu"])
    assert args.dtype is None
    bench.check_cli_args(ap, args, {})
    assert args.dtype == ["fp32"]
    args = ap.parse_args(["--device", "cpu", "--dtype", "fp32", "bf16"])
    bench.check_cli_args(ap, args, {})
    assert args.dtype == ["fp32", "bf16"]
    monkeypatch.setattr(bench, "check_device", lambda device: torch.device("cuda"))  # as if a GPU were there
    args = ap.parse_args(["--device", "cuda"])
    bench.check_cli_args(ap, args, {})
    assert args.dtype == ["fp32", "bf16"]
    monkeypatch.undo()

    inference = _load_tool("benchmark_inference")
    timing = {"median_ms": 5.0, "mean_ms": 5.0, "p10": 5.0, "p90": 5.0, "n": 1}
    monkeypatch.setattr(inference, "measure_click_model",
                        lambda *a, **k: {"forward": dict(timing), "whole_click": dict(timing), "peak_memory_mb": 1.0})
    report = inference.main(["--config-file", TINY, "--size", "64", "--device", "cpu",
                             "--output", str(tmp_path / "inference.json")])
    assert report["config"]["dtypes"] == ["fp32"] and [r["dtype"] for r in report["results"]] == ["fp32"]
    train = _load_tool("benchmark_train")
    rows = []
    monkeypatch.setattr(train, "measure_train_step", lambda cfg, config_file, batch, amp, *a, **k: rows.append(amp) or {
        "model": "tiny", "amp": amp, "batch": batch, "step": {"median_ms": 50.0}, "samples_per_s": 40.0,
        "step_peak_memory_mb": 100.0})
    report = train.main(["--config-file", TINY, "--batch", "2", "--device", "cpu",
                         "--output", str(tmp_path / "train.json")])
    assert report["config"]["amp"] == ["none"] and rows == ["none"]


def test_fewer_than_10_timed_rounds_warn_on_stderr(tmp_path, monkeypatch, capsys):
    inference = _load_tool("benchmark_inference")
    timing = {"median_ms": 5.0, "mean_ms": 5.0, "p10": 5.0, "p90": 5.0, "n": 1}
    monkeypatch.setattr(inference, "measure_click_model",
                        lambda *a, **k: {"forward": dict(timing), "whole_click": dict(timing), "peak_memory_mb": 1.0})
    argv = ["--config-file", TINY, "--size", "64", "--device", "cpu", "--dtype", "fp32",
            "--output", str(tmp_path / "inference.json")]
    inference.main(argv + ["--iters", "9"])
    out = capsys.readouterr()
    assert "warning: --iters 9: medians of fewer than 10 rounds are noisy" in out.err
    assert "medians of fewer" not in out.out
    inference.main(argv + ["--iters", "10"])
    assert "medians of fewer" not in capsys.readouterr().err


def test_benchmark_loader_tiny(tmp_path, capsys):
    out = tmp_path / "loader.json"
    report = _load_tool("benchmark_loader").main(
        ["--config-file", TINY, "--workers", "0", "1", "--batch", "3", "--iters", "2", "--warmup", "1", "--images", "4",
         "--image-size", "48", "--device", "cpu", "--output", str(out), "INPUT.AUG.CROP_SIZE", "[32, 32]"])
    assert json.loads(out.read_text()) == report and report["benchmark"] == "loader"
    _check_run_info(report)
    assert report["config"]["crop_size"] == [32, 32] and report["config"]["pin_memory"] is False
    rows = report["results"]
    assert [r["workers"] for r in rows] == [0, 1]
    for r in rows:
        assert r["samples"] == 6 and r["samples_per_s"] == pytest.approx(6 / r["seconds"], rel=0.01)
        assert 0 < r["batch_median_ms"] <= r["batch_p90_ms"]
    assert rows[1]["samples_per_s_per_worker"] == rows[1]["samples_per_s"] and "samples_per_s_per_worker" not in rows[0]
    assert "medians of fewer" in capsys.readouterr().err
    from detectron2.data import DatasetCatalog  # the temporary dataset is gone again

    assert not [n for n in DatasetCatalog.list() if n.startswith("benchmark_loader_synthetic")]


BENCHMARK_TOOLS = ["benchmark_inference", "benchmark_train", "benchmark_official", "benchmark_msda",
                   "benchmark_noc_protocol", "benchmark_loader", "benchmark_dispatch"]


@pytest.mark.parametrize("tool", BENCHMARK_TOOLS)
def test_help_shows_the_defaults_and_the_examples_line_by_line(tool, capsys):
    import ast

    with pytest.raises(SystemExit) as exc:
        _load_tool(tool).main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    expected = {"benchmark_inference": ["(default: 50)", "(default: 448)", "default: fp32 on the CPU"],
                "benchmark_train": ["(default: 20)", "default: none on the CPU"],
                "benchmark_official": ["default 50, 10 with --train", "(default: base huge)",
                                       "default: fp32 on the CPU"],
                "benchmark_msda": ["(default: 1 16)", "(default: float32)"],
                "benchmark_noc_protocol": ["(default: 100)", "(default: 512)"],
                "benchmark_loader": ["(default: 0 1 2)", "(default: 500)", "(default: 16)"],
                "benchmark_dispatch": ["(default: 30)", "(default: base)", "(default: 1)"]}[tool]
    for piece in expected + ["--device", "(default: "]:
        assert piece in " ".join(text.split()), (piece, text)
    # the module docstring (the --help description) keeps every source line: an unescaped backslash at the
    # end of an example line in a non-raw docstring would join it with the next one
    path = os.path.join(TOOLS, tool + ".py")
    node = ast.parse(open(path).read()).body[0]
    assert isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    assert node.value.value.count("\n") == node.end_lineno - node.lineno, f"{path}: a docstring line was joined"


# -- bad arguments ----------------------------------------------------------------------------------------


def test_bad_arguments_exit_with_a_message(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    out = ["--output", str(tmp_path / "x.json")]
    cases = [
        ("benchmark_inference", ["--config-file", missing] + out, "nope.yaml"),
        ("benchmark_inference", ["--config-file", TINY, "--dtype", "fp8"] + out, "fp8"),
        ("benchmark_inference", ["--config-file", TINY, "--iters", "0"] + out, "--iters"),
        ("benchmark_inference", ["--config-file", TINY] + out + ["MODEL.VIT.NO_SUCH_KEY", "3"], "NO_SUCH_KEY"),
        ("benchmark_inference", ["--config-file", TINY, "--compile"] + out, "add --predictor"),
        ("check_cuda_sync", ["--config-file", missing] + out, "nope.yaml"),
        ("check_cuda_sync", ["--config-file", TINY, "--warmup", "0"] + out, "--warmup"),
        ("benchmark_train", ["--config-file", missing] + out, "nope.yaml"),
        ("benchmark_train", ["--config-file", TINY, "--batch", "0"] + out, "--batch"),
        ("benchmark_train", ["--config-file", TINY] + out + ["SOLVER.NO_SUCH_KEY", "1"], "NO_SUCH_KEY"),
        ("benchmark_train", ["--config-file", TINY, "--amp", "fp8"] + out, "fp8"),
        ("benchmark_train", ["--config-file", TINY, "--click-rounds", "99"] + out, "must not exceed"),
        ("benchmark_official", ["--config-file", missing] + out, "nope.yaml"),
        ("benchmark_official", ["--config-file", TINY, "--dtype", "fp8"] + out, "fp8"),
        ("benchmark_official", ["--config-file", TINY, "--train", "--batch", "0"] + out + TINY_OFFICIAL_OPTS,
         "--batch"),
        ("benchmark_official", ["--config-file", TINY, "--train", "--amp", "fp8"] + out, "fp8"),
        ("benchmark_official", ["--config-file", TINY, "--train", "--click-rounds", "99"] + out + TINY_OFFICIAL_OPTS,
         "must not exceed"),
        # the tiny config's 4-token windows and 128 px input have no official equivalent
        ("benchmark_official", ["--config-file", TINY] + out, "no official AdaptiveClick equivalent"),
        ("benchmark_official", ["--config-file", TINY, "--official-root", str(tmp_path)] + out + TINY_OFFICIAL_OPTS,
         "not an official AdaptiveClick checkout"),
        ("benchmark_dispatch", ["--config-file", missing] + out, "nope.yaml"),
        ("benchmark_dispatch", ["--config-file", TINY, "--dtype", "bf16"] + out, "fp32 only"),
        ("benchmark_dispatch", ["--config-file", TINY, "--threads", "-1"] + out, "--threads"),
        ("benchmark_dispatch", ["--config-file", TINY] + out, "no official AdaptiveClick equivalent"),
        ("benchmark_dispatch", ["--config-file", TINY, "--official-root", str(tmp_path)] + out + TINY_OFFICIAL_OPTS,
         "not an official AdaptiveClick checkout"),
        ("benchmark_dispatch", ["--config-file", TINY, "--no-official"] + out + ["MODEL.ADAPTIVECLICK.NHEADS", "5"],
         "not divisible by MODEL.ADAPTIVECLICK.NHEADS"),
    ]
    if not torch.cuda.is_available():
        cases += [(tool, ["--config-file", TINY, "--device", "cuda"] + out, "CUDA is not available")
                  for tool in ("benchmark_inference", "benchmark_train", "benchmark_official", "check_cuda_sync",
                               "benchmark_dispatch")]
    for tool, argv, message in cases:
        code, err = _main_exit(tool, argv)
        assert code not in (0, None), (tool, argv)
        assert message in err, (tool, argv, err)
    assert not (tmp_path / "x.json").exists()


def test_bad_device_as_subprocess_exit_code(tmp_path):
    # one real process: the exit status a shell sees
    proc = subprocess.run([sys.executable, os.path.join(TOOLS, "benchmark_train.py"), "--config-file", TINY,
                           "--device", "gpu0", "--output", str(tmp_path / "x.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--device" in proc.stderr and "gpu0" in proc.stderr


# -- the prepared GPU run (tools/device/gpu_check.sh) ---------------------------------------------------------


def _device_script_commands(graph="--cuda-graph"):
    """(tool, argv) of every ``tools/<tool>.py`` call in tools/device/gpu_check.sh, "$OUT" replaced and $GRAPH
    set to ``graph`` (the script's --cuda-graph, empty when its CUDA graph tests failed); ``tool`` is the path
    under tools/ without ``.py``."""
    import shlex

    with open(os.path.join(TOOLS, "device", "gpu_check.sh")) as f:
        text = f.read().replace("\\\n", " ")
    calls = []
    for line in text.splitlines():
        if line.lstrip().startswith("#") or "tools/" not in line or ".py" not in line:
            continue
        line = line.replace('"$OUT"', "/tmp/gpu_check_out").replace('"$PY"', "python").replace("$GRAPH", graph)
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
        for i, tok in enumerate(tokens):
            if tok.startswith("tools/") and tok.endswith(".py"):
                argv = tokens[i + 1:]
                ends = [j for j, t in enumerate(argv) if t in (";", "&&", "||", "|", ">", ">>")]  # the command ends
                calls.append((tok[len("tools/"):-len(".py")], argv[:ends[0]] if ends else argv))
    return calls


class _Parsed(Exception):
    pass


def test_device_script_commands_parse(monkeypatch):
    """Every tool call of the prepared GPU run parses with that tool's own parser (its GPU time is scarce: a
    typo there would waste a lent machine)."""
    import argparse

    calls = _device_script_commands() + _device_script_commands(graph="")  # with and without --cuda-graph
    assert {tool for tool, _ in calls} >= {"benchmark_msda", "benchmark_official", "check_cuda_sync",
                                          "benchmark_inference", "benchmark_train", "device/prebuilt"}
    assert sum("--cuda-graph" in argv for _, argv in calls) == 2
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    for tool, argv in calls:
        module = _load_tool(tool)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), pytest.raises(_Parsed):
            module.main(argv)
        assert not err.getvalue(), (tool, argv, err.getvalue())


def test_device_script_writes_at_most_8_files():
    """The device tool brings back at most 8 files from $OUT: the log and the reports; the fallback train.json is
    written only when official_train.json is not (the script tests for that file)."""
    import re

    with open(os.path.join(TOOLS, "device", "gpu_check.sh")) as f:
        text = f.read()
    files = set(re.findall(r'"\$OUT/([^"]+)"', text))
    assert {"log.txt", "official_train.json", "train.json"} <= files
    assert '[ ! -f "$OUT/official_train.json" ]' in text
    assert len(files) - 1 <= 8, sorted(files)


def test_device_scripts_are_valid_bash():
    for name in ("gpu_check.sh", "fetch_wheels.sh", "rehearse.sh", "device_venv.sh"):
        proc = subprocess.run(["bash", "-n", os.path.join(TOOLS, "device", name)], capture_output=True, text=True)
        assert proc.returncode == 0, (name, proc.stderr)


# -- the extension prebuilt for the GPU machine (tools/device/prebuilt.py) ------------------------------------


def _prebuilt_case(tmp_path):
    """(tool module, a copy of this source tree without libraries, a folder holding this tree's built library)."""
    import shutil

    from adaptiveclick.layers.ms_deform_attn import extension_status

    if not extension_status()["cuda"]:
        pytest.skip("needs adaptiveclick._C built with its CUDA kernel (the prebuilt check insists on it)")
    import adaptiveclick._C as ext

    root = tmp_path / "root"
    shutil.copytree(os.path.join(ROOT, "adaptiveclick"), root / "adaptiveclick",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    shutil.copy(os.path.join(ROOT, "setup.py"), root / "setup.py")
    folder = tmp_path / "prebuilt"
    folder.mkdir()
    shutil.copy(ext.__file__, folder / os.path.basename(ext.__file__))
    return _load_tool("device/prebuilt"), root, folder


def test_prebuilt_extension_installs_when_it_fits_and_works(tmp_path):
    tool, root, folder = _prebuilt_case(tmp_path)
    info = tool.stamp(str(folder), str(root))
    assert info["torch"] == torch.__version__ and info["cuda"] == torch.version.cuda
    assert info["python_tag"] == sys.implementation.cache_tag and info["sources_sha256"] == tool.sources_digest(str(root))
    ok, message = tool.install(str(folder), str(root))
    assert ok, message
    target = root / "adaptiveclick" / info["library"]
    assert target.read_bytes() == (folder / info["library"]).read_bytes()
    assert "CPU kernel error" in message
    assert not list((root / "adaptiveclick").glob("*.before_prebuilt"))


def test_prebuilt_extension_refused_for_other_sources_or_torch(tmp_path):
    tool, root, folder = _prebuilt_case(tmp_path)
    info = tool.stamp(str(folder), str(root))
    target = root / "adaptiveclick" / info["library"]
    with open(root / "adaptiveclick" / "csrc" / "ms_deform_attn.h", "a") as f:
        f.write("\n// changed\n")
    ok, message = tool.install(str(folder), str(root))
    assert not ok and "other sources" in message and not target.exists()
    tool.stamp(str(folder), str(root))  # now the sources agree; the torch version does not
    stamp_path = folder / tool.INFO_NAME
    stamped = json.loads(stamp_path.read_text())
    stamp_path.write_text(json.dumps(dict(stamped, torch="2.0.0+cu118")))
    ok, message = tool.install(str(folder), str(root))
    assert not ok and "torch '2.0.0+cu118'" in message and not target.exists()
    stamp_path.write_text(json.dumps(dict(stamped, python_tag="cpython-39")))
    ok, message = tool.install(str(folder), str(root))
    assert not ok and "Python 'cpython-39'" in message
    stamp_path.unlink()
    ok, message = tool.install(str(folder), str(root))
    assert not ok and tool.INFO_NAME in message


def test_prebuilt_extension_that_does_not_load_is_removed_and_the_earlier_build_restored(tmp_path):
    tool, root, folder = _prebuilt_case(tmp_path)
    name = next(folder.glob("_C.*.so")).name
    earlier = root / "adaptiveclick" / name
    earlier.write_bytes((folder / name).read_bytes())  # a working earlier build in the tree
    (folder / name).write_bytes(b"\x7fELF not really a library")
    tool.stamp(str(folder), str(root))
    ok, message = tool.install(str(folder), str(root))
    assert not ok and "does not load" in message, message
    assert earlier.read_bytes() != b"\x7fELF not really a library"  # the earlier library is back
    assert not list((root / "adaptiveclick").glob("*.before_prebuilt"))
    # the command line: exit 1 and the reason on stdout
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert tool.main(["install", str(folder), "--root", str(root)]) == 1
    assert out.getvalue().startswith("[prebuilt] not used: it does not load")


def test_prebuilt_extension_check_that_hangs_is_given_up(tmp_path, monkeypatch):
    tool, root, folder = _prebuilt_case(tmp_path)
    info = tool.stamp(str(folder), str(root))
    monkeypatch.setattr(tool, "CHECK_SECONDS", 0.05)  # far less than a Python start importing torch
    ok, message = tool.install(str(folder), str(root))
    assert not ok and message == "the check process did not finish in 0.05 s"
    assert not (root / "adaptiveclick" / info["library"]).exists()


# -- reading a GPU run's files (tools/device/summarize.py) ----------------------------------------------------


def test_device_summary_reads_the_reports_the_tools_write(tool_runs, tmp_path, capsys):
    """The summary of a GPU run reads the real reports of every tool gpu_check.sh calls (here their CPU runs on
    the tiny config), gives each its table and the issue-10 verdicts; targets it cannot judge are "not
    measured", never met."""
    import shutil

    folder = tmp_path / "run"
    folder.mkdir()
    for key in ("inference", "train") + (("official", "official_train") if HAS_OFFICIAL else ()):
        _finish(tool_runs[key])
        shutil.copy(tool_runs[key][2], folder / f"{key}.json")
    shutil.copy(folder / "inference.json", folder / "compile.json")
    _load_tool("check_cuda_sync").main(["--config-file", TINY, "--size", "64", "--warmup", "1", "--iters", "1",
                                        "--device", "cpu", "--output", str(folder / "cuda_sync.json")])
    _load_tool("benchmark_loader").main(
        ["--config-file", TINY, "--workers", "0", "--batch", "2", "--iters", "1", "--warmup", "0", "--images", "2",
         "--image-size", "48", "--device", "cpu", "--output", str(folder / "loader.json"), "INPUT.AUG.CROP_SIZE",
         "[32, 32]"])
    _load_tool("benchmark_msda").main(["--device", "cpu", "--batch-sizes", "1", "--image-size", "64", "--repeats",
                                       "1", "--warmup", "0", "--output", str(folder / "msda.json")])
    (folder / "log.txt").write_text("=== [3s] cuda_tests: rc=0\n=== done in 500s; failed or skipped: none\n")
    capsys.readouterr()
    summarize = _load_tool("device/summarize")
    assert summarize.main([str(folder), "--json", str(tmp_path / "verdicts.json")]) == 0
    text = capsys.readouterr().out
    assert "=== done in 500s" in text
    # every report is there, but for the side-by-side ones where no official checkout is (CI has none)
    sections = text.split("\n### ")
    missing = sorted(sec.splitlines()[0] for sec in sections[1:] if "\nmissing" in sec)
    assert missing == ([] if HAS_OFFICIAL else ["Per click, ours vs official (official.json)",
                                                 "Per click, ours with CUDA graphs (official.json)",
                                                 "Training, side by side (official_train.json)"]), missing
    for title in ("Training, ours alone", "Host synchronisation", "Predictor, eager", "Predictor, compile=True",
                  "Training loader", "MSDeformAttn operator") + (("Per click", "Training, side by side")
                                                                 if HAS_OFFICIAL else ()):
        assert f"### {title}" in text, title
    assert "| tiny | fp32 | plain |" in text  # a predictor row of the tiny model
    msda_rows = [line for line in text.splitlines() if line.startswith("| 1 | ")]
    assert sorted(line.split(" | ")[2] for line in msda_rows) == ["cpu", "pytorch"]
    assert msda_rows[0].split(" | ")[5] not in ("n/a", "")  # the speed-up against the reference
    verdicts = json.loads((tmp_path / "verdicts.json").read_text())
    by = {v["target"]: v for v in verdicts}
    # the tiny model is neither ViT-B nor ViT-H, and the CPU has no synchronisation count: nothing is judged
    for target in ("ViT-B bf16 whole click <= 5 ms", "ViT-H bf16 whole click / official fp32 <= 1/3",
                   "host synchronisations in the network's forward == 0"):
        assert by[target]["met"] is None and by[target]["value"] is None, target
    if HAS_OFFICIAL:  # a side-by-side training report is judged, whatever its outcome
        train = by["training tiny: samples/s ours / official >= 2"]
        assert train["met"] == (train["value"] >= 2.0) and train["value"] > 0


def test_device_summary_judges_the_targets_and_flags_incomplete_reports(tmp_path, capsys):
    """Hand-made reports with known numbers: each verdict follows the issue's limits; an incomplete report is
    flagged; a folder without any of the files is an error (exit 2)."""
    summarize = _load_tool("device/summarize")
    assert summarize.main([str(tmp_path)]) == 2

    def click_row(name, ours_ms, vs_fp32):
        t = {"median_ms": ours_ms}
        return {"name": name, "dtype": "bf16", "ours": {"forward": t, "whole_click": t, "peak_memory_mb": 1.0},
                "official": {"forward": t, "whole_click": t, "peak_memory_mb": 1.0},
                "ratio_ours_over_official": {"forward_paired": 0.5, "whole_click_paired": 0.5},
                "ratio_ours_over_official_fp32": {"whole_click_paired": vs_fp32}}

    official = {"complete": False, "run": {"device": "H200", "cuda_fp32": {"cudnn_allow_tf32": True,
                                                                          "matmul_allow_tf32": False}},
                "results": [click_row("base", 4.9, 0.30), click_row("huge", 30.0, 0.34)]}
    # ours with CUDA graphs (--cuda-graph): ViT-B 5.1 ms (over the limit), ViT-H at 0.2 of the official fp32
    official["results"][0]["ours_cuda_graph"] = {
        "forward": {"median_ms": 4.0}, "whole_click": {"median_ms": 5.1}, "captures": 1, "replays": 34,
        "eager_calls": 1, "failure": None, "ratio_over_official": {"whole_click_paired": 0.4},
        "ratio_over_official_fp32": {"whole_click_paired": 0.31}, "ratio_over_ours_eager": {"whole_click_paired": 1.04}}
    official["results"][1]["ours_cuda_graph"] = {
        "forward": {"median_ms": 20.0}, "whole_click": {"median_ms": 21.0}, "captures": 1, "replays": 34,
        "eager_calls": 1, "failure": "RuntimeError('x')", "ratio_over_official_fp32": {"whole_click_paired": 0.2}}
    (tmp_path / "official.json").write_text(json.dumps(official))
    sync = {"run": {}, "results": {"network": {"syncs": 0.0, "events": [],
                                               "operators": {"compute": 671, "metadata": 1220, "host_reads": 0}},
                                   "whole_click": {"syncs": 2.0, "events": [{"where": "predictor.py:51"}]},
                                   "predictor_click_graph": {"syncs": 3.0, "events": [],
                                                             "operators": {"compute": 60, "metadata": 90},
                                                             "cuda_graph": {"captures": 2, "replays_measured": 1,
                                                                            "eager_calls": 3, "failure": None}}}}
    (tmp_path / "cuda_sync.json").write_text(json.dumps(sync))
    _, verdicts = summarize.summarize(str(tmp_path))
    met = {v["target"]: v["met"] for v in verdicts}
    assert met["ViT-B bf16 whole click <= 5 ms"] is True
    assert met["ViT-B bf16 whole click / official fp32 <= 1/3"] is True
    assert met["ViT-H bf16 whole click / official fp32 <= 1/3"] is False
    assert met["host synchronisations in the network's forward == 0"] is True
    assert met["training: samples/s ours / official >= 2 (no side-by-side report)"] is None
    assert met["ViT-B bf16 whole click, CUDA graphs <= 5 ms"] is False
    assert met["ViT-B bf16 whole click, CUDA graphs / official fp32 <= 1/3"] is True
    assert met["ViT-H bf16 whole click, CUDA graphs / official fp32 <= 1/3"] is True
    text, _ = summarize.summarize(str(tmp_path))
    assert "| base | bf16 | 4.00 | 5.10 | 1.040 | 0.400 | 0.310 | 1 recorded, 34 replays, 1 eager |" in text
    assert "| huge | bf16 | 20.00 | 21.00 | n/a | n/a | 0.200 | 1 recorded, 34 replays, 1 eager, fell back: " \
           "RuntimeError('x') |" in text
    assert "INCOMPLETE" in text and "predictor.py:51" in text and "Device: H200" in text
    assert "| predictor_click_graph | 3 | 60 | 90 |  | CUDA graphs: 2 recorded, 1 replays measured |" in text
    assert "| network | 0 | 671 | 1220 |  |  |" in text
    assert "| whole_click | 2 | n/a | n/a | predictor.py:51 |  |" in text
    assert "fp32 convolutions in TF32: True" in text
