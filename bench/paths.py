"""Where bench's own files are: the Hydra configs (`conf/`) and the SLURM job template (`slurm/`).

The repository keeps both at its top, beside the package. A wheel carries them inside the package
(`bench/conf`, `bench/slurm`: hatch_build.py, the wheel build step), so an installed bench finds them
there; an editable install or a checkout on PYTHONPATH has no such folder and reads the checkout's.
`BENCH_CONF_DIR` still overrides the configs (bench.config).
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def shipped(name: str) -> Path:
    """`bench/<name>` in an installed package, else `<name>/` beside the package (a checkout)."""
    inside = PACKAGE / name
    return inside if inside.is_dir() else PACKAGE.parent / name


CONF_DIR = shipped("conf")
SBATCH_SCRIPT = shipped("slurm") / "bench.sbatch"
