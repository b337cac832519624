"""``unipar bench``'s transfer_cross_node workload: a second node joins off the clock, an object
crosses from one node's store to the other's, and the second node is gone afterwards.

One child run of the native backend at a tiny size (8 MiB); numbers are never checked.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from unipar.bench.workloads import Sizes, make_unipar_suite
from unipar.proctree import run_measured

pytestmark = pytest.mark.timeout(120)


def test_native_moves_an_object_between_two_nodes_and_leaves_nothing(tmp_path):
    out = tmp_path / "child.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in ("UNIPAR_BACKEND", "UNIPAR_ADDRESS")}
    measured = run_measured([sys.executable, "-m", "unipar.bench.child", "--backend", "native",
                             "--workloads", "transfer_cross_node,transfer_warm_node",
                             "--scale", "0.001",
                             "--out", str(out)], env, timeout=100, settle=2.0)
    assert measured.ok, measured.stderr[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    for name in ("transfer_cross_node", "transfer_warm_node"):
        [xfer] = [r for r in records if r.get("name") == name]
        assert xfer.get("value", 0) > 0, (xfer, measured.stderr[-3000:])
    assert records[-1] == {"done": True}
    # No daemon or worker of either node outlives the run.
    assert measured.left_behind == 0


def test_only_native_has_the_workload_among_unipar_backends():
    assert Sizes(0.001).xfer_bytes == 8 * 2**20 and Sizes(1.0).xfer_bytes == 2**30
    for workload in ("w_transfer_cross_node", "w_transfer_warm_node"):
        assert hasattr(make_unipar_suite("native"), workload)
        for backend in ("local", "dask", "spark", "ray"):
            assert not hasattr(make_unipar_suite(backend), workload), backend
