#!/usr/bin/env bash
# Set up adaptiveclick in the current Python environment (idempotent: a second run only checks).
#
#   bash tools/install.sh            # torch/torchvision, detectron2, dependencies, adaptiveclick + its extension
#
# Environment:
#   PYTHON                      interpreter to install into (default: python, else python3)
#   ADAPTIVECLICK_TORCH_SPEC    torch/torchvision pair installed when none is usable
#                               (default "torch==2.14.1 torchvision==0.29.2", a matched pair from the index)
#   ADAPTIVECLICK_NO_EXT=1      skip the compiled extension (the pure-PyTorch op is used)
#   FORCE_CUDA=1                build the CUDA kernel or fail;  TORCH_CUDA_ARCH_LIST  GPU architectures
#
# Rules it follows:
# * torch: an importable torch is kept; a CUDA torch is never replaced.  torchvision is installed to match the
#   installed torch.  Only when no torch is installed, or a CPU-only torch has no torchvision that can load (the
#   package index ships CUDA builds of torchvision only), is the pinned pair installed.
# * detectron2: kept if importable; else built from the official source (pinned commit) when that is reachable;
#   else the pinned pure-Python wheel sal-detectron2==0.7.2 (its compiled _C does not load on Python 3.11 and is
#   not needed).  Verified by importing its config, engine, data, evaluation, checkpoint and Visualizer.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$(command -v python || command -v python3)}"
PIP=("$PY" -m pip --disable-pip-version-check)
TORCH_SPEC="${ADAPTIVECLICK_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.2}"
D2_COMMIT="2dde706855d87baa9760fbcd0bdb6004a3937204"
D2_REPO="https://github.com/facebookresearch/detectron2.git"
D2_FALLBACK="sal-detectron2==0.7.2"
T0=$(date +%s)

say() { printf '[install] %s\n' "$*"; }
pyok() { "$PY" -c "$1" >/dev/null 2>&1; }

say "python: $PY ($("$PY" -V 2>&1))"

# ---------------------------------------------------------------------------------------------- torch
if pyok "import torch, torchvision"; then
  say "keeping torch $("$PY" -c 'import torch; print(torch.__version__)') and torchvision $("$PY" -c 'import torchvision; print(torchvision.__version__)')"
elif pyok "import torch"; then
  read -r TV CUDA_TORCH < <("$PY" - <<'PYEOF'
import torch
major, minor = (int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
# torchvision 0.(minor + 15) pairs with torch 2.minor (the release matrix of both projects)
print(f"0.{minor + 15}.*" if major == 2 else "", "cuda" if torch.version.cuda else "cpu")
PYEOF
)
  TORCH_VER="$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')"
  if [ -n "$TV" ]; then
    say "torch $TORCH_VER is installed; adding the matching torchvision $TV (torch pinned, never replaced)"
    "${PIP[@]}" install "torchvision==$TV" "torch==$TORCH_VER" || true
  fi
  if ! pyok "import torchvision"; then
    if [ "$CUDA_TORCH" = "cuda" ]; then
      say "ERROR: no torchvision loads with the installed CUDA torch $TORCH_VER, and a CUDA torch is never replaced."
      say "       Install a torchvision built for it, then run this script again."
      exit 1
    fi
    say "the installed CPU-only torch $TORCH_VER has no loadable torchvision on the package index"
    say "(it ships CUDA builds only); installing the pinned pair: $TORCH_SPEC"
    # shellcheck disable=SC2086
    "${PIP[@]}" install $TORCH_SPEC
  fi
else
  say "installing $TORCH_SPEC"
  # shellcheck disable=SC2086
  "${PIP[@]}" install $TORCH_SPEC
fi
pyok "import torch, torchvision" || { say "ERROR: torch/torchvision still do not import"; exit 1; }

# ---------------------------------------------------------------------------------------------- detectron2
D2_CHECK="import detectron2, detectron2.config, detectron2.engine, detectron2.data, detectron2.evaluation, detectron2.checkpoint
from detectron2.utils.visualizer import Visualizer"
D2_DEPS=("Pillow>=7.1" matplotlib "pycocotools>=2.0.2" "termcolor>=1.1" "yacs>=0.1.8" tabulate cloudpickle
         "tqdm>4.29.0" tensorboard "omegaconf>=2.1,<2.4" "hydra-core>=1.1" black packaging fvcore iopath
         opencv-python-headless)  # cv2 is imported by the Visualizer but missing from the wheel's metadata
if pyok "$D2_CHECK"; then
  say "keeping detectron2 $("$PY" -c 'import detectron2; print(detectron2.__version__)')"
else
  installed=0
  if command -v git >/dev/null && timeout 20 git ls-remote "$D2_REPO" HEAD >/dev/null 2>&1; then
    say "building detectron2 from the official source at $D2_COMMIT (takes a while)"
    if "${PIP[@]}" install --no-build-isolation "git+$D2_REPO@$D2_COMMIT"; then installed=1; else
      say "the source build failed; using the fallback wheel"; fi
  else
    say "the official detectron2 source is not reachable; using the pinned fallback $D2_FALLBACK"
  fi
  if [ "$installed" = 0 ]; then
    SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    TMP="$(mktemp -d)"
    trap 'rm -rf "$TMP"' EXIT
    # The wheel is tagged cp310 but its Python code runs on newer CPython; unpack it and copy only the
    # detectron2 package and its metadata (the wheel also carries a top-level "tools" folder we do not want).
    "${PIP[@]}" install --no-deps --target "$TMP" --python-version 3.10 --implementation cp --platform any \
      --only-binary=:all: "$D2_FALLBACK"
    rm -rf "$SITE/detectron2"
    cp -r "$TMP/detectron2" "$SITE/"
    cp -r "$TMP"/sal_detectron2-*.dist-info "$SITE/"
  fi
  # detectron2's own dependencies (its metadata pins numpy<2, but it runs with NumPy 2: numpy is not touched)
  "${PIP[@]}" install "${D2_DEPS[@]}"
  pyok "$D2_CHECK" || { say "ERROR: detectron2 was installed but does not import:"; "$PY" -c "$D2_CHECK"; exit 1; }
  say "detectron2 $("$PY" -c 'import detectron2; print(detectron2.__version__)') imports"
fi

# ---------------------------------------------------------------------------------------------- other deps
MISSING=()
for spec in "fvcore:fvcore" "iopath:iopath" "timm:timm" "scipy:scipy" "pycocotools:pycocotools" \
            "cv2:opencv-python-headless" "matplotlib:matplotlib" "tqdm:tqdm" "ninja:ninja" "pytest:pytest" \
            "flask:flask"; do
  pyok "import ${spec%%:*}" || MISSING+=("${spec#*:}")
done
if [ ${#MISSING[@]} -gt 0 ]; then
  say "installing ${MISSING[*]}"
  "${PIP[@]}" install "${MISSING[@]}"
fi

# ---------------------------------------------------------------------------------------------- adaptiveclick
# Rebuild only when this checkout is not the installed one, the extension does not load, or a C++/CUDA source
# (or setup.py) is newer than the built library.
# (run from / so that the current folder does not shadow the installed package)
UP_TO_DATE="$(cd / && "$PY" - "$ROOT" <<'PYEOF'
import glob, os, sys
root = os.path.realpath(sys.argv[1])
try:
    import adaptiveclick
    if os.path.realpath(os.path.dirname(adaptiveclick.__file__)) != os.path.join(root, "adaptiveclick"):
        raise ImportError("another checkout is installed")
    if os.environ.get("ADAPTIVECLICK_NO_EXT", "") not in ("1", "true", "yes", "on"):
        import torch  # noqa: F401  (loads the libraries the extension links against)
        import adaptiveclick._C as ext
        sources = glob.glob(os.path.join(root, "adaptiveclick", "csrc", "*")) + [os.path.join(root, "setup.py")]
        if max(os.path.getmtime(s) for s in sources) > os.path.getmtime(ext.__file__):
            raise ImportError("sources changed")
    print("yes")
except Exception:
    print("no")
PYEOF
)"
if [ "$UP_TO_DATE" = "yes" ]; then
  say "adaptiveclick is installed from this checkout and its extension is up to date"
else
  say "installing adaptiveclick from $ROOT (compiling the extension: a few minutes on 2 cores)"
  (cd "$ROOT" && "${PIP[@]}" install --no-build-isolation -v -e . 2>&1 | grep -E '^\s*\[adaptiveclick setup\]|^Successfully|ERROR' || true)
fi
(cd / && "$PY" - <<'PYEOF'
from adaptiveclick.layers.ms_deform_attn import extension_status
s = extension_status()
if s["built"]:
    print(f"[install] adaptiveclick._C loaded: CPU kernel yes, CUDA kernel {'yes' if s['cuda'] else 'no'}")
else:
    print(f"[install] WARNING: {s['error']}\n[install] the pure-PyTorch MSDeformAttn will be used")
PYEOF
)
say "done in $(( $(date +%s) - T0 )) s"
