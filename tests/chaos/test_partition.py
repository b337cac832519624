"""R5: a node in its own network namespace cut off (its cable pulled), then plugged back in.

The cut lasts ``CUT`` seconds (5 x ``UNIPAR_CHAOS_SCALE``, at most 30) while tasks run on it.
With a node timeout longer than the cut (4x) nothing is declared dead and nothing runs twice:
the results come back once the cable is in again. With a short one (2 s) the node is declared
dead, its tasks run once more elsewhere, its late results are dropped, and it stops when it
hears the head again. Linux and root only (network namespaces), like
tests/native/test_native_netns.py, whose driver and lab this reuses.
"""

from __future__ import annotations

import time
from typing import Iterator

import psutil
import pytest

from multinode import NetnsCluster, Netns, base_env
from test_native_netns import NODE_A, NODE_B, Lab, needs_netns
from unipar.testing import wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240), needs_netns]

SHORT = 2.0


def _cut_seconds(scale: float) -> float:
    return min(30.0, 5.0 * scale)


def _lab(tmp_path, node_timeout: float) -> Iterator[Lab]:
    state = str(tmp_path / "state")
    marks = tmp_path / "marks"
    marks.mkdir()
    net = Netns(2)
    cluster = NetnsCluster(state, base_env(state))
    lab = Lab(cluster, net, str(marks))
    head = ["--num-cpus", "1", "--resources", '{"root": 1}', "--node-timeout", str(node_timeout)]
    try:
        cluster.start_netns(net, head, [NODE_A, NODE_B])
        yield lab
    finally:
        try:
            for d in lab.drivers:
                d.close()
            net.pids()
            cluster.stop()
        finally:
            net.destroy()
        left = net.leftovers() + [f"process {p.pid}" for p in cluster.processes()]
        assert not left, f"left behind: {left}"


def _cut_during_map(lab: Lab, cut: float, n: int) -> tuple[dict, list, float]:
    """Start ``n`` tasks on nodes a and b, cut a off while some run there for ``cut`` s, plug
    it in again; returns node a's record, the map's results and when the cut began."""
    driver = lab.driver()
    a = lab.record(0)
    driver.post("map", n=n, delay=1.0, resources={"ns": 1})
    wait_for(lambda: any(a["session_dir"] in w for ws in lab.runs("start").values() for w in ws),
             timeout=30, interval=0.05, message="a task to start on node a")
    cut_at = time.time()
    lab.net.cut(0)
    time.sleep(cut)      # the fault itself lasts this long: not a wait for a condition
    lab.net.restore(0)
    return a, driver.result(timeout=cut + 60), cut_at


def test_a_cut_shorter_than_the_node_timeout_reruns_nothing(tmp_path, chaos):
    cut = _cut_seconds(chaos.scale)
    for lab in _lab(tmp_path, node_timeout=4 * cut):
        a, results, _ = _cut_during_map(lab, cut, n=8)
        assert [r[0] for r in results] == list(range(8))
        starts = lab.runs("start")
        reruns = sum(len(v) - 1 for v in starts.values())
        on_a = sum(1 for r in results if a["session_dir"] in r[1])
        chaos.record(cut_s=cut, node_timeout_s=4 * cut, tasks=8, on_cut_node=on_a,
                     reruns=reruns, alive_after=lab.alive(lab.net.ips[0]))
        assert reruns == 0, starts
        assert on_a >= 1 and lab.alive(lab.net.ips[0])


def test_a_cut_longer_than_the_node_timeout_reruns_its_work_once(tmp_path, chaos):
    cut = _cut_seconds(chaos.scale)
    for lab in _lab(tmp_path, node_timeout=SHORT):
        a, results, cut_at = _cut_during_map(lab, cut, n=8)
        assert [r[0] for r in results] == list(range(8))
        assert len({r[2] for r in results}) == 8
        starts = lab.runs("start")
        late = {i for i, where in lab.runs("done", after=cut_at).items()
                if any(a["session_dir"] in w for w in where)}
        reruns = sum(len(v) - 1 for v in starts.values())
        chaos.record(cut_s=cut, node_timeout_s=SHORT, tasks=8, late_on_cut_node=len(late),
                     reruns=reruns)
        assert not lab.alive(lab.net.ips[0])
        assert all(len(v) <= 2 for v in starts.values()), starts      # once more at most
        assert not [r for r in results if a["session_dir"] in r[1]]   # late results dropped
        wait_for(lambda: _gone(a["pid"]), timeout=30, interval=0.2,
                 message="node a to stop once it hears the head")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:      # it may exit between any two questions
        return True
