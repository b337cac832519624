"""Object lifetimes on the native engine: an object lives exactly as long as something holds a
ref to it (the driver, a pending task, another object), then the node frees it.

Found by the differential tester (tests/differential): refs nested in task arguments that the
node never let go of, and results lost while a ref to them was still held.
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any, Iterator

import pytest

import unipar
from unipar import _state
from unipar.native.dashboard.server import query_node
from unipar.testing import wait_for

T = 60.0   # every get: a lost object must fail the test, not hang it


@pytest.fixture(scope="module")
def native() -> Iterator[None]:
    unipar.shutdown()   # the session's backend, if any: the plugin starts it again when needed
    unipar.init(backend="native", num_cpus=2)
    yield
    unipar.shutdown()


def node_objects() -> int:
    """Entries in the node's object table (its own report, as the dashboard reads it)."""
    cluster = _state.current()._cluster   # type: ignore[union-attr]
    return int(query_node(cluster.node_unix_address, cluster.secret, 10)["objects"])


def back_to(baseline: int) -> None:
    gc.collect()
    wait_for(lambda: node_objects() <= baseline, timeout=30, interval=0.1,
             message=f"the node's object table to shrink back to {baseline} objects")


@unipar.remote
def work(tag: int, *args: Any) -> int:
    """``tag`` plus every int reachable in ``args``, with nested refs resolved."""
    def total(value: Any) -> int:
        if isinstance(value, unipar.ObjectRef):
            return total(unipar.get(value, timeout=T))
        if isinstance(value, (list, tuple)):
            return sum(total(v) for v in value)
        if isinstance(value, dict):
            return sum(total(v) for v in value.values())
        return value if isinstance(value, int) else 0
    return tag + total(list(args))


@unipar.remote(num_returns=3)
def three(tag: int) -> tuple[int, int, int]:
    return tag, tag + 1, tag + 2


@unipar.remote
def after(path: str, tag: int) -> int:
    """``tag``, once ``path`` exists (bounded: 60 s)."""
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return tag


def test_a_task_may_use_the_result_of_one_still_waiting_for_its_arguments(
        native: None, tmp_path: Any) -> None:
    gate = str(tmp_path / "go")
    held_back = work.remote(3, [after.remote(gate, 4)])   # submitted once its argument is done
    user = work.remote(5, held_back)
    open(gate, "w").close()
    assert unipar.get(user, timeout=T) == 12


def test_a_ref_nested_in_task_arguments_is_freed_after_the_task(native: None) -> None:
    baseline = node_objects()
    ref = work.remote(1, {"k": work.remote(2)})
    assert unipar.get(ref, timeout=T) == 3
    del ref
    back_to(baseline)


def test_a_nested_ref_to_one_of_several_returns_is_freed_with_the_rest(native: None) -> None:
    baseline = node_objects()
    refs = three.remote(40)
    user = work.remote(0, [refs[0]])
    del user
    assert unipar.get(refs, timeout=T) == [40, 41, 42]
    del refs
    back_to(baseline)


def test_values_of_a_put_list_outlive_the_driver_s_own_refs(native: None) -> None:
    outer = unipar.put([work.remote(2)])
    gc.collect()
    inner = unipar.get(outer, timeout=T)
    assert unipar.get(inner[0], timeout=T) == 2


@unipar.remote
def inner_sum(box: list[Any]) -> int:
    """The sum of the refs inside ``box`` (a put value passed at top level: its refs stay refs)."""
    return sum(unipar.get(ref, timeout=T) for ref in box)


def test_refs_inside_a_put_value_are_at_the_node_before_a_task_reads_them(native: None) -> None:
    # A small put value goes to a worker directly, with the task; the refs inside it must be
    # known to the node before that worker asks the node for them. Repeated: it was a race.
    for i in range(40):
        box = unipar.put([work.remote(i), work.remote(1)])
        assert unipar.get(inner_sum.remote(box), timeout=T) == i + 1


@unipar.remote
class Keeper:
    """Keeps what its calls are given (refs nested in their arguments included)."""

    def __init__(self) -> None:
        self.kept: list[Any] = []

    def keep(self, value: Any) -> int:
        self.kept.append(value)
        return len(self.kept)

    def total(self) -> int:
        return sum(unipar.get(ref, timeout=T)[0] for (ref,) in self.kept)


def test_a_ref_an_actor_kept_from_a_call_outlives_the_caller_s_ref(native: None) -> None:
    # A long `make fuzz` run: an actor kept [ref] from a direct call; the driver then dropped
    # its ref and the node freed the object (ObjectLostError in the actor): the actor's own
    # count reached the node after the driver's release, as the result went straight back.
    keeper = Keeper.remote()
    for i in range(20):
        ref = unipar.put([i])
        assert unipar.get(keeper.keep.remote([ref]), timeout=T) == i + 1
        del ref
        gc.collect()
    time.sleep(0.3)   # past the worker's batching of ref counts: a free would have happened
    assert unipar.get(keeper.total.remote(), timeout=T) == sum(range(20))


@unipar.remote
def chatter(box: list, started: str) -> None:
    """Talks to its node without pause, on the task's own thread, until cancelled: a cancel's
    interrupt then lands in unipar's own code (a write to the node, a refcount flush) more
    often than not."""
    open(started, "w").close()
    while True:
        unipar.get(unipar.put([box[0]]), timeout=T)


def node_cpus_free() -> float:
    cluster = _state.current()._cluster   # type: ignore[union-attr]
    return float(query_node(cluster.node_unix_address, cluster.secret, 10)["available"]["CPU"])


def test_a_cancel_landing_in_unipar_s_own_code_loses_nothing(native: None, tmp_path) -> None:
    # A long `make fuzz` run: a cancel's KeyboardInterrupt landed in a worker's write to its
    # node, made by a get in the task's code. The connection's writer flag stayed set, so
    # nothing that worker sent reached the node again: not its refcount releases (the refs
    # nested in the task's arguments stayed held for good), not its result (its CPU stayed
    # taken, so a 2-CPU node ran one task at a time, then none).
    baseline = node_objects()
    box = unipar.put(7)
    for i in range(20):
        started = tmp_path / f"started-{i}"
        ref = chatter.remote([box], str(started))
        wait_for(started.exists, timeout=30, message="the task to start")
        time.sleep(0.01 * (i % 5))   # somewhere in its loop
        unipar.cancel(ref)
        with pytest.raises(unipar.exceptions.TaskCancelledError):
            unipar.get(ref, timeout=T)
    wait_for(lambda: node_cpus_free() == 2, timeout=30, interval=0.1,
             message="both CPUs to be free once the cancelled tasks ended")
    assert unipar.get([work.remote(i) for i in range(4)], timeout=T) == [0, 1, 2, 3]
    del box, ref
    back_to(baseline)
