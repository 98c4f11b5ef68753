"""`python -m bench replay RUN_DIR [--trial KEY]`: re-run stored specs and compare the bits.

Each stored row holds its full spec, so the trial can be run again exactly as the runner ran it (a
Ray worker started with the same thread environment). Per trial the replay reports whether the
final weights and the test predictions are bitwise equal, and when they are not, which recorded
parts of the environment differ between the stored row and now (bench's own version, git commit
and uncommitted changes, library versions, device, GPU, threads, determinism flags). The exit code
is 1 when a trial that should have reproduced did not: same environment, and either on the CPU
(fixed threads make CPU training repeatable) or with deterministic mode in force.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from bench import isa, store
from bench.config import USER_MODELS, ConfigError, check_cxx, stack_kernels, to_container
from bench.spec import TrialSpec

# What a bitwise result may depend on besides the spec. The host name is left out on purpose:
# another machine with the same CPU model, versions and settings should give the same bits.
ENV_COLUMNS = (
    # bench's own code counts as a library does: its version (rows before the column: the run's
    # store.run_version), its commit and uncommitted changes (bench.provenance)
    "bench_version", "bench_commit", "bench_dirty",
    "python_version", "numpy_version", "sklearn_version", "torch_version", "tensorflow_version",
    "keras_version", "library_version", "platform", "cpu_model", "blas", "gpu_name",
    "cuda_version", "cudnn_version", "driver_version", "torch_threads", "torch_interop_threads",
    "tf_intra_threads", "tf_inter_threads", "blas_threads", "determinism_env",
    "deterministic_in_force", "cudnn_deterministic", "cudnn_benchmark", "tf32_matmul",
    "tf32_cudnn", "tf_onednn", "cxx_version",
    # The CPU's kernels: the same spec trains to other bits under another instruction set.
    "cpu_vendor", "cpu_flags", "torch_cpu_capability", "numpy_simd", "onednn_max_cpu_isa",
)  # fmt: skip
JSON_COLUMNS = ("determinism_env",)  # compared key by key, over the keys the stored row has
# Recorded since bench 0.4.0: a row written before has them null, which is not a change.
SINCE_0_4 = ("cpu_vendor", "cpu_flags", "torch_cpu_capability", "numpy_simd", "onednn_max_cpu_isa")
# Recorded in rows with bench_version: a row without bench_version recorded neither.
BENCH_CODE = ("bench_commit", "bench_dirty")
# Both sides from a checkout with uncommitted changes at one commit: recorded alike, but the
# changes themselves are not compared. A failure all the same, which says so.
DIRTY_BOTH = " (bench ran with uncommitted changes both times: its code may differ)"


def _same(a: Any, b: Any) -> bool:
    missing = lambda v: v is None or (isinstance(v, float) and math.isnan(v))  # noqa: E731
    return (missing(a) and missing(b)) or a == b


def env_diff(stored: dict[str, Any], now: dict[str, Any]) -> list[str]:
    out = []
    for c in ENV_COLUMNS:
        if c not in stored or _same(stored.get(c), now.get(c)):
            continue
        if c in SINCE_0_4 and _same(stored.get(c), None):
            continue
        if c in JSON_COLUMNS and isinstance(stored.get(c), str) and isinstance(now.get(c), str):
            # A newer bench records more variables; a key the stored row lacks was not recorded,
            # which is not a change.
            old, new = json.loads(stored[c]), json.loads(now[c])
            out += [f"{c}.{k}: {old[k]} -> {new.get(k)}" for k in old if old[k] != new.get(k)]
            continue
        out.append(f"{c}: {stored.get(c)} -> {now.get(c)}")
    return out


def expected_to_reproduce(row: dict[str, Any]) -> bool:
    return row["device"] == "cpu" or bool(row.get("deterministic_in_force"))


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def predictions_match(stored: dict[str, Any], now: dict[str, Any]) -> tuple[bool, str | None]:
    """Whether the test predictions are bitwise equal, hashed the same way on both sides, and
    when that cannot be known, why. A row without `predictions_dtype` (written before the
    column) hashed its scores cast to float32: float32 scores hash the same way today, other
    dtypes are hashed again from the replay's own labels and `y_proba` (the float32 values that
    hash covered). Without `y_proba` the hashes cannot be compared, which is said, not taken for
    a difference in the bits."""
    now_hash = now.get("predictions_sha256")
    dtype = now.get("predictions_dtype")
    if _missing(stored.get("predictions_dtype")) and not _missing(dtype) and dtype != "float32":
        if now.get("y_proba") is None or now.get("y_pred") is None:
            return False, (
                f"predictions_sha256: hashed as float32 by the stored row, as {dtype} now "
                "(no y_proba to hash the old way)"
            )
        from bench.fingerprint import predictions_sha256_as_float32

        now_hash = predictions_sha256_as_float32(
            np.asarray(now["y_pred"], dtype=np.int64), np.asarray(now["y_proba"], np.float32)
        )
    return stored["predictions_sha256"] == now_hash, None


def compare(stored: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    """One line of the replay table for one trial."""
    weights = stored["weights_sha256"] == now.get("weights_sha256")
    predictions, scheme = predictions_match(stored, now)
    diff = env_diff(stored, now) if now.get("status") == "ok" else []
    diff += [scheme] if scheme and now.get("status") == "ok" else []
    if now.get("status") == "not run":
        verdict = f"not replayed: {now['error']}"
    elif str(now.get("error") or "").startswith("UnsupportedLevel: "):  # a node of a joined cluster
        verdict = f"not replayed: {now['error'].splitlines()[0].split(': ', 1)[1]}"
    elif now.get("status") != "ok":
        verdict = f"replay failed: {str(now.get('error')).splitlines()[0]}"
    elif weights and predictions:
        verdict = "reproduced"
    elif diff:
        verdict = "differs; environment changed"
    elif expected_to_reproduce(stored):
        verdict = "NOT REPRODUCED on the same environment"
        if _is_true(stored.get("bench_dirty")) and _is_true(now.get("bench_dirty")):
            verdict += DIRTY_BOTH
    else:
        verdict = "differs (non-deterministic GPU kernels allowed)"
    return {
        "trial_key": stored["trial_key"],
        "library": stored["library"],
        "device": stored["device"],
        "deterministic": stored["deterministic"],
        "weights_equal": weights,
        "predictions_equal": predictions,
        "accuracy_stored": stored["accuracy"],
        "accuracy_now": now.get("accuracy"),
        "verdict": verdict,
        "environment_diff": "; ".join(diff),
    }


def _spec(run_dir: Path, row: dict[str, Any]) -> TrialSpec:
    spec = TrialSpec.from_dict(row)
    if spec.trial_key != row["trial_key"]:
        raise ConfigError(
            f"{run_dir}: stored spec of trial {row['trial_key'][:12]} does not hash to its key"
        )
    return spec


def _is_true(value: Any) -> bool:
    return value is True or value is np.True_  # NaN in runs older than the column


def replay_units(
    run_dir: Path, ok: pd.DataFrame, selected: dict[str, dict[str, Any]]
) -> list[tuple[list[TrialSpec], bool]]:
    """The selected trials as they were trained: one by one, or in their stack, rebuilt whole and
    in its order from `group_key` and `group_index` (on some CPUs a member's last bits depend on
    the size of its stack: docs/determinism.md, "Bits and the CPU"). A stack's kernels (fused Adam,
    torch.compile) come from the run's config, which every version of bench has written. Runs
    from before bench 0.4.0 have no `group_key`: their stacked trials replay in a stack of one
    each, which reproduces them only where a member's bits do not depend on its stack."""
    grouped = ok[ok["group_key"].notna()] if "group_key" in ok.columns else ok.iloc[:0]
    stacks = {key: sub.sort_values("group_index") for key, sub in grouped.groupby("group_key")}
    units: list[tuple[list[TrialSpec], bool]] = []
    done: set[str] = set()
    for row in selected.values():
        stacked = _is_true(row.get("batched"))
        members = stacks.get(row.get("group_key")) if stacked else None
        if members is None or len(members) != row["group_size"]:
            units.append(([_spec(run_dir, row)], stacked))
        elif row["group_key"] not in done:
            done.add(row["group_key"])
            units.append(([_spec(run_dir, r) for r in members.to_dict("records")], True))
    return units


def _not_runnable(spec: TrialSpec, gpu: bool, here: bool) -> str | None:
    """Why this replay cannot run a trial: no GPU for a CUDA trial, or (when the trials run on
    this machine) a CPU kernel level this CPU lacks."""
    if spec.device == "cuda" and not gpu:
        return "no GPU in this Ray cluster"
    if here:
        try:
            isa.check(spec.cpu_isa)
        except isa.UnsupportedLevel as exc:
            return str(exc)
    return None


def replay(
    run_dir: Path, trial: str | None = None, progress: bool = True, address: str | None = None
) -> pd.DataFrame:
    """Re-run the ok trials of a run (or the one whose key starts with `trial`) and compare."""
    from bench.cluster.connect import connect, embedded
    from bench.data import load
    from bench.runner import execute

    run_dir = Path(run_dir)
    files = store.run_files(run_dir)
    config_file = files.config
    if not config_file.is_file():
        raise ConfigError(f"{run_dir}: not a bench run folder (no {config_file})")
    from bench.verify import refusal

    why = refusal(run_dir)  # a part changed or missing: replaying it would compare the wrong bits
    if why:
        raise ConfigError(f"not replaying: {why}")
    try:
        ok = store.read_results(run_dir)
    except store.CorruptPartError as exc:
        raise ConfigError(str(exc)) from None
    ok = ok[ok["status"] == "ok"]
    rows = ok
    if trial:
        rows = rows[rows["trial_key"].str.startswith(trial)]
        if rows.empty:
            raise ConfigError(f"--trial: no ok trial whose key starts with {trial!r} in {run_dir}")
    if rows.empty:
        raise ConfigError(f"{run_dir}: no ok trial to replay")
    cfg = OmegaConf.load(config_file)  # dataset settings (a heart file's path), batching kernels
    if cfg.get("dry_run", False):
        raise ConfigError(f"{run_dir}: a dry run (dry_run=true) trained nothing to replay")
    stored = {r["trial_key"]: r for r in rows.to_dict("records")}
    user_code = _user_code(ok, cfg, run_dir)
    if user_code:  # the only place a results folder names code that runs: said, not silent
        print(
            f"replay imports {', '.join(user_code)} (your code this run trained, as its rows "
            "name it): replay only runs whose code you trust",
            file=sys.stderr,
        )
    units = replay_units(run_dir, ok, stored)
    kernels = stack_kernels(cfg.get("batching"))
    if kernels["compile"] and any(stacked for _, stacked in units):
        check_cxx(str(run_dir), "; its stacks were compiled (batching.compile=true)")
    raw = load(to_container(cfg.dataset))
    import ray

    here = embedded({"address": address})
    if here:
        try:
            isa.check_environment({s.cpu_isa for unit, _ in units for s in unit}, "cpu_isa")
        except isa.UnsupportedLevel as exc:
            raise ConfigError(f"{run_dir}: {exc}") from None
    started = connect({"address": address}, user_code=user_code)
    try:
        gpu = ray.cluster_resources().get("GPU", 0) > 0
        skipped = {
            s.trial_key: why
            for unit, _ in units
            for s in unit
            if (why := _not_runnable(s, gpu, here)) is not None
        }
        units = [u for u in units if not any(s.trial_key in skipped for s in u[0])]
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-%f")
        out = files.replays / stamp  # bookkeeping, not results: `*.pq`, not `*.parquet`
        out.mkdir(parents=True)
        writer = store.PartWriter(
            out, rows_per_part=1000, config=config_file.read_text(), suffix=store.ASIDE_SUFFIX
        )
        try:
            batches = execute(
                [s for unit, _ in units for s in unit], raw, writer, f"replay-{stamp}",
                progress=progress, description="replay", units=units, batching=kernels,
                keep_weights=bool(cfg.get("keep_weights", False)),
            )  # fmt: skip
            fresh = {r["trial_key"]: r for batch in batches for r in batch.to_pylist()}
        finally:
            writer.close()
    finally:
        if started:
            ray.shutdown()
    from bench import __version__

    written_by = store.run_version(run_dir)
    lines = []
    for key, row in stored.items():
        why = skipped.get(key, "its stack did not run")
        now = fresh.get(key, {"status": "not run", "error": why})
        lines.append(compare(with_bench(row, written_by), with_bench(now, __version__)))
    return pd.DataFrame(lines)


def with_bench(row: dict[str, Any], version: str) -> dict[str, Any]:
    """A row whose `bench_version` is null (written before bench recorded itself in rows, or one
    that never ran) takes `version` (the run's `_bench_version`, or this process's) and loses
    `bench_commit` and `bench_dirty`: they were not recorded, which is not a change (a null
    commit in a newer row is: bench ran outside a checkout)."""
    if not _missing(row.get("bench_version")):
        return row
    return {
        **{k: v for k, v in row.items() if k not in BENCH_CODE},
        "bench_version": version,
    }


def _user_code(ok: pd.DataFrame, cfg: Any, run_dir: Path) -> list[str]:
    """The user's code a replay would import: what the run's rows name (every ok row: a stack is
    replayed whole), refused unless the run's saved config names exactly the same, so that a
    row edited after the run cannot smuggle in code of its own."""
    in_rows = {
        json.loads(h).get("_target_")
        for h, model in zip(ok["hparams"], ok["model"], strict=True)
        if model in USER_MODELS
    } - {None}
    models = [cfg.get("model") or {}, *(cfg.get("model_zoo") or {}).values()]
    in_config = {m.get("_target_") for m in models if m.get("name") in USER_MODELS} - {None}
    if not in_rows <= in_config:
        raise ConfigError(
            f"{run_dir}: its rows name code its saved config does not "
            f"({', '.join(sorted(in_rows - in_config))}); not importing it"
        )
    return sorted(in_rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench replay", description=__doc__.split("\n")[0]
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--trial", help="replay only the trial whose key starts with this")
    parser.add_argument("--address", help="join this Ray cluster (default: embedded Ray here)")
    parser.add_argument("--no-progress", action="store_true")
    ns = parser.parse_args(argv)
    try:
        table = replay(ns.run_dir, ns.trial, progress=not ns.no_progress, address=ns.address)
    except ConfigError as exc:
        print(f"bench replay: error: {exc}", file=sys.stderr)
        return 2
    from rich.console import Console
    from rich.table import Table

    view = Table(title=f"replay of {ns.run_dir}")
    for column in (
        "trial",
        "library",
        "device",
        "det",
        "weights",
        "predictions",
        "verdict",
        "changed in environment",
    ):
        view.add_column(column)
    for r in table.itertuples(index=False):
        view.add_row(
            r.trial_key[:12], r.library, r.device, str(r.deterministic),
            "equal" if r.weights_equal else "differ", "equal" if r.predictions_equal else "differ",
            r.verdict, ", ".join(d.split(":")[0] for d in r.environment_diff.split("; ") if d),
        )  # fmt: skip
    console = Console()
    console.print(view)
    for r in table[table["environment_diff"] != ""].itertuples(index=False):
        console.print(f"{r.trial_key[:12]}: {r.verdict}: {r.environment_diff}")
    failed = table["verdict"].str.startswith(("NOT REPRODUCED", "replay failed"))
    for r in table[failed].itertuples(index=False):
        console.print(f"[red]{r.trial_key}: {r.verdict}[/red]")
    reproduced = int((table["verdict"] == "reproduced").sum())
    console.print(
        f"{reproduced} of {len(table)} trials reproduced bitwise; {int(failed.sum())} failed to"
    )
    return 1 if failed.any() else 0
