"""Write constraints/ci.txt: `pip freeze` of this environment, limited to what seedbench[all,test]
pulls in (its dependencies and theirs, markers evaluated here). Run it after installing new versions
and a green CI:  python constraints/freeze.py > constraints/ci.txt
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

EXTRAS = ("sklearn", "ray", "torch", "tensorflow", "test")  # [all] on the CPU, and [test]
HEADER = """\
# The exact versions CI tests (Python 3.11, Linux x86_64, CPU): use with
#   pip install -e ".[all,test]" -c constraints/ci.txt
# pyproject.toml states the ranges; this file pins one known-good set inside them. torch is pinned
# without a local label, so that 2.13.0+cpu (PyTorch's CPU index, or a local wheel) satisfies it.
# Regenerate with: python constraints/freeze.py > constraints/ci.txt
"""


def closure(roots: list[str]) -> dict[str, str]:
    """{name: installed version} of every distribution the requirements reach."""
    found: dict[str, str] = {}
    done: set[tuple[str, frozenset[str]]] = set()
    todo = [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in done:
            continue
        done.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            sys.exit(f"{req.name} is not installed here; install seedbench[all,test] first")
        found[key[0]] = dist.version
        for line in dist.requires or []:
            sub = Requirement(line)
            wanted = sub.marker is None or any(
                sub.marker.evaluate({"extra": extra}) for extra in (*req.extras, "")
            )
            if wanted:
                todo.append(sub)
    return found


def main() -> None:
    project = tomllib.loads(
        Path(__file__).resolve().parents[1].joinpath("pyproject.toml").read_text()
    )
    roots = list(project["project"]["dependencies"])
    for extra in EXTRAS:
        roots += project["project"]["optional-dependencies"][extra]
    pins = closure(roots)
    pins.pop(canonicalize_name(project["project"]["name"]), None)
    print(HEADER, end="")
    for name in sorted(pins):
        print(f"{name}=={pins[name].split('+')[0]}")


if __name__ == "__main__":
    main()
