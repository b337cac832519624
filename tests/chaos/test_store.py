"""R7: four times the object store's size through it, byte-identical; then a spill limit.

1 GiB (x ``UNIPAR_CHAOS_SCALE``) of seeded random bytes goes through a 256 MiB store (x the
same scale: the ratio stays 4:1), half as ``put`` objects, half as task results, all alive at
once, so most of it spills to disk; every object read back has the SHA-256 it was made with.
With ``spill_limit`` as well, the put that fits neither raises ObjectStoreFullError within
seconds instead of waiting.
"""

from __future__ import annotations

import pytest

from faults import run_driver

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]

MIB = 1 << 20

THROUGH = """
import hashlib
import numpy as np
import unipar
store, total, seed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
chunk = 32 << 20
unipar.init(num_cpus=2, object_store_memory=store)

def make(i):
    return np.random.default_rng([seed, i]).bytes(chunk)

@unipar.remote
def produce(i):
    return make(i)

began = time.monotonic()
count = total // chunk
refs, digests = [], []
for i in range(count):
    if i % 2:
        refs.append(produce.remote(i))
        digests.append(hashlib.sha256(make(i)).hexdigest())
    else:
        data = make(i)
        refs.append(unipar.put(data))
        digests.append(hashlib.sha256(data).hexdigest())
        del data
unipar.wait(refs, num_returns=len(refs), timeout=300)
written = time.monotonic() - began
wrong = 0
for _ in range(2):   # twice: what was read back spilled others, which come back in turn
    for ref, digest in zip(refs, digests):
        wrong += hashlib.sha256(unipar.get(ref, timeout=120)).hexdigest() != digest
session = session_dir()
unipar.shutdown()
print(json.dumps({"store_mib": store >> 20, "through_mib": (count * chunk) >> 20,
                  "objects": count, "wrong": wrong, "write_s": round(written, 2),
                  "seconds": round(time.monotonic() - began, 2), "session_dir": session}))
"""

LIMITED = """
import numpy as np
import unipar
store = int(sys.argv[1])
unipar.init(num_cpus=1, object_store_memory=store, backend_options={"spill_limit": store})
chunk = store // 4
keep, outcome = [], "never full"
began = time.monotonic()
for i in range(16):          # 4x the store: store + spill limit are full after 8
    t = time.monotonic()
    try:
        keep.append(unipar.put(np.full(chunk // 8, i, dtype=np.float64)))
    except unipar.ObjectStoreFullError:
        outcome = "ObjectStoreFullError"
        break
session = session_dir()
unipar.shutdown()
print(json.dumps({"outcome": outcome, "stored": len(keep), "failing_put_s": round(
    time.monotonic() - t, 3), "seconds": round(time.monotonic() - began, 2),
    "session_dir": session}))
"""


def test_four_times_the_store_goes_through_byte_identical(chaos):
    store = int(256 * MIB * chaos.scale)
    figures = run_driver(THROUGH, str(store), str(4 * store), str(chaos.seed))
    chaos.record(**{k: v for k, v in figures.items() if k != "session_dir"})
    assert figures["wrong"] == 0
    assert figures["through_mib"] >= 4 * figures["store_mib"] - 32


def test_a_spill_limit_makes_a_full_store_an_error(chaos):
    figures = run_driver(LIMITED, str(64 * MIB))
    chaos.record(**{k: v for k, v in figures.items() if k != "session_dir"})
    assert figures["outcome"] == "ObjectStoreFullError"
    assert 4 <= figures["stored"] <= 8
    assert figures["failing_put_s"] < 10
