"""`python -m bench -m ...`: Hydra's multirun, each combination its own bench run.

The sweep grammar is Hydra's own (comma lists, `range(...)`, `choice(...)`, `glob(...)`, read by
Hydra's override parser), expanded into the cartesian product in Hydra's order. Every combination
is composed and validated before anything runs, so a bad one is refused in one line naming it and
its key, with no run started. Then:

- without a launcher, bench runs the combinations one after another in this process, each as
  `python -m bench` would run it alone: its own run folder (results_dir/<sweep>/<run_id>), its own
  summary. No Hydra output folder is made. The exit code is the worst of the runs'.
- with `hydra/launcher=NAME` (hydra-submitit-launcher's submitit_slurm or submitit_local, or any
  other Hydra launcher), Hydra's own multirun hands the combinations to that launcher, which runs
  `job` for each (on SLURM: an array job, one task per combination). `hydra.launcher.*` and
  `hydra.sweep.dir` (where the launcher keeps its logs and Hydra its per-job folders) are
  honoured; rows still go to results_dir/<sweep>/<run_id>.

A sweep over one of bench's own axes (libraries, seeds.n, mode, threads, ...) is refused with the
one-run equivalent (bench.overrides.AXES): those values belong side by side in one run.
"""

from __future__ import annotations

import itertools
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from bench.config import CONF_DIR, ConfigError, compose, estimator_arguments, free_form
from bench.overrides import Override, axis_equivalent, axis_refusal, hydra_refusal, parse
from bench.preempt import EXIT_RESUMABLE


@dataclass
class Plan:
    combos: list[list[str]]  # each combination's overrides, as `python -m bench` takes them
    launcher: list[str]  # the hydra/launcher, hydra.launcher.* and hydra.sweep.* overrides
    configs: list[DictConfig]  # each combination composed and validated


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~").split("@", 1)[0]


def expand(overrides: list[str], flags: list[str]) -> tuple[list[list[str]], list[str]]:
    """(the combinations, the launcher overrides): Hydra's basic sweeper's cartesian product,
    a later override of a key replacing an earlier one, combinations in Hydra's order."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="bench"):
        parsed = parse(overrides, GlobalHydra.instance().config_loader())
    GlobalHydra.instance().clear()
    launcher = [o for o in parsed if o.hydra]
    for o in launcher:
        if not o.launcher:
            raise hydra_refusal(o, multirun=True)
        if o.values is not None:
            raise ConfigError(f"{o.key}: one launcher setting per multirun, got {o.value_text}")
    if launcher and not any(o.key == "hydra/launcher" for o in launcher):
        raise ConfigError(
            f"{launcher[0].key}: applies to a Hydra launcher; choose one with "
            "hydra/launcher=NAME (e.g. submitit_slurm, submitit_local)"
        )
    job: list[Override] = [o for o in parsed if not o.hydra]
    for o in job:
        if o.values is not None and axis_equivalent(o) is not None:
            raise axis_refusal(o, flags, job)
    by_key: dict[str, list[str]] = {}
    for o in job:
        by_key.pop(o.ident, None)  # a later override of the key wins, at its own position
        by_key[o.ident] = o.values if o.values is not None else [o.line]
    combos = [list(c) for c in itertools.product(*by_key.values())]
    return combos, [o.line for o in launcher]


def plan(overrides: list[str], flags: list[str]) -> Plan:
    """Expand and compose every combination; refuse, before anything runs, what cannot run."""
    combos, launcher = expand(overrides, flags)
    if launcher:
        _launcher_setting(launcher, "_target_")  # an unknown launcher or setting: one line now
    run_ids = {tuple(o for o in c if _key(o) == "run_id") for c in combos}
    if len(combos) > 1 and any(run_ids) and len(run_ids) < len(combos):
        raise ConfigError(
            f"run_id: names one run, and this multirun makes {len(combos)}; drop run_id "
            "(each run gets its own) or give one per combination"
        )
    configs = []
    for i, combo in enumerate(combos, 1):
        try:
            configs.append(compose(combo))
        except ConfigError as exc:
            if len(combos) == 1:
                raise
            where = f"run {i} of {len(combos)} ({' '.join(_swept(combo, combos))})"
            raise ConfigError(f"{exc} [{where}]") from None
    if launcher:
        for cfg in configs:
            if str(cfg.cluster.name.value) == "slurm":
                raise ConfigError(
                    "cluster=slurm: bench would submit its own SLURM job from inside the "
                    "launcher's; with hydra/launcher=NAME leave cluster=local (each job starts "
                    "Ray on its node) or join a Ray cluster with cluster=ray"
                )
    return Plan(combos, launcher, configs)


def _swept(combo: list[str], combos: list[list[str]]) -> list[str]:
    """The overrides of `combo` that differ between combinations: what names it."""
    varying = [o for j, o in enumerate(combo) if len({c[j] for c in combos}) > 1]
    return varying or combo


def run_one(overrides: list[str], cfg: DictConfig | None = None) -> tuple[int, str | None]:
    """One bench run, as `python -m bench OVERRIDES` does it: (exit code, run folder)."""
    from bench.cluster.slurm import should_submit, submit
    from bench.runner import Interrupted, run_sweep

    try:
        cfg = compose(overrides) if cfg is None else cfg
        if should_submit(cfg):
            return submit(cfg, overrides), None
        outcome = run_sweep(cfg)
    except ConfigError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2, None
    except Interrupted as exc:
        again = [*(a for a in overrides if _key(a) != "run_id"), f"run_id={exc.run_id}"]
        print(f"bench: {exc}; resume with: python -m bench {shlex.join(again)}", file=sys.stderr)
        # A stop signal (SLURM's warning, preemption) is the planned, resumable stop (75), as
        # for `python -m bench`; Ctrl-C is 130.
        return (EXIT_RESUMABLE if exc.signal else 130), str(exc.path)
    return (0 if outcome.n_error == 0 else 1), str(outcome.path)


def run_here(p: Plan) -> int:
    """The combinations one after another in this process; exit code the worst of them."""
    n = len(p.combos)
    print(f"multirun: {n} run(s), one after another, each its own run folder", file=sys.stderr)
    done: list[tuple[list[str], int, str | None]] = []
    for i, (combo, cfg) in enumerate(zip(p.combos, p.configs, strict=True), 1):
        print(f"multirun [{i}/{n}]: python -m bench {shlex.join(combo)}", file=sys.stderr)
        rc, path = run_one(combo, cfg)
        done.append((combo, rc, path))
        if rc in (130, EXIT_RESUMABLE):
            left = n - i
            how = "interrupted" if rc == 130 else "stopped by a signal"
            print(f"multirun: {how}; {left} run(s) not started", file=sys.stderr)
            break
    _print_done(done, p.combos)
    return max(rc for _, rc, _ in done)


def _print_done(done: list[tuple[list[str], int, str | None]], combos: list[list[str]]) -> None:
    print(f"multirun: {len(done)} of {len(combos)} run(s):", file=sys.stderr)
    for combo, rc, path in done:
        print(
            f"  exit {rc}  {' '.join(_swept(combo, combos))}  -> {path or '(no run folder)'}",
            file=sys.stderr,
        )


def job(cfg: DictConfig) -> tuple[int, str | None]:
    """A Hydra launcher's task: one combination, read from Hydra's job overrides, run as
    `python -m bench` runs it (the config Hydra composed is only what it printed)."""
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task)
    return run_one(overrides)


def _job_extras(p: Plan) -> list[str]:
    """What every launched job adds to its overrides: an absolute results_dir (a job may start
    elsewhere), no progress bar (its output is a log file), and Ray's CPUs from the launcher's
    cpus_per_task, unless the user set them."""
    given = {_key(o) for o in p.combos[0]}
    extra = []
    results = {str(cfg.results_dir) for cfg in p.configs}
    if len(results) == 1 and not Path(only := results.pop()).is_absolute():
        extra.append(f"results_dir={Path(only).expanduser().absolute()}")
    if "progress" not in given:
        extra.append("progress=false")
    if "cluster.num_cpus" not in given:
        cpus = _launcher_setting(p.launcher, "cpus_per_task")
        if cpus:
            extra.append(f"cluster.num_cpus={cpus}")
    return extra


def _launcher_setting(launcher: list[str], name: str) -> Any:
    """A setting of the chosen launcher, as Hydra composes `hydra.launcher`."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from bench.config import one_line

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="bench"):
            cfg = hydra_compose("config", overrides=launcher, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as exc:
        message = one_line(exc)
        if message.startswith("hydra/launcher: unknown option") and "submitit" not in message:
            message += (
                " (pip install hydra-submitit-launcher brings submitit_slurm and submitit_local)"
            )
        raise ConfigError(message) from None
    finally:
        GlobalHydra.instance().clear()
    return cfg.hydra.launcher.get(name)


def run_launcher(p: Plan) -> int:
    """The combinations handed to the chosen Hydra launcher, as Hydra's multirun hands a batch
    of jobs to it; each job runs `job`. Exit code the worst of the jobs'."""
    from hydra import initialize_config_dir
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.plugins import Plugins
    from hydra.errors import HydraException
    from hydra.types import HydraContext, RunMode

    extra = _job_extras(p)
    jobs = [[free_form(o) for o in estimator_arguments(c)] + extra for c in p.combos]
    print(f"multirun: {len(jobs)} run(s) through {' '.join(p.launcher)}", file=sys.stderr)
    sweep_dir: Path | None = None
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="bench"):
            loader = GlobalHydra.instance().config_loader()
            cfg = loader.load_configuration(
                config_name="config", overrides=[*p.launcher, *jobs[0]], run_mode=RunMode.MULTIRUN
            )
            HydraConfig.instance().set_config(cfg)
            sweep_dir = Path(str(cfg.hydra.sweep.dir)).absolute()
            callbacks = Callbacks(cfg)
            callbacks.on_multirun_start(config=cfg, config_name="config")
            launcher = Plugins.instance().instantiate_launcher(
                hydra_context=HydraContext(config_loader=loader, callbacks=callbacks),
                task_function=job,
                config=cfg,
            )
            returns = launcher.launch(jobs, initial_job_idx=0)
            callbacks.on_multirun_end(config=cfg, config_name="config")
    except HydraException as exc:
        from bench.config import one_line

        raise ConfigError(f"{p.launcher[0]}: {one_line(exc)}") from None
    except Exception as exc:  # a launched job that died (time limit, node): submitit raises
        why = " ".join(str(exc).split())[:300]
        print(f"bench: a launched job failed: {why}; its logs: {sweep_dir}", file=sys.stderr)
        return 1
    finally:
        GlobalHydra.instance().clear()
    done: list[tuple[list[str], int, str | None]] = []
    for combo, ret in zip(p.combos, returns, strict=True):
        try:
            rc, path = ret.return_value
        except Exception as exc:  # the job itself died; its log under hydra.sweep.dir says why
            rc, path = 1, None
            print(f"bench: a job failed: {' '.join(str(exc).split())[:300]}", file=sys.stderr)
        done.append((combo, rc, path))
    print(f"multirun: the launcher's logs: {sweep_dir}", file=sys.stderr)
    _print_done(done, p.combos)
    return max(rc for _, rc, _ in done)


def main(overrides: list[str], flags: list[str]) -> int:
    p = plan(overrides, flags)
    return run_launcher(p) if p.launcher else run_here(p)
