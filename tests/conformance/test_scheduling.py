"""Scheduling strategies, runtime context and placement groups, on every backend (issue #14).
What a backend cannot do is declared in limits.py."""

from __future__ import annotations

import pytest

import unipar
from unipar.util.placement_group import (get_placement_group, placement_group,
                                         placement_group_table, remove_placement_group)
from unipar.util.scheduling_strategies import (NodeAffinitySchedulingStrategy,
                                               PlacementGroupSchedulingStrategy)


@unipar.remote
def where() -> tuple:
    ctx = unipar.get_runtime_context()
    return ctx.get_node_id(), ctx.get_task_id()


@unipar.remote
class Probe:
    def ids(self) -> tuple:
        ctx = unipar.get_runtime_context()
        return ctx.get_node_id(), ctx.get_actor_id()


def test_runtime_context_names_a_live_node_and_the_task(unipar_backend):
    live = {n["NodeID"] for n in unipar.nodes() if n["Alive"]}
    assert unipar.get_runtime_context().get_node_id() in live
    assert unipar.get_runtime_context().get_task_id() is None
    node, task = unipar.get(where.remote(), timeout=60)
    assert node in live and task


def test_runtime_context_names_the_actor(unipar_backend):
    node, actor = unipar.get(Probe.remote().ids.remote(), timeout=60)
    assert actor


def test_spread_and_node_affinity_run_on_live_nodes(unipar_backend):
    node = unipar.nodes()[0]["NodeID"]
    pinned = where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node))
    assert unipar.get(pinned.remote(), timeout=60)[0] == node
    spread = [where.options(scheduling_strategy="SPREAD").remote() for _ in range(4)]
    live = {n["NodeID"] for n in unipar.nodes()}
    assert {n for n, _ in unipar.get(spread, timeout=60)} <= live


def test_hard_affinity_to_an_unknown_node_fails(unipar_backend):
    gone = NodeAffinitySchedulingStrategy("no-such-node")
    with pytest.raises(unipar.InfeasibleResourcesError):
        where.options(scheduling_strategy=gone).remote()
    soft = NodeAffinitySchedulingStrategy("no-such-node", soft=True)
    assert unipar.get(where.options(scheduling_strategy=soft).remote(), timeout=60)


def test_placement_group_reserves_runs_work_and_gives_back(unipar_backend):
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="PACK", name="conf-pg")
    assert unipar.get(pg.ready(), timeout=60) == pg
    assert pg.wait(10)
    assert get_placement_group("conf-pg") == pg
    assert placement_group_table(pg)["state"] == "CREATED"
    strategy = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0)
    assert unipar.get(where.options(scheduling_strategy=strategy).remote(), timeout=60)
    short = where.options(placement_group=pg, bundle_index=1)
    assert unipar.get(short.remote(), timeout=60)
    actor = Probe.options(placement_group=pg, bundle_index=0, num_cpus=1).remote()
    assert unipar.get(actor.ids.remote(), timeout=60)
    unipar.kill(actor)
    remove_placement_group(pg)
    with pytest.raises(ValueError):
        pg.wait(1)


def test_infeasible_placement_group_fails_or_waits(unipar_backend):
    pg = placement_group([{"CPU": 10_000}])
    if unipar.backend_name() in ("native", "local"):   # these clusters cannot grow
        with pytest.raises(unipar.InfeasibleResourcesError):
            pg.wait(10)
    else:   # a cluster that may grow keeps it pending, as Ray does
        assert pg.wait(0.5) is False
    remove_placement_group(pg)


def test_work_that_fits_no_bundle_is_refused(unipar_backend):
    pg = placement_group([{"CPU": 1}])
    with pytest.raises(unipar.InfeasibleResourcesError):
        where.options(placement_group=pg, num_cpus=2).remote()
    # Removed once placed: on Ray 2.60 a group removed while its bundles were still being
    # reserved once kept a CPU held for good (seen in CI: every later test starved).
    assert pg.wait(60)
    remove_placement_group(pg)

