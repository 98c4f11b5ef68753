"""README's worked example, as a user runs it (issue 17, point 6): their own CSV and their own
PyTorch module in a folder outside bench, through `+sweep=seeds`, `report` and `replay`.

The module and the commands are read from README.md, so the example there cannot drift from what
works. Nothing is put on PYTHONPATH: the commands run from the user's folder, as the README says.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd

from bench import store
from bench.manifest import Manifest, sha256_file

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> tuple[str, list[list[str]]]:
    """The module's source and the example's commands (arguments after `python -m bench`)."""
    text = README.read_text()
    section = text[text.index("**Worked example: your CSV, your module.**") :]
    module = re.search(r"```python\n(# mynets/__init__.py\n.*?)```", section, re.S)
    commands = re.search(r"```bash\n(.*?)```", section, re.S)
    assert module and commands, "README lost its worked example"
    lines = commands.group(1).replace("\\\n", " ").splitlines()
    return module.group(1), [shlex.split(line.split("#")[0])[3:] for line in lines]


def _patients(path: Path, n: int = 240) -> None:
    """A user's CSV: numbers, a text column, missing values, a text target."""
    rng = np.random.default_rng(7)
    age, chol, sex = rng.integers(30, 80, n), rng.normal(230, 40, n), rng.choice(["f", "m"], n)
    risk = 0.05 * (age - 55) + 0.02 * (chol - 230) + 0.8 * (sex == "m") + rng.normal(0, 1, n)
    df = pd.DataFrame({"age": age, "chol": chol.round(1), "sex": sex})
    df["outcome"] = np.where(risk > 0.4, "sick", "healthy")
    df.loc[rng.choice(n, 10, replace=False), "chol"] = np.nan
    df.to_csv(path, index=False)


def test_the_readme_example_runs_as_written(tmp_path: Path, bench_cli) -> None:
    module, (sweep, report, replay) = _example()
    (tmp_path / "mynets").mkdir()
    (tmp_path / "mynets" / "__init__.py").write_text(module)
    _patients(tmp_path / "patients.csv")
    shrunk = [a for a in sweep if not a.startswith("seeds.n=")] + ["seeds.n=2"]

    done = bench_cli(shrunk, cwd=tmp_path, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    (run_dir,) = store.run_dirs(tmp_path / "results" / "seeds")
    rows = pd.read_parquet(run_dir)
    assert len(rows) == 10 and set(rows["status"]) == {"ok"}  # 2 seeds x 5 sources
    assert set(rows["seed_sources"]) == {"split,order,init"}
    assert rows["hparams"].str.contains('"_target_":"mynets.Net"').all()
    assert rows["accuracy"].median() > 0.65  # the generated outcome is learnable

    run = str(run_dir.relative_to(tmp_path))
    (tmp_path / "mynets").rename(tmp_path / "elsewhere")  # reading a run imports nothing from it
    made = bench_cli([run if a.startswith("results/") else a for a in report], cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-2000:]
    text = (store.run_files(run_dir).report / "report.md").read_text()
    assert "torch_module" in text and "## Variance by seed source" in text
    (tmp_path / "elsewhere").rename(tmp_path / "mynets")

    key = rows["trial_key"].iloc[0][:12]
    args = [run if a.startswith("results/") else key if a == "<key_prefix>" else a for a in replay]
    again = bench_cli(args, cwd=tmp_path, timeout=180)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "replay imports mynets.Net" in again.stderr
    assert "reproduced" in again.stdout and "NOT" not in again.stdout, again.stdout

    # Rows that name code the run's config does not: refused.
    # The manifest is restamped too, as whoever edits a results folder can: it is not signed.
    config = store.run_files(run_dir).config
    config.write_text(config.read_text().replace("mynets.Net", "mynets.Other"))
    kept = Manifest.load(store.run_files(run_dir).manifest)
    kept.data["config_sha256"] = sha256_file(config)
    kept.rewrite()
    refused = bench_cli(args, cwd=tmp_path)
    assert refused.returncode == 2 and "not importing it" in refused.stderr, refused.stderr
