"""Prometheus text for ``/metrics``: the cluster snapshot (server.cluster_snapshot) as gauges.

::

    GET /metrics ──▶ Snapshots.get() ──▶ render(snapshot) ──▶ prometheus_client text format

Built per request from the same snapshot as the page and ``/api/cluster`` (so they agree),
with a registry of its own: nothing is kept between requests and nothing global is touched.
Every name starts ``unipar_``; the list is in docs/observability.md.
"""

from __future__ import annotations

from typing import Any, Iterator

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render(snap: dict[str, Any]) -> bytes:
    """The snapshot in the Prometheus text exposition format.

    Raises:
        ImportError: prometheus_client is not installed (``pip install 'unipar[dashboard]'``).
    """
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snap))
    return generate_latest(registry)


class _Collector:
    """A prometheus_client collector over one snapshot."""

    def __init__(self, snap: dict[str, Any]) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily, CounterMetricFamily

        totals, nodes = self.snap["totals"], self.snap["nodes"]
        yield _gauge(GaugeMetricFamily, "unipar_nodes", "Nodes by state.", ["state"],
                     [(["alive"], totals["nodes_alive"]), (["dead"], totals["nodes_dead"])])
        tasks = GaugeMetricFamily("unipar_tasks", "Tasks by state (queued: by what they wait "
                                  "for), summed over nodes.", labels=["state"])
        tasks.add_metric(["running"], totals["tasks_running"])
        for why, n in totals["tasks_queued_by"].items():
            tasks.add_metric([f"queued_{why}"], n)
        yield tasks
        done = CounterMetricFamily("unipar_tasks_ended", "Tasks ended since each node started.",
                                   labels=["state"])
        done.add_metric(["finished"], totals["tasks_finished"])
        done.add_metric(["failed"], totals["tasks_failed"])
        yield done
        yield _gauge(GaugeMetricFamily, "unipar_actors", "Live actors.", [],
                     [([], totals["actors"])])
        yield _gauge(GaugeMetricFamily, "unipar_objects", "Objects the nodes know.", [],
                     [([], totals["objects"])])
        yield _gauge(GaugeMetricFamily, "unipar_object_store_bytes", "Object store bytes.",
                     ["kind"], [(["in_memory"], totals["store_used"]),
                                (["limit"], totals["store_limit"]),
                                (["spilled"], totals["store_spilled"])])
        yield from _per_node(GaugeMetricFamily, nodes)


def _gauge(cls: Any, name: str, text: str, labels: list[str],
           values: list[tuple[list[str], float]]) -> Any:
    family = cls(name, text, labels=labels)
    for label_values, value in values:
        family.add_metric(label_values, value)
    return family


def _per_node(cls: Any, nodes: list[dict[str, Any]]) -> Iterator[Any]:
    cpu = cls("unipar_node_cpu_percent", "Machine CPU use of each node, percent.",
              labels=["node_id"])
    mem = cls("unipar_node_memory_bytes", "Machine memory of each node.",
              labels=["node_id", "kind"])
    res = cls("unipar_node_resource", "Logical resources of each node.",
              labels=["node_id", "resource", "kind"])
    for node in nodes:
        nid = node["node_id"]
        for key, fig in node.get("resources", {}).items():
            res.add_metric([nid, key, "total"], fig["total"])
            res.add_metric([nid, key, "in_use"], fig["in_use"])
        machine = node.get("machine")
        if not machine:
            continue
        cpu.add_metric([nid], machine["cpu_percent"])
        mem.add_metric([nid, "used"], machine["memory"]["used"])
        mem.add_metric([nid, "total"], machine["memory"]["total"])
    yield from (cpu, mem, res)
