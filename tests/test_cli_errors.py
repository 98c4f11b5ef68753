"""Bad input through `python -m bench`: exit 2, one line naming the key or path, no results.

Each case is a separate interpreter, as a user would meet it. Refusals happen before Ray starts,
so each takes about a second; the generous time bound below would still catch a Ray start plus
training (the smoke sweep takes half a minute).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

REFUSE_WITHIN_S = 20.0


def assert_refused(proc, results_dir: Path, elapsed: float, needle: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, f"rc={proc.returncode}\nstderr:\n{proc.stderr[-3000:]}"
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("bench: error: ")
    assert needle in lines[0], lines[0]
    assert not results_dir.exists() or not any(results_dir.rglob("*")), sorted(
        results_dir.rglob("*")
    )
    assert elapsed < REFUSE_WITHIN_S
    return lines[0]


def run_bad(bench_cli, tmp_path: Path, *args: str):
    results_dir = tmp_path / "results"
    start = time.monotonic()
    proc = bench_cli(
        ["+sweep=smoke", f"results_dir={results_dir}", "progress=false", *args], cwd=tmp_path
    )
    return proc, results_dir, time.monotonic() - start


@pytest.mark.parametrize(
    ("args", "key", "needle"),
    [
        (["libraries=[jax]"], "libraries", "jax"),
        (["libraries=[torch,jax]"], "libraries", "jax"),
        (["seeds.n=0"], "seeds.n", "seeds.n"),
        (["seeds.n=abc"], "seeds.n", "abc"),
        (["seeds.base=-1"], "seeds.base", "-1"),
        (["modle.epochs=3"], "modle", "modle"),
        (["model.epoch=3"], "model.epoch", "epoch"),
        (["dataset=nope"], "dataset", "nope"),
        (["model=cnn"], "model", "cnn"),
        (["threads=0"], "threads", "threads"),
        (["dataset.test_size=1.5"], "dataset.test_size", "1.5"),
        (["run_id=../escape"], "run_id", "../escape"),
        (["cpu_isa=avx9"], "cpu_isa", "avx9"),
        (["sweep.cpu_isa=[native,native]"], "sweep.cpu_isa", "twice"),
        # logreg() in scikit-learn's defaults draws nothing: varying seed_order alone is no study
        (
            ["libraries=[sklearn]", "mode=defaults", "model=logreg", "sweep.varied=[order]"],
            "sweep.varied",
            "seed_order does not reach the training",
        ),
    ],
)
def test_bad_config_is_refused(
    bench_cli, tmp_path: Path, args: list[str], key: str, needle: str
) -> None:
    line = assert_refused(*run_bad(bench_cli, tmp_path, *args), needle=needle)
    assert line.removeprefix("bench: error: ").startswith(key), line


def test_no_sweep_is_refused(bench_cli, tmp_path: Path) -> None:
    start = time.monotonic()
    proc = bench_cli([f"results_dir={tmp_path / 'results'}"], cwd=tmp_path)
    assert_refused(proc, tmp_path / "results", time.monotonic() - start, "+sweep=")


def test_missing_heart_file_is_refused(bench_cli, tmp_path: Path) -> None:
    assert_refused(
        *run_bad(bench_cli, tmp_path, "dataset=heart", "dataset.path=/nonexistent"),
        needle="/nonexistent",
    )


def test_heart_file_with_wrong_checksum_is_refused(
    bench_cli, tmp_path: Path, heart_file: Path
) -> None:
    """One changed byte is enough: the message names the file and the key."""
    data = bytearray(heart_file.read_bytes())
    data[-2] = ord("2") if data[-2] != ord("2") else ord("3")
    bad = tmp_path / "heart" / "processed.cleveland.data"
    bad.parent.mkdir()
    bad.write_bytes(bytes(data))
    line = assert_refused(
        *run_bad(bench_cli, tmp_path, "dataset=heart", f"dataset.path={bad}"), needle=str(bad)
    )
    assert "dataset.path" in line and "sha256" in line


def test_heart_folder_with_wrong_file_is_refused(
    bench_cli, tmp_path: Path, heart_dir: Path
) -> None:
    """A folder is accepted as the path; what is in it is still checked."""
    folder = tmp_path / "heart"
    folder.mkdir()
    (folder / "processed.cleveland.data").write_text("63,1,1,145,233,1,2,150,0,2.3,3,0,6,0\n")
    assert_refused(
        *run_bad(bench_cli, tmp_path, "dataset=heart", f"dataset.path={folder}"),
        needle="sha256",
    )


def test_bad_synthetic_shape_is_refused(bench_cli, tmp_path: Path) -> None:
    """make_classification needs n_classes * 2 <= 2**n_informative; refuse it as bad input."""
    assert_refused(
        *run_bad(
            bench_cli,
            tmp_path,
            "dataset=synthetic",
            "dataset.n_informative=1",
            "dataset.n_classes=3",
        ),
        needle="dataset",
    )


def test_print_config_runs_nothing(bench_cli, tmp_path: Path, heart_dir: Path) -> None:
    """The good-input counterpart: --cfg composes, prints and exits 0 without writing results."""
    proc = bench_cli(
        ["--cfg", "+sweep=smoke", "dataset=heart", f"dataset.path={heart_dir}"], cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "name: heart" in proc.stdout and str(heart_dir) in proc.stdout
    assert not (tmp_path / "results").exists()
