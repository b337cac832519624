"""The tutorial, runnable on every backend: ``python docs/examples/tutorial.py``.

Choose the engine with ``UNIPAR_BACKEND=dask`` (or ``unipar run --backend dask ...``); the code
does not change. Sections:

1. remote functions: bubble sort of 20 lists, serially and as tasks, with the speed-up;
2. dependent tasks: a remote ``random_list()`` whose ref goes straight into the remote sort;
3. actors: one actor does 20 x (shuffle, sort) one call after another, as it must; the same work
   spread over several actors runs in parallel;
4. a tree of actors: a ``Supervisor`` starts three ``Worker`` actors and gathers their results.

Lines that start with ``time:`` hold timings; everything else prints the same on every backend
(``unipar compare`` ignores the timing lines with ``--ignore '^time:'``).
"""

from __future__ import annotations

import random
import sys
import time

import unipar

LISTS = 20
LENGTH = 3000


def bubble_sort(to_sort: list[int]) -> list[int]:
    """The plain O(n^2) double loop, on purpose: it is the work being spread out."""
    n = len(to_sort)
    for i in range(n):
        for j in range(n - 1 - i):
            if to_sort[j] > to_sort[j + 1]:
                to_sort[j], to_sort[j + 1] = to_sort[j + 1], to_sort[j]
    return to_sort


def make_list(length: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(1, 1_000_000) for _ in range(length)]


@unipar.remote
def bubble_sort_remote(to_sort: list[int]) -> list[int]:
    return bubble_sort(to_sort)


@unipar.remote
def random_list(length: int, seed: int) -> list[int]:
    return make_list(length, seed)


@unipar.remote
class SortingActor:
    """Holds one list; shuffles and sorts it in place."""

    def __init__(self, length: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.values = make_list(length, seed)

    def shuffle(self) -> None:
        self.rng.shuffle(self.values)

    def sort(self) -> None:
        bubble_sort(self.values)

    def get_value(self) -> list[int]:
        return self.values


@unipar.remote(num_cpus=1)
class Worker:
    def work(self) -> str:
        return "done"


@unipar.remote(num_cpus=1)
class Supervisor:
    """Starts its own workers: actors may create actors. Holds 4 CPUs with them, for life."""

    def __init__(self) -> None:
        self.workers = [Worker.remote() for _ in range(3)]

    def work(self, timeout: float = 90.0) -> list[str]:
        # A worker that cannot start (its CPU held elsewhere) must not hang the tree for ever.
        return unipar.get([w.work.remote() for w in self.workers], timeout=timeout)

    def close(self) -> None:
        for worker in self.workers:
            unipar.kill(worker)


def _timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def remote_functions(lists: int = LISTS, length: int = LENGTH) -> dict[str, object]:
    """Section 1: the same sorts serially and as tasks; both results must agree."""
    data = [make_list(length, seed) for seed in range(lists)]
    serial, serial_s = _timed(lambda: [bubble_sort(list(d)) for d in data])
    parallel, parallel_s = _timed(lambda: unipar.get([bubble_sort_remote.remote(d) for d in data]))
    assert parallel == serial == [sorted(d) for d in data]
    print(f"sorted {lists} lists of {length} numbers serially and as tasks: results agree")
    print(f"time: serial {serial_s:.2f} s, tasks {parallel_s:.2f} s, "
          f"speed-up x{serial_s / parallel_s:.2f}")
    return {"serial_s": serial_s, "tasks_s": parallel_s}


def dependent_tasks(lists: int = LISTS, length: int = LENGTH) -> dict[str, object]:
    """Section 2: pass a task's ref straight into another task; the engine resolves it."""
    refs = [bubble_sort_remote.remote(random_list.remote(length, seed)) for seed in range(lists)]
    results, seconds = _timed(unipar.get, refs)
    assert results == [sorted(make_list(length, seed)) for seed in range(lists)]
    print(f"sorted {lists} lists made by remote random_list(): results are sorted")
    print(f"time: dependent tasks {seconds:.2f} s")
    return {"dependent_s": seconds}


def actors(rounds: int = LISTS, length: int = LENGTH, spread: int = 4) -> dict[str, object]:
    """Section 3: calls on one actor run in turn; several actors run side by side."""
    one = SortingActor.remote(length, 0)

    def on_one_actor():
        for _ in range(rounds):
            one.shuffle.remote()
            one.sort.remote()
        return unipar.get(one.get_value.remote())
    values, one_s = _timed(on_one_actor)
    assert values == sorted(values) and len(values) == length

    many = [SortingActor.remote(length, seed) for seed in range(spread)]

    def on_many_actors():
        for i in range(rounds):
            actor = many[i % spread]
            actor.shuffle.remote()
            actor.sort.remote()
        return unipar.get([a.get_value.remote() for a in many])
    spread_values, many_s = _timed(on_many_actors)
    assert all(v == sorted(v) for v in spread_values)
    print(f"{rounds} x (shuffle, sort) on 1 actor and spread over {spread} actors: all sorted")
    print(f"time: one actor {one_s:.2f} s, {spread} actors {many_s:.2f} s, "
          f"speed-up x{one_s / many_s:.2f}")
    for actor in [one, *many]:
        unipar.kill(actor)
    return {"one_actor_s": one_s, "many_actors_s": many_s}


def actor_tree() -> list[str]:
    """Section 4: a supervisor actor that starts and drives three worker actors."""
    supervisor = Supervisor.remote()
    try:
        result = unipar.get(supervisor.work.remote(), timeout=120)
        assert result == ["done", "done", "done"]
        print(f"supervisor of 3 workers returned {result}")
        unipar.get(supervisor.close.remote(), timeout=60)  # give the 4 CPUs back
    finally:
        unipar.kill(supervisor)   # also when the tree failed: its actors hold CPUs
    return result


def main() -> None:
    # The actor tree holds 4 CPUs for its whole life (1 supervisor + 3 workers, num_cpus=1
    # each). CPUs are logical, as in Ray, so a 2-core machine can offer 4 of them.
    unipar.init(num_cpus=4)
    # To stderr: this line differs between backends, the rest of stdout must not.
    print(f"backend: {unipar.backend_name()}; CPUs: {unipar.cluster_resources()['CPU']:g}",
          file=sys.stderr)
    remote_functions()
    dependent_tasks()
    actors()
    actor_tree()
    unipar.shutdown()


if __name__ == "__main__":
    main()
