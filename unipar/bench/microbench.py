"""A quick look at the native engine's hot path: ``python -m unipar.bench.microbench [backend]``.

Prints throughput and latency of the operations the engine optimises (no-op tasks one at a time
and in bulk, actor calls, small put+get, zero-copy get, wait on finished refs, cold start and
shutdown). The project's full comparison is ``unipar bench``; this is the engine developer's
two-minute check. Pass another backend name (``ray``, ``dask``) to compare on the same machine.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Callable

import unipar


@unipar.remote
def _noop() -> None:
    return None


@unipar.remote
def _total(array) -> float:  # type: ignore[no-untyped-def]
    return float(array.sum())


@unipar.remote
class _Actor:
    def ping(self) -> None:
        return None


def _rate(label: str, run: Callable[[int], object], count: int) -> None:
    start = time.perf_counter()
    run(count)
    elapsed = time.perf_counter() - start
    print(f"{label:<36} {count / elapsed:>10,.0f}/s   ({elapsed / count * 1e6:,.0f} us each)")


def _median_ms(run: Callable[[], object], times: int = 5) -> float:
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def main(backend: str = "native") -> None:
    import numpy as np
    start = time.perf_counter()
    unipar.init(backend=backend, num_cpus=2)
    unipar.get(_noop.remote())
    print(f"{'cold start (init to first result)':<36} {time.perf_counter() - start:>10.3f} s")
    actor = _Actor.remote()
    unipar.get(actor.ping.remote())
    _rate("no-op tasks, one at a time", lambda n: [unipar.get(_noop.remote()) for _ in range(n)], 1000)
    _rate("no-op tasks, submitted then got", lambda n: unipar.get([_noop.remote() for _ in range(n)]), 10000)
    _rate("actor calls, one at a time", lambda n: [unipar.get(actor.ping.remote()) for _ in range(n)], 1000)
    _rate("actor calls, submitted then got", lambda n: unipar.get([actor.ping.remote() for _ in range(n)]), 5000)
    _rate("put + get of a small value", lambda n: [unipar.get(unipar.put(i)) for i in range(n)], 5000)
    ref = unipar.put(np.ones(100 * 2**20 // 8))
    print(f"{'get of a 100 MiB array (stored)':<36} {_median_ms(lambda: unipar.get(ref)):>10.2f} ms")
    print(f"{'task summing a 100 MiB array by ref':<36} "
          f"{_median_ms(lambda: unipar.get(_total.remote(ref)), 3):>10.1f} ms")
    refs = [unipar.put(i) for i in range(1000)]
    print(f"{'wait on 1,000 finished refs':<36} "
          f"{_median_ms(lambda: unipar.wait(refs, num_returns=1000)):>10.2f} ms")
    start = time.perf_counter()
    unipar.shutdown()
    print(f"{'shutdown':<36} {time.perf_counter() - start:>10.3f} s")


if __name__ == "__main__":
    main(*sys.argv[1:2])
