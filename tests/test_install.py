"""bench as a user installs it: a built wheel in a fresh virtualenv, and the base install's reach.

The wheel test builds seedbench's wheel from this checkout, installs it (no dependencies: they come
from this interpreter's site-packages) into a new virtualenv, and runs a sweep from an empty folder
with the checkout off sys.path: the configs and the SLURM template must come from the package. The
sweep trains scikit-learn only, in processes (driver and Ray workers) where importing torch and
TensorFlow fails, as on an install without those extras. Its run folder is then read, analysed and
reported in a process where torch, TensorFlow, Ray and scikit-learn cannot be imported, as on a base
`pip install seedbench`.

Imports are refused by a `sitecustomize` module that puts a finder first on sys.meta_path: it raises
ModuleNotFoundError for the names in BENCH_TEST_BLOCK (and their submodules), in every process that
inherits the environment.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from bench.extras import DISTRIBUTION
from bench.store import run_dirs, run_files

REPO_ROOT = Path(__file__).resolve().parent.parent
TRAINING = ("torch", "tensorflow", "keras")
BASE_ONLY = (*TRAINING, "ray", "sklearn", "threadpoolctl")  # what `pip install seedbench` lacks

SITECUSTOMIZE = textwrap.dedent(
    """\
    import os
    import sys

    _BLOCKED = frozenset(filter(None, os.environ.get("BENCH_TEST_BLOCK", "").split(",")))
    _AWAY = os.environ.get("BENCH_TEST_AWAY")  # a folder that must not be on sys.path


    class _Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in _BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
            return None


    sys.meta_path.insert(0, _Refuse())
    if _AWAY:
        sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != _AWAY]
    """
)


def _env(block: tuple[str, ...], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    env.update(BENCH_TEST_BLOCK=",".join(block), **extra)
    return env


def _run(command: list, **kwargs) -> str:
    """Run a set-up step; its output if it failed."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)
    assert done.returncode == 0, f"{command}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done.stdout


def _blocking_python(tmp: Path) -> tuple[list[str], dict[str, str]]:
    """This interpreter with the checkout importable and the sitecustomize first on its path."""
    folder = tmp / "blocker"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return [sys.executable], {"PYTHONPATH": os.pathsep.join([str(folder), str(REPO_ROOT)])}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Build the wheel, install it into a new virtualenv, run a scikit-learn sweep from an empty
    folder with torch and TensorFlow blocked. Returns where things are and what ran."""
    tmp = tmp_path_factory.mktemp("install")
    wheels = tmp / "wheels"
    # Without build isolation when hatchling is here (the [test] extra): no download.
    offline = ["--no-build-isolation"] if importlib.util.find_spec("hatchling") else []
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *offline, "-w", str(wheels),
          str(REPO_ROOT)])  # fmt: skip
    (wheel,) = wheels.glob(f"{DISTRIBUTION}-*.whl")
    venv = tmp / "venv"
    # The venv sees this interpreter's packages (torch, Ray, pandas...; pip itself) but not bench.
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    _run([python, "-m", "pip", "install", "-q", "--no-deps", str(wheel)])
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    purelib = purelib.strip()
    (Path(purelib) / "sitecustomize.py").write_text(SITECUSTOMIZE)
    empty = tmp / "empty"
    empty.mkdir()
    # An editable install of this checkout elsewhere would put it on sys.path: keep it away.
    env = _env(TRAINING, BENCH_TEST_AWAY=str(REPO_ROOT.resolve()))
    where = subprocess.run(
        [python, "-c", "import json, bench, bench.config as c, bench.cluster.slurm as s; "
         "print(json.dumps([bench.__file__, str(c.CONF_DIR), str(s.SBATCH_SCRIPT)]))"],
        cwd=empty, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr
    sweep = subprocess.run(
        [python, "-m", "bench", "+sweep=smoke", "libraries=[sklearn]", "seeds.n=2",
         "progress=false"],
        cwd=empty, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert sweep.returncode == 0, sweep.stdout[-2000:] + sweep.stderr[-3000:]
    (run_dir,) = run_dirs(empty / "results" / "smoke")
    script = subprocess.run(
        [venv / "bin" / DISTRIBUTION, "--help"], env=env, capture_output=True, text=True
    )
    return {
        "venv": venv,
        "purelib": Path(purelib),
        "where": json.loads(where.stdout),
        "run_dir": run_dir,
        "script": script,
        "tmp": tmp,
    }


@pytest.mark.slow
def test_the_wheel_carries_configs_and_sbatch_and_runs_a_sweep_from_an_empty_folder(
    installed: dict[str, Any],
) -> None:
    package = installed["purelib"] / "bench"
    module, conf, sbatch = (Path(p) for p in installed["where"])
    assert module == package / "__init__.py"  # the installed package, not the checkout
    assert conf == package / "conf" and (conf / "config.yaml").is_file()
    assert sbatch == package / "slurm" / "bench.sbatch" and sbatch.is_file()
    import pandas as pd

    df = pd.read_parquet(installed["run_dir"])
    assert len(df) == 4 and set(df.status) == {"ok"} and set(df.library) == {"sklearn"}
    assert installed["script"].returncode == 0 and "python -m bench" in installed["script"].stdout


@pytest.mark.slow
def test_the_base_install_analyses_reports_and_refuses_sweeps_in_one_line(
    installed: dict[str, Any],
) -> None:
    """What `pip install seedbench` without extras is for: load, analyse and report a run folder,
    print a config (`--cfg`); a sweep there stops before any work, naming the extras."""
    command, extra = _blocking_python(installed["tmp"])
    run_dir = installed["run_dir"]
    refusal = (
        "bench: error: not installed: Ray (every sweep runs on it), scikit-learn (in libraries), "
        f"torch (in libraries); pip install '{DISTRIBUTION}[ray,sklearn,torch]'\n"
    )
    script = textwrap.dedent(
        f"""\
        import contextlib, io, os, sys
        from bench import analysis as ba
        from bench.cli import main

        df = ba.load({str(run_dir)!r})
        assert len(df) == 4, len(df)
        print(ba.spread(df, by=["library", "varied"]).shape)
        print(ba.variance_by_source(df, by="library").shape)
        print(ba.pairwise_churn(df, by=["library", "varied"]).shape)
        print(ba.determinism_summary(df).shape)
        assert main(["report", {str(run_dir)!r}]) == 0
        with contextlib.redirect_stdout(io.StringIO()) as shown:
            assert main(["--cfg", "+sweep=smoke", "libraries=[sklearn,torch]"]) == 0
        assert "libraries:" in shown.getvalue()
        with contextlib.redirect_stderr(io.StringIO()) as err:
            code = main(["+sweep=smoke", "seeds.n=1", "libraries=[sklearn,torch]"])
        assert (code, err.getvalue()) == (2, {refusal!r}), (code, err.getvalue())
        assert not os.path.exists("results")  # refused before any work
        loaded = sorted(m for m in {BASE_ONLY!r} if m in sys.modules)
        assert not loaded, loaded
        """
    )
    cwd = installed["tmp"] / "base"
    cwd.mkdir()
    done = subprocess.run(
        [*command, "-c", script], env=_env(BASE_ONLY, **extra), cwd=cwd,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert (run_files(run_dir).report / "report.md").is_file()
    assert (run_files(run_dir).report / "report.html").is_file()


def test_a_sweep_asking_for_torch_without_it_names_the_extra_in_one_line(tmp_path: Path) -> None:
    command, extra = _blocking_python(tmp_path)
    done = subprocess.run(
        [*command, "-m", "bench", "+sweep=smoke", "seeds.n=1", "libraries=[torch]"],
        env=_env(TRAINING, **extra), cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"bench: error: libraries: torch is not installed; pip install '{DISTRIBUTION}[torch]'\n"
    )
    assert not (tmp_path / "results").exists()  # refused before any work


def test_tensorflow_names_both_of_its_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import extras
    from bench.config import compose, to_container

    plain = to_container(compose(["+sweep=smoke", "libraries=[tensorflow]"]))
    assert extras.trained_libraries(plain) == {"tensorflow"}
    monkeypatch.setattr(extras, "installed", lambda module: module != "keras")
    assert extras.missing(plain) == (
        f"libraries: tensorflow is not installed; pip install '{DISTRIBUTION}[tensorflow]' "
        f"(or '{DISTRIBUTION}[tensorflow-gpu]' for TensorFlow with CUDA)"
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["model=svm_rbf", "libraries=[sklearn]"], {"sklearn"}),
        (["libraries=[sklearn,torch]"], {"sklearn", "torch"}),
        (
            [
                "+sweep=libraries",
                "models=[logreg,mlp]",
                "model_zoo.mlp.libraries=[torch]",
                "libraries=[sklearn]",
            ],
            {"sklearn", "torch"},
        ),
    ],
)
def test_a_sweep_needs_the_libraries_its_models_train_in(
    args: list[str], expected: set[str]
) -> None:
    from bench.config import compose, to_container
    from bench.extras import trained_libraries

    sweep = [] if any(a.startswith("+sweep=") for a in args) else ["+sweep=smoke"]
    assert trained_libraries(to_container(compose([*sweep, *args]))) == expected


def test_a_checkout_reads_its_own_conf_and_slurm() -> None:
    """An editable install (or the checkout on PYTHONPATH) has no bench/conf: the top-level
    folders are read, so edits to them apply without reinstalling."""
    from bench import config, paths
    from bench.cluster import slurm

    root = REPO_ROOT.resolve()
    found = (paths.PACKAGE, paths.CONF_DIR, slurm.SBATCH_SCRIPT, config.CONF_DIR)
    conf = Path(os.environ.get("BENCH_CONF_DIR") or root / "conf")
    assert found == (root / "bench", root / "conf", root / "slurm/bench.sbatch", conf)
