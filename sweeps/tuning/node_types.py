"""Publish a `ray up` cluster's node types to the GCS, where Ray's readers look for what the
autoscaler may launch (``ray._private.state.state.get_cluster_config()``: Ray Data's autoscaler,
and ``sweeps.tuning.cluster.autoscaler_groups`` for how many trials can ever run at once).

Why: Ray 2.60's cluster launcher never reports them, so on a cluster whose workers start at zero
(cluster.yaml's spot GPUs, cluster-onprem.yaml's pool) a study's driver saw CPU 0, GPU 0 and
refused a study the autoscaler would have run. cluster/start_head.sh runs this once, after
`ray start --head`, with the config the launcher put on the head:

    python -m sweeps.tuning.node_types --address IP:6379 ~/ray_bootstrap_config.yaml
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml


def cluster_config(config: dict[str, Any]) -> Any:
    """The autoscaler's worker node types as Ray's ``ClusterConfig`` message (the head's own type
    is left out: it is a running node, counted as one)."""
    from ray.core.generated import autoscaler_pb2

    head = config.get("head_node_type")
    groups = []
    for name, node_type in (config.get("available_node_types") or {}).items():
        if name == head:
            continue
        resources = {k: int(v) for k, v in (node_type.get("resources") or {}).items() if v and float(v).is_integer()}
        groups.append(autoscaler_pb2.NodeGroupConfig(
            name=name, resources=resources, min_count=int(node_type.get("min_workers", 0)),
            max_count=int(node_type.get("max_workers", config.get("max_workers", 0))),
        ))
    return autoscaler_pb2.ClusterConfig(node_group_configs=groups)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sweeps.tuning.node_types", description=__doc__.split("\n\n")[0])
    p.add_argument("--address", required=True, help="the GCS address, HEAD_IP:6379")
    p.add_argument("config", help="the cluster config on the head (~/ray_bootstrap_config.yaml)")
    args = p.parse_args(argv)
    from ray._raylet import GcsClient

    with open(args.config) as f:
        message = cluster_config(yaml.safe_load(f))
    GcsClient(address=args.address).report_cluster_config(message.SerializeToString())
    names = ", ".join(f"{g.name} ({g.min_count}-{g.max_count} x {dict(g.resources)})" for g in message.node_group_configs)
    print(f"node types published to the GCS: {names or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
