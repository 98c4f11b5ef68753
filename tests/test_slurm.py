"""A real single-node SLURM on localhost: slurm/bench.sbatch and `cluster=slurm` end to end.

The session fixture starts what a SLURM cluster runs (Debian slurm-wlm 22.05 and munge, as
DESIGN.md measured): munged as user munge with its own key and socket, slurmctld and
`slurmd -N localhost` from a slurm.conf whose ports, state, spool and logs are private to this
session, so nothing collides with a system SLURM or munge or with another test session. It stops
them by pid at the end and checks that nothing it started (daemons, job steps, Ray) is left.
`.ci/run` installs the packages; without them (or without root, which munged and slurmd need) the
daemon tests are skipped with the reason.

Loopback only: slurmctld and slurmd listen on 127.0.0.1, never on 0.0.0.0 (SLURM's default) or the
machine's own address. `CommunicationParameters=NoCtldInAddrAny,NoInAddrAny` makes them bind to one
address instead of every one, but SLURM 22.05 takes that address from gethostname(), not from
SlurmctldHost or NodeAddr: on a machine whose name resolves to its interface address they would
listen there, where the clients (which connect to 127.0.0.1) never reach them. So both daemons
start in a UTS namespace of their own whose hostname is `localhost` (`unshare --uts`; root), and
the jobs they run inherit it (their hostname is `localhost`). The munge socket is a Unix socket.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench import store
from bench.cluster.localray import free_port, is_loopback, listening, process_tree, processes_naming
from bench.store import run_dirs

REPO_ROOT = Path(__file__).resolve().parent.parent
SBATCH = REPO_ROOT / "slurm" / "bench.sbatch"
CPUS = min(2, os.cpu_count() or 1)
# sklearn + torch, one seed x {split, none}: 4 short trials.
SWEEP = ["+sweep=smoke", "libraries=[sklearn,torch]", "seeds.n=1", "model.epochs=2"]

pytestmark = pytest.mark.slurm  # and `slow` on the tests that need the daemons

# NoCtldInAddrAny, NoInAddrAny: slurmctld, slurmd (and the job steps' srun) bind to the address
# of their hostname, `localhost` in their namespace (_loopback_launcher), not to every address.
SLURM_CONF = """\
ClusterName=benchtest
SlurmctldHost=localhost(127.0.0.1)
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.sock,cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
MinJobAge=600
JobRequeue=1
KillWait=30
OverTimeLimit=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class Slurm:
    root: Path
    env: dict[str, str]  # the user's environment plus SLURM_CONF and BENCH_PYTHON
    pids: dict[str, Path] = field(default_factory=dict)  # daemon name -> its pid file

    def run(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            list(cmd), env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, ExitCode, StdOut, ...)."""
        out = self.run("scontrol", "show", "job", "--oneliner", job_id).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def log(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
            for p in sorted((self.root / "log").glob("*.log"))
        )


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return False


def _stop(pid: int | None, timeout: float = 20) -> None:
    if not _alive(pid):
        return
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def _stepds() -> set[int]:
    return {pid for pid in processes_naming("slurmstepd")}


def _why_not() -> str | None:
    """Why the daemons cannot start here, or None."""
    if not sys.platform.startswith("linux"):
        return "SLURM on localhost needs Linux"
    missing = [
        b
        for b in ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "runuser")
        if shutil.which(b, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None
    ]
    if missing:
        return (
            f"not installed: {', '.join(missing)} (apt-get install slurm-wlm munge; .ci/run does)"
        )
    if os.geteuid() != 0:
        return "starting munged (as user munge) and slurmd needs root"
    try:
        import pwd

        pwd.getpwnam("munge")
    except KeyError:
        return "no 'munge' user (the munge package creates it)"
    return None


# Runs the command it is given with `localhost` as the hostname, in the UTS namespace `unshare`
# made for it (a daemon started this way keeps that namespace; the system's hostname is unchanged).
AS_LOCALHOST = (
    "import os, socket, sys; socket.sethostname('localhost'); os.execvp(sys.argv[1], sys.argv[1:])"
)


def _loopback_launcher(sbin: str) -> list[str] | str:
    """The command prefix that makes SLURM's daemons bind to 127.0.0.1 (see the module's
    docstring), or why there is none here."""
    unshare = shutil.which("unshare", path=sbin)
    why = "unshare not installed"
    if unshare:
        prefix = [unshare, "--uts", sys.executable, "-c", AS_LOCALHOST]
        probe = subprocess.run([*prefix, "true"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return prefix
        why = probe.stderr.strip()
    # No namespace (no unshare, or a container without CAP_SYS_ADMIN): the daemons bind to what
    # this machine's own name resolves to, which must then be loopback.
    name = socket.gethostname()
    try:
        address = socket.gethostbyname(name)
    except OSError:
        address = "nothing"
    if address == "127.0.0.1":
        return []
    return (
        f"SLURM's daemons would listen on {address} ({name}), not on 127.0.0.1 only: "
        f"`unshare --uts` failed ({why}) and this machine's name does not resolve to 127.0.0.1"
    )


@pytest.fixture(scope="session")
def slurm() -> Iterator[Slurm]:
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    sbin = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    launcher = _loopback_launcher(sbin)
    if isinstance(launcher, str):
        pytest.skip(launcher)
    root = Path(tempfile.mkdtemp(prefix="bslurm-", dir="/tmp"))  # short: socket paths
    root.chmod(0o755)  # munged refuses a socket whose parent directories others cannot traverse
    for sub in ("state", "spool", "log"):
        (root / sub).mkdir()
    (root / "munge").mkdir(mode=0o755)  # the socket, readable by every user
    (root / "munge-etc").mkdir(mode=0o700)  # key, seed, pid and log, munge's alone
    key = root / "munge-etc" / "munge.key"
    key.write_bytes(os.urandom(128))
    key.chmod(0o400)
    shutil.chown(root / "munge", "munge", "munge")
    for path in (root / "munge-etc", key):
        shutil.chown(path, "munge", "munge")
    conf = root / "slurm.conf"
    conf.write_text(
        SLURM_CONF.format(
            root=root, ctld_port=free_port(), slurmd_port=free_port(), cpus=os.cpu_count() or 1
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "SLURM_JOB_ID")}
    # BENCH_RAY_NODE_IP: the jobs' Ray nodes bind to and connect over loopback only.
    env.update(
        SLURM_CONF=str(conf), BENCH_PYTHON=sys.executable, PATH=sbin, BENCH_RAY_NODE_IP="127.0.0.1"
    )
    pids = {
        "munged": root / "munge-etc" / "munged.pid",
        "slurmctld": root / "slurmctld.pid",
        "slurmd": root / "slurmd.pid",
    }
    state = Slurm(root, env, pids)
    stepds_before = _stepds()

    def start(cmd: list[str]) -> None:
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {result.stderr.strip()}")

    try:
        start(
            [
                "runuser", "-u", "munge", "--", shutil.which("munged", path=sbin) or "munged",
                f"--socket={root}/munge/munge.sock",
                f"--key-file={key}",
                f"--pid-file={pids['munged']}",
                f"--log-file={root}/munge-etc/munged.log",
                f"--seed-file={root}/munge-etc/munged.seed",
            ]
        )  # fmt: skip
        start([*launcher, "slurmctld", "-c"])
        start([*launcher, "slurmd", "-N", "localhost"])
        deadline = time.monotonic() + 60
        while state.run("sinfo", "-h", "-o", "%T").stdout.strip() != "idle":
            if time.monotonic() > deadline:
                raise RuntimeError("the node did not become idle within 60 s")
            time.sleep(0.5)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        for name in ("slurmd", "slurmctld", "munged"):
            _stop(_pid(pids[name]))
        pytest.fail(f"SLURM did not start on localhost: {exc}\n{state.log()}")
    try:
        yield state
    finally:
        state.run("scontrol", "shutdown")
        for name in ("slurmd", "slurmctld", "munged"):
            pid = _pid(pids[name])
            _stop(pid)
            assert not _alive(pid), f"{name} (pid {pid}) outlived the tests"
        left = (_stepds() - stepds_before) | set(processes_naming(f"{root}/"))
        assert not left, f"processes started by the SLURM tests are still running: {left}"
        shutil.rmtree(root, ignore_errors=True)


def _beyond_loopback(rows: list[tuple[int, str, str, int]]) -> list[str]:
    """`listening()` rows whose address is not loopback, as `name (pid N) on ADDRESS:PORT`."""
    return [f"{Path(name).name} (pid {pid}) on {address}:{port}"
            for pid, name, address, port in rows if not is_loopback(address)]  # fmt: skip


@pytest.mark.slow
def test_the_slurm_daemons_listen_on_loopback_only(slurm: Slurm) -> None:
    """slurmctld and slurmd listen on 127.0.0.1 only (SLURM's default is 0.0.0.0); munged has a
    Unix socket only. Both still reach each other: the fixture waited for the node to be idle,
    which takes slurmd's registration with slurmctld and slurmctld's ping of slurmd."""
    pids = {name: _pid(path) for name, path in slurm.pids.items()}
    rows = listening([pid for pid in pids.values() if pid is not None])
    for name in ("slurmctld", "slurmd"):  # the listing sees the daemons' ports
        assert any(pid == pids[name] for pid, *_ in rows), (name, pids, rows)
    assert not _beyond_loopback(rows), _beyond_loopback(rows)


def _ray_dir(output: str) -> str:
    """The job's private Ray temp dir, from the head's start-up lines in the job output."""
    found = re.search(r"(/tmp/bench-ray\.[A-Za-z0-9]+)/session_", output)
    assert found, output[-3000:]
    return found.group(1)


def _rows(path: Path):
    import pandas as pd

    return pd.read_parquet(path)


@pytest.mark.slow
@pytest.mark.extended  # the requeue test below runs the script end to end too (CI's 30 minutes)
def test_sbatch_script_runs_a_smoke_sweep_and_stops_ray(slurm: Slurm, tmp_path: Path) -> None:
    result = slurm.run(
        "sbatch", "--parsable", "--wait", f"--output={tmp_path}/job-%j.out",
        f"--cpus-per-task={CPUS}", f"--chdir={tmp_path}", str(SBATCH),
        *SWEEP, f"results_dir={tmp_path}/results", "run_id=viasbatch", "progress=false",
        timeout=240,
    )  # fmt: skip
    job_id = result.stdout.strip().split(";")[0]
    output_file = tmp_path / f"job-{job_id}.out"
    output = output_file.read_text(errors="replace") if output_file.exists() else ""
    assert result.returncode == 0, f"{result.stderr}\n{output[-4000:]}\n{slurm.log()}"

    job = slurm.job(job_id)
    assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", job
    sacct = slurm.run("sacct", "-n", "-j", job_id, "-o", "State,ExitCode")
    if sacct.returncode == 0 and sacct.stdout.strip():  # only with slurmdbd; none here
        assert "COMPLETED" in sacct.stdout
    assert "Ray cluster ready: 1 node(s)" in output
    assert "Ray stopped; exit status 0" in output

    rows = _rows(tmp_path / "results" / "smoke" / "viasbatch")
    assert len(rows) == 4 and (rows["status"] == "ok").all()
    assert rows["ray_node_id"].notna().all()

    ray_dir = _ray_dir(output)
    assert not processes_naming(ray_dir), "Ray processes outlived the job"
    assert not Path(ray_dir).exists()


@pytest.mark.slow
def test_cluster_slurm_writes_submits_and_waits(slurm: Slurm, tmp_path: Path) -> None:
    results = tmp_path / "shared results"  # a space: every path in the job must stay quoted
    result = subprocess.run(
        [
            sys.executable, "-m", "bench", *SWEEP, "cluster=slurm", "cluster.wait=true",
            f"cluster.cpus_per_node={CPUS}", "cluster.time=10", "cluster.job_name=bench-test",
            f"results_dir={results}", "run_id=viacli",
        ],
        cwd=tmp_path, env=slurm.env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
    out = result.stdout
    job_id = re.search(r"submitted SLURM job (\d+)", out).group(1)  # type: ignore[union-attr]
    run_dir = results / "smoke" / "viacli"
    job_dir = store.run_files(run_dir).slurm  # beside the run folder, which holds parts only
    assert job_dir == results / "smoke" / ".viacli" / "slurm"
    output = job_dir / f"slurm-{job_id}.out"
    assert f"output:   {output}" in out
    assert f"tail -f {shlex.quote(str(output))}" in out and f"squeue -j {job_id}" in out
    assert f"SLURM job {job_id} completed" in out

    script = (job_dir / "job.sbatch").read_text()
    assert "#SBATCH --job-name=bench-test" in script and "#SBATCH --time=10" in script
    assert f"#SBATCH --cpus-per-task={CPUS}" in script
    command = shlex.split(script.strip().splitlines()[-1])
    assert command[:3] == ["exec", "bash", str(SBATCH)]
    assert f"results_dir={results}" in command and "run_id=viacli" in command

    rows = _rows(run_dir)
    assert len(rows) == 4 and (rows["status"] == "ok").all()
    job = slurm.job(job_id)
    assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", job
    assert not processes_naming(_ray_dir(output.read_text(errors="replace")))


@pytest.mark.slow
def test_cluster_slurm_returns_at_once_and_a_failed_job_shows_it(
    slurm: Slurm, tmp_path: Path
) -> None:
    """Without wait, bench returns after submitting; a job whose interpreter fails ends FAILED."""
    start = time.monotonic()
    result = subprocess.run(
        [
            sys.executable, "-m", "bench", "+sweep=smoke", "libraries=[sklearn]", "cluster=slurm",
            f"cluster.cpus_per_node={CPUS}", "cluster.python=/bin/false", f"results_dir={tmp_path}",
        ],
        cwd=tmp_path, env=slurm.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    job_id = re.search(r"submitted SLURM job (\d+)", result.stdout).group(1)  # type: ignore[union-attr]
    assert "tail -f" in result.stdout and f"squeue -j {job_id}" in result.stdout
    deadline = time.monotonic() + 90
    while (job := slurm.job(job_id)).get("JobState") in ("PENDING", "RUNNING", "COMPLETING", None):
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    assert job["JobState"] == "FAILED" and job["ExitCode"] != "0:0", job
    assert time.monotonic() - start < 90


@pytest.mark.slow
@pytest.mark.extended  # cluster=slurm is tested in the default run (CI's 30 minutes)
def test_hydra_submitit_slurm_launcher_runs_each_combination_as_an_array_task(
    slurm: Slurm, tmp_path: Path
) -> None:
    """A team on Hydra launchers: `python -m bench -m hydra/launcher=submitit_slurm ...` with the
    real hydra-submitit-launcher. Each combination is one task of a SLURM array job that runs
    bench with an embedded Ray on its node; the rows land in results_dir (docs/hydra.md)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep_dir = tmp_path / "multirun"
    result = subprocess.run(
        [
            sys.executable, "-m", "bench", "-m", "hydra/launcher=submitit_slurm",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10",
            "hydra.launcher.partition=debug", f"hydra.sweep.dir={sweep_dir}",
            "+sweep=smoke", "libraries=[sklearn]", "seeds.n=1", "model=logreg,decision_tree",
            f"results_dir={tmp_path / 'results'}",
        ],
        cwd=tmp_path, env=slurm.env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in sweep_dir.rglob("*_log.*"))
    assert result.returncode == 0, f"{result.stderr[-3000:]}\n{logs}\n{slurm.log()}"
    runs = run_dirs(tmp_path / "results" / "smoke")
    models = set()
    for run in runs:
        rows = _rows(run)
        assert len(rows) == 2 and (rows["status"] == "ok").all()
        models.add(rows["model"].iloc[0])
    assert models == {"logreg", "decision_tree"}
    # submitit's folders are named by SLURM's array job id; SLURM ran both tasks to completion
    array_ids = {p.name.split("_")[0] for p in sweep_dir.glob(".submitit/[0-9]*_[0-9]*")}
    assert len(array_ids) == 1, sorted(sweep_dir.rglob("*"))
    job_id = array_ids.pop()
    deadline = time.monotonic() + 60  # submitit reads a result before SLURM closes its task
    for task in ("0", "1"):
        while (job := slurm.job(f"{job_id}_{task}")).get("JobState") in ("RUNNING", "COMPLETING"):
            assert time.monotonic() < deadline, job
            time.sleep(0.5)
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", job
    assert not processes_naming(str(sweep_dir)), "job processes outlived the array job"


def test_cluster_slurm_without_sbatch_is_one_line_naming_it(tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "SLURM_JOB_ID"}
    env["PATH"] = str(bare)
    result = subprocess.run(
        [sys.executable, "-m", "bench", "+sweep=smoke", "cluster=slurm"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error: cluster=slurm: sbatch not found")
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("cluster.time=soon", "cluster.time"),
        ("cluster.nodes=0", "cluster.nodes"),
        ("cluster.partition='gpu; rm -rf /'", "cluster.partition"),
        ("cluster.sbatch=['--output=/tmp/x']", "cluster.sbatch"),
        ("cluster.sbatch=['-q short']", "cluster.sbatch"),
        ("cluster.mem=lots", "cluster.mem"),
        ("cluster.signal_lead_s=-1", "cluster.signal_lead_s"),
        ("cluster.max_requeues=-1", "cluster.max_requeues"),
        ("cluster.sbatch=['--signal=USR2@60']", "cluster.sbatch"),
        ("cluster.sbatch=['--no-requeue']", "cluster.sbatch"),
    ],
)
def test_bad_slurm_values_are_refused_naming_the_key(override: str, key: str) -> None:
    from bench.config import ConfigError, compose

    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: "):
        compose(["+sweep=smoke", "cluster=slurm", override])


def test_job_file_quotes_every_word(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Overrides with shell metacharacters reach bench as the same words, never as shell."""
    from bench.cluster.slurm import render
    from bench.config import compose

    monkeypatch.chdir(tmp_path)
    tricky = "dataset.path='a b;$(touch pwned) `x` \"q\"'"
    args = ["+sweep=smoke", "cluster=slurm", "cluster.gpus_per_node=2", "cluster.gpu_type=a100"]
    args += ["cluster.sbatch=['--qos=short']", tricky, "results_dir=elsewhere", "run_id=old"]
    cfg = compose(args)
    text = render(cfg, args, "rid", tmp_path / "r e s", tmp_path / "job")
    assert "#SBATCH --gres=gpu:a100:2" in text and "#SBATCH --qos=short" in text
    for line in ("--requeue", "--open-mode=append", "--signal=B:USR1@120"):  # time limits
        assert f"#SBATCH {line}\n" in text
    assert "export BENCH_MAX_REQUEUES=10\n" in text
    words = shlex.split(text.strip().splitlines()[-1])
    assert words[3:] == [
        "+sweep=smoke", "cluster=slurm", "cluster.gpus_per_node=2", "cluster.gpu_type=a100",
        "cluster.sbatch=['--qos=short']", tricky, "run_id=rid",
        f"results_dir={tmp_path / 'r e s'}", "progress=false",
    ]  # fmt: skip
    assert not (tmp_path / "pwned").exists()


def test_sbatch_script_is_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck; .ci/run does)")
    result = subprocess.run(["shellcheck", str(SBATCH)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


FAKE_SRUN = """#!/usr/bin/env bash
# Stand-in for srun on one machine: drop srun's own options, run the command here.
set -euo pipefail
while [[ $# -gt 0 && "$1" == --* ]]; do shift; done
exec "$@"
"""


# The two-node test on this project's busy 2-core machine (shared; load average 4 to 9): the
# Ray head took up to 28 s to answer, the second node up to 20 s more to join and the sweep about
# 40 s. The script polls for both nodes for BENCH_RAY_WAIT_S (one deadline for the two), then
# fails with a line saying what it saw and stops Ray itself; the test allows that wait plus as
# long again for the sweep and the stop, so that on a machine too slow the script gives up first,
# with its reason, and nothing is left running.
TWO_NODE_WAIT_S = 300
TWO_NODE_TIMEOUT_S = 2 * TWO_NODE_WAIT_S


def _start_time(pid: int) -> str | None:
    """A process's start time (/proc/PID/stat), to tell it from a later process with its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[19]


def _command(pid: int) -> str:
    """`PID: command line`, for messages."""
    try:
        return f"{pid}: " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace"
        )
    except OSError:
        return f"{pid}: gone"


def _still_running(started: dict[int, str | None]) -> list[int]:
    """Those of `started` (pid -> start time) that still run (zombies count as gone)."""
    return [pid for pid, at in started.items() if at and _start_time(pid) == at and _alive(pid)]


@pytest.mark.slow
def test_sbatch_script_starts_a_ray_worker_per_extra_node(tmp_path: Path) -> None:
    """The multi-node branch of bench.sbatch, which a one-machine SLURM cannot reach: a 2-node
    job's environment, and an `srun` stand-in that runs the worker command on this machine. The
    script must start the worker (its function shipped with `declare -f`), wait for 2 nodes, run
    trials on both, and leave no Ray process behind. While it runs, the test lists every TCP
    socket its processes (both nodes' GCS, raylets, agents and workers, and the driver) listen
    on, once a second: with BENCH_RAY_NODE_IP=127.0.0.1 each is on loopback only."""
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc to check sockets and that no Ray process is left")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(FAKE_SRUN)
    (bin_dir / "srun").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RAY_ADDRESS"))}
    env.update(
        SLURM_JOB_ID="fake-2-nodes",
        SLURM_JOB_NUM_NODES="2",
        SLURM_CPUS_PER_TASK="1",
        BENCH_PYTHON=sys.executable,
        BENCH_RAY_NODE_IP="127.0.0.1",
        BENCH_RAY_WAIT_S=str(TWO_NODE_WAIT_S),
        PATH=f"{bin_dir}:{env.get('PATH', '')}",
    )
    output_file = tmp_path / "job.out"
    sockets: set[tuple[int, str, str, int]] = set()  # (pid, name, address, port), ever listening
    started: dict[int, str | None] = {}  # every process of the job: pid -> its start time
    with output_file.open("wb") as sink:  # a file, not a pipe: nothing blocks on a full pipe
        job = subprocess.Popen(
            ["bash", str(SBATCH), *SWEEP[:-2], "seeds.n=2", "model.epochs=2",
             f"results_dir={tmp_path}", "progress=false"],
            cwd=tmp_path, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + TWO_NODE_TIMEOUT_S
    try:
        while job.poll() is None and time.monotonic() < deadline:
            pids = process_tree(job.pid)  # Ray's processes descend from the script
            sockets.update(listening(pids))
            for pid in pids:
                started.setdefault(pid, _start_time(pid))
            time.sleep(1)
    finally:
        over = job.poll() is None  # past the deadline (or the test failed): stop it all
        if over:
            job.terminate()  # the script stops the driver and Ray on SIGTERM
            try:
                job.wait(60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(job.pid, signal.SIGKILL)
                job.wait()
            for pid in _still_running(started):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    output = output_file.read_text(errors="replace")
    assert not over, f"the job ran over {TWO_NODE_TIMEOUT_S} s and was stopped\n{output[-4000:]}"
    assert job.returncode == 0, output[-4000:]
    assert "Ray cluster ready: 2 node(s), 2 CPU(s)" in output
    rows = _rows(tmp_path / "smoke" / "slurm-fake-2-nodes")  # no run_id given: the job's
    assert len(rows) == 8 and (rows["status"] == "ok").all()
    assert rows["ray_node_id"].nunique() == 2, rows["ray_node_id"].value_counts()

    # Every socket the job's processes listened on was loopback, and the listing saw the job's Ray
    # while both nodes were up (the GCS and two raylets), so it cannot pass by seeing nothing.
    assert not _beyond_loopback(sorted(sockets)), _beyond_loopback(sorted(sockets))
    head = re.search(r"Ray head at \S+:(\d+)", output)
    assert head, output[-4000:]
    names = {(Path(name).name, port) for _, name, _, port in sockets}
    assert ("gcs_server", int(head.group(1))) in names, sorted(sockets)
    raylets = {pid for pid, name, *_ in sockets if Path(name).name == "raylet"}
    assert len(raylets) == 2, sorted(sockets)

    ray_dir = _ray_dir(output)
    until = time.monotonic() + 30  # a killed process may take a moment to go on a busy machine
    while _still_running(started) and time.monotonic() < until:
        time.sleep(0.5)
    left = sorted(
        set(_still_running(started)) | {p for p in processes_naming(ray_dir) if _alive(p)}
    )
    assert not left, f"processes of the job outlived it: {[_command(pid) for pid in left]}"
    assert not Path(ray_dir).exists()


# Time limits and preemption (slurm/bench.sbatch, bench.preempt, docs/clusters.md). Trials are
# slowed with the hang hook (every trial sleeps mid-trial, then finishes ok) so that a sweep
# outlasts a job; both jobs run at once with one CPU each, so the two tests cost the longer one
# (about 2 minutes) rather than the sum. The test SLURM's cred_expire=10 makes a requeued job
# eligible 11 s after its requeue instead of SLURM's default 121 s.
PREEMPT_SWEEP = ["+sweep=smoke", "libraries=[sklearn]", "faults.hang_on=1.0", "progress=false"]
PREEMPT_SWEEP += ["cluster.stop_grace_s=10"]  # a 4.5 s trial in flight finishes within it
# 10 trials of 5 s on one CPU: longer than SLURM's warning leaves (slurmctld checks every 30 s and
# sends it once within lead + 30 s of the limit: @5 before a 1-minute limit is 25-55 s after the
# start), so the first start is always stopped. The hard limit comes 30 s or more after the warning.
TIMELIMIT_ARGS = [*PREEMPT_SWEEP, "seeds.n=5", "faults.hang_seconds=5", "run_id=timelimit"]
REQUEUE_ARGS = [*PREEMPT_SWEEP, "seeds.n=4", "faults.hang_seconds=3", "run_id=requeued"]
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL")


@dataclass
class ResumableJob:
    job_id: str
    args: list[str]
    run: Path
    output: Path
    raised: list[str] = field(default_factory=list)  # what raised its time limit, once requeued


def _raise_limit_once_requeued(slurm: Slurm, job: ResumableJob, stop: threading.Event) -> None:
    """Give the time-limit job 5 minutes once it has been requeued (see the test's docstring),
    the moment it is, while the other test runs."""
    while not stop.is_set():
        state = slurm.job(job.job_id)
        if state.get("Restarts", "0") != "0":
            result = slurm.run("scontrol", "update", f"JobId={job.job_id}", "TimeLimit=5")
            job.raised.append(f"{result.returncode} {result.stderr.strip()}")
            return
        if state.get("JobState") in ENDED:
            return
        stop.wait(0.5)


@pytest.fixture(scope="module")
def resumable_jobs(
    slurm: Slurm, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ResumableJob]]:
    """Both preemption jobs, submitted at once: a 1-minute job warned 5 s before its limit, and
    a 10-minute one that test_scontrol_requeue_... requeues mid-run."""
    jobs = {}
    for name, args, options in (
        ("requeued", REQUEUE_ARGS, ["--time=10"]),
        ("timelimit", TIMELIMIT_ARGS, ["--time=1", "--signal=B:USR1@5"]),
    ):
        tmp = tmp_path_factory.mktemp(name)
        result = slurm.run(
            "sbatch", "--parsable", f"--output={tmp}/job-%j.out", "--cpus-per-task=1",
            f"--chdir={tmp}", *options, str(SBATCH), *args, f"results_dir={tmp}/results",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        job_id = result.stdout.strip().split(";")[0]
        run = tmp / "results" / "smoke" / args[-1].split("=", 1)[1]
        jobs[name] = ResumableJob(job_id, args, run, tmp / f"job-{job_id}.out")
    stop = threading.Event()
    watcher = threading.Thread(
        target=_raise_limit_once_requeued, args=(slurm, jobs["timelimit"], stop), daemon=True
    )
    watcher.start()
    try:
        yield jobs
    finally:
        stop.set()
        watcher.join(timeout=30)
        for job in jobs.values():  # after a failure: no job may outlive the daemons
            if slurm.job(job.job_id).get("JobState") not in ENDED:
                slurm.run("scancel", job.job_id)
                _wait_until_ended(slurm, job, 90)


def _wait_until_ended(slurm: Slurm, job: ResumableJob, timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while (state := slurm.job(job.job_id)).get("JobState") not in ENDED:
        if time.monotonic() > deadline:
            raise AssertionError(f"{state}\n{_output(job)[-4000:]}\n{slurm.log()}")
        time.sleep(0.5)
    return state


def _output(job: ResumableJob) -> str:
    return job.output.read_text(errors="replace") if job.output.exists() else ""


def _journaled(run: Path) -> int:
    staging = store.run_files(run).staging
    return sum(store.read_journal(j).num_rows for j in store.journal_files(staging))


def _assert_one_ok_row_per_trial_and_nothing_left(job: ResumableJob, output: str) -> None:
    from bench.config import compose
    from bench.sweep import expand

    rows = _rows(job.run)
    every = {s.trial_key for s in expand(compose(job.args))}
    assert set(rows["trial_key"]) == every and rows["trial_key"].is_unique, output[-4000:]
    assert (rows["status"] == "ok").all(), rows.loc[rows["status"] != "ok", "error"].tolist()
    ray_dirs = set(re.findall(r"(/tmp/bench-ray\.[A-Za-z0-9]+)/session_", output))
    assert len(ray_dirs) == 2, output[-4000:]  # one Ray per start of the job
    for ray_dir in ray_dirs:
        assert not processes_naming(ray_dir) and not Path(ray_dir).exists()
    step = f"slurmstepd: [{job.job_id}."  # its batch step, once SLURM has closed it
    deadline = time.monotonic() + 30
    while processes_naming(step) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not processes_naming(step), "a job step outlived the job"


@pytest.mark.slow
def test_scontrol_requeue_mid_run_resumes_the_run_to_one_ok_row_per_trial(
    slurm: Slurm, resumable_jobs: dict[str, ResumableJob]
) -> None:
    """`scontrol requeue` (what preemption with PreemptMode=REQUEUE does) sends SIGTERM to every
    process of the job: the driver writes its finished rows and exits 75, and the requeued job
    runs the script again with the same run_id, which resumes the run."""
    job = resumable_jobs["requeued"]
    deadline = time.monotonic() + 180
    while not job.run.exists() or _journaled(job.run) < 2:
        assert time.monotonic() < deadline, f"no 2 rows in 180 s\n{_output(job)[-4000:]}"
        assert slurm.job(job.job_id).get("JobState") in ("PENDING", "RUNNING"), _output(job)
        time.sleep(0.2)
    requeue = slurm.run("scontrol", "requeue", job.job_id)
    assert requeue.returncode == 0, requeue.stderr
    state = _wait_until_ended(slurm, job, 240)
    output = _output(job)
    assert state["JobState"] == "COMPLETED" and state["ExitCode"] == "0:0", (state, output[-4000:])
    assert state["Restarts"] == "1", state
    # SLURM signals every process: the driver meets SIGTERM, or the shell's SIGUSR1, first
    assert "bench.sbatch: SIGTERM" in output and "bench: stopped by SIG" in output, output[-4000:]
    assert "run requeued is resumable" in output
    assert re.search(r"resuming run requeued: [2-7] of 8 trials already ok", output), output[-4000:]
    _assert_one_ok_row_per_trial_and_nothing_left(job, output)


@pytest.mark.slow
def test_a_sweep_longer_than_its_time_limit_requeues_itself_until_complete(
    slurm: Slurm, resumable_jobs: dict[str, ResumableJob]
) -> None:
    """A 1-minute job with a 50 s sweep: SLURM's warning (SIGUSR1 to the batch shell) stops the
    driver, which writes its rows and exits 75; the script stops Ray and requeues the job, whose
    second start resumes the run. Once requeued, the fixture raises the job's limit to 5 minutes:
    SLURM's 30 s check makes the warning arrive anywhere from 25 to 55 s into each start, and
    without that a second (or third) stop would cost CI another minute each. On a busy machine
    Ray and the driver may take most of that to start: a warning that comes before the driver
    runs skips the sweep in that start (nothing to write), and the requeued job runs it."""
    job = resumable_jobs["timelimit"]
    state = _wait_until_ended(slurm, job, 360)
    output = _output(job)
    assert job.raised == ["0 "], (job.raised, state, output[-4000:])
    assert state["JobState"] == "COMPLETED" and state["ExitCode"] == "0:0", (state, output[-4000:])
    assert state["Restarts"] == "1", state
    assert "bench.sbatch: SIGUSR1" in output, output[-4000:]
    assert f"requeueing job {job.job_id} (restart 1 of at most 10)" in output
    if "stopped by SIGUSR1" in output:  # the warning met a running sweep: its rows were kept
        resumed = r"resuming run timelimit: [1-9] of 10 trials already ok"
        assert re.search(resumed, output), output[-4000:]
    _assert_one_ok_row_per_trial_and_nothing_left(job, output)
