#!/usr/bin/env python
"""The compiled extension (``adaptiveclick._C``) built here for the lent GPU machine and carried there.

Compiling the CUDA kernel is the longest set-up step of ``tools/device/gpu_check.sh`` (about 3 minutes of nvcc
on 2 cores here; not timed there) and device time is what a lease is short of, so ``tools/device/fetch_wheels.sh``
builds it beforehand, here, in a virtual environment with that machine's Python and torch, into ``.prebuilt/``.
There, ``gpu_check.sh`` installs it only if it fits and works, and compiles otherwise:

    python tools/device/prebuilt.py stamp .prebuilt      # here, after the build: write .prebuilt/BUILD_INFO.json
    python tools/device/prebuilt.py install .prebuilt    # there: exit 0 if installed, 1 (and why) if not

``install`` checks, in this order, that the stamp names this Python (its cache tag, e.g. ``cpython-312``), this
torch and CUDA version, and the same sources (a SHA-256 over ``adaptiveclick/csrc`` and ``setup.py``); then copies
the library into ``adaptiveclick/`` and, in a fresh process (a library that does not load, or crashes, cannot
take this one down), imports it and runs its CPU kernel, and its CUDA kernel when a GPU is present, against the
pure-PyTorch reference on a small problem. Anything wrong: the copy is removed again and the reason printed.
"""

import argparse
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INFO_NAME = "BUILD_INFO.json"
CHECK_SECONDS = 120

# Run in a fresh interpreter with the checked tree first on sys.path; prints one JSON line.
_CHECK = r"""
import importlib, json, torch
from adaptiveclick.layers.ms_deform_attn import extension_status, ms_deform_attn, ms_deform_attn_pytorch
status = extension_status()
out = {"status": status, "max_abs_err": {}, "errors": {},
       "file": importlib.import_module("adaptiveclick._C").__file__ if status["built"] else None}
def case(device):
    g = torch.Generator().manual_seed(0)
    shapes = torch.tensor([[6, 5], [3, 3]])
    starts = torch.tensor([0, 30])
    value = torch.randn(2, 39, 2, 8, generator=g)
    loc = torch.rand(2, 7, 2, 2, 3, 2, generator=g) * 1.2 - 0.1
    w = torch.rand(2, 7, 2, 2, 3, generator=g).softmax(-1)
    return [t.to(device) for t in (value, shapes, starts, loc, w)]
if status["built"]:
    for impl, device in (("cpu", "cpu"), ("cuda", "cuda")):
        if device == "cuda" and not torch.cuda.is_available():
            continue  # a dry run without a GPU: the CUDA kernel is not tried
        args = case(device)
        got = ms_deform_attn(*args, impl=impl)
        want = ms_deform_attn_pytorch(*args)
        err = float((got - want).abs().max())
        out["max_abs_err"][impl] = err
        if not err <= 1e-5:
            out["errors"][impl] = f"the {impl} kernel differs from the reference by {err:.3g}"
print(json.dumps(out))
"""


def sources_digest(root=ROOT):
    """SHA-256 over the files that decide the build: adaptiveclick/csrc/* and setup.py (names and contents)."""
    files = sorted(glob.glob(os.path.join(root, "adaptiveclick", "csrc", "*"))) + [os.path.join(root, "setup.py")]
    h = hashlib.sha256()
    for path in files:
        h.update(os.path.relpath(path, root).encode() + b"\0")
        with open(path, "rb") as f:
            h.update(f.read())
        h.update(b"\0")
    return h.hexdigest()


def _runtime():
    import torch

    return {"python_tag": sys.implementation.cache_tag, "torch": torch.__version__, "cuda": torch.version.cuda}


def _library(folder):
    libs = sorted(glob.glob(os.path.join(folder, "_C.*.so")))
    if len(libs) != 1:
        raise FileNotFoundError(f"expected one _C.*.so in {folder}, found {len(libs)}: {libs}")
    return libs[0]


def stamp(folder, root=ROOT):
    """Write ``folder/BUILD_INFO.json`` for the library in ``folder``, built from ``root``'s sources by this
    interpreter's torch. Returns the stamp."""
    lib = _library(folder)
    info = dict(_runtime(), library=os.path.basename(lib), sources_sha256=sources_digest(root))
    tmp = os.path.join(folder, INFO_NAME + ".tmp")
    with open(tmp, "w") as f:
        json.dump(info, f, indent=1)
    os.replace(tmp, os.path.join(folder, INFO_NAME))
    return info


def mismatch(info, root=ROOT):
    """Why a stamp does not fit this interpreter and ``root``'s sources, or None if it does."""
    here = _runtime()
    for key, what in (("python_tag", "Python"), ("torch", "torch"), ("cuda", "torch's CUDA version")):
        if info.get(key) != here[key]:
            return f"built for {what} {info.get(key)!r}, this one is {here[key]!r}"
    if info.get("sources_sha256") != sources_digest(root):
        return "built from other sources (adaptiveclick/csrc or setup.py changed since)"
    return None


def install(folder, root=ROOT):
    """Install the library of ``folder`` into ``root``/adaptiveclick if it fits and works there.

    Returns (ok, message); on failure nothing is left behind."""
    info_path = os.path.join(folder, INFO_NAME)
    if not os.path.isfile(info_path):
        return False, f"no {INFO_NAME} in {folder}"
    try:
        with open(info_path) as f:
            info = json.load(f)
        lib = _library(folder)
    except (OSError, ValueError) as e:
        return False, f"unreadable prebuilt extension in {folder}: {e}"
    if info.get("library") != os.path.basename(lib):
        return False, f"{INFO_NAME} names {info.get('library')!r} but the folder holds {os.path.basename(lib)!r}"
    why = mismatch(info, root)
    if why:
        return False, why
    target = os.path.join(root, "adaptiveclick", os.path.basename(lib))
    backup = None
    if os.path.exists(target):  # an earlier build: kept aside, put back if the prebuilt one fails
        backup = target + ".before_prebuilt"
        os.replace(target, backup)
    shutil.copy2(lib, target)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    result, problem = None, None
    try:  # a CUDA initialisation that hangs must not eat the lease: gpu_check.sh then compiles instead
        proc = subprocess.run([sys.executable, "-c", _CHECK], cwd=root, env=env, capture_output=True, text=True,
                              timeout=CHECK_SECONDS)
    except subprocess.TimeoutExpired:
        proc = None
    if proc is None:
        problem = f"the check process did not finish in {CHECK_SECONDS} s"
    elif proc.returncode != 0:
        problem = f"the check process failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}"
    else:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        if not result["status"]["built"]:
            problem = f"it does not load: {result['status']['error']}"
        elif os.path.realpath(result["file"]) != os.path.realpath(target):
            problem = f"another adaptiveclick._C was imported ({result['file']}), not {target}"
        elif not result["status"]["cuda"]:
            problem = "it was built without its CUDA kernel"
        elif result["errors"]:
            problem = "; ".join(result["errors"].values())
    if problem:
        os.remove(target)
        if backup:
            os.replace(backup, target)
        return False, problem
    if backup:
        os.remove(backup)
    tried = ", ".join(f"{impl.upper()} kernel error {err:.2g}" for impl, err in result["max_abs_err"].items())
    untried = "" if "cuda" in result["max_abs_err"] else "; no CUDA device here: the CUDA kernel was not tried"
    return True, f"installed {target} ({tried}{untried})"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["stamp", "install"])
    parser.add_argument("folder", help="the folder of the prebuilt library (.prebuilt)")
    parser.add_argument("--root", default=ROOT, help="the source tree it belongs to (default: this checkout)")
    args = parser.parse_args(argv)
    if args.action == "stamp":
        print(json.dumps(stamp(args.folder, args.root)))
        return 0
    ok, message = install(args.folder, args.root)
    print(f"[prebuilt] {message}" if ok else f"[prebuilt] not used: {message}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
