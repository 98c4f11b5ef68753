"""Thread counts and determinism toggles: set for the spec's library, and read back as in force.

Two kinds of settings exist. Environment variables (OMP/MKL/OpenBLAS threads, TF's thread pools,
cuBLAS workspace, the CPU kernel level of bench.isa) only work if present before the library is
imported, so the runner starts each worker with `worker_env(...)` already in its environment.
Runtime calls (torch.set_num_threads, threadpoolctl, op determinism) happen in `apply`, before
every trial. What `apply` returns is read back from the libraries, not echoed from the spec, so a
row never claims a setting that failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import warnings
from collections.abc import Iterator
from typing import Any

from bench import isa
from bench.spec import TrialSpec

THREAD_ENV = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
)
RECORDED_ENV = (
    *THREAD_ENV,
    "TF_ENABLE_ONEDNN_OPTS",
    "TF_DETERMINISTIC_OPS",
    "CUBLAS_WORKSPACE_CONFIG",
    "CUDA_VISIBLE_DEVICES",
    "PYTHONHASHSEED",
    *isa.ENV_KEYS,
)


def worker_env(
    threads: int, deterministic: bool, device: str, cpu_isa: str = "native"
) -> dict[str, str]:
    """Environment a worker process needs before it imports any library."""
    env = dict.fromkeys(THREAD_ENV, str(threads))
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if deterministic and device == "cuda":
        env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    env.update(isa.level_env(cpu_isa))
    return env


def spec_env(spec: TrialSpec) -> dict[str, str]:
    """`worker_env` for one trial."""
    return worker_env(spec.threads, spec.deterministic, spec.device, spec.cpu_isa)


def _torch(spec: TrialSpec) -> dict[str, Any]:
    """deterministic=true: deterministic algorithms (warn-only, so the row can name a kernel that
    has no deterministic version), cuDNN deterministic, no autotuning, no TF32. deterministic=false:
    what a speed-minded user runs: cuDNN autotuning on, TF32 at PyTorch's defaults (cuDNN yes,
    matmul no). Set both ways on every trial, since a worker process runs many trials.

    Warn-only mode lets a kernel without a deterministic implementation run anyway (PyTorch warns
    instead of raising), so `deterministic_in_force` is true here only as far as PyTorch's switch
    goes: `nondeterministic_ops` collects the kernels it warned about, and bench.outcomes turns
    `deterministic_in_force` false on a row whose training ran one. `deterministic_warn_only` is
    the warn-only flag as PyTorch reads it back."""
    import torch

    det = spec.deterministic
    torch.set_num_threads(spec.threads)
    try:
        torch.set_num_interop_threads(spec.threads)
    except RuntimeError:  # only settable once per process, before any parallel work
        pass
    if det or torch.are_deterministic_algorithms_enabled():
        # Its first call imports torch._inductor (1.4 s here, once per worker); turning off what
        # is already off needs no call. Off clears warn-only too, so that the flag read back
        # does not depend on the modes this worker ran before.
        torch.use_deterministic_algorithms(det, warn_only=det)
    torch.backends.cudnn.deterministic = det
    torch.backends.cudnn.benchmark = not det
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = not det
    return {
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "deterministic_in_force": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
    }


# PyTorch's wordings (torch 2.x: ATen's Context::alertNotDeterministic and
# alertCuBLASConfigNotDeterministic, torch._prims_common.alert_not_deterministic, flex attention's
# backward): "<op> does not have a deterministic implementation, but you set
# 'torch.use_deterministic_algorithms(True, warn_only=True)'..."; "Deterministic behavior was
# enabled with either `torch.use_deterministic_algorithms(True)` or ..., but this operation is not
# deterministic because it uses CuBLAS and you have CUDA >= 10.2. ... CUBLAS_WORKSPACE_CONFIG=:4096:8
# or ...". Any other warning that says a computation is non-deterministic counts too, by its first
# sentence: a row that left one out would claim a determinism that did not hold.
_NO_DETERMINISTIC = re.compile(
    r"^\s*(?P<op>.+?)\s+does not have a deterministic implementation", re.S
)
_NONDETERMINISM = re.compile(r"non-?deterministic|not deterministic", re.I)
CUBLAS_OP = "CuBLAS (CUBLAS_WORKSPACE_CONFIG not :4096:8 or :16:8)"


def nondeterministic_op(text: str) -> str | None:
    """What a warning names as computed without determinism (a kernel, CuBLAS, or the warning's
    first sentence), or None for a warning about something else."""
    match = _NO_DETERMINISTIC.match(text)
    if match:
        return match["op"]
    if "CuBLAS" in text and "CUBLAS_WORKSPACE_CONFIG" in text and _NONDETERMINISM.search(text):
        return CUBLAS_OP
    if _NONDETERMINISM.search(text):
        first = re.split(r"(?<=[.!?])\s|\n", text.strip(), maxsplit=1)[0]
        return " ".join(first.split())[:160].replace(",", ";")  # the column joins with commas
    return None


@contextlib.contextmanager
def nondeterministic_ops(found: list[str]) -> Iterator[None]:
    """Collect what PyTorch reports as computed without determinism (warn-only mode) while
    training: kernels without a deterministic implementation, CuBLAS without a deterministic
    workspace, any other non-determinism warning. Other warnings are passed on."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        op = nondeterministic_op(str(w.message))
        if op is not None:
            found.append(op)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def tf_onednn() -> str | None:
    """Whether this process's TensorFlow runs its oneDNN kernels, "on" or "off", as TensorFlow
    itself decides it (`IsMklEnabled`: TF_ENABLE_ONEDNN_OPTS as read once per process, else its
    default, which depends on the build and, on Linux x86, on the CPU's AVX-512 VNNI/BF16, AVX-VNNI
    or AMX); None where this TensorFlow does not expose it. Not the environment variable: a value
    set after TensorFlow read it, or an unset one, says nothing about what runs."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return "on" if _pywrap_util_port.IsMklEnabled() else "off"
    except (ImportError, AttributeError):
        return None


def _tensorflow(spec: TrialSpec) -> dict[str, Any]:
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    threading = tf.config.threading
    for get, set_ in (
        (threading.get_intra_op_parallelism_threads, threading.set_intra_op_parallelism_threads),
        (threading.get_inter_op_parallelism_threads, threading.set_inter_op_parallelism_threads),
    ):
        if get() != spec.threads:
            try:
                set_(spec.threads)
            except RuntimeError:
                raise RuntimeError(
                    f"threads: TensorFlow in this process already runs with {get()} threads and "
                    f"cannot switch to {spec.threads}; run it in a fresh worker"
                ) from None
    if spec.deterministic:
        tf_config.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()
    return {
        "tf_onednn": tf_onednn(),
        "tf_intra_threads": threading.get_intra_op_parallelism_threads(),
        "tf_inter_threads": threading.get_inter_op_parallelism_threads(),
        "deterministic_in_force": bool(tf_config.is_op_determinism_enabled()),
    }


def apply(spec: TrialSpec) -> dict[str, Any]:
    """Put the spec's threads and determinism into force; return what is in force. A kernel level
    this node's CPU cannot run is refused first: its libraries would die of SIGILL, not fail."""
    isa.check(spec.cpu_isa)
    import scipy.linalg  # noqa: F401 - loads scipy's BLAS now, so every trial sees the same pools
    import sklearn.utils  # noqa: F401
    from threadpoolctl import threadpool_info, threadpool_limits

    # scikit-learn has no determinism switch: nothing to read back, so nothing is claimed.
    settings: dict[str, Any] = {"deterministic_in_force": None}
    if spec.library == "torch":
        settings.update(_torch(spec))
    elif spec.library == "tensorflow":
        settings.update(_tensorflow(spec))
    # After the library's import, so that its own OpenMP runtime is limited (and listed) too.
    threadpool_limits(limits=spec.threads)  # BLAS and OpenMP pools, process-wide
    pools = threadpool_info()
    settings["blas_threads"] = max((p["num_threads"] for p in pools), default=None)
    settings["blas"] = "; ".join(  # sorted: the order threadpoolctl finds libraries in varies
        sorted(
            f"{p.get('internal_api')} {p.get('version')} ({p.get('architecture')}, {p['num_threads']} threads)"
            for p in pools
        )
    )
    settings["determinism_env"] = json.dumps(
        {k: os.environ.get(k) for k in RECORDED_ENV}, sort_keys=True
    )
    settings.update(isa.in_force(spec.library))
    return settings
