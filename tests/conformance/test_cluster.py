"""Cluster information, init/shutdown rules, which backend runs."""

from __future__ import annotations

import pytest

import unipar


@unipar.remote
class Holder:
    def ping(self):
        return "pong"


def test_backend_name_and_is_initialized(unipar_backend):
    assert unipar.is_initialized()
    assert unipar.backend_name() == unipar_backend


def test_init_twice_is_a_clear_error(unipar_backend):
    with pytest.raises(RuntimeError, match="already initiali"):
        unipar.init(backend=unipar_backend)
    unipar.init(backend=unipar_backend, ignore_reinit_error=True)  # allowed, changes nothing
    assert unipar.backend_name() == unipar_backend


def test_cluster_resources(unipar_backend):
    total = unipar.cluster_resources()
    assert total["CPU"] >= 4        # the suite starts each backend with num_cpus=4
    nodes = unipar.nodes()
    assert nodes and all(n["Alive"] for n in nodes)
    assert {"NodeID", "Alive", "NodeManagerAddress", "Resources"} <= set(nodes[0])
    assert sum(n["Resources"].get("CPU", 0) for n in nodes) == total["CPU"]


def test_actor_holds_its_cpus(unipar_backend):
    before = unipar.available_resources().get("CPU", 0)
    holder = Holder.options(num_cpus=1).remote()
    assert unipar.get(holder.ping.remote(), timeout=60) == "pong"
    # Ray's view of what is free comes from the nodes' periodic reports: it may lag a moment.
    unipar.testing.wait_for(lambda: unipar.available_resources().get("CPU", 0) == before - 1,
                            timeout=30, message="the live actor's CPU to show as held")
    unipar.kill(holder)
    unipar.testing.wait_for(lambda: unipar.available_resources().get("CPU", 0) == before,
                            timeout=30, message="the killed actor's CPU to come back")


def test_actor_waiting_for_held_cpus_is_announced(unipar_backend):
    cpus = int(unipar.cluster_resources()["CPU"])
    holders = [Holder.options(num_cpus=1).remote() for _ in range(cpus)]
    try:
        assert unipar.get([h.ping.remote() for h in holders], timeout=120) == ["pong"] * cpus
        with pytest.warns(unipar.ResourcesBusyWarning, match="CPU"):
            waiting = Holder.options(num_cpus=1).remote()
        unipar.kill(holders.pop())
        assert unipar.get(waiting.ping.remote(), timeout=120) == "pong"
        holders.append(waiting)
    finally:
        for holder in holders:
            unipar.kill(holder)
