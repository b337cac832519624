"""`unipar status` and the dashboard's /api/placement_groups show placement groups, and the
groups no node can hold today as pending and infeasible, with why (issue #14)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.request
from typing import Any, Iterator

import psutil
import pytest

from multinode import Cluster, base_env, ok, unipar
from test_native_observability import read_until, reader
from unipar.testing import terminate

pytest.importorskip("aiohttp", reason="pip install 'unipar[dashboard]'")
pytestmark = pytest.mark.timeout(240)

DRIVER = """
    import sys, unipar
    from unipar.util.placement_group import placement_group
    unipar.init()
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], name="shown")
    assert pg.wait(60)
    big = placement_group([{"CPU": 1000}], name="too-big")
    print("ready", flush=True)
    sys.stdin.readline()
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    state = str(tmp_path_factory.mktemp("pgs") / "state")
    c = Cluster(state, base_env(state))
    try:
        c.start(["--num-cpus", "2", "--dashboard-port", "0"], [])
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def driver(cluster: Cluster) -> Iterator[None]:
    env = dict(cluster.env, UNIPAR_ADDRESS="auto")
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(DRIVER)], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        read_until(reader(proc), "ready")
        yield None
    finally:
        terminate([psutil.Process(proc.pid)] if proc.poll() is None else [])
        proc.wait(timeout=30)


def by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in rows}


def test_status_lists_groups_and_the_infeasible_one_pending(cluster: Cluster, driver: None
                                                            ) -> None:
    text = ok(unipar(cluster.env, "status"))
    assert "Placement groups: 2 (1 created)" in text
    shown = next(line for line in text.splitlines() if " shown " in line)
    assert "CREATED" in shown and "2 bundle(s)" in shown
    pending = text.split("Pending, infeasible today")[1]
    assert "1000" in pending
    rows = by_name(json.loads(ok(unipar(cluster.env, "status", "--json")))["placement_groups"])
    assert rows["shown"]["state"] == "CREATED" and rows["too-big"]["state"] == "INFEASIBLE"


def test_dashboard_api_lists_groups(cluster: Cluster, driver: None) -> None:
    url = cluster.state()["dashboard"]
    with urllib.request.urlopen(f"{url}/api/placement_groups", timeout=30) as response:
        rows = by_name(json.load(response))
    assert rows["shown"]["state"] == "CREATED"
    assert len(rows["shown"]["bundles_to_node_id"]) == 2
    assert rows["too-big"]["state"] == "INFEASIBLE"
