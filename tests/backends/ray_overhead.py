"""unipar-on-Ray against plain Ray, side by side, on one Ray instance: what the facade costs.

    .venv/bin/python tests/backends/ray_overhead.py [--repeat 5] [--quick]

Both sides run in this one process on the one local Ray instance unipar starts, so they share
its workers; each repeat runs every workload plain then unipar, or unipar then plain
(alternating), and the table shows the median and the fastest of the repeats, each with the
ratio unipar / plain (on a busy machine the fastest run is the least disturbed one).
Not a test (pytest does not collect it): timings belong in docs/backend-ray.md, not in asserts.

Workloads: the tutorial's bubble sort (20 lists x 3000 ints, as tasks), no-op tasks (1000
submitted then fetched; and 1000 one at a time) and actor calls (the same two ways).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any, Callable

import ray

import unipar


def bubble_sort(values: list[int]) -> list[int]:
    n = len(values)
    for i in range(n):
        for j in range(n - 1 - i):
            if values[j] > values[j + 1]:
                values[j], values[j + 1] = values[j + 1], values[j]
    return values


def noop(x: Any = None) -> Any:
    return x


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def incr(self) -> int:
        self.n += 1
        return self.n


def workloads(lists: int, length: int, calls: int) -> dict[str, dict[str, Callable[[], None]]]:
    data = [[random.Random(seed).randint(1, 10**6) for _ in range(length)] for seed in range(lists)]
    expected = [sorted(d) for d in data]
    r_sort, r_noop, r_counter = ray.remote(bubble_sort), ray.remote(noop), ray.remote(Counter)
    u_sort, u_noop = unipar.remote(bubble_sort), unipar.remote(noop)
    u_counter = unipar.remote(Counter)
    r_actor, u_actor = r_counter.remote(), u_counter.remote()
    ray.get(r_actor.incr.remote())
    unipar.get(u_actor.incr.remote())

    def tutorial(remote: Any, get: Callable) -> Callable[[], None]:
        def run() -> None:
            assert get([remote.remote(d) for d in data]) == expected
        return run

    def batch(remote: Any, get: Callable) -> Callable[[], None]:
        def run() -> None:
            assert get([remote.remote(i) for i in range(calls)]) == list(range(calls))
        return run

    def one_at_a_time(remote: Any, get: Callable) -> Callable[[], None]:
        def run() -> None:
            for i in range(calls):
                assert get(remote.remote(i)) == i
        return run

    def actor_batch(actor: Any, get: Callable) -> Callable[[], None]:
        def run() -> None:
            values = get([actor.incr.remote() for _ in range(calls)])
            assert values == sorted(values)
        return run

    def actor_one(actor: Any, get: Callable) -> Callable[[], None]:
        def run() -> None:
            for _ in range(calls):
                get(actor.incr.remote())
        return run

    return {
        f"tutorial ({lists} x {length} bubble sort)": {
            "ray": tutorial(r_sort, ray.get), "unipar": tutorial(u_sort, unipar.get)},
        f"no-op tasks, {calls} submitted then get": {
            "ray": batch(r_noop, ray.get), "unipar": batch(u_noop, unipar.get)},
        f"no-op tasks, {calls} one at a time": {
            "ray": one_at_a_time(r_noop, ray.get), "unipar": one_at_a_time(u_noop, unipar.get)},
        f"actor calls, {calls} submitted then get": {
            "ray": actor_batch(r_actor, ray.get), "unipar": actor_batch(u_actor, unipar.get)},
        f"actor calls, {calls} one at a time": {
            "ray": actor_one(r_actor, ray.get), "unipar": actor_one(u_actor, unipar.get)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()
    started = time.perf_counter()
    unipar.init(backend="ray", num_cpus=2)
    print(f"ray start (unipar.init) {time.perf_counter() - started:.1f} s")
    sizes = (20, 600, 100) if args.quick else (20, 3000, 1000)
    table = workloads(*sizes)
    for run in (fn for sides in table.values() for fn in sides.values()):
        run()  # warm up: workers started, functions exported
    times: dict[str, dict[str, list[float]]] = {name: {"ray": [], "unipar": []} for name in table}
    for repeat in range(args.repeat):
        order = ("ray", "unipar") if repeat % 2 == 0 else ("unipar", "ray")
        for name, sides in table.items():
            for side in order:
                start = time.perf_counter()
                sides[side]()
                times[name][side].append(time.perf_counter() - start)
    print(f"{'workload':45} {'plain Ray':>10} {'unipar':>10} {'ratio':>7}   median of "
          f"{args.repeat}; then the same for the fastest run (least disturbed by other load)")
    for name, sides in times.items():
        cells = []
        for pick in (statistics.median, min):
            plain, ours = pick(sides["ray"]), pick(sides["unipar"])
            cells.append(f"{plain:9.3f}s {ours:9.3f}s {ours / plain:7.3f}")
        print(f"{name:45} " + "   | ".join(cells))
    unipar.shutdown()


if __name__ == "__main__":
    main()
