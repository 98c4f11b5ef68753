"""`ray start` for a node whose address is loopback (127.0.0.1): `python -m bench.cluster.ray_loopback
start --node-ip-address=127.0.0.1 ...` takes exactly `ray start`'s options.

Why not plain `ray start`: Ray 2.60 replaces a loopback `--node-ip-address` (and a loopback host in
`--address`) by the machine's own interface address (`services.resolve_ip_for_localhost`), and its
servers then listen on every interface (GCS, raylet, object manager, core workers: `::`; metrics,
runtime-env and dashboard agents: `0.0.0.0` or the machine's address). A node whose address really
is 127.0.0.1 binds every server to loopback (Ray's C++ servers and Python agents pick localhost when
the node's address is localhost). Here a loopback address the caller gave is kept as given, nothing
else changes. For the same reason drivers and the node's own Python processes need
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 in their environment (then Ray takes loopback as this
machine's address, as it does on Windows and macOS); this process sets Ray's multi-node switch back
on, since `ray start --address` refuses to start a second node without it.

Standalone on purpose (imports Ray only): LocalRayCluster runs it by path, and bench.sbatch with
`-m`, with whatever interpreter has Ray.
"""

from __future__ import annotations

import sys

# The Ray versions whose private functions this was written against and tested with.
TESTED = "2.60"


def _private_api() -> tuple[object, object, object, object]:
    """Ray's constants and services modules, `is_localhost` and `ray start`'s main, or exit with
    one line when this Ray lacks them (a Ray other than the one this was tested with)."""
    import ray

    where = f"bench.cluster.ray_loopback: Ray {ray.__version__}"
    if not (ray.__version__ == TESTED or ray.__version__.startswith(TESTED + ".")):
        print(
            f"{where}: tested with Ray {TESTED}.x only; its private API may differ", file=sys.stderr
        )
    try:
        import ray._private.ray_constants as ray_constants
        import ray._private.services as services
        from ray._common.network_utils import is_localhost
        from ray.scripts.scripts import main as ray_main
    except ImportError as exc:
        sys.exit(f"{where} lacks what loopback nodes need ({exc}); use Ray {TESTED}.x")
    missing = [
        name
        for module, name in (
            (services, "resolve_ip_for_localhost"),
            (ray_constants, "ENABLE_RAY_CLUSTER"),
        )
        if not hasattr(module, name)
    ]
    if missing:
        sys.exit(
            f"{where} lacks {', '.join(missing)}, which loopback nodes need; use Ray {TESTED}.x"
        )
    return ray_constants, services, is_localhost, ray_main


def main() -> None:
    ray_constants, services, is_localhost, ray_main = _private_api()
    resolve = services.resolve_ip_for_localhost  # type: ignore[attr-defined]

    def keep_loopback(host: str) -> str:
        return host if is_localhost(host) else resolve(host)

    services.resolve_ip_for_localhost = keep_loopback  # type: ignore[attr-defined]
    ray_constants.ENABLE_RAY_CLUSTER = True  # type: ignore[attr-defined]
    sys.exit(ray_main())  # type: ignore[operator]


if __name__ == "__main__":
    main()
