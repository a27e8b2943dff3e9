# Sourced by tools/device/fetch_wheels.sh and tools/device/rehearse.sh (not run on its own): a virtual environment
# here with the GPU machine's Python and torch (its image: Python 3.12, torch 2.11.0+cu130, the device tool's
# KINDS.md), to compile the extension for it and to rehearse its run.
#   DEVICE_PYTHON_VERSION  default 3.12; DEVICE_PYTHON: an interpreter to use as it is instead of searching
#   DEVICE_TORCH           default 2.11.0 (the package index's build of it is the CUDA 13.0 one)
#   DEVICE_VENV            default /tmp/adaptiveclick_device_venv, made once and reused
DEVICE_PYTHON_VERSION="${DEVICE_PYTHON_VERSION:-3.12}"
DEVICE_TORCH="${DEVICE_TORCH:-2.11.0}"
DEVICE_VENV="${DEVICE_VENV:-/tmp/adaptiveclick_device_venv}"

# device_python: print an interpreter of DEVICE_PYTHON_VERSION that runs (a pyenv shim for a version that is
# installed but not selected does not run: pyenv's own folder of that version is tried next)
device_python() {
  if [ -n "${DEVICE_PYTHON:-}" ]; then command -v "$DEVICE_PYTHON"; return; fi
  local c
  for c in "python$DEVICE_PYTHON_VERSION" "${PYENV_ROOT:-$HOME/.pyenv}/versions/$DEVICE_PYTHON_VERSION"*/bin/python3; do
    if "$c" -c "import sys; sys.exit('%d.%d' % sys.version_info[:2] != '$DEVICE_PYTHON_VERSION')" >/dev/null 2>&1; then
      command -v "$c"
      return 0
    fi
  done
  return 1
}

# device_venv [PACKAGE...]: make (once) DEVICE_VENV with torch==DEVICE_TORCH and the packages; print its python
device_venv() {
  local vpy="$DEVICE_VENV/bin/python" py
  if ! "$vpy" -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$DEVICE_TORCH')" >/dev/null 2>&1; then
    py="$(device_python)" || { echo "[device] no Python $DEVICE_PYTHON_VERSION found (set DEVICE_PYTHON)" >&2; return 1; }
    "$py" -m venv "$DEVICE_VENV" >&2 || return 1
  fi
  # (this machine's pip configuration warns about every missing local index folder: not shown)
  "$vpy" -m pip install -q --disable-pip-version-check "torch==$DEVICE_TORCH" "$@" 2>&1 | grep -v "is ignored" >&2
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "[device] pip could not install torch==$DEVICE_TORCH $*" >&2; return 1; }
  echo "$vpy"
}
