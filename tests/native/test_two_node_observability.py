"""Issue #17's "done when", as a user checks it: the tutorial's sorts on a two-node cluster, and
every machine, the task timeline and each worker's output seen through the dashboard's JSON
(what its pages draw) and ``unipar logs``. The pages themselves are driven in a real browser by
test_dashboard_browser.py; this module is about two nodes."""

from __future__ import annotations

import json
import urllib.request
from typing import Any, Iterator

import pytest

from multinode import Cluster, base_env, ok, unipar
from unipar.testing import wait_for

pytest.importorskip("aiohttp", reason="pip install 'unipar[dashboard]'")
pytestmark = pytest.mark.timeout(240)

SORTS = 8

TUTORIAL = """
    import os, time, unipar
    unipar.init()
    deadline = time.monotonic() + 60
    while len([n for n in unipar.nodes() if n["Alive"]]) < 2:
        assert time.monotonic() < deadline, unipar.nodes()
        time.sleep(0.1)

    @unipar.remote
    def sort(i):   # the tutorial's bubble sort, at a size that takes a fraction of a second
        import random
        xs = [random.random() for _ in range(2000)]
        for end in range(len(xs) - 1, 0, -1):
            for j in range(end):
                if xs[j] > xs[j + 1]:
                    xs[j], xs[j + 1] = xs[j + 1], xs[j]
        print(f"sort {i} done on pid {os.getpid()}", flush=True)
        return unipar.get_runtime_context().get_node_id()

    # Half the sorts on each node, pinned: this module is about seeing two machines work, not
    # about where the scheduler puts work (test_native_multinode.py is).
    from unipar.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    ids = [n["NodeID"] for n in unipar.nodes() if n["Alive"]]
    refs = [sort.options(scheduling_strategy=NodeAffinitySchedulingStrategy(ids[i % 2])).remote(i)
            for i in range(SORTS)]
    print("NODES", sorted(set(unipar.get(refs, timeout=120))))
""".replace("SORTS", str(SORTS))


def fetch(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    state = str(tmp_path_factory.mktemp("two") / "state")
    c = Cluster(state, base_env(state))
    try:
        c.start(["--num-cpus", "1", "--dashboard-port", "0"], [["--num-cpus", "1"]])
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def ran(cluster: Cluster) -> list[str]:
    """The node ids the sorts ran on, once the tutorial's driver is done."""
    out = ok(cluster.driver(TUTORIAL, timeout=180))
    line = next(line for line in out.splitlines() if line.startswith("NODES"))
    return json.loads(line.split(" ", 1)[1].replace("'", '"'))


def test_the_sorts_ran_on_both_nodes(ran: list[str]) -> None:
    assert len(ran) == 2, ran


def test_every_machine_has_live_figures(cluster: Cluster, ran: list[str]) -> None:
    url = cluster.state()["dashboard"]

    def sampled() -> list[dict[str, Any]] | None:
        nodes = fetch(f"{url}/api/machines")["nodes"]
        live = [n for n in nodes if n["alive"] and n["machine"] and n["history"]
                and n["history"]["cpu"]]   # a node's first sample may be on its way
        return live if len(live) == 2 else None
    nodes = wait_for(sampled, timeout=30, message="both nodes' machine samples")
    assert {n["node_id"] for n in nodes} == set(ran)
    for node in nodes:
        machine = node["machine"]
        assert 0.0 <= machine["cpu_percent"] <= 100.0 and machine["cpu_per_core"]
        assert 0 < machine["memory"]["used"] <= machine["memory"]["total"]
        assert node["history"]["cpu"] and node["history"]["memory"]


def test_the_timeline_has_every_sort_on_the_node_and_worker_that_ran_it(cluster: Cluster,
                                                                       ran: list[str]) -> None:
    url = cluster.state()["dashboard"]

    def all_finished() -> list[dict[str, Any]] | None:   # workers send their events in batches
        rows = [r for r in fetch(f"{url}/api/timeline")["timeline"] if r["name"].endswith(".sort")]
        return rows if [r["state"] for r in rows] == ["finished"] * SORTS else None
    rows = wait_for(all_finished, timeout=30, message=f"{SORTS} finished sorts in the timeline")
    assert {r["node_id"] for r in rows} == set(ran)
    assert all(r["pid"] and r["end"] >= r["start"] for r in rows)


def test_unipar_logs_shows_each_nodes_worker_output(cluster: Cluster, ran: list[str]) -> None:
    listing = ok(unipar(cluster.env, "logs"))
    printed = []
    for node_id in ran:
        assert f"node {node_id[:12]}" in listing, listing
        section = listing.split(f"node {node_id[:12]}", 1)[1].split("\nnode ", 1)[0]
        workers = [line.split()[0] for line in section.splitlines()
                   if line.strip().startswith("worker-")]
        assert workers, section
        for name in workers:
            printed += ok(unipar(cluster.env, "logs", "--node", node_id[:8], name)).splitlines()
    done = sorted(line.split(") sort ", 1)[1].split(" ")[0] for line in printed
                  if "done on pid" in line)
    assert done == sorted(str(i) for i in range(SORTS)), printed
