"""Large-put throughput, first put and steady state: ``python -m unipar.bench.put_loop native|ray
[MB]``. Six puts of one array (each freed before the next); prints GB/s for the first put and
the best and median of the other five (docs/performance.md, "Large objects")."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable


def _engine(name: str) -> tuple[Callable[[Any], Any], Callable[[list], Any], Callable[[], None]]:
    if name == "ray":
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=3 * 2**30,
                 _node_ip_address="127.0.0.1")
        return ray.put, ray.wait, ray.shutdown
    import unipar
    unipar.init(backend=name, num_cpus=2)
    return unipar.put, unipar.wait, unipar.shutdown


def main(argv: list[str]) -> int:
    import numpy as np
    name, size = argv[0], int(argv[1] if len(argv) > 1 else 800) * 2**20
    array = np.ones(size // 8)
    put, wait, stop = _engine(name)
    took = []
    try:
        for _ in range(6):
            start = time.perf_counter()
            ref = put(array)
            wait([ref])
            took.append(time.perf_counter() - start)
            del ref
    finally:
        stop()
    steady = sorted(took[1:])
    print(f"{name}: first {size / took[0] / 1e9:.2f} GB/s, steady best "
          f"{size / steady[0] / 1e9:.2f} GB/s, median {size / steady[2] / 1e9:.2f} GB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
