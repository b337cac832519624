"""R8: a soak. Mixed tasks, actor calls and puts for a long time on a ``unipar start`` cluster
(a head with its node, and one more node); every daemon's RSS stays flat within 10 % and its
open files and threads do not grow.

Marked ``soak`` (excluded by default: ``pytest -m soak``). It runs ``UNIPAR_SOAK_SECONDS``
(default 1800 x ``UNIPAR_CHAOS_SCALE``). The first fifth warms up (pools fill, caches fill);
the figures compare the rest against the end of the warm-up.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from multinode import Cluster, base_env
from unipar.native.dashboard.server import query_node

# Not marked chaos: `pytest -m chaos` (CI, under 10 minutes) must not select it.
pytestmark = [pytest.mark.soak, pytest.mark.timeout(7200)]

DRIVER = """
    import os, random, sys, time
    import numpy as np
    import unipar
    seconds, seed = float(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    unipar.init()

    @unipar.remote
    def square(x):
        return x * x

    @unipar.remote
    def total(a):
        return float(a.sum())

    @unipar.remote
    class Acc:
        def __init__(self):
            self.n = 0
        def add(self, k):
            self.n += k
            return self.n

    end = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < end:
        n = rng.randint(10, 200)
        assert unipar.get([square.remote(i) for i in range(n)], timeout=120) == [
            i * i for i in range(n)]
        acc = Acc.remote()
        assert unipar.get([acc.add.remote(1) for _ in range(50)], timeout=120)[-1] == 50
        unipar.kill(acc)
        big = unipar.put(np.ones(rng.choice([1_000, 200_000, 2_000_000])))
        assert unipar.get(total.remote(big), timeout=120) == float(unipar.get(big).sum())
        del big
        rounds += 1
    print("ROUNDS", rounds, flush=True)
"""


def _daemons(cluster: Cluster) -> list[psutil.Process]:
    """The head and node daemons (not their workers, which come and go by design)."""
    found = []
    for record in cluster.state()["procs"]:
        proc = psutil.Process(record["pid"])
        assert abs(proc.create_time() - record["create_time"]) < 0.01
        found.append(proc)
    return found


def _sample(procs: list[psutil.Process]) -> list[tuple[int, int, int]]:
    return [(p.memory_info().rss, p.num_fds(), p.num_threads()) for p in procs]


def _kinds(procs: list[psutil.Process]) -> list[dict[str, int]]:
    """Each daemon's RSS by kind, in MiB (``/proc/PID/status``): anonymous memory (the heap,
    Python's arenas, buffers), file pages (code, mapped files) and shared memory (store
    segments it mapped). A step in one kind says where to look."""
    kinds = []
    for proc in procs:
        with open(f"/proc/{proc.pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if line.startswith("Rss"))
        kinds.append({name[3:].lower(): int(value.split()[0]) >> 10
                      for name, value in fields.items() if name != "RssTotal"})
    return kinds


def _tables(cluster: Cluster) -> dict:
    """The driver's node's own counts of its per-item tables (``node_info``): what grows
    with the number of actors, workers, objects or clients seen, if anything does."""
    with open(cluster.secret_file) as f:
        secret = bytes.fromhex(f.read().strip())
    info = query_node(cluster.state()["node"], secret, 30)
    return {"actor_table": info["actor_table"], "log_writers": info.get("log_writers"),
            "objects": info["objects"], "drivers": info["drivers"], "workers": info["workers"],
            "tasks": {k: v for k, v in info["tasks"].items() if isinstance(v, int)}}


def test_soak_daemons_stay_flat(tmp_path, chaos):
    seconds = float(os.environ.get("UNIPAR_SOAK_SECONDS", 1800 * chaos.scale))
    state = str(tmp_path / "state")
    cluster = Cluster(state, base_env(state))
    try:
        cluster.start(["--num-cpus", "2"], [["--num-cpus", "2"]])
        daemons = _daemons(cluster)
        driver = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(DRIVER), str(seconds), str(chaos.seed)],
            env=dict(cluster.env, UNIPAR_ADDRESS="auto"), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        series, began = [], time.monotonic()
        base: list[tuple[int, int, int]] = []
        while driver.poll() is None:   # a sample every 5 s; the baseline after the warm-up
            time.sleep(5)
            now = _sample(daemons)
            series.append([round(time.monotonic() - began)] + [n[0] >> 20 for n in now])
            if not base and time.monotonic() - began >= seconds / 5:
                base, base_kinds = now, _kinds(daemons)
        out, err = driver.communicate(timeout=60)
        assert driver.returncode == 0, out[-2000:] + err[-3000:]
        assert base, "the driver ended before its warm-up did"
        end, end_kinds = _sample(daemons), _kinds(daemons)
        tables = _tables(cluster)
    finally:
        cluster.stop()
    growth = [round(e[0] / b[0] - 1, 3) for b, e in zip(base, end)]
    chaos.record(seconds=seconds, rounds=int(out.split("ROUNDS")[1]),
                 daemons=len(daemons), rss_mib_base=[b[0] >> 20 for b in base],
                 rss_mib_end=[e[0] >> 20 for e in end],
                 rss_mib_every_30s=series[::6],
                 rss_growth=growth, rss_kinds_base=base_kinds, rss_kinds_end=end_kinds,
                 fds=[(b[1], e[1]) for b, e in zip(base, end)],
                 threads=[(b[2], e[2]) for b, e in zip(base, end)], tables=tables)
    assert all(g <= 0.10 for g in growth), growth
    assert all(e[1] <= b[1] for b, e in zip(base, end)), "open files grew"
    assert all(e[2] <= b[2] for b, e in zip(base, end)), "threads grew"
