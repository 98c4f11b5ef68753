"""`python -m bench verify RUN [--format text|json]`: is this run folder what bench wrote?

For a folder copied from elsewhere (or kept for a while): every part the run's manifest
(bench.manifest) lists is present with its size and sha256, no part is there that it does not
list, every part's columns are this version's schema (or an older one's), every trial key has
one row (the run's final rows: error rows a resume ran again were moved aside, so a clean run
has exactly one row per key, ok or error), and the config and the bench version are present and
as the manifest recorded them. Each problem is one line naming the file.

A run whose manifest still says `writing` (its sweep stopped or was killed before its end) is
checked as far as it was written, with a note that it is unfinished; the exit status is as for
any run: 0 when nothing is wrong, 1 with a part it does not list yet (which a resume takes in).

Exit status: 0 verified; 1 one or more problems; 2 bad input (no such folder, not a bench run);
3 nothing wrong found, but the run has no manifest because an older bench wrote it, so its parts
could not be checked against checksums (everything else was).

Resume (`run_id=` of an existing run) and replay call `refusal` before any work: a run that fails
is refused in one line naming its first problem. A resume takes in what a killed driver leaves
(`bench.manifest`: unlisted parts and duplicate rows while the manifest says `writing`).
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bench import manifest as mf
from bench import rows, store
from bench.cli_common import RefusingParser

OK, FAILED, BAD_INPUT, NO_MANIFEST = 0, 1, 2, 3
# What a driver killed while writing leaves, and its resume repairs (bench.manifest).
LEFT_BY_A_KILL = ("unlisted part", "duplicate rows")


class VerifyError(ValueError):
    """Bad input: the path is not a bench run folder (exit 2)."""


@dataclass(frozen=True)
class Problem:
    kind: str  # "missing part", "changed part", "unlisted part", "schema", "duplicate rows", ...
    name: str  # the file (or what) it concerns
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind}: {self.name}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class Report:
    run: Path
    written_by: str
    has_manifest: bool = False
    state: str | None = None  # the manifest's: writing | closed
    parts: int = 0
    rows: int = 0
    keys: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def code(self) -> int:
        if self.problems:
            return FAILED
        return OK if self.has_manifest else NO_MANIFEST

    def to_json(self) -> dict:
        return {
            "run": str(self.run), "exit_code": self.code, "verified": self.code == OK,
            "manifest": self.has_manifest, "state": self.state, "bench_version": self.written_by,
            "parts": self.parts, "rows": self.rows, "trial_keys": self.keys,
            "problems": [{"kind": p.kind, "name": p.name, "detail": p.detail, "message": str(p)}
                         for p in self.problems],
            "notes": self.notes,
        }  # fmt: skip


def _short(digest: str) -> str:
    return f"{digest[:12]}..."


def _meta_name(files: store.RunFiles, path: Path) -> str:
    """A bookkeeping file as a user finds it: `.<run_id>/config.yaml` (legacy: `_config.yaml`)."""
    return path.name if files.legacy else f"{files.meta.name}/{path.name}"


def check(run: str | Path) -> Report:
    """Every check on the run folder `run`; VerifyError when it is not one."""
    run = Path(run)
    if not run.is_dir():
        raise VerifyError(f"{run}: no such folder")
    files = store.run_files(run)
    if not (files.config.exists() or files.manifest.exists() or store.part_files(run)):
        raise VerifyError(f"{run}: not a bench run folder (no part files, no {files.config})")
    report = Report(run, store.run_version(run))
    bad = report.problems
    for path, kind in ((files.config, "missing config"), (files.version, "missing version")):
        if not path.is_file() and (kind == "missing config" or files.manifest.exists()):
            bad.append(Problem(kind, _meta_name(files, path)))
    try:
        manifest = mf.Manifest.load(files.manifest)
    except ValueError as exc:
        bad.append(Problem("unreadable manifest", _meta_name(files, files.manifest), str(exc)))
        manifest = None
    on_disk = {p.name: p for p in store.part_files(run)}
    if manifest is None and files.manifest.exists():
        pass  # reported above; the parts are still read below
    elif manifest is None:
        # the earlier layout (bookkeeping inside the run folder) predates manifests, whatever
        # its version file says (a run copied into that layout keeps its version)
        if _version(report.written_by) >= _version(mf.SINCE) and not files.legacy:
            bad.append(Problem("missing manifest", _meta_name(files, files.manifest)))
        else:
            report.notes.append(
                f"no manifest: written by bench {report.written_by} < {mf.SINCE}; parts were "
                "not checked against checksums (schema and rows were)"
            )
    else:
        report.has_manifest, report.state = True, manifest.state
        bad += _against_manifest(files, manifest, on_disk)
    report.parts = len(on_disk)
    # a run in the earlier layout keeps parts from before schema versions, manifest or not
    strict = report.has_manifest and not files.legacy
    bad += _read_parts(report, list(on_disk.values()), strict=strict)
    journals = store.journal_files(files.staging)
    if journals or report.state == mf.WRITING:
        held = lock_holder(files)
        report.notes.append(
            f"being written by {held}" if held else
            f"unfinished: the driver stopped before closing the run ({len(journals)} journal(s) "
            f"hold rows not yet in a part); resume it with run_id={run.name}"
        )  # fmt: skip
    return report


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split("+")[0].split(".")[:3])
    except ValueError:
        return (0,)


def _against_manifest(
    files: store.RunFiles, manifest: mf.Manifest, on_disk: dict[str, Path]
) -> list[Problem]:
    """Config, version and every part against the manifest's record of them."""
    out: list[Problem] = []
    recorded = manifest.data.get("config_sha256")
    if files.config.is_file() and recorded and (now := mf.sha256_file(files.config)) != recorded:
        detail = f"sha256 {_short(now)} now, {_short(recorded)} in the manifest"
        out.append(Problem("changed config", _meta_name(files, files.config), detail))
    version = manifest.data.get("bench_version")
    if files.version.is_file() and version and store.run_version(files.rows) != version:
        detail = f"{store.run_version(files.rows)} now, {version} in the manifest"
        out.append(Problem("changed version", _meta_name(files, files.version), detail))
    listed = manifest.entries()
    for name in sorted(listed.keys() - on_disk.keys()):
        out.append(Problem("missing part", name))
    for name in sorted(on_disk.keys() - listed.keys()):
        why = "written after the manifest's last update: resuming the run takes it in"
        out.append(Problem("unlisted part", name, why if manifest.state == mf.WRITING else ""))
    for name in sorted(listed.keys() & on_disk.keys()):
        entry, path = listed[name], on_disk[name]
        size = path.stat().st_size
        if size != entry.bytes:
            out.append(
                Problem("changed part", name, f"{size} bytes, {entry.bytes} in the manifest")
            )
        elif (digest := mf.sha256_file(path)) != entry.sha256:
            detail = f"sha256 {_short(digest)} on disk, {_short(entry.sha256)} in the manifest"
            out.append(Problem("changed part", name, detail))
    return out


def _read_parts(report: Report, parts: list[Path], strict: bool) -> list[Problem]:
    """Each part's footer and schema, and its trial keys: one row per key over the whole run.
    `strict` (a run with a manifest, so every part was written by a bench that records its
    schema version): a part without `bench.schema_version` is a problem too."""
    out: list[Problem] = []
    where: dict[str, list[str]] = defaultdict(list)
    for path in parts:
        try:
            meta = pq.ParquetFile(path).metadata
            schema = meta.schema.to_arrow_schema()
        except (OSError, pa.ArrowException) as exc:
            detail = " ".join(str(exc).split())[:200]
            out.append(Problem("unreadable part", path.name, detail))
            continue
        problem = store._schema_problem(schema)
        missing = [c for c in ("trial_key", "status") if c not in schema.names]
        version = (schema.metadata or {}).get(store.META_SCHEMA_VERSION)
        if problem is None and missing:
            problem = f"no {' or '.join(missing)} column"
        if problem is None and version is None and strict:
            problem = "no bench.schema_version in its metadata"
        if problem is None and version is not None and int(version) > rows.SCHEMA_VERSION:
            problem = (
                f"schema version {int(version)}, newer than this bench's {rows.SCHEMA_VERSION}"
            )
        if problem:
            out.append(Problem("schema", path.name, problem))
            continue
        report.rows += meta.num_rows
        for key in pq.read_table(path, columns=["trial_key"]).column(0).to_pylist():
            where[key].append(path.name)
    report.keys = len(where)
    twice = {k: v for k, v in where.items() if len(v) > 1}
    if twice:
        key, names = next(iter(sorted(twice.items())))
        detail = f"e.g. {key[:12]} in {', '.join(sorted(set(names)))}; a resume keeps one"
        out.append(Problem("duplicate rows", f"{len(twice)} trial key(s) with more than one row",
                           detail))  # fmt: skip
    return out


def lock_holder(files: store.RunFiles) -> str | None:
    """Who holds the run's lock right now (a driver writing it), without taking it for long or
    writing anything: a shared, non-blocking flock on a read-only descriptor."""
    import fcntl

    try:
        fd = os.open(files.lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        return os.read(fd, 200).decode(errors="replace").strip() or "another process"
    except OSError:
        return None
    finally:
        os.close(fd)


def refusal(run: str | Path, resume: bool = False) -> str | None:
    """Why resume (`resume=True`) or replay must not touch `run`, in one line, or None. A resume
    takes in what a killed driver leaves (LEFT_BY_A_KILL, while the manifest says `writing`);
    a run without a manifest (an older bench's) is not refused for that alone."""
    try:
        report = check(run)
    except VerifyError:
        return None  # not a run folder: the caller says so in its own words
    problems = report.problems
    if resume and report.state == mf.WRITING:
        problems = [p for p in problems if p.kind not in LEFT_BY_A_KILL]
    if not problems:
        return None
    # An unreadable part the manifest does not list (or a run without one) first, with the
    # command that moves it out of the way, last on the line (store.check_parts's advice): the
    # one problem a user can mend in place. A listed part that changed is not mended so.
    changed = {p.name for p in problems if p.kind == "changed part"}
    problems = sorted(problems, key=lambda p: p.kind != "unreadable part" or p.name in changed)
    first = problems[0]
    more = f"; {len(problems) - 1} more" if len(problems) > 1 else ""
    line = f"{run} fails verification ({first}{more}); see: python -m bench verify {run}"
    if first.kind == "unreadable part":
        line += f"; move it aside with: {store._mv_aside(Path(run) / first.name)}"
    return line


def text(report: Report) -> str:
    lines = [str(p) for p in report.problems] + [f"note: {n}" for n in report.notes]
    counts = f"{report.parts} parts, {report.rows} rows, {report.keys} trial keys"
    if report.code == OK and report.state == mf.WRITING:  # stopped or killed before its end
        lines.append(f"{report.run}: verified as far as written, unfinished ({counts}; "
                     f"config and bench {report.written_by} as the manifest lists them)")  # fmt: skip
    elif report.code == OK:
        lines.append(f"{report.run}: verified ({counts}; config and bench "
                     f"{report.written_by} as the manifest lists them)")  # fmt: skip
    elif report.code == NO_MANIFEST:
        lines.append(f"{report.run}: no manifest; nothing else wrong ({counts})")
    else:
        lines.append(f"{report.run}: FAILED, {len(report.problems)} problem(s) ({counts})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = RefusingParser(
        prog="python -m bench verify",
        description="Check a run folder against its manifest: parts present and unchanged, "
        "schema, one row per trial key, config and version. Exit 0 verified, 1 problems, "
        "2 bad input, 3 no manifest (an older bench's run) and nothing else wrong.",
        refusal=VerifyError,
    )
    parser.add_argument("run_dir", metavar="RUN", type=Path, help="results/<sweep>/<run_id>")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    try:
        ns = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        report = check(ns.run_dir)
    except VerifyError as exc:
        print(f"bench verify: error: {exc}", file=sys.stderr)
        return BAD_INPUT
    if ns.format == "json":
        print(json.dumps(report.to_json(), indent=1))
    else:
        print(text(report))
    return report.code
