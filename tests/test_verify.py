"""Verifiable results (issue 22 point 6): a run's manifest and `python -m bench verify`.

One small run (the smoke sweep, scikit-learn only, two parts) is made once per module in this
process (`bench.perf_gate.run_inline`: the run folder `python -m bench` writes, without Ray's
start-up); each test damages its own copy of the results folder, both the run folder and its
hidden bookkeeping folder, as a user copying a run would. Resume and replay are refused before
Ray starts, so they run here in-process too; one test runs the real command line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import manifest as mf
from bench import store, verify

ARGS = ["+sweep=smoke", "libraries=[sklearn]", "progress=false", "rows_per_part=2"]
RUN_ID = "v"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The results folder of one finished run (4 trials in 2 parts)."""
    from bench.perf_gate import run_inline

    results = tmp_path_factory.mktemp("made")
    run_inline(ARGS, results, RUN_ID, rows_per_part=2)
    return results


@pytest.fixture
def run(made: Path, tmp_path: Path) -> Path:
    """This test's copy of the run (at another path, as a folder copied from elsewhere)."""
    shutil.copytree(made, tmp_path / "results")
    return tmp_path / "results" / "smoke" / RUN_ID


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def verified(run: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = verify.main([str(run), *extra])
    return code, capsys.readouterr().out


def test_a_clean_run_verifies_from_the_command_line(made: Path) -> None:
    run = made / "smoke" / RUN_ID
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "verify", str(run)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verified (2 parts, 4 rows, 4 trial keys" in proc.stdout
    listed = mf.Manifest.load(store.run_files(run).manifest)
    assert listed.state == mf.CLOSED
    assert sorted(listed.entries()) == [p.name for p in store.part_files(run)]
    assert sorted(run.iterdir()) == store.part_files(run), "the run folder holds parts only"


def test_a_copied_folder_verifies_and_says_so_in_json(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = verified(run, capsys, "--format", "json")
    report = json.loads(out)
    assert code == 0 and report["verified"] and report["problems"] == []
    assert (report["parts"], report["rows"], report["trial_keys"]) == (2, 4, 4)


def _tamper(run: Path, how: str) -> str:
    """Damage the run one way; return the line verify must print."""
    first, second = store.part_files(run)
    files = store.run_files(run)
    if how == "flip":
        flip_a_byte(first)
        return f"changed part: {first.name} (sha256 "
    if how == "delete":
        second.unlink()
        return f"missing part: {second.name}"
    if how == "extra":
        shutil.copy(first, run / "part-99999-extra.parquet")
        return "unlisted part: part-99999-extra.parquet"
    if how == "config":
        files.config.unlink()
        return f"missing config: .{RUN_ID}/config.yaml"
    if how == "edit config":
        files.config.write_text(files.config.read_text().replace("seeds:", "seeds:  "))
        return f"changed config: .{RUN_ID}/config.yaml"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["flip", "delete", "extra", "config", "edit config"])
def test_damage_is_reported_by_name(
    run: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    line = _tamper(run, how)
    code, out = verified(run, capsys)
    assert code == verify.FAILED, out
    assert any(o.startswith(line) for o in out.splitlines()), out
    assert out.splitlines()[-1].startswith(f"{run}: FAILED")


def test_an_extra_copy_of_a_part_is_also_reported_as_duplicate_rows(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _tamper(run, "extra")
    _, out = verified(run, capsys)
    assert "duplicate rows: 2 trial key(s) with more than one row" in out


def test_resume_of_a_damaged_run_is_refused_in_one_line_writing_nothing(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.cli import main

    line = _tamper(run, "flip")
    results = run.parent.parent
    before = snapshot(results)
    assert main([*ARGS, f"results_dir={results}", f"run_id={RUN_ID}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("bench: error: run_id: not resuming: ") and line in lines[0]
    assert f"python -m bench verify {run}" in lines[0]
    assert snapshot(results) == before


def test_replay_of_a_damaged_run_is_refused_in_one_line_writing_nothing(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench import replay

    line = _tamper(run, "delete")
    before = snapshot(run.parent)
    assert replay.main([str(run), "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench replay: error: not replaying: ")
    assert line in lines[0] and "python -m bench verify" in lines[0]
    assert snapshot(run.parent) == before


def test_a_run_without_a_manifest_says_so_and_is_still_checked(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run an older bench wrote: exit 3, not a failure; schema and rows are still read. A run
    of a bench that writes manifests has lost its own: a failure."""
    files = store.run_files(run)
    files.manifest.unlink()
    files.version.write_text(f"{mf.SINCE}\n")
    code, out = verified(run, capsys)
    assert code == verify.FAILED and f"missing manifest: .{RUN_ID}/manifest.jsonl" in out, out
    files.version.write_text("0.8.0\n")
    code, out = verified(run, capsys)
    assert code == verify.NO_MANIFEST, out
    assert f"note: no manifest: written by bench 0.8.0 < {mf.SINCE}" in out
    assert verify.refusal(run) is None and verify.refusal(run, resume=True) is None
    shutil.copy(store.part_files(run)[0], run / "part-99999-extra.parquet")
    code, out = verified(run, capsys)
    assert code == verify.FAILED and "duplicate rows: 2 trial key(s)" in out


def test_what_a_killed_driver_leaves_is_taken_in_by_resume_only(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A part renamed into the run folder just before the driver died is not listed yet and the
    manifest still says `writing`: verify reports it, replay refuses, a resume takes it in. A
    closed run with the same unlisted part is refused by both."""
    files = store.run_files(run)
    manifest = mf.Manifest.load(files.manifest)
    last = store.part_files(run)[-1].name
    manifest.update(remove=[last], state=mf.WRITING)
    code, out = verified(run, capsys)
    assert code == verify.FAILED and f"unlisted part: {last} (written after" in out
    assert "note: unfinished: the driver stopped before closing the run" in out
    assert verify.refusal(run, resume=True) is None
    assert "unlisted part" in verify.refusal(run)
    manifest.update(state=mf.CLOSED)
    assert "unlisted part" in verify.refusal(run, resume=True)


def test_a_resume_lists_every_part_and_closes_the_manifest(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The resume's compaction (store.compact_for_resume) through `bench.rundir.compact`:
    one part listed, the unlisted one taken in, the run verifies once its writer closes."""
    from bench import rundir

    files = store.run_files(run)
    manifest = mf.Manifest.load(files.manifest)
    manifest.update(remove=[store.part_files(run)[-1].name], state=mf.WRITING)
    done = rundir.compact(run, files.config.read_text(), "0.8.0")
    assert len(done) == 4
    assert sorted(mf.Manifest.load(files.manifest).entries()) == [
        p.name for p in store.part_files(run)
    ]
    store.PartWriter(run, manifest=mf.Manifest.load(files.manifest)).close()
    assert verified(run, capsys)[0] == verify.OK


def test_a_workers_part_reaches_the_driver_with_its_entry(run: Path) -> None:
    """rows_to=workers: the task writes its part and hands back its manifest entry (the sha256
    of the bytes it wrote) in its receipt's metadata, which the driver adds to the manifest."""
    from omegaconf import OmegaConf

    from bench import runner
    from bench.sweep import expand

    cfg = OmegaConf.load(store.run_files(run).config)
    spec = expand(cfg)[0]
    staging = store.run_files(run).staging
    receipt = runner._execute(
        [spec.fields_dict()], runner.load_checked(cfg), None, None, run_id=RUN_ID,
        part_dir=str(run), staging=str(staging), config="x",
    )  # fmt: skip
    entry = mf.entry_from_json(receipt.schema.metadata[runner.PART_ENTRY])
    assert entry == mf.entry_of(run / entry.name)
    assert receipt.num_rows == entry.rows == 1


def test_a_change_cut_short_by_a_crash_is_ignored(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The manifest is a log of changes, one line each, appended and fsynced; a last line with
    no newline is a change that had not happened (its part was not yet renamed, or not yet
    deleted) and is ignored, as a journal's cut-short batch is."""
    files = store.run_files(run)
    with open(files.manifest, "a") as f:
        f.write('{"remove": "part-')
    assert verified(run, capsys)[0] == verify.OK
    with open(files.manifest, "a") as f:
        f.write("\n")
    code, out = verified(run, capsys)
    assert code == verify.FAILED and f"unreadable manifest: .{RUN_ID}/manifest.jsonl" in out


def test_a_lost_part_is_accepted_by_saying_so_in_the_manifest(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/faults.md: a user who accepts a lost part (its trials run again) appends its
    removal to the manifest; the run then verifies and resumes."""
    lost = store.part_files(run)[-1]
    lost.unlink()
    assert verify.refusal(run, resume=True) is not None
    with open(store.run_files(run).manifest, "a") as f:
        f.write(json.dumps({"remove": lost.name}) + "\n")
    assert verified(run, capsys)[0] == verify.OK
    assert verify.refusal(run, resume=True) is None


def test_an_update_after_a_cut_line_cuts_it_off_first(
    run: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change appended after a line cut short by a crash would turn it into a corrupt middle
    line (the run refused for good): the update cuts it off first; an append that fails (a full
    disk) is cut off as well."""
    import errno
    import os

    files = store.run_files(run)
    with open(files.manifest, "a") as f:
        f.write('{"remove": "part-')
    manifest = mf.Manifest.load(files.manifest)
    manifest.update(state=mf.WRITING)
    assert mf.Manifest.load(files.manifest).state == mf.WRITING
    before = files.manifest.read_bytes()
    assert before.endswith(b'{"state": "writing"}\n')

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        manifest.update(state=mf.CLOSED)
    monkeypatch.undo()
    assert files.manifest.read_bytes() == before
    manifest.update(state=mf.CLOSED)
    assert verified(run, capsys)[0] == verify.OK


def test_a_stopped_sweep_leaves_its_manifest_writing(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only a sweep that ran to its end closes the manifest. A stopped one (Ctrl-C, a stop
    signal, a full disk) leaves it `writing`, so a worker's part the driver had not listed yet
    is taken in by the resume instead of refusing it; verify says the run is unfinished."""
    files = store.run_files(run)
    manifest = mf.Manifest.load(files.manifest)
    last = store.part_files(run)[-1].name
    manifest.update(remove=[last], state=mf.WRITING)  # as a resume starts, a worker's part
    store.PartWriter(run, manifest=mf.Manifest.load(files.manifest)).close(complete=False)
    assert mf.Manifest.load(files.manifest).state == mf.WRITING
    code, out = verified(run, capsys)
    assert code == verify.FAILED and "note: unfinished" in out
    assert verify.refusal(run, resume=True) is None
    mf.Manifest.load(files.manifest).update(add=[mf.entry_of(run / last)])
    code, out = verified(run, capsys)
    assert code == verify.OK and "note: unfinished" in out
    store.PartWriter(run, manifest=mf.Manifest.load(files.manifest)).close(complete=True)
    code, out = verified(run, capsys)
    assert code == verify.OK and "unfinished" not in out
