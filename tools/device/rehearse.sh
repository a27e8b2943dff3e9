#!/usr/bin/env bash
# Rehearse the GPU run here, on the CPU, with the GPU machine's Python and torch, before spending device time:
#   1. a virtual environment like that machine's image: its Python and torch, the packages of its image that we use
#      (tools/device/device_venv.sh; the same one fetch_wheels.sh compiles the prebuilt extension in)
#   2. a copy of this working tree (with .wheels/, .official/, .prebuilt/) in a temporary folder
#   3. tools/device/gpu_check.sh there with GPU_CHECK_DRY=1: the wheels install, the prebuilt extension's check,
#      the CUDA tests (skipped without a GPU); the CUDA benchmarks then stop at once, saying there is no GPU
#   4. the whole CPU test suite in that environment
# Run tools/device/fetch_wheels.sh first (it makes the environment). Takes 5.5 minutes on 2 cores.
# Exit status: that of the test suite, or 1 if the environment or the dry run's set-up failed.
#
#   bash tools/device/rehearse.sh
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
. "$ROOT/tools/device/device_venv.sh"
# torchvision paired with torch (torchvision 0.N+15 goes with torch 2.N), and what the image has that we use
VISION="0.$(( $(echo "$DEVICE_TORCH" | cut -d. -f2) + 15 )).0"
VPY="$(device_venv "torchvision==$VISION" setuptools numpy scipy opencv-python-headless pillow matplotlib pytest tqdm \
  timm pyyaml portalocker tabulate cloudpickle psutil tensorboard flask)" || exit 1
"$VPY" -c "import torch, torchvision; print('[rehearse] torch', torch.__version__, 'torchvision', torchvision.__version__)" \
  || { echo "[rehearse] the environment does not import torch/torchvision" >&2; exit 1; }

WORK="$(mktemp -d /tmp/adaptiveclick_rehearse.XXXXXX)"
(cd "$ROOT" && tar --exclude=./.git --exclude=./output --exclude=./build --exclude='./adaptiveclick/_C*.so' \
  --exclude=__pycache__ -cf - .) | (cd "$WORK" && tar -xf -)
echo "[rehearse] tree copied to $WORK"
cd "$WORK"
rm -rf /tmp/adaptiveclick_site  # gpu_check.sh installs the carried wheels there
env OUT="$WORK/output/device" GPU_CHECK_DRY=1 PYTHON="$VPY" GPU_CHECK_SECONDS=300 bash tools/device/gpu_check.sh \
  > "$WORK/dry_run.log" 2>&1
grep -E "^(torch|extension|\[prebuilt\]|===)" "$WORK/dry_run.log"
grep -q "^extension {'built': True, 'cpu': True, 'cuda': True" "$WORK/dry_run.log" \
  || { echo "[rehearse] the dry run did not end with the extension and its CUDA kernel: see $WORK/dry_run.log" >&2; exit 1; }
grep -q "=== \[[0-9]*s\] cuda_tests: rc=0" "$WORK/dry_run.log" \
  || { echo "[rehearse] the CUDA test step failed in the dry run: see $WORK/dry_run.log" >&2; exit 1; }

echo "[rehearse] the CPU test suite with $("$VPY" --version) and torch $DEVICE_TORCH"
PYTHONPATH="/tmp/adaptiveclick_site:$WORK" "$VPY" -m pytest -q -p no:cacheprovider
rc=$?
echo "[rehearse] tests: rc=$rc (the tree stays in $WORK)"
exit $rc
