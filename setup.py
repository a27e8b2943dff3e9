"""Build and install adaptiveclick.

The compiled extension ``adaptiveclick._C`` holds our multi-scale deformable attention kernels:
* the C++ CPU kernel, always (unless ``ADAPTIVECLICK_NO_EXT=1``);
* the CUDA kernel, when torch was built with CUDA and nvcc is found (``FORCE_CUDA=1`` forces it and makes a
  failure fatal).  ``TORCH_CUDA_ARCH_LIST`` picks the GPU architectures; the default here is "8.0;9.0+PTX"
  (A100, H100, and PTX for newer GPUs), short enough to compile quickly on a 2-core machine.

torch must be importable at build time, so install with ``pip install --no-build-isolation -e .`` (the
set-up script ``tools/install.sh`` does).  If the extension cannot be built the package still installs, a
clear message says why, and the pure-PyTorch reference implementation is used.
"""

import os
import re
import subprocess
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("adaptiveclick", "csrc")
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"


def _version():
    with open(os.path.join(HERE, "adaptiveclick", "__init__.py")) as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


def _say(msg):
    print(f"[adaptiveclick setup] {msg}", file=sys.stderr, flush=True)


def _flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _nvcc_major(cuda_home):
    try:
        out = subprocess.run([os.path.join(cuda_home, "bin", "nvcc"), "--version"], capture_output=True,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"release (\d+)\.", out)
    return int(m.group(1)) if m else None


def _pip_cuda_dirs():
    """Include and library folders of the CUDA packages that pip installs beside a CUDA torch (nvidia/*).

    A system nvcc does not know them, yet torch's CUDA headers include e.g. cusparse.h from there."""
    import importlib.util

    spec = importlib.util.find_spec("nvidia")
    includes, libs = [], []
    for root in (spec.submodule_search_locations or []) if spec else []:
        for name in sorted(os.listdir(root)):
            for sub, out in (("include", includes), ("lib", libs)):
                path = os.path.join(root, name, sub)
                if os.path.isdir(path):
                    out.append(path)
    return includes, libs


def _link_versioned_cudart(ext):
    """pip's CUDA runtime ships only libcudart.so.<major> (no development symlink): link that file by name."""
    import glob

    if "cudart" not in ext.libraries:
        return
    dirs = list(ext.library_dirs)
    if any(os.path.exists(os.path.join(d, "libcudart.so")) for d in dirs):
        return
    for d in dirs:
        found = sorted(glob.glob(os.path.join(d, "libcudart.so.[0-9]*")))
        if found:
            ext.libraries = [":" + os.path.basename(found[0]) if lib == "cudart" else lib for lib in ext.libraries]
            return


def _extension_setup():
    """(ext_modules, cmdclass) for the current environment; empty when the extension is skipped."""
    if _flag("ADAPTIVECLICK_NO_EXT"):
        _say("ADAPTIVECLICK_NO_EXT is set: not building adaptiveclick._C (the pure-PyTorch op will be used)")
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError as e:
        _say(f"torch is not importable ({e}); not building adaptiveclick._C. Install torch first and use "
             "`pip install --no-build-isolation -e .`")
        return [], {}

    force_cuda = _flag("FORCE_CUDA")
    with_cuda, why_not = True, None
    if torch.version.cuda is None:
        with_cuda, why_not = False, "this torch has no CUDA"
    elif CUDA_HOME is None:
        with_cuda, why_not = False, "nvcc / CUDA_HOME not found"
    else:
        major = _nvcc_major(CUDA_HOME)
        torch_major = int(torch.version.cuda.split(".")[0])
        if major is not None and major != torch_major:
            with_cuda = False
            why_not = f"nvcc is CUDA {major} but torch was built with CUDA {torch.version.cuda}"
    if force_cuda and not with_cuda:
        raise RuntimeError(f"FORCE_CUDA=1 but the CUDA kernel cannot be built: {why_not}")
    if not with_cuda:
        _say(f"building the CPU kernel only ({why_not})")

    cpu_sources = [os.path.join(CSRC, f) for f in ("bindings.cpp", "ms_deform_attn_cpu.cpp")]
    cxx_args = ["-O3"]  # the language standard is chosen by torch's BuildExtension (C++20 for torch >= 2.13)
    link_args = []
    if sys.platform.startswith("linux"):
        # at::parallel_for expands to an OpenMP loop inside our own translation unit: without -fopenmp the
        # pragma is dropped and the kernels run on one thread (measured on 2 cores: forward 65 -> 24 ms,
        # backward 106 -> 53 ms on the PMMD shapes of a 448 input).  torch's Linux wheels use the same libgomp.
        cxx_args.append("-fopenmp")
        link_args.append("-fopenmp")
    if with_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCH_LIST)
        _say(f"building the CPU and CUDA kernels (TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']})")
        includes, libs = _pip_cuda_dirs()
        ext = CUDAExtension(
            "adaptiveclick._C", cpu_sources + [os.path.join(CSRC, "ms_deform_attn_cuda.cu")],
            define_macros=[("WITH_CUDA", None)], include_dirs=includes, library_dirs=libs,
            extra_compile_args={"cxx": cxx_args, "nvcc": ["-O3"]}, extra_link_args=link_args)
        _link_versioned_cudart(ext)
    cpu_ext = CppExtension("adaptiveclick._C", cpu_sources, extra_compile_args={"cxx": cxx_args},
                           extra_link_args=link_args)
    if not with_cuda:
        ext = cpu_ext

    class BuildExt(BuildExtension):
        """Falls back to the CPU-only kernel when the CUDA build fails (unless FORCE_CUDA=1), and reports a
        failed optional build without failing the install."""

        def build_extension(self, extension):
            try:
                super().build_extension(extension)
                return
            except Exception as e:  # a compiler error: report it, then try the smaller build
                error = e
            if with_cuda and not force_cuda:
                _say(f"the CUDA kernel failed to build ({error}); retrying with the CPU kernel only")
                for attr in ("sources", "define_macros", "include_dirs", "library_dirs", "libraries",
                             "extra_compile_args", "extra_link_args", "runtime_library_dirs"):
                    setattr(extension, attr, getattr(cpu_ext, attr))
                try:
                    super().build_extension(extension)
                    return
                except Exception as e2:
                    error = e2
            if force_cuda:
                raise error
            # Drop the extension so that the install (editable or not) does not look for its output.
            self.extensions = [x for x in self.extensions if x is not extension]
            self.distribution.ext_modules = [x for x in self.distribution.ext_modules if x is not extension]
            _say(f"adaptiveclick._C FAILED to build ({error}); the pure-PyTorch reference will be used. "
                 "Rebuild with `pip install -v --no-build-isolation -e .` to see the compiler output.")

    return [ext], {"build_ext": BuildExt}


ext_modules, cmdclass = _extension_setup()

setup(
    name="adaptiveclick",
    version=_version(),
    description="AdaptiveClick (clicks-aware transformer with adaptive focal loss) for interactive "
                "segmentation, as a detectron2 project",
    long_description=open(os.path.join(HERE, "README.md")).read() if os.path.exists(
        os.path.join(HERE, "README.md")) else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["adaptiveclick", "adaptiveclick.*"]),
    # torch, torchvision and detectron2 are deliberately not listed: tools/install.sh installs them without
    # ever replacing a torch the user already has (detectron2 is not on the package index under its name).
    install_requires=["numpy", "scipy", "opencv-python-headless", "pycocotools", "fvcore", "iopath", "timm",
                      "matplotlib", "tqdm"],
    # the browser demo (tools/demo/web.py); tools/install.sh installs it too
    extras_require={"demo": ["flask>=2.2"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
