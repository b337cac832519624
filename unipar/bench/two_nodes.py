"""A second node on this machine, for the workloads that need two (``transfer_cross_node``,
``transfer_warm_node``).

Every suite starts one node; this module adds a second one off the clock and removes it after,
so the other workloads and the life-cycle figures keep measuring the one-node engine:

- native: a node daemon that joins the head of the driver's own cluster (the one ``init()``
  started), as ``unipar start --address`` joins a head, but owned by this process: its stdin is
  a pipe from here, so it stops if we die;
- Ray: ``ray.cluster_utils.Cluster`` (a head and one more raylet); Ray cannot add a raylet to
  the cluster ``ray.init()`` started, so the driver reconnects to this one and back after.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["NODE_WAIT_S", "NativeSecondNode", "RayTwoNodes"]

NODE_WAIT_S = 60.0   # how long a new node may take to show up as alive


class NativeSecondNode:
    """A node daemon joined to the running native cluster of this driver.

    ``node_id`` is the new node's id (for NodeAffinitySchedulingStrategy); ``stop()`` stops it
    and removes its files, and is idempotent.
    """

    def __init__(self, num_cpus: int = 1) -> None:
        import unipar
        from unipar import _state
        from unipar.backends.native import WORKER_SETUP
        from unipar.native.cluster.launcher import ClusterConfig, LocalCluster
        # The driver's own cluster (NativeBackend._cluster, a LocalCluster): its head address
        # and secret are what a joining node needs. None: connected to a `unipar start`
        # cluster, which has nodes of its own to use instead.
        home = getattr(_state.current(), "_cluster", None)
        if home is None:
            raise RuntimeError("the native suite runs its own cluster; this driver joined one")
        before = {n["NodeID"] for n in unipar.nodes() if n["Alive"]}
        self.cluster = LocalCluster(ClusterConfig(num_cpus=num_cpus, num_gpus=0,
                                                  worker_setup=WORKER_SETUP),
                                    secret=home.secret)
        self.cluster.start(head_address=home.head_address)
        self.node_id = _wait_for_new_node(unipar.nodes, before)

    def stop(self) -> None:
        self.cluster.stop()


def _wait_for_new_node(nodes: Any, before: set[str]) -> str:
    deadline = time.monotonic() + NODE_WAIT_S
    while True:
        new = [n["NodeID"] for n in nodes() if n["Alive"] and n["NodeID"] not in before]
        if new:
            return new[0]
        if time.monotonic() > deadline:
            raise RuntimeError(f"the second node did not join within {NODE_WAIT_S:g} s")
        time.sleep(0.05)


class RayTwoNodes:
    """A two-raylet Ray cluster on this machine, this driver connected to its head.

    The caller must have called ``ray.shutdown()`` first (a driver has one cluster);
    ``node_id`` is the second raylet's (hex). ``stop()`` disconnects and stops both.
    """

    def __init__(self, ray: Any, num_cpus: int, store_bytes: int, temp_dir: str) -> None:
        from ray.cluster_utils import Cluster
        self.ray = ray
        common = {"num_cpus": num_cpus, "object_store_memory": store_bytes,
                  "node_ip_address": "127.0.0.1", "temp_dir": temp_dir}
        self.cluster = Cluster(initialize_head=True,
                               head_node_args={**common, "include_dashboard": False})
        try:
            node = self.cluster.add_node(**{**common, "num_cpus": 1})
            self.node_id = node.node_id
            ray.init(address=self.cluster.address)
            self.cluster.wait_for_nodes(timeout=NODE_WAIT_S)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.ray.shutdown()
        self.cluster.shutdown()
