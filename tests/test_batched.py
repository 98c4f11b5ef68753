"""Stacked training of many seeds (bench.backends.torch_batched) against the one-by-one run.

Tolerances (float32, one thread; measured on the configurations below at 20 epochs): weights differ
from the one-by-one run by at most 6e-7 (median 1e-7), because `bmm` and `mm` block their sums
differently; predictions are identical. Asserted: 2e-6 and identical predictions. Adam can amplify
such rounding on weights whose gradient is ~0 (a dead ReLU unit): once, at 30 epochs, one weight of
one of 8 trials moved by 5e-4 with predictions still identical, so the weight bound is stated for
these configurations, not as a universal guarantee.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from bench import store
from bench.backends.torch import TorchNeuralClassifier
from bench.backends.torch_batched import Member, fit_stack
from bench.data import load, split

WEIGHT_TOL = 2e-6


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _members(dataset: str, n: int) -> list[Member]:
    raw = load({"name": dataset})
    # Seeds repeat in different combinations, so that splits, inits and orders are all shared
    # by some members and differ between others.
    return [Member(100 + i % 3, 200 + i % 2, split(raw, 300 + i % 4, 0.2)) for i in range(n)]


CASES = [
    ("breast_cancer", (64,), 1e-3, "aligned", "library"),
    ("breast_cancer", (32, 16), 1e-3, "shared", "shared"),
    ("digits", (), 1e-2, "aligned", "library"),  # multiclass logistic regression
    ("digits", (32,), 1e-3, "shared", "shared"),  # multiclass MLP
]


@pytest.mark.parametrize(("dataset", "hidden", "lr", "mode", "seed_mode"), CASES)
def test_every_stacked_trial_equals_its_one_by_one_run(
    dataset: str, hidden: tuple[int, ...], lr: float, mode: str, seed_mode: str
) -> None:
    members = _members(dataset, 6)
    est = TorchNeuralClassifier(
        hidden_sizes=hidden, lr=lr, epochs=20, mode=mode, init_mode=seed_mode, order_mode=seed_mode
    )
    stacked = fit_stack(est, members)
    for i, m in enumerate(members):
        one = TorchNeuralClassifier(
            **{**est.get_params(), "seed_init": m.seed_init, "seed_order": m.seed_order}
        ).fit(m.data.X_train, m.data.y_train)
        weights = one.get_weights()
        assert [w.shape for w in weights] == [w.shape for w in stacked.weights[i]]
        worst = max(
            float(np.abs(a - b).max()) for a, b in zip(weights, stacked.weights[i], strict=True)
        )
        assert worst <= WEIGHT_TOL, (i, worst)
        proba = one.predict_proba(m.data.X_test)
        np.testing.assert_array_equal(proba.argmax(1), stacked.proba[i].argmax(1))
        np.testing.assert_allclose(proba, stacked.proba[i], atol=1e-5)
        # Each member's own loss curve, not the stack's sum: the one-by-one run's, epoch by epoch.
        assert stacked.losses[i].shape == (20,)
        np.testing.assert_allclose(stacked.losses[i], one.loss_curve_, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(("dataset", "hidden", "lr", "mode", "seed_mode"), [CASES[0], CASES[3]])
def test_a_compiled_stack_equals_the_one_by_one_runs_and_repeats_itself(
    dataset: str, hidden: tuple[int, ...], lr: float, mode: str, seed_mode: str
) -> None:
    """torch.compile fuses the loss and its backward: different rounding than eager, the same
    bound against the one-by-one run (measured at most 2.1e-7). The same stack trained again
    gives the same bits (what replay relies on: it rebuilds a trial's stack whole). The same
    trial in a stack of one agrees within the bound; bitwise only on some CPUs (on an AMD EPYC
    with AVX2, a digits member of a stack of 40 and of 1 differ by up to 8.9e-8), which
    `python -m bench.facts` measures and the README records."""
    members = _members(dataset, 40)
    est = TorchNeuralClassifier(
        hidden_sizes=hidden, lr=lr, epochs=20, mode=mode, init_mode=seed_mode, order_mode=seed_mode
    )
    stacked = fit_stack(est, members, fused=True, compile=True)
    for i, m in enumerate(members[:4]):
        one = TorchNeuralClassifier(
            **{**est.get_params(), "seed_init": m.seed_init, "seed_order": m.seed_order}
        ).fit(m.data.X_train, m.data.y_train)
        worst = max(
            float(np.abs(a - b).max())
            for a, b in zip(one.get_weights(), stacked.weights[i], strict=True)
        )
        assert worst <= WEIGHT_TOL, (i, worst)
        np.testing.assert_array_equal(
            one.predict_proba(m.data.X_test).argmax(1), stacked.proba[i].argmax(1)
        )
        np.testing.assert_allclose(stacked.losses[i], one.loss_curve_, rtol=1e-5)
    again = fit_stack(est, members, fused=True, compile=True)
    for first, second in zip(stacked.weights, again.weights, strict=True):
        for a, b in zip(first, second, strict=True):
            np.testing.assert_array_equal(a, b)
    alone = fit_stack(est, members[5:6], fused=True, compile=True)
    worst = max(
        float(np.abs(a - b).max())
        for a, b in zip(alone.weights[0], stacked.weights[5], strict=True)
    )
    assert worst <= WEIGHT_TOL


def test_initial_weights_and_orders_are_the_one_by_one_draws() -> None:
    """With one epoch of one step the only thing that can differ is arithmetic: tiny."""
    members = _members("breast_cancer", 3)
    est = TorchNeuralClassifier(hidden_sizes=(16,), epochs=1, batch_size=1000, mode="aligned")
    stacked = fit_stack(est, members)
    for i, m in enumerate(members):
        one = TorchNeuralClassifier(
            **{**est.get_params(), "seed_init": m.seed_init, "seed_order": m.seed_order}
        ).fit(m.data.X_train, m.data.y_train)
        for a, b in zip(one.get_weights(), stacked.weights[i], strict=True):
            np.testing.assert_allclose(a, b, atol=1e-7)


@pytest.mark.parametrize(
    ("dataset", "hidden", "activation"),
    [("breast_cancer", (), "relu"), ("digits", (), "relu"), ("breast_cancer", (64,), "relu"),
     ("digits", (32, 16), "tanh"), ("breast_cancer", (8,), "logistic")],
)  # fmt: skip
def test_initial_weights_drawn_directly_are_bitwise_the_built_ones(
    dataset: str, hidden: tuple[int, ...], activation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.backends import torch_batched

    est = TorchNeuralClassifier(hidden_sizes=hidden, activation=activation, mode="aligned")
    seeds = (0, 7, 2**32 - 1)
    members = [Member(s, 0, m.data) for s, m in zip(seeds, _members(dataset, 3), strict=True)]
    templates = [torch_batched._template(est, m) for m in members]
    built = [torch_batched._initial_weights(t) for t in templates]
    for template, expected in zip(templates, built, strict=True):  # the fast path, on this torch
        for a, b in zip(expected, torch_batched._drawn_like_build(template), strict=True):
            np.testing.assert_array_equal(a, b)
    for expected, got in zip(built, torch_batched._initial_stack(templates), strict=True):
        for a, b in zip(expected, got, strict=True):
            np.testing.assert_array_equal(a, b)
    # A torch whose nn.Linear draws otherwise: the first member's check sends every member
    # through the modules again.
    monkeypatch.setattr(torch_batched, "_drawn_like_build", lambda t: [w + 1 for w in built[0]])
    for expected, got in zip(built, torch_batched._initial_stack(templates), strict=True):
        for a, b in zip(expected, got, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dataset", ["breast_cancer", "digits"])
def test_a_stack_trained_again_repeats_its_bits_and_a_trials_place_moves_only_the_last(
    dataset: str,
) -> None:
    """Bitwise, only what holds on every CPU: the same stack, in the same order, repeats itself.
    A trial's position or stack size may move its last bits (padding to a multiple of 32 keeps
    every member in the vectorised kernels' body, which removed that on the CPUs measured for
    binary data, not for digits on an AMD EPYC): `python -m bench.facts` measures it per CPU."""
    data = split(load({"name": dataset}), 1, 0.2)
    est = TorchNeuralClassifier(hidden_sizes=(64,), epochs=5, mode="aligned")
    a, other = Member(1, 2, data), Member(5, 6, data)

    def digest(ws: list[np.ndarray]) -> bytes:
        return b"".join(w.tobytes() for w in ws)

    group = [other] * 40 + [a]
    inside = fit_stack(est, group).weights
    assert [digest(w) for w in fit_stack(est, group).weights] == [digest(w) for w in inside]
    alone = fit_stack(est, [a, other]).weights[0]
    copies = fit_stack(est, [a] * 50).weights
    for weights in (inside[40], *copies):
        worst = max(float(np.abs(x - y).max()) for x, y in zip(alone, weights, strict=True))
        assert worst <= WEIGHT_TOL


def test_defaults_mode_and_other_models_are_refused() -> None:
    members = _members("breast_cancer", 2)
    with pytest.raises(ValueError, match="batching"):
        fit_stack(TorchNeuralClassifier(hidden_sizes=(8,), mode="defaults"), members)
    with pytest.raises(ValueError, match="batching"):
        fit_stack(TorchNeuralClassifier(model="linear_svm"), members)


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], capture_output=True, text=True, timeout=600
    )


def _sweep(results: Path, *extra: str) -> pd.DataFrame:
    args = ["+sweep=seeds", "libraries=[torch,sklearn]", "model=mlp", "seeds.n=2"]
    done = _bench(*args, "model.epochs=4", f"results_dir={results}", "progress=false", *extra)
    assert done.returncode == 0, done.stderr
    (run,) = store.run_dirs(results / "seeds")
    return pd.read_parquet(run).set_index("trial_key")


@pytest.mark.slow
@pytest.mark.extended  # every stacked trial equals its one-by-one run in the default run (CI's 30 minutes)
def test_a_batched_sweep_writes_one_row_per_trial_equal_to_the_unbatched_sweep(
    tmp_path: Path,
) -> None:
    # Tasks of two stacks of at most 4 (the helper thread's pipeline): rows as for any task.
    batched = _sweep(
        tmp_path / "b",
        "batching.enabled=true",
        "batching.max_group=4",
        "batching.stacks_per_task=2",
        "keep_weights=true",
    )
    plain = _sweep(tmp_path / "p", "keep_weights=true")
    assert set(batched.index) == set(plain.index) and batched.index.is_unique
    assert (batched["status"] == "ok").all()
    torch_rows = batched[batched["library"] == "torch"]
    assert torch_rows["batched"].all() and (torch_rows["group_size"] <= 4).all()
    assert (torch_rows["group_size"] > 1).any()
    sizes = torch_rows.groupby("group_key").agg(
        n=("group_size", "size"), size=("group_size", "max")
    )
    assert (sizes["n"] == sizes["size"]).all()  # each stack's rows name it and its size
    sklearn_rows = batched[batched["library"] == "sklearn"]  # not stackable: one by one
    assert (~sklearn_rows["batched"]).all() and (sklearn_rows["group_size"] == 1).all()
    plain = plain.loc[batched.index]
    assert (batched["accuracy"] == plain["accuracy"]).all()
    for a, b in zip(batched["y_pred"], plain["y_pred"], strict=True):
        np.testing.assert_array_equal(a, b)
    # sklearn rows ran the same code either way: bitwise the same.
    same = batched["weights_sha256"] == plain["weights_sha256"]
    assert same[batched["library"] == "sklearn"].all()
    # torch: the same model within the stacked arithmetic's rounding (README: at most 6e-7
    # measured, 2e-6 promised), not just the same predictions.
    for key in torch_rows.index:
        a, b = np.asarray(batched.at[key, "weights"]), np.asarray(plain.at[key, "weights"])
        assert a.shape == b.shape and np.max(np.abs(a - b)) <= 2e-6, key
    # Every row keeps its loss per epoch (4 epochs), stacked or not, each member its own.
    for key in batched.index:
        a, b = np.asarray(batched.at[key, "train_loss"]), np.asarray(plain.at[key, "train_loss"])
        assert a.shape == b.shape == (4,), key
        np.testing.assert_allclose(a, b, rtol=1e-5)
    curves = batched.loc[torch_rows.index, "train_loss"].map(tuple)  # each member its own:
    assert curves.nunique() == torch_rows["weights_sha256"].nunique() > 1  # repeats alike
    # The stacked torch rows pair with the one-by-one scikit-learn rows (same seeds).
    from bench import analysis as ba

    pairs = ba.matched_pairs(batched.reset_index(), "library", "sklearn", "torch")
    assert len(pairs) == len(torch_rows) and pairs["batched_b"].all()


def _replayed(run: Path, n: int) -> None:
    result = _bench("replay", str(run), "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{n} of {n} trials reproduced bitwise" in result.stdout


@pytest.mark.slow
@pytest.mark.extended
def test_a_compiled_batched_run_records_its_kernels_and_replays_bitwise(tmp_path: Path) -> None:
    """Fused Adam and torch.compile change the last bits, so a replay must use them again (it
    takes them from the run's config)."""
    options = ["batching.enabled=true", "batching.fused=true", "batching.compile=true"]
    rows = _sweep(tmp_path, *options)
    torch_rows = rows[rows["library"] == "torch"]
    repeats = torch_rows["varied"] == "none"  # fixed-seed repeats: a stack each (bench.units)
    assert torch_rows["batched"].all() and (torch_rows.loc[~repeats, "group_size"] > 1).all()
    assert (torch_rows.loc[repeats, "group_size"] == 1).all() and repeats.sum() > 1
    assert torch_rows["batch_fused_adam"].eq(True).all()
    assert torch_rows["batch_compiled"].eq(True).all()
    assert torch_rows["cxx_version"].notna().all()  # the compiler Inductor used
    sklearn_rows = rows[rows["library"] == "sklearn"]  # one by one: neither
    assert sklearn_rows[["batch_fused_adam", "batch_compiled"]].eq(False).all().all()
    assert sklearn_rows["cxx_version"].isna().all()
    (run,) = store.run_dirs(tmp_path / "seeds")
    _replayed(run, len(rows))
    for key, group in torch_rows.groupby("group_key"):  # the rows name their stack
        members = group.sort_values("group_index").index
        assert key == hashlib.sha256("\n".join(members).encode()).hexdigest()
        assert list(group["group_index"].sort_values()) == list(range(len(group)))
    last = torch_rows["group_index"].idxmax()  # a trial deep inside its stack, replayed alone
    result = _bench("replay", str(run), "--trial", last[:16], "--no-progress")
    assert result.returncode == 0 and "1 of 1 trials reproduced bitwise" in result.stdout
    latest = sorted(store.run_files(run).replays.iterdir())[-1]
    assert len(pd.read_parquet(latest)) == torch_rows.loc[last, "group_size"]  # its whole stack
    import os

    without = subprocess.run(
        [sys.executable, "-m", "bench", "replay", str(run), "--no-progress"],
        capture_output=True, text=True, env={**os.environ, "CXX": "/nonexistent/c++"},
    )  # fmt: skip
    assert without.returncode == 2
    (line,) = without.stderr.strip().splitlines()
    assert "C++ compiler" in line and str(run) in line


@pytest.mark.slow
@pytest.mark.extended
def test_a_fused_run_written_by_bench_0_2_0_replays_bitwise(tmp_path: Path) -> None:
    """0.2.0 wrote neither the kernel columns nor `batching.compile` (it had no compile), and
    replayed fused stacks unfused: NOT REPRODUCED for every one of them."""
    import yaml

    rows = _sweep(tmp_path, "batching.enabled=true", "batching.fused=true")
    (run,) = store.run_dirs(tmp_path / "seeds")
    new = ["batch_fused_adam", "batch_compiled", "cxx_version"]
    for part in store.part_files(run):
        pq.write_table(pq.read_table(part).drop_columns(new), part)
    files = store.run_files(run)
    config = yaml.safe_load(files.config.read_text())
    del config["batching"]["compile"]
    files.config.write_text(yaml.safe_dump(config))
    files.version.write_text("0.2.0\n")
    files.manifest.unlink()  # 0.2.0 kept no manifest (bench verify)
    _replayed(run, len(rows))


def test_kernels_of_runs_whose_config_predates_them_are_off() -> None:
    from omegaconf import OmegaConf

    from bench.config import stack_kernels

    off = {"fused": False, "compile": False}
    assert stack_kernels(OmegaConf.create({}).get("batching")) == off  # 0.1.0: no batching
    assert stack_kernels(OmegaConf.create({"fused": True})) == {**off, "fused": True}  # 0.2.0
