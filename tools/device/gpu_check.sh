#!/usr/bin/env bash
# Every GPU check of the project in one prepared run on the lent GPU machine (the `device` tool; H200/H100,
# Python 3.12 with torch + CUDA, no network), in priority order, inside one deadline (default 560 s, under the
# tool's 600 s per command; GPU_CHECK_SECONDS changes it):
#   1. dependencies from the carried .wheels/ (tools/device/fetch_wheels.sh, run beforehand where pip works)
#   2. the extension with its CUDA kernel: the one carried in .prebuilt/ (compiled by fetch_wheels.sh for this
#      machine's Python and torch) if tools/device/prebuilt.py finds that it fits and works, else compiled here
#      (FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST=9.0 for Hopper; 3 minutes on 2 cores here, not timed there)
#   3. the CUDA tests (pytest -m cuda): the CUDA graphs' first and alone (if they fail, steps 4 and 7 run
#      without --cuda-graph), then the op against the reference, fp16/bf16, gradients, the predictor, pinned
#      training batches, the official training step
#   4. ours vs the official model per click, ViT-B and ViT-H, fp32 and bf16, ours also with CUDA graphs
#      (needs .official/)
#   5. training side by side: ViT-B batch 16 and ViT-H batch 8, ours fp32 + bf16 AMP vs official fp32, all three
#      resident and timed interleaved (peak memory from each alone first); if that fails without a report,
#      ours alone (tools/benchmark_train.py, also the step when .official/ is absent)
#   6. host synchronisation of the network, of a whole click, of a predictor click and of a ViT-B training step
#      (batch 4, bf16) and click round (tools/check_cuda_sync.py)
#   7. ms per click of the predictor, eager and with CUDA graphs, ViT-B and ViT-H
#   8. the predictor with compile=True (CUDA graphs), ViT-B bf16: its own step, last but two, as a cold
#      compile may take minutes
#   9. samples/s of the training loader with 2, 4 and 8 workers (pinned batches; that machine's 16 cores)
#  10. the operator benchmark (cuda vs pytorch)
# The order is the order of importance for issue 10; the caps add up to more than the deadline on purpose
# (each step gets min(cap, time left)), so what is cut is the end of the list.
# A step that would not fit the time left is skipped and said so; a failing step does not stop the others; a
# benchmark stopped by its limit leaves the JSON of the models it finished ("complete": false).
# Writes to $OUT (at most 8 files come back): log.txt and one JSON per benchmark.  GPU_CHECK_DRY=1 runs the
# steps on a machine without a GPU (to try the script itself: the CUDA steps then fail or skip).
#
#   device.run(command="bash tools/device/gpu_check.sh", carry=[".wheels", ".official", ".prebuilt"], timeout_s=600)
#   python tools/device/summarize.py <the folder the files came back to>     # tables + issue 10's verdicts
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT="${OUT:-output/device}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
T0=$(date +%s)
DEADLINE=$(( T0 + ${GPU_CHECK_SECONDS:-560} ))
FAILED=()
LAST_RC=0

# run_step NAME CAP_SECONDS CMD...: run CMD with a timeout of min(CAP, time left - 10 s), or skip it
run_step() {
  local name="$1" cap="$2"; shift 2
  local left=$(( DEADLINE - $(date +%s) - 10 ))
  local limit=$(( cap < left ? cap : left ))
  if [ "$limit" -lt 20 ]; then
    echo "=== SKIPPED $name: ${left}s left"; FAILED+=("$name(skipped)"); LAST_RC=124; return
  fi
  echo "=== [$(( $(date +%s) - T0 ))s] $name (limit ${limit}s)"
  timeout --signal=INT --kill-after=5 "$limit" "$@"
  local rc=$?
  LAST_RC=$rc
  echo "=== [$(( $(date +%s) - T0 ))s] $name: rc=$rc"
  [ "$rc" -eq 0 ] || FAILED+=("$name(rc=$rc)")
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
SITE=/tmp/adaptiveclick_site
mkdir -p "$SITE"
if ls .wheels/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    $(ls .wheels/*.whl | grep -v sal_detectron2) || FAILED+=("wheels")
  for w in .wheels/sal_detectron2-*.whl; do "$PY" -m zipfile -e "$w" "$SITE"; done
  rm -rf "$SITE"/detectron2/_C*.so "$SITE"/tools  # a _C for CPython 3.10 (never loaded) and its own tools/ package
else
  echo "no .wheels/: run tools/device/fetch_wheels.sh here first and carry .wheels"
fi
export PYTHONPATH="$SITE:$PWD"
[ -d .official ] && export ADAPTIVECLICK_OFFICIAL_ROOT="$PWD/.official"
"$PY" -c "
import sys, torch, detectron2, fvcore
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'device', gpu, 'detectron2', detectron2.__version__)
sys.exit(0 if gpu else 3)"
case $? in
  0) ;;
  3) if [ "${GPU_CHECK_DRY:-0}" = 1 ]; then echo "no CUDA device: dry run (GPU_CHECK_DRY=1) goes on"
     else echo "no CUDA device: stopping (GPU_CHECK_DRY=1 runs the steps anyway)"; exit 1; fi ;;
  *) echo "imports failed: stopping"; exit 1 ;;
esac

# the extension compiled beforehand (fetch_wheels.sh), if it fits this Python/torch/sources and its kernels agree
# with the reference here; else compile it
if [ -d .prebuilt ] && "$PY" tools/device/prebuilt.py install .prebuilt; then
  echo "=== [$(( $(date +%s) - T0 ))s] build: skipped, the carried .prebuilt/ is installed"
else
  run_step build 240 env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS=16 \
    "$PY" setup.py -q build_ext --inplace
fi
"$PY" -c "from adaptiveclick.layers.ms_deform_attn import extension_status as s; print('extension', s())"
# the CUDA graphs' tests first and alone: if recording fails here, the benchmarks below time eager clicks only
# (no --cuda-graph), so that a capture failing in their process cannot take the side-by-side figures with it
run_step cuda_graph_tests 60 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda_graph.py
GRAPH=--cuda-graph
if [ "$LAST_RC" -ne 0 ]; then GRAPH=""; echo "=== the CUDA graph tests failed: benchmarks run without --cuda-graph"; fi
run_step cuda_tests 120 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/test_ms_deform_attn.py tests/test_inference.py \
  tests/test_engine.py tests/test_official_training.py
if [ -d .official ]; then
  run_step official_inference 140 "$PY" tools/benchmark_official.py --sizes base huge --device cuda --dtype fp32 bf16 \
    $GRAPH --iters 30 --warmup 5 --output "$OUT/official.json"
  run_step official_train 150 "$PY" tools/benchmark_official.py --train --sizes base huge --device cuda \
    --amp none bf16 --iters 5 --warmup 2 --click-rounds 1 --output "$OUT/official_train.json"
fi
if [ ! -f "$OUT/official_train.json" ]; then  # no side-by-side report (no .official/, or it failed early): ours alone
  run_step train 110 "$PY" tools/benchmark_train.py --device cuda --iters 5 --warmup 2 --click-rounds 1 \
    --output "$OUT/train.json"
fi
run_step cuda_sync 85 "$PY" tools/check_cuda_sync.py --device cuda --output "$OUT/cuda_sync.json"
run_step inference 90 "$PY" tools/benchmark_inference.py --configs configs/sbd/adaptiveclick_vit_b_448.yaml \
  configs/sbd/adaptiveclick_vit_h_448.yaml --device cuda --dtype fp32 bf16 --predictor $GRAPH --iters 20 \
  --warmup 5 --output "$OUT/inference.json"
run_step compile 100 "$PY" tools/benchmark_inference.py --configs configs/sbd/adaptiveclick_vit_b_448.yaml \
  --device cuda --dtype bf16 --predictor --compile --iters 20 --warmup 6 --output "$OUT/compile.json"
run_step loader 45 "$PY" tools/benchmark_loader.py --device cuda --workers 2 4 8 --batch 32 --iters 10 --warmup 3 \
  --output "$OUT/loader.json"
run_step msda 45 "$PY" tools/benchmark_msda.py --device cuda --batch-sizes 1 16 --impls cuda pytorch --output "$OUT/msda.json"

echo "=== done in $(( $(date +%s) - T0 ))s; failed or skipped: ${FAILED[*]:-none}"
[ "${#FAILED[@]}" -eq 0 ]
