"""The report: sections follow the data, files are written, and the CLI runs it as a user would."""

from __future__ import annotations

import hashlib
import itertools
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from bench import analysis as ba
from bench import store
from bench.report import report_dir, write_report

SOURCES = ("split", "order", "init", "all", "none")


def _fake_rows(library: str, device: str, deterministic: bool, n: int = 4) -> list[dict]:
    """Rows shaped like a seeds sweep's, with predictions that depend on the seeds."""
    rows = []
    truth = np.array([0] * 10 + [1] * 10)
    for varied in SOURCES:
        for i in range(n):
            seeds = {s: (i if varied in (s, "all") else 0) for s in ("split", "order", "init")}
            key = (library, device, seeds["split"], seeds["order"], seeds["init"])
            rng = np.random.default_rng(int(hashlib.sha256(repr(key).encode()).hexdigest()[:8], 16))
            noisy = device == "cuda" and not deterministic and varied == "none"
            flips = rng.random(20) < (0.15 if library == "torch" else 0.1)
            if noisy:
                flips[i] = not flips[i]
            pred = np.where(flips, 1 - truth, truth)
            start = 3 * seeds["split"]
            weights = hashlib.sha256(repr((key, i if noisy else 0)).encode()).hexdigest()
            rows.append(
                {
                    "trial_key": hashlib.sha256(
                        repr((key, varied, i, deterministic)).encode()
                    ).hexdigest(),
                    "run_id": "test-run",
                    "sweep": "seeds",
                    "status": "ok",
                    "library": library,
                    "library_version": {"torch": "2.13.0", "sklearn": "1.9.1"}[library],
                    "model": "logreg",
                    "dataset": "synthetic",
                    "device": device,
                    "varied": varied,
                    "seed_split": 100 + seeds["split"],
                    "seed_order": 200 + seeds["order"],
                    "seed_init": 300 + seeds["init"],
                    "repeat": i if varied == "none" else 0,
                    "deterministic": deterministic,
                    "threads": 1,
                    "accuracy": float(np.mean(pred == truth)),
                    "fit_seconds": (2.0 if deterministic else 1.0) + 0.01 * i,
                    "weights_sha256": weights,
                    "predictions_sha256": hashlib.sha256(pred.tobytes()).hexdigest(),
                    "test_index": list(range(start, start + 20)),
                    "y_true": truth.tolist(),
                    "y_pred": pred.tolist(),
                    "host": "testhost",
                    "gpu_name": "NVIDIA H100" if device == "cuda" else None,
                }
            )
    return rows


def _write_run(path: Path, rows: list[dict]) -> Path:
    path.mkdir(parents=True)
    pq.write_table(store.to_table(rows), path / "part-00000-test.parquet")
    return path


def _pngs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png"))


def test_cpu_only_run_has_library_sections_and_no_device_section(tmp_path: Path) -> None:
    rows = _fake_rows("torch", "cpu", False) + _fake_rows("sklearn", "cpu", False)
    run = _write_run(tmp_path / "run", rows)
    md_path = write_report(run, n_resamples=200)
    assert md_path == report_dir(run) / "report.md"
    md = md_path.read_text()
    html = (report_dir(run) / "report.html").read_text()
    for heading in ("Spread of accuracy", "Variance by seed source", "Churn", "Comparisons",
                    "Determinism", "Threshold probability"):  # fmt: skip
        assert heading in md and heading in html
    assert "sklearn 1.9.1" in md and "torch 2.13.0" in md
    assert "**device**" not in md and "device levels" not in md
    assert "Fit time with deterministic mode" not in md
    assert {"accuracy_by_group.png", "variance_share.png", "churn_library.png",
            "scatter_library.png"} <= set(_pngs(report_dir(run)))  # fmt: skip
    for image in re.findall(r"!\[[^]]*\]\(([^)]+)\)", md):
        assert (report_dir(run) / image).is_file()
    assert len(pd.read_parquet(run)) == len(rows)  # the report never breaks reading the run


def test_gpu_and_determinism_sections_appear_when_the_data_has_them(tmp_path: Path) -> None:
    rows = (
        _fake_rows("torch", "cpu", False)
        + _fake_rows("torch", "cuda", False)
        + _fake_rows("torch", "cuda", True)
    )
    out = tmp_path / "elsewhere"
    md = write_report(_write_run(tmp_path / "run", rows), out, n_resamples=200).read_text()
    assert "**device**" in md and "Between device levels" in md
    assert "**deterministic**" in md and "Fit time with deterministic mode on / off" in md
    assert "NVIDIA H100" in md
    assert "scatter_device.png" in _pngs(out)
    assert any(name.startswith("churn_device") for name in _pngs(out))
    determinism = md.split("## Determinism")[1].split("##")[0]
    assert "| torch | cuda | no | 1 | 8 | 0 | 4 |" in determinism  # 4 weight hashes in 4 repeats
    # the interval printed beside the ratio of medians is the CI of that ratio, not of the means'
    assert "ratio_median_ci_low" in determinism and "ratio_mean" not in determinism


def test_churn_heatmap_cells_come_from_trials_that_share_their_test_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.analysis import plots

    seen = []
    original = plots.churn_heatmap

    def spy(matrix, title=None, counts=None):
        seen.append((matrix, counts))
        return original(matrix, title) if counts is None else original(matrix, title, counts)

    monkeypatch.setattr(plots, "churn_heatmap", spy)
    rows = _fake_rows("torch", "cpu", False) + _fake_rows("sklearn", "cpu", False)
    write_report(_write_run(tmp_path / "run", rows), n_resamples=100)
    ((matrix, counts),) = seen  # one heatmap, by library
    assert counts is not None  # each cell says how many pairs it averages
    df = pd.DataFrame(rows)
    for library in ("torch", "sklearn"):
        # the split seed sets the test rows: pairs on one split, with other order or init seeds
        trials = df[df["library"] == library].to_dict("records")
        churns = [
            np.mean(np.array(a["y_pred"]) != np.array(b["y_pred"]))
            for a, b in itertools.combinations(trials, 2)
            if a["seed_split"] == b["seed_split"]
            and (a["seed_order"], a["seed_init"]) != (b["seed_order"], b["seed_init"])
        ]
        assert matrix.loc[library, library] == pytest.approx(np.mean(churns))
        assert counts.loc[library, library] == len(churns)


def test_variance_section_reports_a_merged_seed_group_once(tmp_path: Path) -> None:
    rows = [
        {**r, "seed_sources": "split,order+init"}  # MLPClassifier in defaults mode
        for r in _fake_rows("sklearn", "cpu", False)
        if r["varied"] != "init"  # the sweep leaves these out: varied=order covers the group
    ]
    md = write_report(_write_run(tmp_path / "run", rows), n_resamples=100).read_text()
    variance = md.split("## Variance by seed source")[1].split("\n## ")[0]
    assert "| order+init |" in variance
    assert "| order |" not in variance and "| init |" not in variance
    assert "chi-square" in variance


def test_failed_trials_are_listed_and_left_out(tmp_path: Path) -> None:
    rows = _fake_rows("sklearn", "cpu", False, n=2)
    rows.append({**rows[0], "trial_key": "bad", "status": "error", "error": "ValueError: boom",
                 "accuracy": None})  # fmt: skip
    md = write_report(_write_run(tmp_path / "run", rows), n_resamples=100).read_text()
    assert "Trials that did not finish" in md and "ValueError: boom" in md


@pytest.mark.slow
def test_smoke_sweep_with_report_true_and_report_subcommand(
    tmp_path: Path, bench_cli, smoke_run
) -> None:
    """The session's smoke sweep (conftest.py) ran with report=true."""
    assert "report=true" in smoke_run.args
    done, results = smoke_run.proc, smoke_run.results_dir
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (p for p in (results / "smoke").iterdir() if not p.name.startswith("."))
    out_dir = report_dir(run)  # the run's bookkeeping folder, beside it: the run holds parts only
    assert out_dir == results / "smoke" / f".{run.name}" / "report"
    assert f"report: {out_dir / 'report.md'}" in done.stdout
    md = (out_dir / "report.md").read_text()
    html = (out_dir / "report.html").read_text()
    libraries = set(pd.read_parquet(run)["library"])
    assert libraries == {"sklearn", "torch", "tensorflow"}
    for library in libraries:
        assert library in md and library in html
    pngs = _pngs(out_dir)
    assert "accuracy_by_group.png" in pngs and "churn_library.png" in pngs
    assert "loss_curves.png" in pngs and "## Training loss per epoch" in md  # 5 epochs each
    for png in pngs:
        assert (out_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    out = tmp_path / "again"
    again = bench_cli(["report", str(run), "--out", str(out), "--threshold", "0.9"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    assert "| 0.9000 |" in (out / "report.md").read_text()
    assert _pngs(out) == pngs

    missing = bench_cli(["report", str(tmp_path / "nope")], cwd=tmp_path)
    assert missing.returncode == 2 and "no results" in missing.stderr


def test_loss_curves_of_each_setups_seeds_are_drawn_and_summarised(tmp_path: Path) -> None:
    """Seeds whose curves fan out by a known amount: the table's final spread is theirs; rows
    without curves (scikit-learn's solver) form no setup there."""
    rows = _fake_rows("torch", "cpu", False) + _fake_rows("sklearn", "cpu", False)
    torch_all = [r for r in rows if r["library"] == "torch" and r["varied"] == "all"]
    for i, row in enumerate(torch_all):
        row["train_loss"] = list(np.linspace(1.0, 0.1 + 0.01 * i, 6))
    run = _write_run(tmp_path / "run", rows)
    md = write_report(run, out_dir=tmp_path / "out", n_resamples=200).read_text()
    section = md.split("## Training loss per epoch")[1].split("\n## ")[0]
    table = ba.curve_summary(pd.DataFrame(torch_all), ["library"])
    assert table[["n", "epochs"]].values.tolist() == [[len(torch_all), 6]]
    finals = 0.1 + 0.01 * np.arange(len(torch_all))
    assert table.at[0, "final_min"] == pytest.approx(finals.min())
    assert table.at[0, "final_max"] == pytest.approx(finals.max())
    assert table.at[0, "final_sd"] == pytest.approx(np.std(finals, ddof=1))
    assert table.at[0, "widest_epoch"] == 6  # the curves part only at the end
    assert "| torch |" in section and "| sklearn |" not in section
    assert "loss_curves.png" in _pngs(tmp_path / "out")
    for row in rows:
        row.pop("train_loss", None)
    again = _write_run(tmp_path / "plain", rows)
    assert "Training loss" not in write_report(again, out_dir=tmp_path / "o2").read_text()


def test_an_unknown_metric_or_a_folder_without_results_is_refused_writing_nothing(
    tmp_path: Path,
) -> None:
    from bench.report import main

    run = _write_run(tmp_path / "run", _fake_rows("torch", "cpu", False))
    for metric in ("nope", "library", "deterministic"):  # no column; not a number; a yes/no
        assert main([str(run), "--metric", metric]) == 2
    assert not report_dir(run).exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.sh").write_text("echo hi\n")
    with pytest.raises(FileNotFoundError, match=r"other: no bench results here"):
        write_report(other)
    assert main([str(run), "--metric", "balanced_accuracy", "--out", str(tmp_path / "r")]) == 0
    assert "Metric: `balanced_accuracy`" in (tmp_path / "r" / "report.md").read_text()
