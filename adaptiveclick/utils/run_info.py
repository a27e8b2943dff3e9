"""Metadata written beside every benchmark and evaluation result so numbers can be compared side by side."""

import datetime
import json
import os
import platform
import subprocess

__all__ = ["run_info", "git_revision", "device_name", "cpu_model", "load_average", "write_json"]


def git_revision(path=None):
    """``<sha>[-dirty]`` of the checkout containing ``path`` (this package by default), or None."""
    path = path or os.path.dirname(os.path.abspath(__file__))
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def device_name(device):
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def cpu_model():
    """The CPU's model name ("model name" of /proc/cpuinfo, e.g. "AMD EPYC 7B13"), else
    ``platform.processor()``, else None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def load_average():
    """The system's 1, 5 and 15-minute load averages (``os.getloadavg()``, rounded to 0.01), or None where the
    platform has none.  Read when the report is written: with the run's length it tells whether other work
    shared the machine (a load near the core count while a benchmark ran means its numbers are suspect)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def run_info(device="cpu"):
    """Device, CPU model, load average, library versions, git revision and time, as a JSON-serialisable dict:
    ``cpu_model`` (:func:`cpu_model`) and ``load_average`` ([1 min, 5 min, 15 min], :func:`load_average`) are
    recorded for a CUDA run too (the host still feeds the GPU)."""
    import numpy
    import torch

    info = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_revision": git_revision(),
        "device": device_name(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "load_average": load_average(),
    }
    if torch.device(device).type == "cuda":
        # what "fp32" means there: cuDNN convolutions run in TF32 unless allow_tf32 is off (the default is on),
        # matrix products only if allowed (default off); both implementations of a side-by-side run share these
        info["cuda_fp32"] = {"cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
                             "matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
                             "cudnn_version": torch.backends.cudnn.version()}
    try:
        import detectron2

        info["detectron2"] = detectron2.__version__
    except ImportError:
        info["detectron2"] = None
    return info


def write_json(report, path):
    """Write ``report`` as indented JSON to ``path`` atomically (temp file, then rename); prints the path."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, path)
    print(f"wrote {path}")
    return path
