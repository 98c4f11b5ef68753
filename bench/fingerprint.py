"""What a result depends on besides its spec: the environment, and hashes of what came out.

Versions come from package metadata (no import of TensorFlow just to read its version). Hashes are
over exact bytes in a fixed layout, so two rows with equal `weights_sha256` hold bitwise equal
weights, whatever library or machine produced them.
"""

from __future__ import annotations

import functools
import hashlib
import platform
import shutil
import socket
import subprocess
import sys
from importlib import metadata
from typing import Any

import numpy as np

from bench import isa

_DISTRIBUTIONS = {
    "numpy": ("numpy",),
    "sklearn": ("scikit-learn",),
    "torch": ("torch",),
    "tensorflow": ("tensorflow", "tensorflow-cpu"),
    "keras": ("keras",),
    "ray": ("ray",),
}


def weights_sha256(weights: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for w in weights:
        w = np.asarray(w)
        h.update(repr(tuple(w.shape)).encode())
        if (
            w.dtype != np.float32
        ):  # float64 models hash their own bits (float32 ones keep old hashes)
            h.update(w.dtype.str.encode())
        h.update(np.ascontiguousarray(w, dtype=w.dtype.newbyteorder("<")).tobytes())
    return h.hexdigest()


def predictions_sha256(y_pred: np.ndarray, proba: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(y_pred, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(proba, dtype="<f4").tobytes())
    return h.hexdigest()


def version(name: str) -> str | None:
    for dist in _DISTRIBUTIONS.get(name, (name,)):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


@functools.cache
def _static() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": isa.cpu().model,
        **isa.cpu_columns(),
        **{f"{name}_version": version(name) for name in _DISTRIBUTIONS},
    }


@functools.cache
def _driver_version() -> str | None:
    """One nvidia-smi call per worker process, not per trial."""
    if not shutil.which("nvidia-smi"):
        return None
    query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
    try:
        done = subprocess.run(query, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.split("\n")[0].strip() or None


def cxx_name() -> str:
    """The C++ compiler Inductor runs for CPU code: $CXX as one executable, else g++ (Inductor
    tries no other on Linux)."""
    import os

    return os.environ.get("CXX") or "g++"


def cxx_compiler() -> str | None:
    """The path of that compiler, or None when it is not on PATH."""
    return shutil.which(cxx_name())


@functools.cache
def cxx_version() -> str | None:
    """The first line of `--version` of the C++ compiler torch.compile's CPU code goes through:
    another compiler may vectorise the same loops differently."""
    cxx = cxx_compiler()
    if cxx is None:
        return None
    try:
        done = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.split("\n")[0].strip() or None


def _gpu(device: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "cuda_version": None,
        "cudnn_version": None,
        "gpu_name": None,
        "driver_version": None,
    }
    if "torch" in sys.modules:
        import torch

        out["cuda_version"] = torch.version.cuda
        if device == "cuda" and torch.cuda.is_available():
            out["cudnn_version"] = str(torch.backends.cudnn.version())
            out["gpu_name"] = torch.cuda.get_device_name()
    if device == "cuda":
        out["driver_version"] = _driver_version()
    return out


def _ray_node_id() -> str | None:
    if "ray" not in sys.modules:
        return None
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def environment(library: str, device: str) -> dict[str, Any]:
    static = _static()
    return {
        **static,
        "library_version": static.get(f"{library}_version"),
        **_gpu(device),
        "ray_node_id": _ray_node_id(),
    }
