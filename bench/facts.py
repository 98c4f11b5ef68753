"""`python -m bench.facts`: the bit-level facts that depend on the CPU, measured on this one.

Whether two runs give the same bits depends on which vector kernels run, and those depend on the
CPU and on the kernel level in force (bench.isa). The tests assert only what holds on every x86
CPU; the rest is measured here, for the tables in docs/determinism.md and for anyone asking "does this hold on
my machine?". Each fact is one small experiment, reported as holds / does not hold with the
figure behind the answer:

- threads: one torch MLP trained with 1 and with 2 threads;
- stack position: one trial copied 50 times into one stack (bench.backends.torch_batched);
- stack size: one trial alone and inside a stack of 41, eager and compiled;
- row order: a fitted model's predict_proba for a row, with the other rows in another order
  (torch and Keras; scikit-learn's estimator check asks for agreement within 1e-9).

`--cpu-isa native,avx2,baseline` measures under each level, each in a fresh process with the
level's environment (a level this CPU lacks is refused, and so is `native` beside other levels
while a level variable is set by hand, as for a sweep), and prints one column per level.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.fingerprint import weights_sha256

Fact = dict[str, Any]  # name, holds, detail


def _largest(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """What a row's kept weights would show (bench.analysis.churn.largest_difference)."""
    from bench.analysis.churn import largest_difference
    from bench.outcomes import flat_weights

    return largest_difference(flat_weights(a), flat_weights(b))


def _fact(name: str, a: list[np.ndarray], b: list[np.ndarray], what: str) -> Fact:
    """Equal as a row's `weights_sha256` would say, and by how much they differ if not."""
    same = weights_sha256(a) == weights_sha256(b)
    detail = f"{what}: {'bitwise equal' if same else f'differ by up to {_largest(a, b):.2g}'}"
    return {"name": name, "holds": same, "detail": detail}


def threads() -> Fact:
    import torch

    from bench.backends.torch import TorchNeuralClassifier
    from bench.data import load, split

    data = split(load({"name": "breast_cancer"}), 0, 0.2)
    params = {"model": "mlp", "hidden_sizes": (256, 256), "batch_size": 256, "epochs": 3}
    fitted = []
    for n in (1, 2):
        torch.set_num_threads(n)
        est = TorchNeuralClassifier(**params).fit(data.X_train, data.y_train)
        fitted.append(est.get_weights())
    torch.set_num_threads(1)
    name = "torch: 1 and 2 threads give the same weights (256-256 MLP, batch 256)"
    return _fact(name, fitted[0], fitted[1], "1 vs 2 threads")


def _stack_inputs(dataset: str, mode: str = "aligned"):
    from bench.backends.torch import TorchNeuralClassifier
    from bench.backends.torch_batched import Member
    from bench.data import load, split

    data = split(load({"name": dataset}), 1, 0.2)
    hidden = (64,) if dataset == "breast_cancer" else (32,)
    est = TorchNeuralClassifier(hidden_sizes=hidden, epochs=5, mode=mode)
    return est, Member(1, 2, data), Member(5, 6, data)


def stack_position(dataset: str, mode: str = "aligned") -> Fact:
    from bench.backends.torch_batched import fit_stack

    est, a, _ = _stack_inputs(dataset, mode)
    weights = fit_stack(est, [a] * 50).weights
    distinct = len({weights_sha256(w) for w in weights})
    worst = max(_largest(weights[0], w) for w in weights)
    return {
        "name": f"eager stack: a trial's bits do not depend on its position ({dataset} MLP, "
        f"{mode})",
        "holds": distinct == 1,
        "detail": f"50 copies of one trial: {distinct} weight hash(es), up to {worst:.2g} apart",
    }


def stack_size(dataset: str, compile: bool) -> Fact:
    from bench.backends.torch_batched import fit_stack

    est, a, other = _stack_inputs(dataset)
    options = {"fused": compile, "compile": compile}
    alone = fit_stack(est, [a], **options).weights[0]
    inside = fit_stack(est, [other] * 40 + [a], **options).weights[40]
    kind = "compiled (fused Adam, torch.compile)" if compile else "eager"
    name = f"{kind} stack: a trial's bits do not depend on its stack's size ({dataset} MLP)"
    return _fact(name, alone, inside, "alone vs 41st of 41")


def toy_row_order(library: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's check_methods_sample_order_invariance on its toy data (20 rows, 3 features,
    3 classes) with the estimator checks' MLP: predict_proba of the rows in a shuffled order, and
    of the rows in their order, shuffled afterwards."""
    from bench.backends import estimator_class

    rng = np.random.RandomState(0)
    X = (3 * rng.uniform(size=(20, 3))).astype(np.float32)
    y = X[:, 0].astype(np.int64)
    est = estimator_class(library)(model="mlp", hidden_sizes=(8,), epochs=5, lr=0.1).fit(X, y)
    order = rng.permutation(len(X))
    return est.predict_proba(X[order]), est.predict_proba(X)[order]


def row_order(library: str) -> Fact:
    permuted, base = toy_row_order(library)
    name = f"{library}: predict_proba of a row ignores the order of the other rows (toy MLP)"
    return _fact(name, [base], [permuted], "rows permuted")


def _apply_one_thread(library: str) -> None:
    """Threads and determinism as bench puts them for a trial (threads=1)."""
    from bench import determinism
    from bench.config import compose
    from bench.sweep import expand

    spec = expand(compose(["+sweep=smoke", f"libraries=[{library}]", "seeds.n=1"]))[0]
    determinism.apply(spec)


def measure(compile: bool = True, keras: bool = True) -> dict[str, Any]:
    """Every fact in this process, with the kernels this process has."""
    from bench import isa
    from bench.fingerprint import cxx_compiler

    _apply_one_thread("torch")
    import torch

    facts: list[Callable[[], Fact]] = [
        threads,
        lambda: stack_position("breast_cancer"),
        lambda: stack_position("digits"),
        lambda: stack_position("digits", "shared"),
        lambda: stack_size("breast_cancer", False),
        lambda: stack_size("digits", False),
    ]
    if compile and cxx_compiler():
        facts += [lambda: stack_size("breast_cancer", True), lambda: stack_size("digits", True)]
    facts.append(lambda: row_order("torch"))
    if keras:
        facts.append(lambda: (_apply_one_thread("tensorflow"), row_order("tensorflow"))[1])
    return {
        "cpu": isa.cpu().model,
        **isa.cpu_columns(),
        **isa.in_force("torch"),
        "torch_version": torch.__version__,
        "facts": [f() for f in facts],
    }


def _in_level(level: str, args: list[str]) -> dict[str, Any]:
    """`measure` in a fresh process with `level`'s environment (bench.isa.level_env)."""
    from bench import isa

    env = {**os.environ, **isa.level_env(level)}
    done = subprocess.run(
        [sys.executable, "-m", "bench.facts", "--json-only", *args],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"bench.facts at cpu_isa={level} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown: one row per fact, one column per level."""
    levels = list(results)
    first = results[levels[0]]
    head = (
        f"CPU: {first['cpu']} ({first['cpu_vendor']}; flags {first['cpu_flags']}); "
        f"torch {first['torch_version']}\n\n"
        + "| fact | "
        + " | ".join(
            f"{lvl} ({results[lvl]['torch_cpu_capability']}, numpy {results[lvl]['numpy_simd']})"
            for lvl in levels
        )
        + " |\n|---|"
        + "---|" * len(levels)
    )
    lines = [head]
    for i, fact in enumerate(first["facts"]):
        cells = []
        for lvl in levels:
            f = results[lvl]["facts"][i]
            cells.append(f"{'yes' if f['holds'] else '**no**'}: {f['detail']}")
        lines.append(f"| {fact['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.facts", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--cpu-isa",
        default=None,
        help="comma-separated kernel levels to measure under, each in a fresh process "
        "(native, avx512, avx2, baseline); default: this process as it is",
    )
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile facts")
    parser.add_argument("--no-keras", action="store_true", help="skip the Keras fact")
    parser.add_argument("--json", help="also write the measurements to this JSON file")
    parser.add_argument("--json-only", action="store_true", help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    passed = [
        *(["--no-compile"] if ns.no_compile else []),
        *(["--no-keras"] if ns.no_keras else []),
    ]
    if ns.json_only:
        print(json.dumps(measure(not ns.no_compile, not ns.no_keras)))
        return 0
    if ns.cpu_isa:
        from bench import isa

        levels = [lvl.strip() for lvl in ns.cpu_isa.split(",") if lvl.strip()]
        try:
            isa.check_environment(set(levels), "--cpu-isa")
            for level in levels:
                isa.check(level, "--cpu-isa")
        except isa.UnsupportedLevel as exc:
            print(f"bench.facts: error: {exc}", file=sys.stderr)
            return 2
        results = {level: _in_level(level, passed) for level in levels}
    else:
        results = {"as is": measure(not ns.no_compile, not ns.no_keras)}
    print(table(results))
    if ns.json:
        with open(ns.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
