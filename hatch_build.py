"""Wheel build step (hatchling's custom hook): put conf/ and slurm/bench.sbatch inside the package.

The repository keeps both at its top; a built wheel carries them as bench/conf and
bench/slurm/bench.sbatch, where bench.paths finds them. An editable install gets no copies: it puts
the checkout on sys.path, and bench reads the checkout's own conf/ and slurm/.
"""

from __future__ import annotations

from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SHIPPED = {"conf": "bench/conf", "slurm/bench.sbatch": "bench/slurm/bench.sbatch"}


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "standard":  # not "editable"
            build_data["force_include"].update(SHIPPED)
