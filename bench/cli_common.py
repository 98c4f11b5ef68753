"""What bench's subcommands share: one-line refusals, markdown tables, files written whole."""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn


class RefusingParser(argparse.ArgumentParser):
    """argparse whose errors raise `refusal(message)` instead of printing the usage: every bench
    command turns bad input into one line (`bench NAME: error: ...`) and exit status 2."""

    def __init__(self, *args: Any, refusal: type[Exception] = ValueError, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refusal = refusal

    def error(self, message: str) -> NoReturn:
        raise self.refusal(message)


def add_trust_option(parser: argparse.ArgumentParser) -> None:
    """`--trust NAME`, for the commands that load stored models (bench.modelstore: the user's
    code is imported only when named)."""
    parser.add_argument("--trust", action="append", default=[], metavar="NAME",
                        help="a type of yours (pkg.Class) or your network's import path that "
                        "the stored models may load; repeatable")  # fmt: skip


def json_plain(value: Any) -> Any:
    """`value` as strict JSON can hold it: NaN as None, infinities as "inf" and "-inf", tuples as
    lists (inside dicts and lists too)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_plain(v) for v in value]
    return value


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """`path` holding `data`, or unchanged: written to a temporary name beside it, then renamed,
    so a crash or a full disk never leaves half a file where a whole one is expected."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_writable(path: str | Path, option: str) -> None:
    """Refuse, before any work, an output file that cannot be written (`option` names it)."""
    parent = Path(path).expanduser().resolve().parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK):
        raise PermissionError(f"{option}: cannot write {path}")
    if Path(path).is_dir():
        raise IsADirectoryError(f"{option}: {path} is a folder")
