"""Placement groups on the native engine, sans-I/O: where bundles go (placement.place_bundles),
what a node holds (Scheduler.reserve_bundles), and the head's all-or-none reservation
(head/groups.py) driven by a fake node link."""

from __future__ import annotations

from unipar.native.head.groups import PlacementGroups
from unipar.native.node.placement import bundle_reservation, demand_in_bundle, place_bundles
from unipar.native.node.scheduler import Scheduler
from unipar.native.wire import protocol as P

TWO = {"a": {"CPU": 2.0}, "b": {"CPU": 2.0}}


def test_strategies_place_bundles_as_named():
    bundles = [{"CPU": 1.0}, {"CPU": 1.0}]
    assert set(place_bundles(bundles, "PACK", TWO).values()) == {"a"}
    assert set(place_bundles(bundles, "SPREAD", TWO).values()) == {"a", "b"}
    assert set(place_bundles(bundles, "STRICT_PACK", TWO).values()) == {"a"}
    assert set(place_bundles(bundles, "STRICT_SPREAD", TWO).values()) == {"a", "b"}


def test_all_or_nothing_when_bundles_do_not_fit():
    assert place_bundles([{"CPU": 1.0}] * 3, "STRICT_SPREAD", TWO) is None
    assert place_bundles([{"CPU": 2.0}, {"CPU": 1.0}], "STRICT_PACK", TWO) is None
    assert place_bundles([{"CPU": 3.0}], "PACK", TWO) is None
    assert place_bundles([{"CPU": 2.0}, {"CPU": 2.0}], "PACK", TWO) == {0: "a", 1: "b"}


def test_a_node_holds_a_bundle_and_gives_it_back():
    sched = Scheduler({"CPU": 4.0})
    take, adds = bundle_reservation("pg1", [(0, {"CPU": 3.0})])
    assert sched.reserve_bundles("pg1", take, adds)
    assert sched.available()["CPU"] == 1.0
    assert sched.fits_total(demand_in_bundle({"CPU": 2.0}, "pg1", 0))
    assert not sched.reserve_bundles("pg2", *bundle_reservation("pg2", [(0, {"CPU": 2.0})]))
    assert sched.release_bundles("pg1")
    assert sched.available() == {"CPU": 4.0}
    assert not sched.fits_total(demand_in_bundle({"CPU": 2.0}, "pg1", 0))


class FakeConn:
    def __init__(self) -> None:
        self.sent: list = []

    def send(self, msg) -> None:
        self.sent.append(msg)


def _head() -> tuple[PlacementGroups, list]:
    nodes = {nid: {"Alive": True, "Resources": dict(r), "Available": dict(r)}
             for nid, r in TWO.items()}
    asked: list = []
    return PlacementGroups(nodes, lambda nid, msg: asked.append((nid, msg)) or True), asked


def test_head_commits_only_when_every_node_says_yes():
    groups, asked = _head()
    groups.on_create(FakeConn(), P.CreatePlacementGroup(1, "pg", [{"CPU": 2}, {"CPU": 2}],
                                                        "STRICT_SPREAD", ""))
    reserves = [(nid, m) for nid, m in asked if isinstance(m, P.ReserveBundles)]
    assert sorted(nid for nid, _ in reserves) == ["a", "b"]
    groups.on_reply(P.Reply(reserves[0][1].req_id, True))
    groups.on_reply(P.Reply(reserves[1][1].req_id, False))
    assert groups.groups["pg"].state == "PENDING"
    released = [nid for nid, m in asked if isinstance(m, P.ReleaseBundles)]
    assert released == [reserves[0][0]]   # only the one that said yes gives back


def test_head_lists_bundle_resources_and_replaces_a_dead_nodes_group():
    groups, asked = _head()
    groups.on_create(FakeConn(), P.CreatePlacementGroup(1, "pg", [{"CPU": 1}], "PACK", "g"))
    (nid, msg), = asked
    groups.on_reply(P.Reply(msg.req_id, True))
    assert groups.groups["pg"].state == "CREATED"
    assert "CPU_group_0_pg" in groups.nodes[nid]["Resources"]
    groups.nodes[nid]["Alive"] = False
    groups.node_dead(nid)
    new = [(n, m) for n, m in asked[1:] if isinstance(m, P.ReserveBundles)]
    assert [n for n, _ in new] == [other for other in TWO if other != nid]


def test_a_group_no_node_fits_is_infeasible_and_names_the_nodes():
    groups, asked = _head()
    conn = FakeConn()
    groups.on_create(conn, P.CreatePlacementGroup(1, "pg", [{"CPU": 8}], "PACK", ""))
    row = groups.groups["pg"].row()
    assert row["state"] == "INFEASIBLE" and "live node" in row["error"]
    assert not asked
