"""Join the configured Ray cluster or start an embedded Ray, before any trial is submitted.

A joined cluster's address and token are probed first, so a wrong address or a missing token
fails within seconds in one line (Ray's own join would print its C++ log and wait); an embedded
Ray listens on loopback only and starts with the sweep's most common worker environment, which
`task_env` then leaves out of the tasks that share it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from bench import isa
from bench.config import USER_MODELS, ConfigError, selected_models, to_container
from bench.determinism import spec_env
from bench.spec import TrialSpec
from bench.sweep import setups

ADDRESS_PROBE_S = 5.0
# The worker environment an embedded Ray was started with, keyed by its node id (random per
# start), so that another Ray initialised later in this process never inherits the claim.
_inherited: tuple[str, dict[str, str]] | None = None


def _probe_address(address: str) -> None:
    """Fail within seconds, naming the key, when nobody listens at a host:port address."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"cluster.address: expected auto, local, ray://HOST:PORT or HOST:PORT, got {address!r}"
        )
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=ADDRESS_PROBE_S):
            pass
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cluster.address: nobody answers at {address} (waited {ADDRESS_PROBE_S:g} s: {exc})"
        ) from None


LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
TOKEN_HINT = "RAY_AUTH_MODE=token with RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH"


def _auth_token() -> tuple[str, str] | None:
    """The token a driver would send, and where it comes from: none unless RAY_AUTH_MODE=token;
    then RAY_AUTH_TOKEN, else the file RAY_AUTH_TOKEN_PATH names, else ~/.ray/auth_token (Ray's
    own order)."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return None
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN"
    named = os.environ.get("RAY_AUTH_TOKEN_PATH")
    path = Path(named) if named else Path.home() / ".ray" / "auth_token"
    try:
        return path.read_text().strip(), f"{'RAY_AUTH_TOKEN_PATH' if named else 'the file'} {path}"
    except OSError:
        return None


def _probe_token(address: str) -> None:
    """Fail in one line when the cluster refuses this driver's token (or its lack of one).

    Why a probe: `ray.init` against a token-protected GCS retries its first call (GetClusterId)
    once a second for ~15 s, prints each refusal as a C++ log line on the terminal, and ends with
    "Failed to connect", which does not say why. The same first call, made here with grpcio (Ray's
    own dependency) and the token Ray would send, answers UNAUTHENTICATED at once. Any other
    answer (OK, a server without that method, a timeout) leaves the verdict to `ray.init`."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    import grpc

    token = _auth_token()
    metadata = (("authorization", f"Bearer {token[0]}"),) if token else ()
    options = [("grpc.enable_http_proxy", 0)]
    with grpc.insecure_channel(address, options=options) as channel:
        call = channel.unary_unary(
            "/ray.rpc.NodeInfoGcsService/GetClusterId",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        try:
            call(b"", timeout=ADDRESS_PROBE_S, metadata=metadata)
            return
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAUTHENTICATED:
                return
    if token is None:
        raise ConfigError(
            f"cluster.address: {address} requires a Ray auth token ({TOKEN_HINT}); none is set"
        )
    raise ConfigError(
        f"cluster.address: {address} refused the Ray auth token from {token[1]}; "
        "it is not that cluster's token"
    )


def _token_auth_if_available() -> None:
    """Ray 2.60: `ray start --head` turns token authentication on when a token exists, but a driver
    joining by an explicit address sends no token unless RAY_AUTH_MODE=token. A head without
    authentication ignores a token, so with a token at hand token mode is right either way; an
    explicit RAY_AUTH_MODE always wins."""
    if os.environ.get("RAY_AUTH_MODE") is not None:
        return
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or path.is_file():
        os.environ["RAY_AUTH_MODE"] = "token"


def check_fits(specs: list[TrialSpec], gpu_fraction: float = 1.0) -> None:
    """Refuse a trial that no single Ray node can hold: Ray would queue it forever ("infeasible").
    On a cluster of 1-CPU nodes a threads=2 trial is one, although the cluster has 2 CPUs."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if not specs or not nodes:
        return
    threads = max(s.threads for s in specs)
    most = max(r.get("CPU", 0) for r in nodes)
    if threads > most:
        raise ConfigError(
            f"threads: a trial reserves {threads} CPUs, but the largest Ray node has {most:g}; "
            f"use threads={int(most)} or fewer, or bigger nodes"
        )
    cuda = max((s.threads for s in specs if s.device == "cuda"), default=0)
    if cuda and not any(r.get("GPU", 0) >= gpu_fraction and r.get("CPU", 0) >= cuda for r in nodes):
        raise ConfigError(
            f"device: a cuda trial needs {gpu_fraction:g} GPU and {cuda} CPUs on one node; "
            "no Ray node has both"
        )


def embedded(cluster: dict[str, Any]) -> bool:
    """Whether `connect` would start Ray on this machine rather than join a cluster."""
    return not (cluster.get("address") or os.environ.get("RAY_ADDRESS"))


def check_cpu_isa(specs: list[TrialSpec], key: str) -> None:
    """Refuse, before anything runs, a CPU kernel level this machine cannot run, or several
    levels while a level variable is set by hand (bench.isa.check_environment). Only for trials
    that run here (an embedded Ray): a joined cluster's nodes may have other CPUs and their own
    environment, and each worker checks its CPU before its libraries compute."""
    levels = {s.cpu_isa for s in specs}
    try:
        isa.check_environment(levels, key)
        for level in sorted(levels):
            isa.check(level, key)
    except isa.UnsupportedLevel as exc:
        raise ConfigError(str(exc)) from None


def connect(
    cluster: dict[str, Any],
    base_env: dict[str, str] | None = None,
    user_code: list[str] | None = None,
) -> bool:
    """Join the configured cluster, or start an embedded Ray. True if this call started Ray.

    `base_env`: the worker environment most trials need. An embedded Ray's workers inherit the
    driver's environment, so it is put in force while Ray starts (and only then); a joined
    cluster's workers have their own, and every task there carries its environment.
    `user_code`: import paths of the user's models (bench.backends.user_code). The folders they
    were imported from here go on PYTHONPATH for an embedded Ray's workers; a joined cluster
    is sent their packages (Ray's `py_modules`) unless they are installed."""
    global _inherited
    import ray

    if ray.is_initialized():
        return False
    address = cluster.get("address") or os.environ.get("RAY_ADDRESS")
    common: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    folders, packages, loose = _user_code_locations(user_code or [])
    if address:
        if packages:
            common["runtime_env"] = {"py_modules": packages}
        if loose:
            print(
                f"model._target_: {', '.join(loose)} is a single file, which bench does not send "
                "to a joined cluster; make it a package (a folder with __init__.py) or install it "
                "on every node",
                file=sys.stderr,
            )
        _probe_address(address)
        _token_auth_if_available()
        _probe_token(address)
        try:
            ray.init(address=address, **common)
        except ConnectionError as exc:
            raise ConfigError(
                f"cluster.address: cannot join Ray at {address}: {' '.join(str(exc).split())}"
            ) from None
        return True
    base_env = base_env or {}
    start_env = dict(base_env)
    if folders:  # the workers import the user's code from where this process found it
        paths = [*folders, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        start_env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    # Loopback only: Ray 2.60 gives a new node this machine's interface address, and then its
    # servers (GCS, raylet, object manager, core workers, agents, metrics) listen on every
    # interface; an embedded Ray serves this process only. With the switch below off, Ray takes
    # 127.0.0.1 as the node's address (its Windows/macOS default) and binds every server there.
    # The variable reaches Ray's own processes, the constant this one (read when Ray was
    # imported); both only while Ray starts, so a later join to a real cluster is unchanged.
    # A RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER of the user's own wins.
    from ray._private import ray_constants

    local_only = LOOPBACK_SWITCH not in os.environ and hasattr(ray_constants, "ENABLE_RAY_CLUSTER")
    if LOOPBACK_SWITCH not in os.environ and not local_only:  # a Ray other than 2.60's
        print(
            f"bench: warning: Ray {ray.__version__} has no ray_constants.ENABLE_RAY_CLUSTER; "
            "the embedded Ray may listen on every interface, not loopback only",
            file=sys.stderr,
        )
    switch = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    if local_only:
        start_env[LOOPBACK_SWITCH] = "0"
        ray_constants.ENABLE_RAY_CLUSTER = False
    saved = {k: os.environ.get(k) for k in start_env}
    os.environ.update(start_env)
    try:
        ray.init(
            address="local",  # always a new embedded instance, never a stale cluster's address
            num_cpus=cluster.get("num_cpus"),  # None: Ray's own count, which respects cgroup limits
            num_gpus=cluster.get("num_gpus"),
            include_dashboard=cluster.get("include_dashboard", False),
            dashboard_host="127.0.0.1",
            **common,
        )
    finally:  # only bench's keys: Ray sets some of its own for this process and its children
        if local_only:
            ray_constants.ENABLE_RAY_CLUSTER = switch
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    _inherited = (ray.get_runtime_context().get_node_id(), dict(base_env))
    return True


def _user_code_locations(targets: list[str]) -> tuple[list[str], list[str], list[str]]:
    if not targets:
        return [], [], []
    from bench.backends.user_code import locations

    try:
        return locations(targets)
    except ValueError as exc:
        raise ConfigError(f"model._target_: {exc}") from None


def connect_for(cfg: DictConfig) -> bool:
    """Start (or join) Ray once for several runs of an experiment: each `run_sweep` then uses it
    rather than starting its own (seconds each). True if this call started it."""

    settings = setups(cfg)
    examples = [spec for spec, _ in settings]
    weights = [n for _, n in settings]
    plain = to_container(cfg)
    return connect(plain["cluster"], common_env(examples, weights), user_targets(plain))


def user_targets(plain: dict[str, Any]) -> list[str]:
    """The import paths of the user's models a run trains (its config's `_target_` values)."""
    return sorted({m["_target_"] for _, m in selected_models(plain) if m["name"] in USER_MODELS})


def task_env(env: dict[str, str]) -> dict[str, Any]:
    """Ray task options that give a trial its worker environment: none when the embedded Ray's
    workers already have exactly it (so the prestarted ones are used), else a runtime_env."""
    import ray

    if _inherited is not None and _inherited == (ray.get_runtime_context().get_node_id(), env):
        return {}
    return {"runtime_env": {"env_vars": env}}


def common_env(specs: list[TrialSpec], weights: list[int] | None = None) -> dict[str, str] | None:
    """The worker environment most of `specs` need (each counted `weights[i]` times: a setting
    stands for its trials), among those that set no variable another trial leaves unset: a
    runtime_env can override an inherited variable but not remove it (deterministic CUDA trials
    set CUBLAS_WORKSPACE_CONFIG; the others must not inherit it). None for no specs."""
    envs = [spec_env(s) for s in specs]
    if not envs:
        return None
    weights = weights or [1] * len(envs)
    fewest = set.intersection(*(set(e) for e in envs))
    counts: Counter[str] = Counter()
    for env, weight in zip(envs, weights, strict=True):
        if set(env) == fewest:
            counts[json.dumps(env, sort_keys=True)] += weight
    return json.loads(counts.most_common(1)[0][0]) if counts else None
