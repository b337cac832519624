"""Cross-node placement (unipar.native.node.placement): decisions with no sockets and no clock.

A real Scheduler stands for this node and Peer records for the others; each test states what a
node would do with a task, a lease request or an actor, given what is free and queued where.
"""

from __future__ import annotations

from unipar.exceptions import InfeasibleResourcesError
from unipar.native.node import placement
from unipar.native.node.records import Peer, Task
from unipar.native.node.scheduler import Dispatch, Scheduler

CPU1 = {"CPU": 1.0}


def node(cpus: float = 2, **extra: float) -> Scheduler:
    sched = Scheduler({"CPU": cpus, **extra})
    for i in range(int(cpus)):
        sched.worker_registered(f"w{i}", 0.0)
    return sched


def busy(sched: Scheduler, count: int) -> None:
    """``count`` one-CPU tasks run here."""
    for i in range(count):
        sched.add_task(f"busy{i}", CPU1, 0.0)
    assert sum(isinstance(a, Dispatch) for a in sched.schedule(0.0)) == count


def peer(name: str = "b", cpus: float = 2, **extra: float) -> Peer:
    return Peer(name, f"tcp://{name}", {"CPU": cpus, **extra})


def sent(p: Peer, count: int, demand: dict[str, float] = CPU1) -> None:
    for i in range(count):
        p.add(Task(f"{p.node_id}-t{i}".encode(), "f", None, [], [], [], dict(demand), 0))


# -- tasks ---------------------------------------------------------------------------------------
def test_a_task_stays_here_while_there_is_room_here():
    assert placement.task_peer(node(2), CPU1, [peer()], from_peer=False) is None


def test_a_task_goes_to_a_peer_when_this_node_is_full_and_queued():
    sched = node(2)
    busy(sched, 2)
    p = peer()
    assert placement.task_peer(sched, CPU1, [p], from_peer=False) is p


def test_queued_tasks_count_against_room_here():
    sched = node(2)
    sched.add_task("q1", CPU1, 0.0)
    sched.add_task("q2", CPU1, 0.0)   # not dispatched yet: the two CPUs are spoken for
    assert not placement.room_here(sched, CPU1)
    assert placement.task_peer(sched, CPU1, [peer()], from_peer=False) is not None


def test_tasks_from_a_peer_are_never_sent_on():
    sched = node(2)
    busy(sched, 2)
    assert placement.task_peer(sched, CPU1, [peer()], from_peer=True) is None


def test_the_least_loaded_peer_with_room_is_chosen():
    sched = node(1)
    busy(sched, 1)
    b, c = peer("b", 4), peer("c", 2)
    sent(b, 3)
    assert placement.task_peer(sched, CPU1, [b, c], from_peer=False) is c
    sent(c, 2)   # c is full by what we sent it; b has one CPU left
    assert placement.task_peer(sched, CPU1, [b, c], from_peer=False) is b


def test_a_task_for_a_resource_only_a_peer_has_goes_there_while_it_has_room():
    sched = node(2)
    gpu = peer("g", 2, GPU=1)
    assert placement.task_peer(sched, {"GPU": 1}, [peer(), gpu], from_peer=False) is gpu


def test_a_task_for_a_resource_only_full_peers_have_waits_here_to_be_pulled():
    # Queued at a full peer, it would stay there even when another node with room joins.
    sched = node(2)
    gpu = peer("g", 2, GPU=1)
    sent(gpu, 1, {"GPU": 1})
    assert placement.task_peer(sched, {"GPU": 1}, [peer(), gpu], from_peer=False) is None
    assert not placement.home_unknown(sched, {"GPU": 1}, [peer(), gpu], from_peer=False)
    sched.add_task("gpu-task", {"GPU": 1.0}, 0.0)
    assert placement.stranded(sched) == [["gpu-task"]]
    assert placement.pull_to(sched, gpu, lambda _id: True) == []
    joined = peer("h", 2, GPU=1)          # a node with room joins: it pulls the task
    assert placement.pull_to(sched, joined, lambda _id: True) == ["gpu-task"]


def test_a_task_no_known_node_can_run_waits_for_the_heads_verdict():
    sched = node(2)
    assert placement.home_unknown(sched, {"CPU": 3}, [peer()], from_peer=False)
    assert not placement.home_unknown(sched, {"CPU": 2}, [peer()], from_peer=False)
    assert not placement.home_unknown(sched, {"CPU": 3}, [peer("big", 4)], from_peer=False)


def test_stranded_tasks_are_those_this_node_cannot_hold():
    sched = node(2)
    sched.add_task("fits", CPU1, 0.0)
    sched.add_task("gpu1", {"GPU": 1.0}, 0.0)
    sched.add_task("gpu2", {"GPU": 1.0}, 0.0)
    assert placement.stranded(sched) == [["gpu1", "gpu2"]]


def test_a_peer_is_sent_queued_tasks_newest_first_while_it_has_room():
    sched = node(1)
    busy(sched, 1)
    for i in range(5):
        sched.add_task(f"t{i}", CPU1, 0.0)
    p = peer("b", 3)
    sent(p, 1)
    assert placement.pull_to(sched, p, lambda task_id: True) == ["t4", "t3"]
    assert placement.pull_to(sched, p, lambda task_id: task_id != "t4") == ["t3", "t2"]


# -- leases --------------------------------------------------------------------------------------
def test_leases_are_granted_here_without_peers_and_refused_when_busy_with_peers():
    sched = node(1)
    busy(sched, 1)
    assert placement.lease_refusal(sched, CPU1, sched.fits_now(CPU1), []) is None
    assert placement.lease_refusal(sched, CPU1, sched.fits_now(CPU1), [peer()]) == "busy"
    assert placement.lease_refusal(node(1), {"CPU": 2}, False, []) == "infeasible"


def test_lease_requests_beyond_the_room_here_are_refused_with_peers():
    """A burst of requests arrives before any is granted: only those that fit in what is
    free minus what is queued are queued here (issue #13: the rest went nowhere else)."""
    sched = node(2)
    sched.add_task("lease1", CPU1, 0.0)
    sched.add_task("lease2", CPU1, 0.0)
    assert sched.fits_now(CPU1)   # nothing dispatched yet
    assert placement.lease_refusal(sched, CPU1, True, [peer()]) == "busy"
    assert placement.lease_refusal(sched, CPU1, True, []) is None


def test_a_peer_with_reported_room_is_sent_queued_work():
    sched = node(1)
    busy(sched, 1)
    sched.add_task("t0", CPU1, 0.0)
    b = peer("b", 1)
    assert placement.reported_room(sched, b)
    b.avail = {"CPU": 0.0}
    assert not placement.reported_room(sched, b)


def test_queued_lease_requests_are_refused_once_a_peer_has_room():
    queued = [("l1", CPU1), ("l2", {"GPU": 1.0})]
    full = peer("full", 1)
    sent(full, 1)
    assert placement.leases_to_refuse(queued, [full]) == []
    assert placement.leases_to_refuse(queued, [full, peer("b", 2)]) == ["l1"]
    reported_busy = peer("c", 2)
    reported_busy.avail = {"CPU": 0.0}   # its own work fills it
    assert placement.leases_to_refuse(queued, [reported_busy]) == []


# -- actors --------------------------------------------------------------------------------------
def test_an_actor_stays_here_when_it_fits_now():
    assert placement.actor_peer(node(2), CPU1, [peer()]) is None


def test_an_actor_goes_to_a_peer_that_reported_room_and_counts_it_down():
    sched = node(1)
    busy(sched, 1)
    b = peer("b", 1)
    assert placement.actor_peer(sched, CPU1, [b]) is b
    assert b.avail["CPU"] == 0.0
    # No peer reports room now, and it could fit here later: it waits here.
    assert placement.actor_peer(sched, CPU1, [b]) is None


def test_an_actor_this_node_can_never_hold_goes_to_any_peer_that_can():
    b = peer("b", 2, GPU=1)
    b.avail = {"CPU": 0.0, "GPU": 0.0}
    assert placement.actor_peer(node(2), {"GPU": 1}, [b]) is b


def test_waiting_actors_move_to_peers_that_reported_room():
    sched = node(1)
    sched.add_actor("a1", {"CPU": 2.0}, 0.0)
    sched.add_actor("a2", {"CPU": 2.0}, 0.0)
    b = peer("b", 2)
    moves = placement.waiting_actor_moves(sched, [b], lambda aid: True)
    assert moves == [("a1", b)]   # b's room is counted down after the first


def test_an_actor_whose_node_died_goes_here_or_to_a_peer():
    sched = node(2)
    assert placement.actor_home(sched, CPU1, []) == "here"
    busy(sched, 2)
    b = peer("b", 2)
    assert placement.actor_home(sched, CPU1, [b]) is b
    assert placement.actor_home(sched, {"GPU": 1}, [b]) is None


def test_an_actor_to_restart_waits_for_a_listed_node_not_linked_yet():
    # Seed 4100706644 of tests/chaos/test_nodes.py: the actor's node died and no peer this
    # node is connected to has a "slot", but the head lists one that has: wait for the link
    # (the node connects to it) instead of giving the actor up.
    sched = node(1)
    slot = {"slot": 1.0}
    listed = [{"CPU": 1.0, "slot": 1.0}]
    assert placement.restart_home(sched, slot, [], listed) == "wait"
    b = peer("b", 1, slot=1)
    assert placement.restart_home(sched, slot, [b], listed) is b   # linked now: it goes there
    # Given up only when no node the head lists could ever hold it.
    assert placement.restart_home(sched, slot, [], [{"CPU": 4.0}]) is None
    assert placement.restart_home(sched, slot, [], []) is None
    assert placement.restart_home(sched, CPU1, [], []) == "here"


def test_infeasible_names_the_biggest_node():
    error = placement.infeasible({"CPU": 3}, [{"CPU": 2.0}, {"CPU": 1.0}], "task f")
    assert isinstance(error, InfeasibleResourcesError)
    assert "task f" in str(error) and "{'CPU': 2.0}" in str(error)
    assert placement.infeasible({"CPU": 2}, [{"CPU": 2.0}], "task f") is None
