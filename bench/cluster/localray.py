"""A real multi-node Ray cluster on this machine, for tests and benchmarks.

Each node is a `ray start --block` process (the head first, then `--address=` nodes with their own
CPUs and custom resources), each in its own session, all under one private, short temp dir. Why not
`ray stop`: it stops every Ray process on the machine, other users' embedded clusters included;
`stop()` ends exactly the processes this object started (SIGTERM to each `--block` process, which
takes its node down) and, as a backstop, the processes whose command line names files in its temp
dir. Ports are picked free, not Ray's defaults, so several such clusters can run side by side.

Loopback only: every node is started with `--node-ip-address=127.0.0.1` (the default `ip`) through
bench.cluster.ray_loopback, and `env` holds RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 for the nodes'
processes and every driver, so the nodes find each other, drivers connect, and every Ray server
(GCS, raylets, object managers, core workers, agents, metrics) listens on 127.0.0.1 only, never on
the machine's own interface address (which may not route back to itself in a sandbox, and should
not expose a test cluster). Plain `ray start` would swap 127.0.0.1 for that address and listen on
every interface; `listening()` lists what the cluster's processes listen on, for tests to check.

Token authentication (Ray 2.60): the cluster gets its own token; `env` holds RAY_AUTH_MODE=token and
RAY_AUTH_TOKEN for every process that joins it (nodes and drivers must agree on the mode).
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

WAIT_SCRIPT = """
import logging, sys, time
import ray
address, nodes, cpus, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
deadline = time.monotonic() + limit
ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
while True:
    alive = [n for n in ray.nodes() if n["Alive"]]
    have = ray.cluster_resources().get("CPU", 0)
    if len(alive) >= nodes and have >= cpus:
        print(len(alive), have)
        break
    if time.monotonic() > deadline:
        sys.exit(f"ray cluster: {len(alive)} node(s) and {have:g} CPU(s) after {limit:g} s, "
                 f"expected {nodes} and {cpus:g}")
    time.sleep(0.5)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


LOOPBACK_START = Path(__file__).with_name("ray_loopback.py")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1, an IPv4-mapped loopback (::ffff:127.x) or `localhost`."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def processes_naming(text: str) -> list[int]:
    """Pids whose command line contains `text` (read from /proc; Linux only)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry.name))
    return found


def session_members(sessions: set[int]) -> list[int]:
    """Pids whose session id is in `sessions` (Linux /proc). Each node is started in a session of
    its own, and Ray's agents and workers stay in it but rename themselves (`ray::IDLE`,
    `ray::DashboardAgent`), so their command lines name nothing of ours."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp sid
        if int(fields[3]) in sessions:
            found.append(int(entry.name))
    return found


def process_tree(root: int) -> list[int]:
    """`root` and every process descended from it (parent links in /proc): an embedded Ray's
    GCS, raylet, agents and workers descend from the driver that started it."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    found = {root}
    while True:
        more = {pid for pid, parent in parents.items() if parent in found} - found
        if not more:
            return sorted(found)
        found |= more


def _listening_sockets() -> dict[int, tuple[str, int]]:
    """Socket inode -> (address, port) for every listening TCP socket (IPv4 and IPv6) in this
    network namespace, from /proc/net/tcp and tcp6 (state 0A is LISTEN)."""
    found = {}
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A":
                continue
            hex_address, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_address)  # 32-bit words in host (little-endian) byte order
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found[int(fields[9])] = (socket.inet_ntop(family, raw), int(hex_port, 16))
    return found


def listening(pids: list[int]) -> list[tuple[int, str, str, int]]:
    """(pid, process name, address, port) of every listening TCP socket the processes hold."""
    sockets = _listening_sockets()
    found = []
    for pid in pids:
        try:
            name = (
                Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            )
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and int(link[8:-1]) in sockets:
                address, port = sockets[int(link[8:-1])]
                found.append((pid, name.strip(), address, port))
    return sorted(set(found))


class LocalRayCluster:
    """`with LocalRayCluster() as c: c.start_head(1); c.add_node(1); c.wait_for(2, 2)`."""

    def __init__(self, python: str = sys.executable, ip: str = "127.0.0.1") -> None:
        self.python = python
        self.ip = ip
        # Short on purpose: Ray's Unix socket paths below it must stay under 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="bray-", dir="/tmp"))
        self.env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
        self.env.pop("RAY_AUTH_TOKEN_PATH", None)
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
        if is_loopback(ip):
            # Ray then takes loopback as this machine's address (its Windows/macOS default) instead
            # of swapping 127.0.0.1 for the interface address: drivers connect to 127.0.0.1 and
            # their own servers (a driver is a core worker) listen there.
            self.env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        # A node that gets SIGTERM first "drains" for up to 30 s (for Ray Serve); bench's trials
        # are over by the time a cluster is stopped, so stop at once.
        self.env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"
        self.nodes: list[subprocess.Popen] = []
        self.address: str | None = None

    def _start(self, name: str, args: list[str], num_cpus: int, resources: dict[str, float]):
        ports = {
            "--dashboard-agent-listen-port": free_port(),
            "--dashboard-agent-grpc-port": free_port(),
            "--runtime-env-agent-port": free_port(),
            "--metrics-export-port": free_port(),
        }
        # A loopback node goes through bench.cluster.ray_loopback (by path: the node's interpreter
        # needs Ray, not bench), which keeps 127.0.0.1 instead of Ray's swap for the machine's.
        launcher = [str(LOOPBACK_START)] if is_loopback(self.ip) else ["-m", "ray.scripts.scripts"]
        cmd = [
            self.python,
            *launcher,
            "start",
            "--block",
            f"--temp-dir={self.root}",
            "--disable-usage-stats",
            "--log-color=false",
            f"--num-cpus={num_cpus}",
            "--num-gpus=0",
            f"--resources={json.dumps(resources)}",
            f"--node-ip-address={self.ip}",
            *(f"{k}={v}" for k, v in ports.items()),
            *args,
        ]
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - the node outlives this call
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        log.close()
        self.nodes.append(proc)
        return proc

    def start_head(self, num_cpus: int = 1, resources: dict[str, float] | None = None) -> str:
        """Start the head; returns its address once its GCS port answers."""
        port = free_port()
        ip = self.ip
        head = self._start(
            "head",
            [
                "--head",
                f"--port={port}",
                "--include-dashboard=false",
                f"--ray-client-server-port={free_port()}",
                f"--dashboard-port={free_port()}",
            ],
            num_cpus,
            resources or {},
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection((ip, port), timeout=1).close()
                break
            except OSError:
                if head.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"ray head did not start: {self.log('head')}") from None
                time.sleep(0.3)
        self.address = f"{ip}:{port}"
        return self.address

    def add_node(self, num_cpus: int = 1, resources: dict[str, float] | None = None) -> None:
        assert self.address, "start_head first"
        self._start(
            f"node{len(self.nodes)}", [f"--address={self.address}"], num_cpus, resources or {}
        )

    def wait_for(self, nodes: int, cpus: float, timeout: float = 180) -> None:
        """Block until the cluster shows `nodes` live nodes and `cpus` CPUs (a short driver)."""
        assert self.address
        result = subprocess.run(
            [self.python, "-c", WAIT_SCRIPT, self.address, str(nodes), str(cpus), str(timeout)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout + 60,
        )
        if result.returncode != 0:
            tail = " ".join(result.stderr.split())[-500:]
            raise RuntimeError(f"ray cluster at {self.address} not ready: {tail}")

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def pids(self) -> list[int]:
        """This cluster's processes still alive: its `ray start` processes, every process in their
        sessions (GCS, raylets, agents, workers, even after their node process is gone) and every
        process that names a file in its temp dir."""
        own = [p.pid for p in self.nodes if p.poll() is None]
        sessions = session_members({p.pid for p in self.nodes})
        return sorted(set(own) | set(sessions) | set(processes_naming(f"{self.root}/")))

    def listening(self) -> list[tuple[int, str, str, int]]:
        """(pid, process name, address, port) of every TCP socket this cluster listens on."""
        return listening(self.pids())

    def stop(self, timeout: float = 60) -> list[int]:
        """Stop the nodes (newest first), then kill any straggler; return pids that survived."""
        for proc in reversed(self.nodes):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for proc in reversed(self.nodes):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for _ in range(20):
            left = [pid for pid in self.pids() if pid != os.getpid()]
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.25)
        survivors = self.pids()
        if not survivors:
            shutil.rmtree(self.root, ignore_errors=True)
        return survivors

    def __enter__(self) -> LocalRayCluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
