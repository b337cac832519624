"""The standard workloads of ``unipar bench``, written against the unipar API.

Every engine runs the same list (:data:`WORKLOADS`); :mod:`unipar.bench.baselines` writes the
same workloads directly against plain Dask, PySpark and Ray. A suite is an object with
``start()``, ``first_result()``, ``shutdown()`` and one method per workload it can run, named
``w_<workload>(sizes)``; a workload an engine cannot express (actors on Spark) is simply
missing and shows as "n/a". Each workload checks its result, so no engine wins by skipping work.
Setup that is not what a workload measures happens off the clock: ``prepare_<workload>(sizes)``
(or the shared :data:`PREPARE` entry) builds an input that is passed as a second argument, and
``cleanup_<workload>(input)`` runs after the clock stops.

Three figures are not workloads but the life cycle the child process measures around them:
``cold_start`` (``start()`` to the first task's result), ``idle_memory`` (RSS summed over the
driver and every process the engine started, right after the cold start) and ``shutdown``.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["Sizes", "Workload", "WORKLOADS", "LIFECYCLE", "UniparSuite", "NativeSuite",
           "make_unipar_suite", "bubble_sort",
           "random_list", "noop", "SortActor", "Counter"]


@dataclass(frozen=True)
class Sizes:
    """Problem sizes at a scale: 1.0 is the full benchmark, ``--quick`` is 0.1.

    Counts scale linearly; the sort length scales with the square root of the scale, so the
    tutorial's work (bubble sort is quadratic) scales linearly too.
    """

    scale: float = 1.0

    def count(self, full: int, least: int = 10) -> int:
        return max(least, int(full * self.scale))

    @property
    def sorts(self) -> int:
        return 20                                   # the tutorial's 20 sorts, at every scale

    @property
    def sort_length(self) -> int:
        return max(50, int(3000 * math.sqrt(self.scale)))

    @property
    def array_bytes(self) -> int:
        return max(2**20, int(100 * 2**20 * self.scale))

    @property
    def big_bytes(self) -> int:
        """The large object of the object-store workloads: 800 MB at full scale."""
        return max(8 * 2**20, int(800 * 2**20 * self.scale))

    @property
    def xfer_bytes(self) -> int:
        """The object of transfer_cross_node: 1 GiB at full scale, in whole MiB."""
        return max(8, int(1024 * self.scale)) * 2**20

    @property
    def actors(self) -> int:
        return 4                                    # "several actors": 4 actors, 5 sorts each


@dataclass(frozen=True)
class Workload:
    name: str
    label: str       # for tables and plots; {n} is filled with the count at the chosen scale
    unit: str        # "s" (seconds) or "MB"
    full_count: int = 0

    def describe(self, sizes: Sizes) -> str:
        return self.label.format(n=f"{sizes.count(self.full_count):,}" if self.full_count else "",
                                 mb=sizes.array_bytes // 2**20, len=sizes.sort_length,
                                 big=sizes.big_bytes // 2**20,
                                 big10=sizes.big_bytes // 10 // 2**20,
                                 xfer=sizes.xfer_bytes // 2**20)


WORKLOADS: tuple[Workload, ...] = (
    Workload("tutorial_serial", "tutorial: 20 sorts of {len}, serial Python", "s"),
    Workload("tutorial_tasks", "tutorial: 20 sorts as tasks", "s"),
    Workload("tutorial_dependent", "tutorial: dependent tasks (list ref -> sort)", "s"),
    Workload("tutorial_one_actor", "tutorial: one actor, 20 shuffle+sort", "s"),
    Workload("tutorial_actors", "tutorial: 4 actors, 5 shuffle+sort each", "s"),
    Workload("tasks_sequential", "{n} no-op tasks, one at a time", "s", 1000),
    Workload("tasks_batch", "{n} no-op tasks at once", "s", 10000),
    Workload("actor_sequential", "{n} actor calls, one at a time", "s", 1000),
    Workload("actor_batch", "{n} actor calls at once", "s", 10000),
    Workload("put_get_small", "{n} put+get of a small value", "s", 1000),
    Workload("put_get_array", "put+get of a {mb} MB array", "s"),
    Workload("array_to_task", "{mb} MB array passed into a task", "s"),
    Workload("wait_refs", "wait on {n} finished refs (x10)", "s", 1000),
    # The object store at memory speed (issue #14): one copy in, zero copies out.
    # Puts are repeated (each object freed before the next): a store that reuses memory shows
    # it, as a long-running program would see it.
    Workload("put_large", "3 puts of a {big} MB array, one after another", "s"),
    Workload("put_concurrent", "10 tasks each put a {big10} MB array at once, twice", "s"),
    Workload("get_large", "get of a {big} MB object (zero-copy)", "s"),
    # Between two nodes on one machine (issue #14): a task pinned to the second node gets an
    # object stored on the first, so the whole object crosses from one store to the other.
    Workload("transfer_cross_node", "a {xfer} MB object from one node to another", "s"),
    # The same to a node that received (and freed) one of that size before, as a cluster's
    # long-lived nodes do: what the receiving store does with memory it used before shows.
    Workload("transfer_warm_node", "a {xfer} MB object to a node that had one before", "s"),
)

LIFECYCLE: tuple[Workload, ...] = (
    Workload("cold_start", "cold start (init to first result)", "s"),
    Workload("idle_memory", "idle memory, all processes (PSS)", "MB"),
    Workload("shutdown", "shutdown", "s"),
)

ALL_NAMES = tuple(w.name for w in WORKLOADS + LIFECYCLE)


# -- plain functions shared by every suite (module level so every engine can pickle them) ----------

WARM_SETTLE_S = 1.0   # after the warm-up transfer: the receiver frees its copy (asynchronously)


def warm_up_transfer(engine: Any, pinned: Any, nbytes: int) -> None:
    """Off the clock: one object of ``nbytes`` to the node ``pinned`` runs on, then freed
    (``engine`` is the unipar or ray module)."""
    first = engine.put(make_array(nbytes))
    assert engine.get(pinned.remote(first), timeout=600) == nbytes
    del first
    time.sleep(WARM_SETTLE_S)


def random_list(length: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(1, 1_000_000) for _ in range(length)]


def bubble_sort(values: list[int]) -> list[int]:
    """The tutorial's deliberately slow sort: pure-Python CPU work that holds the GIL."""
    items = list(values)
    for end in range(len(items) - 1, 0, -1):
        for i in range(end):
            if items[i] > items[i + 1]:
                items[i], items[i + 1] = items[i + 1], items[i]
    return items


def sort_new(length: int, seed: int) -> list[int]:
    return bubble_sort(random_list(length, seed))


def noop(x: Any = None) -> Any:
    return x


def nbytes(array: Any) -> int:
    return int(array.nbytes)


def make_array(size: int) -> Any:
    import numpy as np
    return np.ones(size // 8, dtype=np.float64)


def array_for(sizes: Sizes) -> Any:
    return make_array(sizes.array_bytes)


def big_array_for(sizes: Sizes) -> Any:
    return make_array(sizes.big_bytes)


def put_back(array: Any, put: Any) -> list[Any]:
    """A task's body for put_concurrent: ``put`` (the engine's own) its argument, return the
    ref in a list (so that getting the result does not fetch the object)."""
    return [put(array)]


# Workloads whose input is built before the clock starts, for every suite: name -> builder.
PREPARE = {"put_get_array": array_for, "array_to_task": array_for, "put_large": big_array_for}


def check_sorted(results: list[list[int]], count: int, length: int) -> None:
    if len(results) != count or any(len(r) != length or r != sorted(r) for r in results):
        raise AssertionError("a sort returned a wrong result")


class SortActor:
    """Holds a list; each call shuffles it and bubble-sorts it (the tutorial's actor)."""

    def __init__(self, length: int, seed: int) -> None:
        self.values = random_list(length, seed)
        self.rng = random.Random(seed)

    def shuffle_sort(self) -> list[int]:
        self.rng.shuffle(self.values)
        self.values = bubble_sort(self.values)
        # A copy: an engine may serialise the result after the next call has begun shuffling.
        return list(self.values)


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def incr(self) -> int:
        self.n += 1
        return self.n


# -- the unipar suite -----------------------------------------------------------------------------

class UniparSuite:
    """The workloads on a unipar backend, through the public API only."""

    def __init__(self, backend: str) -> None:
        self.backend = backend

    def start(self) -> None:
        import unipar
        self.up = unipar
        unipar.init(backend=self.backend)
        self.r_noop = unipar.remote(noop)
        self.r_sort = unipar.remote(bubble_sort)
        self.r_sort_new = unipar.remote(sort_new)
        self.r_list = unipar.remote(random_list)
        self.r_nbytes = unipar.remote(nbytes)
        self.r_put_back = unipar.remote(put_back)
        self.a_sort = unipar.remote(SortActor)
        self.a_counter = unipar.remote(Counter)

    def first_result(self) -> None:
        assert self.up.get(self.r_noop.remote(1), timeout=600) == 1

    def shutdown(self) -> None:
        self.up.shutdown()

    def w_tutorial_serial(self, s: Sizes) -> None:
        check_sorted([sort_new(s.sort_length, i) for i in range(s.sorts)], s.sorts, s.sort_length)

    def w_tutorial_tasks(self, s: Sizes) -> None:
        refs = [self.r_sort_new.remote(s.sort_length, i) for i in range(s.sorts)]
        check_sorted(self.up.get(refs), s.sorts, s.sort_length)

    def w_tutorial_dependent(self, s: Sizes) -> None:
        lists = [self.r_list.remote(s.sort_length, i) for i in range(s.sorts)]
        check_sorted(self.up.get([self.r_sort.remote(ref) for ref in lists]), s.sorts,
                     s.sort_length)

    def w_tutorial_one_actor(self, s: Sizes) -> None:
        actor = self.a_sort.remote(s.sort_length, 0)
        # Sequential by definition: each call waits for the previous one's result.
        check_sorted([self.up.get(actor.shuffle_sort.remote()) for _ in range(s.sorts)],
                     s.sorts, s.sort_length)
        self.up.kill(actor)

    def w_tutorial_actors(self, s: Sizes) -> None:
        actors = [self.a_sort.remote(s.sort_length, i) for i in range(s.actors)]
        refs = [a.shuffle_sort.remote() for _ in range(s.sorts // s.actors) for a in actors]
        check_sorted(self.up.get(refs), len(refs), s.sort_length)
        for actor in actors:
            self.up.kill(actor)

    def w_tasks_sequential(self, s: Sizes) -> None:
        for i in range(s.count(1000)):
            assert self.up.get(self.r_noop.remote(i)) == i

    def w_tasks_batch(self, s: Sizes) -> None:
        n = s.count(10000)
        assert self.up.get([self.r_noop.remote(i) for i in range(n)]) == list(range(n))

    # The actor-call workloads time calls only: the actor is started (and has answered one
    # call) before the clock starts, and killed after it stops.
    def prepare_actor_sequential(self, s: Sizes) -> Any:
        counter = self.a_counter.remote()
        assert self.up.get(counter.incr.remote(), timeout=600) == 1
        return counter

    def w_actor_sequential(self, s: Sizes, counter: Any) -> None:
        for i in range(s.count(1000)):
            assert self.up.get(counter.incr.remote()) == i + 2

    def cleanup_actor_sequential(self, counter: Any) -> None:
        self.up.kill(counter)

    prepare_actor_batch = prepare_actor_sequential
    cleanup_actor_batch = cleanup_actor_sequential

    def w_actor_batch(self, s: Sizes, counter: Any) -> None:
        n = s.count(10000)
        assert self.up.get([counter.incr.remote() for _ in range(n)])[-1] == n + 1

    def w_put_get_small(self, s: Sizes) -> None:
        for i in range(s.count(1000)):
            assert self.up.get(self.up.put(i)) == i

    def w_put_get_array(self, s: Sizes, array: Any) -> None:
        assert self.up.get(self.up.put(array)).nbytes == array.nbytes

    def w_array_to_task(self, s: Sizes, array: Any) -> None:
        assert self.up.get(self.r_nbytes.remote(array)) == array.nbytes

    def w_put_large(self, s: Sizes, array: Any) -> None:
        for _ in range(3):
            ref = self.up.put(array)
            assert self.up.wait([ref], timeout=600)[0] == [ref]
            del ref

    def prepare_put_concurrent(self, s: Sizes) -> Any:
        return self.up.put(make_array(s.big_bytes // 10))

    def w_put_concurrent(self, s: Sizes, ref: Any) -> None:
        for _ in range(2):
            refs = [self.r_put_back.remote(ref, self.up.put) for _ in range(10)]
            inner = [r for rs in self.up.get(refs, timeout=600) for r in rs]
            assert len(self.up.wait(inner, num_returns=10, timeout=600)[0]) == 10
            del refs, inner

    def prepare_get_large(self, s: Sizes) -> Any:
        return self.up.put(make_array(s.big_bytes))

    def w_get_large(self, s: Sizes, ref: Any) -> None:
        assert self.up.get(ref, timeout=600).nbytes == s.big_bytes

    def prepare_wait_refs(self, s: Sizes) -> Any:
        refs = [self.r_noop.remote(i) for i in range(s.count(1000))]
        self.up.get(refs)
        return refs

    def w_wait_refs(self, s: Sizes, refs: Any) -> None:
        for _ in range(10):
            ready, _ = self.up.wait(refs, num_returns=len(refs), timeout=600)
            assert len(ready) == len(refs)


class NativeSuite(UniparSuite):
    """The native backend: every workload, and the two transfers between nodes, for which a
    second node daemon joins the driver's own cluster off the clock
    (:mod:`unipar.bench.two_nodes`)."""

    def prepare_transfer_cross_node(self, s: Sizes, warm: bool = False) -> Any:
        from ..util.scheduling_strategies import NodeAffinitySchedulingStrategy
        from .two_nodes import NativeSecondNode
        node = NativeSecondNode()
        try:
            pinned = self.r_nbytes.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
                node.node_id, soft=False))
            # A first task there off the clock: the nodes have met and a worker is up.
            assert self.up.get(pinned.remote(make_array(8)), timeout=600) == 8
            if warm:
                warm_up_transfer(self.up, pinned, s.xfer_bytes)
            return node, pinned, self.up.put(make_array(s.xfer_bytes))
        except BaseException:
            node.stop()
            raise

    def prepare_transfer_warm_node(self, s: Sizes) -> Any:
        return self.prepare_transfer_cross_node(s, warm=True)

    def w_transfer_cross_node(self, s: Sizes, prepared: Any) -> None:
        _node, pinned, ref = prepared
        assert self.up.get(pinned.remote(ref), timeout=600) == s.xfer_bytes

    def cleanup_transfer_cross_node(self, prepared: Any) -> None:
        node, _pinned, _ref = prepared
        node.stop()

    w_transfer_warm_node = w_transfer_cross_node
    cleanup_transfer_warm_node = cleanup_transfer_cross_node


def make_unipar_suite(backend: str) -> UniparSuite:
    """The suite of a unipar backend: native has a workload the others cannot express."""
    return NativeSuite(backend) if backend == "native" else UniparSuite(backend)
