"""A real two-node Ray cluster on localhost: trials spread over both nodes and give the same bits
as an embedded run; per-trial resources that no node can hold are refused instead of hanging.

The cluster is two `ray start --block` processes (head + one node, 1 CPU each, own custom
resources) under a private temp dir with free ports and their own auth token, stopped at the end by
pid (bench.cluster.localray). Not `ray stop`: that stops every Ray on the machine, including other
people's embedded clusters.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.cluster.localray import LocalRayCluster, is_loopback

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# sklearn + torch, two seeds x {split, none}: 8 short CPU trials.
SWEEP = [
    "+sweep=smoke",
    "libraries=[sklearn,torch]",
    "model.epochs=2",
    "progress=false",
]


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[LocalRayCluster]:
    if not sys.platform.startswith("linux"):
        pytest.skip("the localhost Ray cluster reads /proc to stop exactly its own processes")
    cluster = LocalRayCluster()
    try:
        cluster.start_head(num_cpus=1, resources={"bench_head": 1})
        cluster.add_node(num_cpus=1, resources={"bench_second": 1})
        cluster.wait_for(nodes=2, cpus=2)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        cluster.stop()
        pytest.fail(f"two-node Ray cluster did not start: {exc}\n{cluster.log('head')}")
    try:
        yield cluster
    finally:
        survivors = cluster.stop()
        assert not survivors, f"Ray processes outlived the cluster: {survivors}"


def _bench(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_sweep_spreads_over_both_nodes_with_local_bits(
    two_nodes: LocalRayCluster, tmp_path: Path, run_at_once
) -> None:
    import pandas as pd

    # The sweep on the cluster and the same sweep on an embedded Ray of its own, at once: they
    # share nothing but the results folder (each its own run).
    local_env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    module = [sys.executable, "-m", "bench", *SWEEP]
    on_cluster, local = run_at_once(
        [[*module, "cluster=ray", f"cluster.address={two_nodes.address}", "run_id=cluster"],
         [*module, "cluster=local", "cluster.num_cpus=1", "run_id=local"]],
        300, each=[{"env": two_nodes.env}, {"env": local_env}], cwd=tmp_path,
    )  # fmt: skip
    assert on_cluster.returncode == 0, on_cluster.stderr[-3000:]
    assert local.returncode == 0, local.stderr[-3000:]

    # rows_to=workers: each task writes its own part into the (here shared) run folder.
    by_workers = _bench(
        [*SWEEP, "cluster=ray", f"cluster.address={two_nodes.address}", "run_id=workers",
         "rows_to=workers"],
        tmp_path, two_nodes.env,
    )  # fmt: skip
    assert by_workers.returncode == 0, by_workers.stderr[-3000:]

    a = pd.read_parquet(tmp_path / "results/smoke/cluster").set_index("trial_key").sort_index()
    b = pd.read_parquet(tmp_path / "results/smoke/local").set_index("trial_key").sort_index()
    w = pd.read_parquet(tmp_path / "results/smoke/workers").set_index("trial_key").sort_index()
    assert len(a) == 8 and (a["status"] == "ok").all()
    assert a["ray_node_id"].nunique() == 2, a["ray_node_id"].value_counts()
    assert list(a.index) == list(b.index) == list(w.index)
    assert w["ray_node_id"].nunique() == 2 and (w["status"] == "ok").all()
    parts = sorted(p.name for p in (tmp_path / "results/smoke/workers").glob("part-*"))
    assert len(parts) == 8 and all(p.startswith("part-w") for p in parts), parts  # one a task
    for column in ("weights_sha256", "predictions_sha256"):
        differ = a.index[a[column] != b[column]].tolist()
        assert not differ, f"{column} differs between cluster and local for {differ}"
        assert (w[column] == a[column]).all(), column


def test_trial_larger_than_any_node_is_refused(two_nodes: LocalRayCluster, tmp_path: Path) -> None:
    """2 CPUs in the cluster, 1 per node: a threads=2 trial could never start; say so, at once."""
    env = {**two_nodes.env, "RAY_ADDRESS": str(two_nodes.address)}
    result = _bench(
        ["+sweep=smoke", "libraries=[sklearn]", "seeds.n=1", "threads=2", "cluster=ray"],
        tmp_path,
        env,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "threads: a trial reserves 2 CPUs, but the largest Ray node has 1" in result.stderr
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.parquet"))


def test_cluster_ray_without_a_cluster_names_the_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = _bench(
        ["+sweep=smoke", "libraries=[sklearn]", "cluster=ray", "cluster.address=127.0.0.1:1"],
        tmp_path,
        env,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("bench: error: cluster.address:")


def test_the_users_module_is_sent_to_a_joined_cluster(
    two_nodes: LocalRayCluster, tmp_path: Path
) -> None:
    """A user's package in the folder they run from, which the cluster's nodes cannot see: the
    driver sends it with Ray's runtime_env (py_modules), and both nodes train it."""
    import pandas as pd

    package = tmp_path / "clusternets"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from torch import nn\n\n\n"
        "def Net(n_features, n_classes):\n"
        "    return nn.Sequential(nn.Linear(n_features, 4), nn.ReLU(), nn.Linear(4, n_classes))\n"
    )
    result = _bench(
        ["+sweep=smoke", "libraries=[torch]", "model=torch_module", "progress=false",
         "model._target_=clusternets.Net", "model.epochs=2", "cluster=ray",
         f"cluster.address={two_nodes.address}", "run_id=user"],
        tmp_path, {k: v for k, v in two_nodes.env.items() if k != "PYTHONPATH"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = pd.read_parquet(tmp_path / "results/smoke/user")
    assert (rows["status"] == "ok").all(), rows["error"].dropna().head(1).tolist()
    assert rows["ray_node_id"].nunique() == 2 and len(rows) == 4


def _non_loopback(rows: list[tuple[int, str, str, int]]) -> list[str]:
    return [f"{name} (pid {pid}) on {address}:{port}" for pid, name, address, port in rows
            if not is_loopback(address)]  # fmt: skip


def test_the_cluster_listens_on_loopback_only(two_nodes: LocalRayCluster) -> None:
    """Every TCP socket the cluster's processes listen on (GCS, raylets, object managers, core
    workers, dashboard, metrics and runtime-env agents, client server) is bound to 127.0.0.1 or
    ::1 (IPv4-mapped included), never to 0.0.0.0, :: or the machine's own address."""
    rows = two_nodes.listening()
    gcs_port = int(str(two_nodes.address).rpartition(":")[2])
    assert any(port == gcs_port for *_, port in rows), rows  # the listing sees Ray's sockets
    assert len({pid for pid, *_ in rows}) >= 6, rows  # GCS, 2 raylets, 2 agents, a worker at least
    assert not _non_loopback(rows), _non_loopback(rows)


EMBEDDED = """
import os, sys
from bench.cluster.localray import listening, process_tree
from bench.cluster.connect import connect
connect({"num_cpus": 1})
for pid, name, address, port in listening(process_tree(os.getpid())):
    print(pid, name.rsplit("/", 1)[-1], address, port, sep="\\t")
import ray
ray.shutdown()
"""


def test_an_embedded_ray_listens_on_loopback_only() -> None:
    """The embedded Ray that `cluster=local` starts (bench.cluster.connect): the same check over
    the driver and every process it started."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", EMBEDDED], env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split("\t") for line in result.stdout.splitlines() if line.count("\t") == 3]
    rows = [(int(pid), name, address, int(port)) for pid, name, address, port in rows]
    assert any("gcs_server" in name for _, name, *_ in rows), rows
    assert not _non_loopback(rows), _non_loopback(rows)


NO_TOKEN = (
    "bench: error: cluster.address: {} requires a Ray auth token "
    "(RAY_AUTH_MODE=token with RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH); none is set"
)


def test_joining_a_token_cluster_without_a_token_fails_in_one_line(
    two_nodes: LocalRayCluster, tmp_path: Path
) -> None:
    """`python -m bench ... cluster.address=HOST:PORT` without the cluster's token: exit 2, one
    line, nothing written. Ray's own answer is ~20 lines of C++ log after ~23 s; the one line
    means Ray's retry loop never ran (the time the join takes is checked in-process below, apart
    from bench's start-up, which on a busy 2-core machine alone can take over 10 s)."""
    env = {k: v for k, v in two_nodes.env.items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token of the machine's own
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = _bench(
        ["+sweep=smoke", "libraries=[sklearn]", "cluster=ray",
         f"cluster.address={two_nodes.address}"],
        tmp_path, env,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    expected = NO_TOKEN.format(two_nodes.address)
    assert result.stderr.strip().splitlines() == [expected], result.stderr[-3000:]
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("token", ["none", "wrong"])
def test_a_refused_token_is_found_within_seconds(
    two_nodes: LocalRayCluster,
    tmp_path: Path,
    token: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """bench.cluster.connect asks the GCS before `ray.init` does: no token, or a wrong one, is one
    ConfigError within 10 s (about 1.5 s here, `import ray` included), nothing on the terminal."""
    from bench.cluster.connect import connect
    from bench.config import ConfigError

    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    if token == "wrong":
        monkeypatch.setenv("RAY_AUTH_MODE", "token")
        monkeypatch.setenv("RAY_AUTH_TOKEN", "0" * 64)
    started = time.monotonic()
    with pytest.raises(ConfigError) as error:
        connect({"address": two_nodes.address})
    elapsed = time.monotonic() - started
    expected = {
        "none": NO_TOKEN.format(two_nodes.address).removeprefix("bench: error: "),
        "wrong": f"cluster.address: {two_nodes.address} refused the Ray auth token from "
        "RAY_AUTH_TOKEN; it is not that cluster's token",
    }[token]
    assert str(error.value) == expected
    assert elapsed < 10, f"{elapsed:.1f} s"
    out, err = capfd.readouterr()
    assert not out and not err, err[-2000:]
