"""What unipar costs over plain Dask: the same work through ``unipar`` and through the
``distributed.Client`` underneath it, on the same cluster, interleaved.

    .venv/bin/python tests/backends/dask_overhead.py [--repeat 5] [--tasks 2000] [--num-cpus 2]

Prints one line per workload with the median seconds of each side and the overhead in percent.
Not a test (timings belong to benchmarks); ``unipar bench`` takes this over later.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Callable

import unipar


def bubble_sort(values: list[int]) -> list[int]:
    n = len(values)
    for i in range(n):
        for j in range(n - 1 - i):
            if values[j] > values[j + 1]:
                values[j], values[j + 1] = values[j + 1], values[j]
    return values


def noop() -> None:
    return None


class Counter:
    def __init__(self) -> None:
        self.value = 0

    def incr(self) -> int:
        self.value += 1
        return self.value


bubble_sort_remote = unipar.remote(bubble_sort)
noop_remote = unipar.remote(noop)
CounterActor = unipar.remote(Counter)


def _report(name: str, plain: float, facade: float) -> None:
    print(f"{name:<22} {plain:>12.3f} {facade:>10.3f} {100 * (facade / plain - 1):>8.1f}%", flush=True)


def _median_pair(plain: Callable[[], object], facade: Callable[[], object],
                 repeat: int) -> tuple[float, float]:
    plain_s, facade_s = [], []
    for _ in range(repeat):  # interleaved, so load changes hit both sides alike
        for fn, out in ((plain, plain_s), (facade, facade_s)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return statistics.median(plain_s), statistics.median(facade_s)


class _Results(dict):
    """Prints each workload's line as soon as it is measured."""

    def __setitem__(self, name: str, pair: tuple[float, float]) -> None:
        super().__setitem__(name, pair)
        _report(name, *pair)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--lists", type=int, default=20)
    parser.add_argument("--length", type=int, default=3000)
    parser.add_argument("--sequential", type=int, default=200)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--skip-sort", action="store_true", help="skip the (slow) bubble sort")
    args = parser.parse_args()

    unipar.init(backend="dask", num_cpus=args.num_cpus)
    client = unipar._state.current()._client  # the same cluster, used directly
    data = [[random.Random(s).randint(1, 10**6) for _ in range(args.length)] for s in range(args.lists)]
    try:
        # Warm both paths (function caches, worker imports).
        client.gather([client.submit(noop, pure=False) for _ in range(50)])
        unipar.get([noop_remote.remote() for _ in range(50)])

        print(f"{'workload':<22} {'plain dask s':>12} {'unipar s':>10} {'overhead':>9}", flush=True)
        results = _Results()
        if not args.skip_sort:
            results["bubble sort"] = _median_pair(
                lambda: client.gather([client.submit(bubble_sort, d, pure=False) for d in data]),
                lambda: unipar.get([bubble_sort_remote.remote(d) for d in data]), args.repeat)
        results[f"{args.tasks} no-op tasks"] = _median_pair(
            lambda: client.gather([client.submit(noop, pure=False) for _ in range(args.tasks)]),
            lambda: unipar.get([noop_remote.remote() for _ in range(args.tasks)]), args.repeat)

        results[f"{args.sequential} tasks, one by one"] = _median_pair(
            lambda: [client.submit(noop, pure=False).result() for _ in range(args.sequential)],
            lambda: [unipar.get(noop_remote.remote()) for _ in range(args.sequential)],
            args.repeat)

        with client.as_current():  # Dask's actor proxies talk through the current client
            dask_actor = client.submit(Counter, actor=True).result()
        unipar_actor = CounterActor.remote()
        unipar.get(unipar_actor.incr.remote())
        with client.as_current():
            results[f"{args.calls} actor calls"] = _median_pair(
                lambda: [f.result() for f in [dask_actor.incr() for _ in range(args.calls)]],
                lambda: unipar.get([unipar_actor.incr.remote() for _ in range(args.calls)]),
                args.repeat)
    finally:
        unipar.shutdown()


if __name__ == "__main__":
    main()
