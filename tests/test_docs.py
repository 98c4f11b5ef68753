"""The docs (README.md and docs/, built by mkdocs) as a user meets them: the site builds with
warnings as errors, and every `python -m bench` command they show composes (issue 18, point 7).

Commands that name the user's own code (`mynets`, `mymodels`) or a placeholder (`<run_id>`) are
left to the tests that run them with that code (tests/test_worked_example.py)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bench.config import compose

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
USER_CODE = ("mynets", "mymodels")


def _commands() -> list[tuple[str, list[str]]]:
    """(page, arguments after `python -m bench`) of every sweep command in a bash block."""
    out = []
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #")[0].strip()
                if "python -m bench " not in line:
                    continue
                args = shlex.split(line.split("python -m bench ", 1)[1])
                if (
                    args[0]
                    in (
                        "report",
                        "replay",
                        "export",
                        "stream",
                        "monitor",
                        "score",
                        "gate",
                        "verify",
                    )
                    or args[0].startswith("-")
                    and args[0] != "--cfg"
                ):
                    continue
                if any("<" in a or a.split("=")[-1].startswith(USER_CODE) for a in args):
                    continue
                if args[0] == "--cfg":  # --cfg [job|hydra|all] prints what these compose
                    args = args[2:] if args[1] in ("job", "hydra", "all") else args[1:]
                out.append((page.name, args))
    return out


COMMANDS = _commands()


def test_the_docs_show_commands_to_check() -> None:
    assert len(COMMANDS) >= 20 and {p for p, _ in COMMANDS} >= {"README.md", "determinism.md"}


@pytest.mark.parametrize(
    ("page", "args"), COMMANDS, ids=lambda v: v if isinstance(v, str) else " ".join(v)
)
def test_every_command_shown_composes(page: str, args: list[str]) -> None:
    compose(args)  # a ConfigError names the key that the page got wrong


def test_the_site_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    assert (tmp_path / "index.html").exists() and (tmp_path / "why-bench" / "index.html").exists()
