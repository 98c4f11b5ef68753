"""The run folder: created and locked for a new run, or checked and reopened to resume one.

Resuming refuses, in one line and before anything is written, a folder written by another bench
version, made with another config (keys in `RESUME_FREE` may change), failing verification, or
held by another driver's lock; it then compacts the journals into parts and keeps the manifest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bench import __version__, diskfull, store
from bench import manifest as mf
from bench.config import ConfigError, to_container

# Keys that may change when a run is resumed: they say how to run, not what the trials are.
RESUME_FREE = {
    "run_id",
    "progress",
    "cluster",
    "rows_per_part",
    "retries",
    "trial_timeout_s",
    "faults",
    "report",
    "results_dir",
    "hardware",
    "rows_to",
}


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(
            _flatten(value, f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}")
        )
    return out


# Keys added within a version, with the value that runs written before them ran with: such a
# run's config lacks them, and resuming it with that value is no change.
ADDED_KEYS = {
    "batching.stacks_per_task": 1,
    **{f"seeds.until.{k}": v for k, v in {
        "ci_width": None, "compare": None, "margin": 0.01, "metric": "accuracy", "wave": 10,
        "max": 200, "confidence": 0.95,
    }.items()},
}  # fmt: skip


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`key: old -> new` for every trial-defining key that differs."""
    a = _flatten({k: v for k, v in old.items() if k not in RESUME_FREE})
    b = _flatten({k: v for k, v in new.items() if k not in RESUME_FREE})
    a = {**{k: v for k, v in ADDED_KEYS.items() if k in b}, **a}
    return [
        f"{k}: {a.get(k, '<absent>')} -> {b.get(k, '<absent>')}"
        for k in sorted(a.keys() | b.keys())
        if a.get(k) != b.get(k)
    ]


def check_writable(path: Path) -> None:
    """Refuse early (before Ray starts) a results folder that cannot be created or written."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"results_dir: cannot write to {path}: {probe} is not a writable folder")


def check_verified(path: Path) -> None:
    """Refuse to resume a run folder that fails `python -m bench verify` (a part changed or
    missing, ...), in one line, before anything is written. What a killed driver leaves is
    taken in (bench.verify.refusal). A run another driver is writing is left to the lock's
    refusal, which says so (its manifest changes while it runs)."""
    from bench import verify

    files = store.run_files(path)
    if not files.config.exists() or verify.lock_holder(files):
        return
    why = verify.refusal(path, resume=True)
    if why:
        raise ConfigError(f"run_id: not resuming: {why}")


def _lock(path: Path) -> store.RunLock:
    try:
        return store.RunLock(path)
    except store.RunInUseError as exc:
        raise ConfigError(str(exc)) from None


def prepare_run_dir(cfg: DictConfig) -> tuple[str, Path, set[str], store.RunLock]:
    """Create (or reopen, to resume) the run folder and its bookkeeping folder and lock the run;
    return run id, folder, finished keys and the lock, which the caller releases when its last
    row is written."""
    run_id = cfg.run_id or store.new_run_id()
    path = store.run_dir(cfg.results_dir, cfg.sweep.name, run_id)
    files = store.run_files(path)
    config_file = files.config
    if config_file.exists():
        lock = _lock(path)  # before compacting: another driver may still be appending
        try:
            written_by = store.run_version(path)
            if written_by != __version__:
                raise ConfigError(
                    f"run_id: run {run_id} was written by bench {written_by}, this is bench "
                    f"{__version__}, whose trials may train differently; start a new run_id"
                )
            diff = config_diff(to_container(OmegaConf.load(config_file)), to_container(cfg))
            if diff:
                raise ConfigError(
                    f"run_id: run {run_id} was made with another config, not resuming it: "
                    f"{'; '.join(diff)}"
                )
            try:
                config = OmegaConf.to_yaml(cfg, resolve=True)
                return run_id, path, compact(path, config, written_by), lock
            except store.CorruptPartError as exc:
                raise ConfigError(str(exc)) from None
        except BaseException:
            lock.release()
            raise
    if path.exists() and (store.part_files(path) or store.journal_files(files.staging)):
        raise ConfigError(
            f"run_id: {path} holds results but no {config_file}; choose another run_id"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        files.meta.mkdir(exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"results_dir: cannot write to {path}: {exc.strerror or exc}") from None
    lock = _lock(path)
    try:
        if config_file.exists():  # another driver created this run between the checks above
            raise ConfigError(f"run_id: run {run_id} was just started by another driver")
        OmegaConf.save(cfg, config_file, resolve=True)
        store.write_version(path)
        mf.Manifest.create(files.manifest, config_file, __version__)
    except OSError as exc:
        lock.release()
        for half_written in (config_file, files.manifest):  # the rerun must find a fresh run
            half_written.unlink(missing_ok=True)
        full = diskfull.full(exc, path, None)
        if full is not None:
            raise full from None
        raise ConfigError(f"results_dir: cannot write to {path}: {exc.strerror or exc}") from None
    except BaseException:
        lock.release()
        raise
    return run_id, path, set(), lock


def compact(path: Path, config: str, written_by: str) -> set[str]:
    """A resume's compaction (store.compact_for_resume), its manifest kept: `writing` from
    before the first change, every part left in the folder listed afterwards (those a killed
    driver left unlisted are hashed now; a run from before manifests gets one)."""
    files = store.run_files(path)
    try:
        manifest = mf.Manifest.load(files.manifest)
    except ValueError as exc:
        raise ConfigError(f"run_id: {exc}") from None
    if manifest is not None:
        manifest.update(state=mf.WRITING)
    done = store.compact_for_resume(path, config, manifest)
    if manifest is None:
        manifest = mf.Manifest.create(files.manifest, files.config, written_by)
    listed = manifest.entries()
    unlisted = [p for p in store.part_files(path) if p.name not in listed]
    if unlisted:
        manifest.update(add=[mf.entry_of(p) for p in unlisted])
    manifest.rewrite()  # the log as one line per part again
    return done
