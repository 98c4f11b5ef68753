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

from bench import isa, provenance

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
    """The predicted labels (int64) and the class scores in their own dtype (a row's
    `predictions_dtype`): float32 scores hash as they always did; other dtypes hash their own
    bits after their dtype's name, so scores that differ only below float32's precision differ
    here too. Rows without `predictions_dtype` hashed every score cast to float32 first
    (`predictions_sha256_as_float32`)."""
    proba = np.asarray(proba)
    little = proba.dtype.newbyteorder("<")
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(y_pred, dtype="<i8").tobytes())
    if proba.dtype != np.float32:
        h.update(little.str.encode())
    h.update(np.ascontiguousarray(proba, dtype=little).tobytes())
    return h.hexdigest()


def predictions_sha256_as_float32(y_pred: np.ndarray, proba: np.ndarray) -> str:
    """The hash as rows written before `predictions_dtype` hold it: scores cast to float32 (the
    row's `y_proba` values), whatever their dtype."""
    return predictions_sha256(y_pred, np.asarray(proba, dtype=np.float32))


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
        **provenance.code(),  # the bench code this process runs (version, git commit, dirty)
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


def _package_file(package: str, relative: str) -> dict[str, Any]:
    """The globals of a plain module file inside an installed package, run on its own: the
    package itself is not imported (no import-time cost, no kernels that could meet a CPU they
    were not built for). Empty when the package or the file is not there."""
    import importlib.util
    import runpy
    from pathlib import Path

    try:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            return {}
        for folder in spec.submodule_search_locations:
            path = Path(folder, relative)
            if path.is_file():
                return runpy.run_path(str(path))
    except Exception:  # noqa: BLE001 - a build description that cannot be read is not recorded
        return {}
    return {}


@functools.cache
def build_cuda(library: str) -> tuple[str | None, str | None]:
    """(CUDA, cuDNN) versions the trial's library was built with, read from its build files
    (torch/version.py: `torch.version.cuda`; tensorflow/python/platform/build_info.py:
    `tf.sysconfig.get_build_info()`), so that a row does not depend on which libraries the
    worker imported before it. (None, None) for a CPU build, and for scikit-learn, which runs
    no CUDA."""
    if library == "torch":
        return _package_file("torch", "version.py").get("cuda"), None
    if library == "tensorflow":
        info = _package_file("tensorflow", "python/platform/build_info.py").get("build_info", {})
        cudnn = info.get("cudnn_version")
        return info.get("cuda_version"), None if cudnn is None else str(cudnn)
    return None, None


def _gpu(library: str, device: str) -> dict[str, Any]:
    """The trial's library's CUDA build, and on a CUDA trial its cuDNN, GPU and driver. Read per
    library, never from whichever library happens to be loaded: a scikit-learn row says None
    whether or not the worker ran PyTorch before it."""
    cuda, cudnn = build_cuda(library)
    out: dict[str, Any] = {
        "cuda_version": cuda,
        "cudnn_version": None,
        "gpu_name": None,
        "driver_version": None,
    }
    if device != "cuda":
        return out
    out["driver_version"] = _driver_version()
    if library == "torch" and "torch" in sys.modules:  # loaded by the trial, unless it failed first
        import torch

        if torch.cuda.is_available():
            out["cudnn_version"] = str(torch.backends.cudnn.version())
            out["gpu_name"] = torch.cuda.get_device_name()
    elif library == "tensorflow":
        out["cudnn_version"] = cudnn
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
        **_gpu(library, device),
        "ray_node_id": _ray_node_id(),
    }
