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


def main() -> None:
    import ray._private.ray_constants as ray_constants
    import ray._private.services as services
    from ray._common.network_utils import is_localhost
    from ray.scripts.scripts import main as ray_main

    resolve = services.resolve_ip_for_localhost

    def keep_loopback(host: str) -> str:
        return host if is_localhost(host) else resolve(host)

    services.resolve_ip_for_localhost = keep_loopback
    ray_constants.ENABLE_RAY_CLUSTER = True
    sys.exit(ray_main())


if __name__ == "__main__":
    main()
