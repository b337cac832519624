"""The node's scheduling decisions, fed events with no sockets, processes or clock."""

from __future__ import annotations

from unipar.native.node.scheduler import Dispatch, PlaceActor, RetireWorker, Scheduler, StartWorkers


def _with_workers(sched: Scheduler, count: int) -> list[str]:
    ids = [f"w{i}" for i in range(count)]
    sched.workers_requested(count)
    for wid in ids:
        sched.worker_registered(wid, now=0.0)
    return ids


def _dispatches(actions: list) -> list[Dispatch]:
    return [a for a in actions if isinstance(a, Dispatch)]


def test_tasks_run_on_idle_workers_within_cpus():
    sched = Scheduler({"CPU": 2})
    _with_workers(sched, 3)
    for i in range(5):
        sched.add_task(f"t{i}", {"CPU": 1}, now=0.0)
    ran = _dispatches(sched.schedule(now=0.0))
    assert [d.task_id for d in ran] == ["t0", "t1"]          # FIFO, and only 2 CPUs
    assert len({d.worker_id for d in ran}) == 2
    assert sched.available()["CPU"] == 0
    sched.task_finished(ran[0].worker_id, now=1.0)
    assert [d.task_id for d in _dispatches(sched.schedule(now=1.0))] == ["t2"]


def test_missing_workers_are_requested_not_oversubscribed():
    sched = Scheduler({"CPU": 4}, keep_idle=0)
    for i in range(10):
        sched.add_task(f"t{i}", {"CPU": 1}, now=0.0)
    starts = [a for a in sched.schedule(now=0.0) if isinstance(a, StartWorkers)]
    assert starts == [StartWorkers(4)]                       # as many as the CPUs could take
    sched.workers_requested(4)
    assert not [a for a in sched.schedule(now=0.0) if isinstance(a, StartWorkers)]


def test_pool_is_refilled_after_a_worker_dies():
    sched = Scheduler({"CPU": 2})
    workers = _with_workers(sched, 2)
    sched.add_task("t", {"CPU": 1}, now=0.0)
    (run,) = _dispatches(sched.schedule(now=0.0))
    assert sched.worker_lost(run.worker_id) == "t"
    assert sched.available()["CPU"] == 2                     # the dead task's CPU came back
    assert StartWorkers(1) in sched.schedule(now=0.0)
    assert workers


def test_blocked_worker_lends_its_cpu():
    sched = Scheduler({"CPU": 1})
    _with_workers(sched, 2)
    sched.add_task("parent", {"CPU": 1}, now=0.0)
    (parent,) = _dispatches(sched.schedule(now=0.0))
    sched.add_task("child", {"CPU": 1}, now=0.0)
    assert _dispatches(sched.schedule(now=0.0)) == []         # no CPU free
    sched.worker_blocked(parent.worker_id)                    # parent waits in get()
    (child,) = _dispatches(sched.schedule(now=0.0))
    assert child.task_id == "child"
    sched.task_finished(child.worker_id, now=0.0)
    sched.worker_unblocked(parent.worker_id)
    assert sched.available()["CPU"] == 0
    sched.task_finished(parent.worker_id, now=0.0)
    assert sched.available()["CPU"] == 1


def test_big_task_does_not_block_small_ones_behind_it():
    sched = Scheduler({"CPU": 2})
    _with_workers(sched, 2)
    sched.add_task("big", {"CPU": 3}, now=0.0)                # never fits on this node
    sched.add_task("small", {"CPU": 1}, now=0.0)
    assert [d.task_id for d in _dispatches(sched.schedule(now=0.0))] == ["small"]


def test_gpus_are_assigned_by_id_and_custom_resources_count():
    sched = Scheduler({"CPU": 4, "GPU": 2, "disk": 1})
    _with_workers(sched, 4)
    sched.add_task("g1", {"CPU": 1, "GPU": 1}, now=0.0)
    sched.add_task("g2", {"CPU": 1, "GPU": 1}, now=0.0)
    sched.add_task("g3", {"CPU": 1, "GPU": 1}, now=0.0)
    sched.add_task("d1", {"CPU": 1, "disk": 1}, now=0.0)
    sched.add_task("d2", {"CPU": 1, "disk": 1}, now=0.0)
    ran = {d.task_id: d for d in _dispatches(sched.schedule(now=0.0))}
    assert set(ran) == {"g1", "g2", "d1"}
    assert sorted(ran["g1"].gpu_ids + ran["g2"].gpu_ids) == [0, 1]
    assert ran["d1"].gpu_ids == ()


def test_fractional_gpus_share_one_device():
    sched = Scheduler({"CPU": 4, "GPU": 1})
    _with_workers(sched, 3)
    for name in ("a", "b", "c"):
        sched.add_task(name, {"GPU": 0.5}, now=0.0)
    ran = _dispatches(sched.schedule(now=0.0))
    assert [d.gpu_ids for d in ran] == [(0,), (0,)]


def test_actor_holds_resources_until_removed():
    sched = Scheduler({"CPU": 2})
    _with_workers(sched, 2)
    sched.add_actor("a1", {"CPU": 2}, now=0.0)
    assert PlaceActor("a1", ()) in sched.schedule(now=0.0)
    sched.add_task("t", {"CPU": 1}, now=0.0)
    assert _dispatches(sched.schedule(now=0.0)) == []
    sched.remove_actor("a1")
    assert [d.task_id for d in _dispatches(sched.schedule(now=0.0))] == ["t"]


def test_cancelled_task_leaves_the_queue():
    sched = Scheduler({"CPU": 1})
    sched.add_task("t", {"CPU": 1}, now=0.0)
    assert sched.remove_task("t") is True
    assert sched.remove_task("t") is False
    assert sched.queued() == 0


def test_idle_workers_beyond_the_pool_retire():
    sched = Scheduler({"CPU": 1}, idle_timeout=5.0)
    _with_workers(sched, 3)
    assert not [a for a in sched.schedule(now=1.0) if isinstance(a, RetireWorker)]
    retired = [a for a in sched.schedule(now=6.0) if isinstance(a, RetireWorker)]
    assert len(retired) == 2                                  # one stays: keep_idle = CPUs


def test_stuck_report_names_what_waits_and_what_is_free():
    sched = Scheduler({"CPU": 1, "GPU": 1})
    _with_workers(sched, 2)
    sched.add_actor("holder", {"GPU": 1}, now=0.0, label="actor Holder")
    sched.schedule(now=0.0)
    sched.add_task("waiter", {"GPU": 1}, now=0.0, label="task waiter")
    sched.schedule(now=0.0)
    assert sched.stuck(now=1.0, after=5.0) == []
    (report,) = sched.stuck(now=6.0, after=5.0)
    assert report[0] == "task waiter" and report[1] == {"GPU": 1} and report[2]["GPU"] == 0
    sched.add_task("waiter-2", {"GPU": 1}, now=6.0, label="task waiter")
    assert sched.stuck(now=20.0, after=5.0) == []             # reported once per task name


def test_a_busy_queue_behind_running_tasks_is_not_stuck():
    sched = Scheduler({"CPU": 1})
    _with_workers(sched, 1)
    sched.add_task("running", {"CPU": 1}, now=0.0)
    sched.add_task("next", {"CPU": 1}, now=0.0)
    sched.schedule(now=0.0)
    assert sched.stuck(now=60.0, after=5.0) == []             # it runs when "running" ends
