"""R6: the head SIGKILLed halfway through a map and started again.

Work running on the nodes goes on without the head; what needs the head waits for it with a
bounded, clear error (HeadUnavailableError), never a raw socket error; ``unipar start --head``
starts it again on its address, it reloads its tables, the nodes rejoin by themselves, named
actors resolve again and ``unipar stop`` stops every process.

The issue's scenario: 10,000 tasks (2 ms each, so the map lasts seconds and the kill lands in
it). Its bound for the run with the kill is the same run without it + 10 s: the test runs the
map once without a kill first (same cluster, same work) and records both times
(``run_s_without_kill``, ``run_s_with_kill``; the latter includes the seconds the test takes
to start the head again, ``head_down_s``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from multinode import Cluster, base_env, ok, unipar
from unipar.testing import wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(420)]

HEAD = ["--num-cpus", "2", "--node-timeout", "10"]
NODE = ["--num-cpus", "2"]

MAPPER = """
    import json, sys, time
    import unipar
    unipar.init()

    @unipar.remote
    class Keeper:
        def __init__(self):
            self.n = 0
        def add(self):
            self.n += 1
            return self.n

    @unipar.remote(max_retries=3)
    def square(x):
        time.sleep(0.002)
        return x * x

    n, name = int(sys.argv[1]), sys.argv[2]
    run_began = time.monotonic()
    keeper = Keeper.options(name=name, lifetime="detached").remote()
    assert unipar.get(keeper.add.remote(), timeout=60) == 1
    refs = [square.remote(i) for i in range(n)]
    print("MAPPING", flush=True)
    got = unipar.get(refs, timeout=300)
    wrong = sum(1 for i, v in enumerate(got) if v != i * i)
    began = time.monotonic()
    again = unipar.get_actor(name)      # needs the head: waits for it to come back
    count = unipar.get(again.add.remote(), timeout=60)
    print(json.dumps({"results": len(got), "wrong": wrong, "keeper": count,
                      "lookup_waited_s": round(time.monotonic() - began, 2),
                      "run_s": round(time.monotonic() - run_began, 2)}), flush=True)
"""

NEW_DRIVER_WITHOUT_HEAD = """
    import json, time
    import unipar
    import unipar.native.client.head as head
    from unipar.exceptions import HeadUnavailableError
    head.HEAD_WAIT = 3.0      # the bound, short for the test
    unipar.init()

    @unipar.remote
    def one():
        return 1
    began = time.monotonic()
    try:
        unipar.get(one.remote(), timeout=60)   # its first call asks the head for resources
        print(json.dumps({"error": None}))
    except HeadUnavailableError as exc:
        print(json.dumps({"error": "HeadUnavailableError", "text": str(exc),
                          "waited_s": round(time.monotonic() - began, 2)}))
"""


def _head_pid(cluster: Cluster) -> int:
    return next(r["pid"] for r in cluster.state()["procs"] if r["role"] == "head")


def _nodes_alive(cluster: Cluster) -> int:
    out = unipar(cluster.env, "status")
    if out.returncode != 0:
        return 0
    line = next((x for x in out.stdout.splitlines() if x.startswith("Nodes:")), "")
    return int(line.split()[1]) if line else 0


def _mapper(cluster: Cluster, n: int, name: str) -> subprocess.Popen:
    """The MAPPER driver: ``n`` squares, and a detached actor named ``name``."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(MAPPER), str(n), name],
        env=dict(cluster.env, UNIPAR_ADDRESS="auto"), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def test_head_killed_mid_map_and_started_again(tmp_path, chaos):
    n = chaos.scaled(10_000)
    state = str(tmp_path / "state")
    cluster = Cluster(state, base_env(state))
    try:
        cluster.start(HEAD, [NODE])
        baseline = _mapper(cluster, n, "keeper-baseline")   # the same run, no kill
        out, err = baseline.communicate(timeout=300)
        assert baseline.returncode == 0, err[-3000:]
        without = json.loads(out.strip().splitlines()[-1])
        assert without["results"] == n and without["wrong"] == 0
        mapper = _mapper(cluster, n, "keeper")
        try:
            assert mapper.stdout is not None
            assert mapper.stdout.readline().strip() == "MAPPING"
            time.sleep(chaos.rng.uniform(0.05, 0.5))   # somewhere in the map
            os.kill(_head_pid(cluster), signal.SIGKILL)
            killed_at = time.monotonic()
            assert mapper.poll() is None, "the map ended before the head was killed"

            # Without a head: status says the nodes still run; a new driver gets a clear error.
            status = unipar(cluster.env, "status")
            assert status.returncode != 0
            assert "still run" in status.stderr and "unipar start --head" in status.stderr
            fresh = json.loads(ok(cluster.driver(NEW_DRIVER_WITHOUT_HEAD)).splitlines()[-1])
            assert fresh["error"] == "HeadUnavailableError", fresh
            assert "unreachable since" in fresh["text"]

            restarted = unipar(cluster.env, "start", "--head", "--include-dashboard", "false")
            assert restarted.returncode == 0, restarted.stdout + restarted.stderr
            assert "started again" in restarted.stdout
            began = time.monotonic()
            wait_for(lambda: _nodes_alive(cluster) == 2, timeout=30, interval=0.2,
                     message="both nodes to rejoin the restarted head")
            rejoin_s = time.monotonic() - began
            out, err = mapper.communicate(timeout=300)
        finally:
            if mapper.poll() is None:
                mapper.kill()
                mapper.communicate()
        assert mapper.returncode == 0, err[-3000:]
        figures = json.loads(out.strip().splitlines()[-1])
        assert figures["results"] == n and figures["wrong"] == 0
        assert figures["keeper"] == 2          # the same actor, found by name again

        # A driver started after the restart finds the named actor too.
        use = """
            import unipar
            unipar.init()
            print("count", unipar.get(unipar.get_actor("keeper").add.remote(), timeout=60))
        """
        assert "count 3" in ok(cluster.driver(use))
        chaos.record(kills=1, tasks=n, lost=n - figures["results"], wrong=figures["wrong"],
                     head_down_s=round(began - killed_at, 2), rejoin_s=round(rejoin_s, 2),
                     new_driver_error_after_s=fresh["waited_s"],
                     lookup_waited_s=figures["lookup_waited_s"],
                     run_s_without_kill=without["run_s"], run_s_with_kill=figures["run_s"],
                     run_s_bound=round(without["run_s"] + 10, 2))
    finally:
        stopped = cluster.stop()
    assert stopped is not None and stopped.returncode == 0
    assert not cluster.processes()


def test_stop_stops_daemons_cluster_json_forgot(tmp_path, chaos):
    """``unipar stop`` stops what ``unipar start`` started even when cluster.json no longer
    names it (overwritten, deleted): the daemons carry the state directory's marker."""
    state = str(tmp_path / "state")
    cluster = Cluster(state, base_env(state))
    try:
        cluster.start(HEAD, [NODE])
        pids = {p.pid for p in cluster.processes()}
        os.unlink(os.path.join(state, "cluster.json"))
        out = ok(unipar(cluster.env, "stop"))
        gone = wait_for(lambda: not [p for p in pids if psutil.pid_exists(p)
                                     and psutil.Process(p).status() != psutil.STATUS_ZOMBIE],
                        timeout=30, message="every daemon and worker to stop")
        chaos.record(processes=len(pids), stopped=bool(gone))
        assert "Stopped" in out
    finally:
        cluster.stop()
    assert not cluster.processes()


def test_nodes_stop_cleanly_when_the_head_never_comes_back(tmp_path, chaos):
    """A head that cannot restart: after UNIPAR_HEAD_GIVE_UP seconds (default 60, 10 here)
    the nodes stop, workers and files with them."""
    give_up = 10.0
    state = str(tmp_path / "state")
    cluster = Cluster(state, dict(base_env(state), UNIPAR_HEAD_GIVE_UP=str(give_up)))
    try:
        cluster.start(HEAD, [NODE])
        sessions = [r["session_dir"] for r in cluster.state()["procs"] if r.get("session_dir")]
        os.kill(_head_pid(cluster), signal.SIGKILL)
        killed_at = time.monotonic()
        wait_for(lambda: not cluster.processes(), timeout=give_up + 60, interval=0.5,
                 message="the nodes to stop after losing the head for good")
        gave_up_after = time.monotonic() - killed_at
        chaos.record(kills=1, gave_up_after_s=round(gave_up_after, 1),
                     give_up_setting_s=give_up)
        assert gave_up_after >= give_up
        assert not [s for s in sessions if os.path.exists(s)]
    finally:
        cluster.stop()


SUPERVISED_USE = """
    import json, time
    import unipar
    unipar.init()
    began = time.monotonic()
    keeper = unipar.get_actor("keeper")    # waits (UNIPAR_HEAD_WAIT) for the head to be back
    count = unipar.get(keeper.add.remote(), timeout=60)
    print(json.dumps({"count": count, "lookup_s": round(time.monotonic() - began, 2)}))
"""


def test_a_supervised_head_comes_back_by_itself(tmp_path, chaos):
    """``unipar start --head --supervise``: the head SIGKILLed (twice) is started again by its
    supervisor, with no ``unipar start`` by hand; a named actor resolves again each time, and
    ``unipar stop`` stops the supervisor with the rest."""
    state = str(tmp_path / "state")
    cluster = Cluster(state, base_env(state))
    try:
        cluster.start(HEAD + ["--supervise"], [NODE])
        assert [r for r in cluster.state()["procs"] if r["role"] == "supervisor"]
        make = """
            import unipar
            unipar.init()
            @unipar.remote
            class Keeper:
                def __init__(self):
                    self.n = 0
                def add(self):
                    self.n += 1
                    return self.n
            k = Keeper.options(name="keeper", lifetime="detached").remote()
            print("count", unipar.get(k.add.remote(), timeout=60))
        """
        assert "count 1" in ok(cluster.driver(make))
        back_s = []
        for round_ in (2, 3):
            old = _head_pid(cluster)
            os.kill(old, signal.SIGKILL)
            killed_at = time.monotonic()
            wait_for(lambda: _head_pid(cluster) != old, timeout=60, interval=0.1,
                     message="the supervisor to start the head again")
            back_s.append(round(time.monotonic() - killed_at, 2))
            used = json.loads(ok(cluster.driver(SUPERVISED_USE)).splitlines()[-1])
            assert used["count"] == round_, used
        cluster.records = cluster.state()["procs"]     # the new head's record too
        chaos.record(kills=2, head_back_after_s=back_s, lookup_s=used["lookup_s"])
    finally:
        stopped = cluster.stop()
    assert stopped is not None and stopped.returncode == 0
    assert "supervisor" in stopped.stdout
    assert not cluster.processes()
