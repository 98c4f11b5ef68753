"""CPU instruction sets: what the CPU offers, what a kernel level asks of each library, what runs.

The same spec trains to different bits under different CPU kernels: PyTorch, numpy, OpenBLAS, MKL
and oneDNN each pick the widest vector instructions the CPU has when they load, and a wider
vector sums in another order. A trial's `cpu_isa` caps them all at one level, like `threads`:

| level | PyTorch (ATen) | MKL | oneDNN | OpenBLAS | numpy |
|---|---|---|---|---|---|
| `native` | nothing set: each library picks for this CPU | | | | |
| `avx512` | `avx512` | `AVX512` | `AVX512_CORE` | `SkylakeX` | no target beyond x86-64-v4 |
| `avx2` | `avx2` | `AVX2` | `AVX2` | `Haswell` | no target beyond x86-64-v3 |
| `baseline` | `default` | `SSE4_2` | `SSE41` | `Nehalem` | no target beyond x86-64-v2 |

These are environment variables, read once when a library loads, so the runner starts each
worker with them (`level_env`), as it does for thread counts. Some of them force a level rather
than cap it (`ATEN_CPU_CAPABILITY=avx512` on a CPU without AVX-512 dies of SIGILL at its first
vector kernel), so a level the CPU lacks is refused (`check`) before anything runs, and so is a
sweep comparing `native` with other levels while one of these variables is already set by hand
(`check_environment`: `native` trials would inherit it). What a row
records is read back in the worker (`in_force`): the CPU's vendor and the flags that matter,
PyTorch's capability, numpy's SIMD targets in use, the oneDNN limit, and (bench.determinism) the
OpenBLAS core type threadpoolctl reports. TensorFlow's own Eigen kernels are compiled for one
instruction set when the wheel is built; only its oneDNN ops follow the level.
"""

from __future__ import annotations

import functools
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

LEVELS = ("native", "avx512", "avx2", "baseline")
# Highest first; `native` is no cap at all. Rank 3: numpy targets beyond x86-64-v4 (AVX512_ICL,
# AVX512_SPR, ...), which no level keeps but native.
_RANK = {"baseline": 0, "avx2": 1, "avx512": 2}
_BEYOND = 3

# /proc/cpuinfo flags a level's kernels execute: x86-64-v4's AVX-512 subsets, v3, v2.
REQUIRED_FLAGS: dict[str, tuple[str, ...]] = {
    "avx512": ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"),
    "avx2": ("avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "movbe"),
    "baseline": ("ssse3", "sse4_1", "sse4_2", "popcnt", "cx16"),
}
# Flags recorded in every row: what decides which kernels a library may pick.
RECORDED_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512cd", "avx512bw",
    "avx512dq", "avx512vl", "avx512ifma", "avx512vbmi", "avx512_vnni", "avx512_bf16",
    "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
)  # fmt: skip

ENV_KEYS = (
    "ATEN_CPU_CAPABILITY",
    "MKL_ENABLE_INSTRUCTIONS",
    "ONEDNN_MAX_CPU_ISA",
    "OPENBLAS_CORETYPE",
    "NPY_DISABLE_CPU_FEATURES",
)
_FIXED_ENV = {
    "avx512": {
        "ATEN_CPU_CAPABILITY": "avx512",
        "MKL_ENABLE_INSTRUCTIONS": "AVX512",
        "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
        "OPENBLAS_CORETYPE": "SkylakeX",
    },
    "avx2": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "OPENBLAS_CORETYPE": "Haswell",
    },
    "baseline": {
        "ATEN_CPU_CAPABILITY": "default",
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "OPENBLAS_CORETYPE": "Nehalem",
    },
}


class UnsupportedLevel(ValueError):
    """A kernel level this CPU cannot run; the message names the level and the missing flags."""


@dataclass(frozen=True)
class Cpu:
    vendor: str | None  # GenuineIntel, AuthenticAMD
    model: str
    flags: frozenset[str] | None  # None where /proc/cpuinfo cannot be read (not Linux)


@functools.cache
def cpu() -> Cpu:
    """This machine's CPU, from the first processor of /proc/cpuinfo."""
    found: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("vendor_id", "model name", "flags") and key not in found:
                    found[key] = value.strip()
                if not line.strip() and found:  # the end of the first processor's block
                    break
    except OSError:
        pass
    flags = found.get("flags")
    return Cpu(
        vendor=found.get("vendor_id"),
        model=found.get("model name") or platform.processor() or platform.machine(),
        flags=None if flags is None else frozenset(flags.split()),
    )


def missing_flags(level: str) -> list[str] | None:
    """The flags `level` needs that this CPU lacks ([] when it can run it); None when the CPU's
    flags cannot be read or it is not an x86 CPU (then only `native` is known to be safe)."""
    if level == "native":
        return []
    flags = cpu().flags
    if flags is None or platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    return [f for f in REQUIRED_FLAGS[level] if f not in flags]


def forced(env: Mapping[str, str]) -> str | None:
    """The level an environment's ATEN_CPU_CAPABILITY forces PyTorch to (avx512, avx2, baseline),
    or None."""
    value = env.get("ATEN_CPU_CAPABILITY")
    return {"avx512": "avx512", "avx2": "avx2", "default": "baseline"}.get(value or "")


def check(level: str, key: str = "cpu_isa", env: Mapping[str, str] | None = None) -> None:
    """Refuse a level this CPU cannot run, naming `key`; nothing when it can. `native` sets
    nothing, so what the environment already forces (`env`, default: this process's) is checked
    in its place: ATEN_CPU_CAPABILITY=avx512 on a CPU without AVX-512 is as fatal."""
    if level not in LEVELS:
        raise UnsupportedLevel(f"{key}: unknown level {level!r}; expected one of {list(LEVELS)}")
    inherited = forced(os.environ if env is None else env) if level == "native" else None
    if inherited is not None and missing_flags(inherited):
        value = (os.environ if env is None else env)["ATEN_CPU_CAPABILITY"]
        raise UnsupportedLevel(
            f"{key}: native would run with ATEN_CPU_CAPABILITY={value} from the environment, and "
            f"this CPU ({cpu().model}) lacks {', '.join(missing_flags(inherited) or [])}; unset it"
        )
    missing = missing_flags(level)
    model = cpu().model
    if missing is None:
        raise UnsupportedLevel(
            f"{key}: {level} is an x86 kernel level, and this machine's CPU ({model}, "
            f"{platform.machine()}) has no readable x86 flags; use cpu_isa=native"
        )
    if missing:
        able = [lvl for lvl in LEVELS if missing_flags(lvl) == []]
        raise UnsupportedLevel(
            f"{key}: {level} needs {', '.join(missing)}, which this CPU ({model}) lacks; "
            f"levels it runs: {', '.join(able)}"
        )


def numpy_target_rank(name: str) -> int:
    """The level a numpy dispatch target needs: its names changed in numpy 2.4 (X86_V3, X86_V4,
    AVX512_ICL ...) from per-extension ones (AVX2, FMA3, AVX512F, AVX512_SKX ...). The AVX-512
    level is x86-64-v4 (F, CD, BW, DQ, VL: numpy's X86_V4, or AVX512F/CD/_SKX before 2.4); the
    later families (Ice Lake, Sapphire Rapids, Knights ...) rank above it."""
    if name in ("X86_V4", "AVX512F", "AVX512CD", "AVX512_SKX"):
        return _RANK["avx512"]
    if name.startswith("AVX512"):
        return _BEYOND
    if name in ("AVX", "F16C", "FMA3", "FMA4", "XOP", "AVX2", "X86_V3"):
        return _RANK["avx2"]
    return _RANK["baseline"]


def level_env(level: str) -> dict[str, str]:
    """Environment variables that put `level` in force in a process that has not yet loaded the
    libraries; {} for `native`. numpy's are computed from this numpy's own dispatch targets (a
    name numpy does not know only earns a warning, but a wrong list would cap nothing)."""
    if level == "native":
        return {}
    from numpy._core._multiarray_umath import __cpu_dispatch__

    env = dict(_FIXED_ENV[level])
    above = [t for t in __cpu_dispatch__ if numpy_target_rank(t) > _RANK[level]]
    env["NPY_DISABLE_CPU_FEATURES"] = " ".join(above)  # even empty: it replaces one set by hand
    return env


def numpy_simd() -> str:
    """numpy's SIMD targets in use: its baseline and the dispatch targets enabled for this CPU
    and environment (NPY_DISABLE_CPU_FEATURES switches targets off)."""
    from numpy._core._multiarray_umath import (
        __cpu_baseline__,
        __cpu_dispatch__,
        __cpu_features__,
    )

    return " ".join([*__cpu_baseline__, *(t for t in __cpu_dispatch__ if __cpu_features__.get(t))])


def check_environment(levels: set[str], key: str = "cpu_isa") -> None:
    """Refuse to compare `native` with other levels while a level variable is set by hand:
    `native` trials would inherit it (a worker's environment can gain variables, not lose them)
    and run another level's kernels under the name `native`."""
    if "native" not in levels or len(levels) == 1:
        return  # every other level sets each variable itself
    preset = sorted(k for k in ENV_KEYS if os.environ.get(k) is not None)
    if preset:
        raise UnsupportedLevel(
            f"{key}: {', '.join(f'{k}={os.environ[k]}' for k in preset)} is set in this "
            "environment and would cap the native trials too; unset it to compare native with "
            f"{', '.join(sorted(levels - {'native'}))}"
        )


def cpu_columns() -> dict[str, Any]:
    """The row's CPU columns: vendor, and which of RECORDED_FLAGS it has."""
    flags = cpu().flags
    return {
        "cpu_vendor": cpu().vendor,
        "cpu_flags": None if flags is None else " ".join(f for f in RECORDED_FLAGS if f in flags),
    }


def in_force(library: str) -> dict[str, Any]:
    """The row's kernel columns, read in the worker after the libraries loaded."""
    out: dict[str, Any] = {
        "numpy_simd": numpy_simd(),
        "torch_cpu_capability": None,
        "onednn_max_cpu_isa": None,
    }
    if library == "torch":
        import torch

        out["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    if library in ("torch", "tensorflow"):  # both run oneDNN kernels; "ALL" is its own default
        limit = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
        out["onednn_max_cpu_isa"] = limit or "ALL"
    return out
