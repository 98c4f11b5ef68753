"""`python -m bench [overrides...]`: compose the config, run the sweep, exit non-zero on failure.

Hydra's compose API rather than `@hydra.main`: bench owns its output folders (results/<sweep>/
<run_id>) and turns every config error into one line that names the key, before any work starts.
Hydra's own flags (-m, --cfg job|hydra|all, --resolve, --info) and launchers are taken as a Hydra
app takes them (bench.hydra_flags, bench.multirun; docs/hydra.md).
"""

from __future__ import annotations

import os
import shlex
import sys

from bench.config import ConfigError, compose
from bench.diskfull import EXIT_CODE as DISK_FULL
from bench.diskfull import DiskFull
from bench.preempt import EXIT_RESUMABLE, Interrupted

USAGE = """usage: python -m bench +sweep=NAME [key=value ...]
       python -m bench -m +sweep=NAME key=a,b [...]   one run per combination (docs/hydra.md)
       python -m bench -m hydra/launcher=submitit_slurm hydra.launcher.partition=P ...   via Hydra's launcher
       python -m bench --cfg job|hydra|all [--resolve] [-p KEY] +sweep=NAME ...   print the config and exit
       python -m bench --info [all|config|defaults|defaults-tree|plugins|searchpath] +sweep=NAME ...
       python -m bench report RUN_DIR [--out DIR] [--metric M] [--threshold T]   write .<run_id>/report/report.md beside RUN_DIR
       python -m bench replay RUN_DIR [--trial KEY]   re-run stored trials, compare bits
       python -m bench verify RUN_DIR [--format text|json]   parts, schema, rows, config vs the run's manifest
           exit 0 verified, 1 problems (each named), 2 bad input, 3 no manifest (an older bench's run)
       python -m bench gate BASELINE_RUN CANDIDATE_RUN [--margin 0.01] [--unlabelled] [--markdown FILE]
           is the candidate worse beyond seed noise? exit 0 pass, 1 worse, 3 inconclusive, 2 bad input (docs/gate.md)
       python -m bench score RUN_DIR [--dataset FILE | dataset.KEY=VALUE ...]   stored models (save_models=true) on new data
       python -m bench monitor BASELINE_RUN BATCH_DIR [--alpha A] [--unlabelled] [--markdown FILE]   new batches vs seed noise (exit 1: alarm)
       python -m bench stream OUT_DIR [--batches N] [--shift S] [--unlabelled]   synthetic batches drifting away from train.csv
       python -m bench export mlflow RUN_DIR [--tracking-uri URI] [--experiment NAME]   one MLflow run per trial

sweeps: seeds, smoke, libraries, determinism, threads, hardware, cpu_isa
groups: dataset=..., model=..., cluster=...
models: logreg, mlp, linear_svm, cnn, svm_rbf, decision_tree
experiments: +experiment=heart, +experiment=update, +experiment=seed_picking
yours:  model=sklearn_estimator|torch_module|keras_model model._target_=pkg.Name +model.<arg>=...
data:   dataset=table dataset.path=FILE dataset.target=COLUMN; dataset=images dataset.path=DIR
examples:
  python -m bench +sweep=smoke
  python -m bench +sweep=seeds dataset=digits model=mlp libraries=[torch,tensorflow] seeds.n=20
results: results/<sweep>/<run_id>/part-*.parquet, read with pandas.read_parquet(folder)
"""


# `python -m bench NAME ...`: the module whose main(args) runs it, imported only when named.
SUBCOMMANDS = {
    "report": "bench.report",
    "replay": "bench.replay",
    "export": "bench.export",
    "score": "bench.score",
    "gate": "bench.gate",
    "monitor": "bench.monitor",
    "stream": "bench.data.stream",
    "verify": "bench.verify",
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in SUBCOMMANDS:  # a subcommand, not an override: no Hydra composition
        import importlib

        return importlib.import_module(SUBCOMMANDS[args[0]]).main(args[1:])
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0
    from bench.hydra_flags import parse_flags, show_cfg, show_info, show_version

    try:
        flags = parse_flags(args)
        if flags.version:
            return show_version()
        if flags.cfg is not None:
            return show_cfg(flags)
        if flags.info is not None:
            return show_info(flags)
        if flags.multirun:
            from bench.multirun import main as multirun

            return multirun(flags.overrides, flags.typed)
        args = flags.overrides
        cfg = compose(args)
        from bench.cluster.slurm import should_submit

        if should_submit(cfg):  # cluster=slurm outside a job: write and sbatch one, then return
            from bench.cluster.slurm import submit

            return submit(cfg, args)
        if cfg.updates.enabled:  # +experiment=update: several runs, the gate, the monitor
            from bench.experiments.update import run_update

            return run_update(cfg, args)
        if cfg.seed_picking.enabled:  # +experiment=seed_picking: a run per dataset, one report
            from bench.experiments.seed_picking import run_seed_picking

            return run_seed_picking(cfg, args)
        from bench.runner import run_sweep

        outcome = run_sweep(cfg, overrides=args)  # recorded in every row
    except ConfigError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except DiskFull as exc:  # what is on disk is kept; the same run_id resumes (bench.diskfull)
        print(f"bench: error: {exc}", file=sys.stderr)
        return DISK_FULL
    except Interrupted as exc:
        again = shlex.join(  # pasteable: a path with a space stays one argument
            [*(a for a in args if not a.startswith("run_id=")), f"run_id={exc.run_id}"]
        )
        if exc.signal is None:  # Ctrl-C
            print(f"bench: {exc}; resume with: python -m bench {again}", file=sys.stderr)
            return 130
        # A planned stop (bench.preempt): slurm/bench.sbatch requeues the job on this exit code.
        how = (
            f"job {os.environ['SLURM_JOB_ID']} continues it when requeued"
            if os.environ.get("SLURM_JOB_ID")
            else "resume with the same run_id"
        )
        print(
            f"bench: {exc}; run {exc.run_id} is resumable ({how}): python -m bench {again}",
            file=sys.stderr,
        )
        return EXIT_RESUMABLE
    return 0 if outcome.n_error == 0 else 1
