#!/usr/bin/env bash
# Prepare, on a machine with the package index, what tools/device/gpu_check.sh needs on the lent GPU machine
# (Python 3.12, torch 2.11 + CUDA, no network; see its header):
#   .wheels/    the pure-Python packages it lacks (detectron2 as the sal-detectron2==0.7.2 fallback wheel, fvcore,
#               iopath, yacs, termcolor, omegaconf, hydra-core, antlr4 runtime, easydict) and pycocotools for CPython 3.12
#   .official/  a copy of the official checkout (ADAPTIVECLICK_OFFICIAL_ROOT, default /tmp/official_adaptiveclick)
#               without its .git and assets, for the side-by-side benchmarks
#   .prebuilt/  adaptiveclick._C with its CUDA kernel for Hopper, compiled here for that machine's Python and torch
#               (in the virtual environment of tools/device/device_venv.sh, made once), so that gpu_check.sh
#               does not spend device time compiling (tools/device/prebuilt.py checks it there; it compiles
#               if the library does not fit or fails). PREBUILD=0 skips this part (about 5 minutes the first time).
# All three folders are git-ignored; name them in the device call's `carry`.
#
#   bash tools/device/fetch_wheels.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-$(command -v python || command -v python3)}"
DEST="$ROOT/.wheels"
OFFICIAL="${ADAPTIVECLICK_OFFICIAL_ROOT:-/tmp/official_adaptiveclick}"
mkdir -p "$DEST"
pip_dl() { "$PY" -m pip download --disable-pip-version-check -q --no-deps -d "$DEST" "$@"; }

# pure Python (any Python 3), one pinned version each (two versions of one package stop the install there): the
# published wheel, else a wheel built here from the sdist (fvcore, antlr4 and easydict publish sdists only)
for spec in "fvcore==0.1.5.post20221221" "iopath==0.1.10" "yacs==0.1.8" "termcolor==3.3.0" "omegaconf==2.3.1" \
            "hydra-core==1.3.8" "antlr4-python3-runtime==4.9.3" "easydict==1.13"; do
  pip_dl --only-binary=:all: --python-version 3.12 --implementation py --platform any "$spec" 2>/dev/null \
    || "$PY" -m pip wheel --disable-pip-version-check -q --no-deps -w "$DEST" "$spec" \
    || { echo "[fetch] cannot get a wheel of $spec" >&2; exit 1; }
done
# the detectron2 fallback (tagged cp310, pure Python apart from a _C we do not load): unzipped there, not installed
pip_dl --only-binary=:all: --python-version 3.10 --implementation cp --platform any "sal-detectron2==0.7.2"
# compiled for CPython 3.12 on manylinux x86-64
pip_dl --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 "pycocotools==2.0.11"

if [ -f "$OFFICIAL/isegm/model/is_adaptiveclick_model.py" ]; then
  rm -rf "$ROOT/.official"
  mkdir -p "$ROOT/.official"
  (cd "$OFFICIAL" && tar --exclude=.git --exclude=assets -cf - .) | (cd "$ROOT/.official" && tar -xf -)
  echo "[fetch] official checkout copied to .official/ ($(du -sh "$ROOT/.official" | cut -f1))"
else
  echo "[fetch] no official checkout at $OFFICIAL: the side-by-side benchmarks will be skipped there" >&2
fi

. "$ROOT/tools/device/device_venv.sh"
prebuild() {
  local vpy tmp
  command -v nvcc >/dev/null || { echo "[fetch] no nvcc: no .prebuilt/" >&2; return 1; }
  vpy="$(device_venv setuptools numpy)" || return 1
  tmp="$(mktemp -d)"
  (cd "$ROOT" && tar --exclude='*.so' --exclude=__pycache__ -cf - setup.py README.md adaptiveclick) | (cd "$tmp" && tar -xf -)
  (cd "$tmp" && FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" "$vpy" setup.py -q build_ext --inplace) \
    || { rm -rf "$tmp"; return 1; }
  rm -rf "$ROOT/.prebuilt"
  mkdir -p "$ROOT/.prebuilt"
  cp "$tmp"/adaptiveclick/_C.*.so "$ROOT/.prebuilt/" \
    && "$vpy" "$ROOT/tools/device/prebuilt.py" stamp "$ROOT/.prebuilt" --root "$tmp" \
    || { rm -rf "$tmp" "$ROOT/.prebuilt"; return 1; }
  rm -rf "$tmp"
  echo "[fetch] .prebuilt/: $(ls "$ROOT/.prebuilt" | tr '\n' ' ')($(du -sh "$ROOT/.prebuilt" | cut -f1))"
}
CARRY='".wheels", ".official"'
if [ "${PREBUILD:-1}" = 1 ]; then
  if prebuild; then CARRY="$CARRY, \".prebuilt\""; else echo "[fetch] no prebuilt extension: gpu_check.sh will compile it there" >&2; fi
fi

ls -1 "$DEST"
echo "[fetch] $(du -sh "$DEST" | cut -f1) in .wheels/; carry: [$CARRY]"
