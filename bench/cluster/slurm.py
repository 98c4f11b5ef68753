"""`python -m bench ... cluster=slurm` outside a SLURM job: write a job, submit it, say how to follow it.

The job is a small generated file in the run's bookkeeping folder
(`<results>/<sweep>/.<run_id>/slurm/`, beside the run folder, which holds part files only) so that
it is the record of what ran and can be resubmitted as is. Its #SBATCH lines come from
`cluster.*` (each value validated by bench.config.validate_cluster to be one sbatch option); its
body runs slurm/bench.sbatch, which starts Ray across the job's nodes and runs `python -m bench`
with the same overrides plus a fixed `run_id` and an absolute `results_dir`, every word quoted
with shlex.quote. Inside the job
(SLURM_JOB_ID set) the same command line runs the sweep on that Ray cluster instead. The job is
requeueable and asks for SIGUSR1 `cluster.signal_lead_s` before its time limit; the fixed run_id
is what lets a requeued start resume the run (slurm/bench.sbatch, docs/clusters.md).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from omegaconf import DictConfig

from bench import paths
from bench.config import ConfigError, to_container

SBATCH_SCRIPT = paths.SBATCH_SCRIPT  # bench/slurm/ when installed, the checkout's slurm/ otherwise
# Overrides the generated job sets itself: the run it writes and where, and submission-only keys.
_REPLACED = {"run_id", "results_dir", "cluster.wait"}


def in_job() -> bool:
    """True inside a SLURM allocation: there `cluster=slurm` means "run here", not "submit"."""
    return bool(os.environ.get("SLURM_JOB_ID"))


def should_submit(cfg: DictConfig) -> bool:
    return to_container(cfg.cluster)["name"] == "slurm" and not in_job()


@dataclass
class Job:
    job_id: str
    script: Path
    output: Path
    run_dir: Path


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def job_overrides(args: list[str], run_id: str, results_dir: Path) -> list[str]:
    """The user's overrides for the job: same sweep, but a fixed run id and an absolute results dir,
    so that the submitter can print where the rows will be before the job starts."""
    kept = [a for a in args if _key(a) not in _REPLACED]
    extra = [f"run_id={run_id}", f"results_dir={results_dir}"]
    if not any(_key(a) == "progress" for a in args):
        extra.append("progress=false")  # a progress bar redrawn into a .out file is noise
    return [*kept, *extra]


def _sbatch_path(what: str, path: Path) -> str:
    """A path for an #SBATCH line: sbatch reads it in double quotes, which cannot be escaped."""
    text = str(path)
    if any(c in text for c in '"\n\r'):
        raise ConfigError(
            f"{what}: {text!r} cannot go on an #SBATCH line (it holds a quote or a line break)"
        )
    return f'"{text}"'


def sbatch_lines(cluster: dict[str, Any], output: Path, workdir: Path) -> list[str]:
    """#SBATCH lines: one task per node, cpus_per_node CPUs each (Ray's CPUs on that node)."""
    lines = [
        f"--job-name={cluster['job_name']}",
        f"--nodes={cluster['nodes']}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={cluster['cpus_per_node']}",
        f"--time={cluster['time']}",
        f"--output={_sbatch_path('cluster.results_dir', output)}",
        f"--chdir={_sbatch_path('cluster=slurm: the working directory', workdir)}",
        "--export=ALL",
        # Time limits and preemption: the job is requeueable, warned (its batch shell only, which
        # forwards a stop to the driver) before its limit, and one output file holds every start.
        "--requeue",
        "--open-mode=append",
    ]
    if cluster["signal_lead_s"] > 0:
        lines.append(f"--signal=B:USR1@{cluster['signal_lead_s']}")
    for key in ("partition", "account", "mem"):
        if cluster.get(key):
            lines.append(f"--{key}={cluster[key]}")
    if cluster["gpus_per_node"] > 0:
        kind = f"{cluster['gpu_type']}:" if cluster.get("gpu_type") else ""
        lines.append(f"--gres=gpu:{kind}{cluster['gpus_per_node']}")
    lines.extend(cluster.get("sbatch") or [])
    return [f"#SBATCH {line}" for line in lines]


def render(cfg: DictConfig, args: list[str], run_id: str, results_dir: Path, job_dir: Path) -> str:
    """The job file's text. Nothing from the config reaches bash unquoted."""
    cluster = to_container(cfg.cluster)
    python = cluster.get("python") or sys.executable
    command = [
        "exec",
        "bash",
        str(SBATCH_SCRIPT),
        *job_overrides(args, run_id, results_dir),
    ]
    return "\n".join(
        [
            "#!/usr/bin/env bash",
            f"# Written by `python -m bench ... cluster=slurm` for run {run_id}; resubmit with:",
            f"#   sbatch {shlex.quote(str(job_dir / 'job.sbatch'))}",
            *sbatch_lines(cluster, job_dir / "slurm-%j.out", Path.cwd()),
            "set -euo pipefail",
            f"export BENCH_PYTHON={shlex.quote(python)}",
            f"export BENCH_MAX_REQUEUES={int(cluster['max_requeues'])}",
            " ".join(shlex.quote(word) for word in command),
            "",
        ]
    )


def write_job(cfg: DictConfig, args: list[str]) -> tuple[Path, Path, str]:
    """Create the run's slurm/ bookkeeping folder and the job file; return (job file, run folder,
    run id)."""
    from bench import store

    run_id = cfg.run_id or store.new_run_id()
    results_dir = Path(cfg.cluster.results_dir or cfg.results_dir).expanduser().absolute()
    run_dir = store.run_dir(results_dir, cfg.sweep.name, run_id)
    job_dir = store.run_files(run_dir).slurm
    try:
        job_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cluster.results_dir: cannot create {job_dir}: {exc.strerror or exc}"
        ) from None
    script = job_dir / "job.sbatch"
    script.write_text(render(cfg, args, run_id, results_dir, job_dir))
    script.chmod(0o755)
    return script, run_dir, run_id


def submit(cfg: DictConfig, args: list[str], out: TextIO = sys.stdout) -> int:
    """Write the job, sbatch it, print the job id, where output and results go and how to follow
    it. Returns 0 once submitted, or with cluster.wait=true the job's own exit status."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise ConfigError(
            "cluster=slurm: sbatch not found on PATH; run this on a SLURM login node, "
            "or use cluster=local or cluster=ray"
        )
    from bench.sweep import expand
    from bench.waves import trials_phrase

    n_trials = len(expand(cfg))  # a sweep that cannot expand is refused before anything is queued
    script, run_dir, run_id = write_job(cfg, args)
    wait = bool(cfg.cluster.wait)
    cmd = [sbatch, "--parsable", *(["--wait"] if wait else []), str(script)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline().strip()  # --parsable: "JOBID" or "JOBID;CLUSTER", at once
    if not first:
        _, err = proc.communicate()
        raise ConfigError(
            f"cluster=slurm: sbatch refused the job {script}: {' '.join(err.split())}"
        )
    job_id = first.split(";", 1)[0]
    output = script.parent / f"slurm-{job_id}.out"
    print(f"submitted SLURM job {job_id}: {trials_phrase(cfg, n_trials)}, run {run_id}", file=out)
    print(f"  job file: {script}", file=out)
    print(f"  output:   {output}", file=out)
    print(f"  results:  {run_dir}", file=out)
    print(f"  follow:   tail -f {shlex.quote(str(output))}", file=out)
    print(f"  status:   squeue -j {job_id}   (after it ends: sacct -j {job_id})", file=out)
    print(f"  cancel:   scancel {job_id}", file=out)
    out.flush()
    if not wait:
        proc.stdout.close()
        proc.wait()
        return 0
    _, err = proc.communicate()
    rc = proc.returncode
    if output.exists():
        tail = output.read_text(errors="replace").splitlines()[-25:]
        print("\n".join(tail), file=out)
    state = "completed" if rc == 0 else f"ended with exit status {rc}"
    print(f"SLURM job {job_id} {state}; output: {output}", file=out)
    if err.strip() and rc != 0:
        print(f"sbatch: {' '.join(err.split())}", file=sys.stderr)
    return rc
