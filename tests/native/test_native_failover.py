"""Node failure, beyond retrying running tasks: actors restart on another node, results
survive their maker (or are made again when lost half-copied), and work no single node could
run fails at once instead of waiting.

Each test starts its own cluster (a head and 2-3 node daemons, ``unipar start``) because it
kills a node; the driver runs on the head's node (``address="auto"``) and kills a node itself,
by the pid of the daemon that runs its actor or task (found in the state directory), or the
test does. ``--node-timeout 2``, though a killed node's connections close at once anyway.
"""

from __future__ import annotations

import os
import re

import pytest

from multinode import Cluster, base_env, ok as _ok

pytestmark = pytest.mark.timeout(240)

HEAD = ["--num-cpus", "1", "--node-timeout", "2"]
SLOT_NODE = ["--num-cpus", "1", "--resources", '{"slot": 1}']


@pytest.fixture
def cluster(tmp_path):
    """Head node A (1 CPU) and nodes B and C, each with the resource ``slot`` A lacks."""
    state = str(tmp_path / "state")
    c = Cluster(state, base_env(state))
    try:
        c.start(HEAD, [SLOT_NODE, SLOT_NODE])
        yield c
    finally:
        c.stop()


def _run(cluster: Cluster, code: str) -> str:
    return _ok(cluster.driver(code, timeout=180))


PRELUDE = """
    import os, signal, time, unipar
    from unipar.exceptions import ActorDiedError, ObjectLostError, WorkerCrashedError
    unipar.init()
    deadline = time.monotonic() + 60
    while len([n for n in unipar.nodes() if n["Alive"]]) < 3:   # every node joined
        assert time.monotonic() < deadline
        time.sleep(0.1)

    def node():
        return os.environ["UNIPAR_NODE_ADDRESS"]

    def daemon(address):   # the pid of the node daemon at ``address`` (cluster.json's record)
        import json
        with open(os.path.join(os.environ["UNIPAR_STATE_DIR"], "cluster.json")) as f:
            procs = json.load(f)["procs"]
        return next(r["pid"] for r in procs if r.get("session_dir") and r["session_dir"] in address)

    def kill_node(address):   # and wait until the head knows it is dead
        os.kill(daemon(address), signal.SIGKILL)
        while len([n for n in unipar.nodes() if n["Alive"]]) > 2:
            assert time.monotonic() < deadline + 60, "the head never declared it dead"
            time.sleep(0.1)
"""


def test_an_actor_restarts_on_another_node_and_keeps_its_name(tmp_path):
    # A third node (D, resource "caller") hosts an actor that calls the counter from there:
    # D is not the counter's owner, so it must find where the owner re-created it.
    state = str(tmp_path / "state")
    c = Cluster(state, base_env(state))
    try:
        c.start(HEAD, [SLOT_NODE, SLOT_NODE, ["--num-cpus", "1", "--resources", '{"caller": 1}']])
        out = _run(c, PRELUDE.replace("< 3", "< 4").replace("> 2", "> 3") + RESTART)
    finally:
        c.stop()
    assert "RESTARTED OK" in out


RESTART = """
    @unipar.remote(resources={"slot": 1}, max_restarts=1, max_task_retries=1)
    class Counter:
        def __init__(self):
            self.n = 0
        def add(self, k):
            self.n += k
            return self.n, node()
        def crash_node_if_used(self):   # a call running when its node dies
            if self.n:
                os.kill(daemon(node()), signal.SIGKILL)
                time.sleep(60)
            return self.n, node()

    @unipar.remote(resources={"caller": 1})
    class Caller:   # on node D
        def add(self, handle, k):
            return unipar.get(handle.add.remote(k), timeout=60)

    c = Counter.options(name="ctr").remote()
    caller = Caller.remote()
    assert unipar.get(c.add.remote(2))[0] == 2
    n, first = unipar.get(caller.add.remote(c, 3))   # D knows where it lives now
    assert n == 5
    # Its node dies during this call: the call runs again on the re-created actor.
    n, second = unipar.get(c.crash_node_if_used.remote(), timeout=60)
    assert second != first and n == 0, (first, second, n)   # constructor re-run
    assert unipar.get(c.add.remote(1))[0] == 1
    assert unipar.get(caller.add.remote(c, 10), timeout=60) == (11, second)   # D found it again
    again = unipar.get_actor("ctr")       # the name survived its node
    assert unipar.get(again.add.remote(100), timeout=60) == (111, second)

    # Its restart is used up: when its second node dies, it is dead for good.
    try:
        unipar.get(c.crash_node_if_used.remote(), timeout=60)
        raise SystemExit("a dead actor answered")
    except ActorDiedError as exc:
        assert "restarts" in str(exc), exc
    for call in (lambda: c.add.remote(1), lambda: caller.add.remote(c, 1)):   # here and on D
        try:
            unipar.get(call(), timeout=60)
            raise SystemExit("a dead actor answered")
        except ActorDiedError:
            pass
    deadline = time.monotonic() + 30
    while True:   # its name is free again
        try:
            unipar.get_actor("ctr")
        except ValueError:
            break
        assert time.monotonic() < deadline, "the name of a dead actor was kept"
        time.sleep(0.2)
    print("RESTARTED OK")
"""


def test_an_actor_without_restarts_dies_with_its_node(cluster: Cluster):
    out = _run(cluster, PRELUDE + """
    @unipar.remote(resources={"slot": 1})
    class Holder:
        def where(self):
            return node()

    h = Holder.options(name="holder").remote()
    host = unipar.get(h.where.remote())
    kill_node(host)
    for _ in range(2):   # in flight or sent later: both fail, neither hangs
        try:
            unipar.get(h.where.remote(), timeout=60)
            raise SystemExit("a dead actor answered")
        except ActorDiedError:
            pass

    @unipar.remote(resources={"slot": 1})
    def call(handle):   # on the slot node that is left, which never called it: fails too
        try:
            unipar.get(handle.where.remote(), timeout=60)
        except ActorDiedError:
            return "died"
        return "answered"
    assert unipar.get(call.remote(h), timeout=120) == "died"
    try:
        unipar.get_actor("holder")
        raise SystemExit("the name of a dead actor was kept")
    except ValueError:
        pass
    # A new actor with the resource goes to the node that is left.
    fresh = Holder.remote()
    assert unipar.get(fresh.where.remote(), timeout=60) != host
    print("DIED OK")
    """)
    assert "DIED OK" in out


def test_a_restarted_actor_waits_for_a_node_that_just_joined(tmp_path):
    # Chaos seed 4100706644 (tests/chaos/test_nodes.py): the actor's node dies right after
    # the only other node that can hold it joined, before this node linked to it (it learns
    # the node list once a second): it must be re-created there, not given up.
    state = str(tmp_path / "state")
    c = Cluster(state, base_env(state))
    try:
        c.start(HEAD, [SLOT_NODE])
        out = _run(c, PRELUDE.replace("< 3", "< 2") + """
    import json, subprocess, sys

    @unipar.remote(resources={"slot": 1}, max_restarts=-1, max_task_retries=-1)
    class Counter:
        def __init__(self):
            self.n = 0
        def add(self, k):
            self.n += k
            return self.n, node()

    c = Counter.remote()
    n, first = unipar.get(c.add.remote(1), timeout=60)
    with open(os.path.join(os.environ["UNIPAR_STATE_DIR"], "cluster.json")) as f:
        head = json.load(f)["head"]
    env = {k: v for k, v in os.environ.items() if k != "UNIPAR_ADDRESS"}
    joined = subprocess.run([sys.executable, "-m", "unipar.cli", "start", "--address",
                             head.removeprefix("tcp://"), "--num-cpus", "1", "--resources",
                             '{"slot": 1}'], env=env, capture_output=True, text=True,
                            timeout=120)
    assert joined.returncode == 0, joined.stdout + joined.stderr
    os.kill(daemon(first), signal.SIGKILL)   # at once: this node may not know the new one yet
    n, second = unipar.get(c.add.remote(1), timeout=60)
    assert second != first and n == 1, (first, second, n)   # re-created: constructor re-run
    print("REJOINED OK")
    """)
    finally:
        c.records = c.state()["procs"]   # the node the driver started is stopped too
        c.stop()
    assert "REJOINED OK" in out


def test_a_result_copied_here_outlives_the_node_that_made_it(cluster: Cluster, tmp_path):
    marks = tmp_path / "runs"
    marks.mkdir()
    out = _run(cluster, PRELUDE + f"""
    import numpy as np

    @unipar.remote(resources={{"slot": 1}}, max_retries=0)
    def make(n):
        with open(os.path.join({str(marks)!r}, str(os.getpid()) + "-" + str(time.time())), "w"):
            pass
        return np.arange(n, dtype=np.float64), node()

    @unipar.remote(resources={{"slot": 1}})
    def total(pair):
        return float(pair[0].sum()), node()

    small, big = make.remote(10), make.remote(3_000_000)   # inline, and through the store
    _, maker = unipar.get(small)
    unipar.get(big)
    kill_node(maker)
    # Nothing to rebuild: this node holds copies; the other slot node reads them from here.
    assert float(unipar.get(small)[0].sum()) == 45.0
    assert unipar.get(total.remote(big), timeout=60)[0] == float(np.arange(3_000_000).sum())
    assert unipar.get(total.remote(small), timeout=60)[0] == 45.0
    print("RUNS", len(os.listdir({str(marks)!r})))
    print("COPIES OK")
    """)
    assert "COPIES OK" in out
    assert "RUNS 2" in out   # each task ran once: nothing was re-run


def test_a_task_killed_with_its_node_without_retries_fails_clearly(cluster: Cluster):
    out = _run(cluster, PRELUDE + """
    @unipar.remote(resources={"slot": 1}, max_retries=0)
    def doomed():
        os.kill(daemon(node()), signal.SIGKILL)   # its own node dies under it
        time.sleep(60)

    try:
        unipar.get(doomed.remote(), timeout=60)
        raise SystemExit("no error")
    except (WorkerCrashedError, ObjectLostError) as exc:
        print("FAILED WITH", type(exc).__name__, exc)
    print("CLEAR OK")
    """)
    assert "CLEAR OK" in out and "retries are used up" in out


def test_work_no_node_fits_waits_for_one_that_joins(tmp_path):
    # Issue #14 point 5, as in Ray: on a `unipar start` cluster (nodes may join) a task or actor
    # bigger than every node warns and stays pending, and runs once a node that fits joins.
    # With fail_infeasible=True it fails at .remote() instead, naming the biggest node.
    state = str(tmp_path / "state")
    c = Cluster(state, base_env(state))
    try:
        c.start(["--num-cpus", "2", "--node-timeout", "2"], [["--num-cpus", "2"]])
        out = _ok(c.driver("""
            import subprocess, sys, time, warnings, unipar
            unipar.init()
            deadline = time.monotonic() + 60
            while len([n for n in unipar.nodes() if n["Alive"]]) < 2:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert unipar.cluster_resources()["CPU"] == 4.0

            @unipar.remote
            def f():
                return 1

            @unipar.remote(num_cpus=3)
            class Big:
                def ping(self):
                    return "pong"

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                task = f.options(num_cpus=3).remote()
                big = Big.remote()
                call = big.ping.remote()
            print("WARNED", [str(w.message) for w in caught
                             if issubclass(w.category, unipar.InfeasibleWarning)])
            ready, _ = unipar.wait([task, call], num_returns=2, timeout=3)
            print("READY BEFORE JOIN", len(ready))   # pending: neither failed nor ran
            status = subprocess.run([sys.executable, "-m", "unipar.cli", "status"],
                                    capture_output=True, text=True, timeout=60)
            print("STATUS", [line.strip() for line in status.stdout.splitlines()
                             if "infeasible today" in line])
            joined = subprocess.run([sys.executable, "-m", "unipar.cli", "start", "--address",
                                     "HEAD", "--num-cpus", "3"], capture_output=True,
                                    text=True, timeout=120)
            assert joined.returncode == 0, joined.stdout + joined.stderr
            print("AFTER JOIN", unipar.get([task, call], timeout=120))
            unipar.shutdown()

            unipar.init(fail_infeasible=True)
            try:
                f.options(num_cpus=4).remote()
                raise SystemExit("an infeasible task was accepted")
            except unipar.InfeasibleResourcesError as exc:
                print("FAILED FAST", exc)
        """.replace("HEAD", c.head.removeprefix("tcp://")), timeout=240))
    finally:
        c.stop()
    lines = {line.split(" ", 1)[0]: line for line in out.splitlines()}
    warned = lines["WARNED"]
    assert "f asks for {'CPU': 3.0}" in warned and "actor Big asks" in warned, warned
    assert "READY BEFORE JOIN 0" in out
    status = lines["STATUS"]
    assert "task(s)" in status and "asking {'CPU': 3.0}" in status, status
    counts = re.findall(r"(\d+) task\(s\), (\d+) actor\(s\)", status)
    assert [sum(int(t) for t, _ in counts), sum(int(a) for _, a in counts)] == [1, 1], status
    assert "AFTER JOIN [1, 'pong']" in out
    failed = next(line for line in out.splitlines() if line.startswith("FAILED FAST"))
    assert "{'CPU': 4.0}" in failed and "the biggest has {'CPU': 3.0}" in failed, failed


# -- a result lost while it was being copied: made again by re-running its task ---------------

BIG = 320 * 1024 * 1024        # 40 chunks: its copy takes long enough to be caught half-way

REBUILT = """
    import os, sys, time, numpy as np, unipar
    unipar.init()
    deadline = time.monotonic() + 60
    while len([n for n in unipar.nodes() if n["Alive"]]) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.1)

    @unipar.remote(resources={{"slot": 1}}, max_retries={retries})
    def make(n, attempt):
        path = os.path.join({marks!r}, f"{{attempt}}-{{os.getpid()}}-{{time.monotonic_ns()}}")
        with open(path + ".tmp", "w") as f:
            f.write(os.environ["UNIPAR_NODE_ADDRESS"])
        os.replace(path + ".tmp", path)   # whole, or not there yet
        return np.full(n, 7.0)

    for attempt in range(5):
        print("WATCH", attempt, flush=True)
        ref = make.remote({n}, attempt)
        try:
            a = unipar.get(ref, timeout=120)
            print("RESULT GOT", a.size == {n} and float(a[::4096].sum()) == 7.0 * a[::4096].size,
                  flush=True)
            del a
        except unipar.exceptions.ObjectLostError as exc:
            print("RESULT LOST", exc, flush=True)
        del ref
        if sys.stdin.readline().strip() != "again":
            break
"""


@pytest.mark.parametrize("retries", [1, 0])
def test_a_result_lost_while_being_copied_is_made_again(cluster: Cluster, tmp_path, retries):
    """The node that ran the task dies while the submitting node copies its big result (it is
    frozen half-way, then killed): with a retry left the task runs again on the other node and
    ``get`` returns the right value; without, ``get`` raises ObjectLostError."""
    import signal

    from test_native_transfer import Driver, _partials
    from unipar.native.wire.chunks import CHUNK_SIZE, WINDOW
    from unipar.testing import wait_for

    marks = tmp_path / "runs"
    marks.mkdir()
    node_a = next(r for r in cluster.records if r["role"] == "node")   # the head's node
    driver = Driver(cluster, REBUILT.format(retries=retries, marks=str(marks), n=BIG // 8))
    stopped: list[int] = []
    try:
        for attempt in range(5):
            driver.expect("WATCH")
            results = sum(line.startswith("RESULT") for line in driver.seen)
            runs = wait_for(lambda: [m for m in os.listdir(marks)
                                     if m.startswith(f"{attempt}-") and not m.endswith(".tmp")],
                            timeout=60, interval=0.001, message="the task to start")
            maker = (marks / runs[0]).read_text()
            victim = next(r for r in cluster.records
                          if r.get("session_dir") and r["session_dir"] in maker)
            wait_for(lambda: _partials(node_a) or sum(
                line.startswith("RESULT") for line in driver.seen) > results,
                timeout=60, interval=0.001, message="its result to be copied")
            os.kill(victim["pid"], signal.SIGSTOP)
            stopped.append(victim["pid"])
            objects = os.path.join(node_a["session_dir"], "objects")
            written = [os.stat(os.path.join(objects, p)).st_size for p in _partials(node_a)]
            if written and written[0] < BIG - 2 * WINDOW * CHUNK_SIZE:
                os.kill(victim["pid"], signal.SIGKILL)   # caught half-way: its node dies
                break
            os.kill(victim["pid"], signal.SIGCONT)       # the copy ended first: again
            stopped.pop()
            assert driver.expect("RESULT") == "GOT True"
            driver.say("again")
        else:
            pytest.fail("never caught a copy half-way in 5 tries")
        result = driver.expect("RESULT", timeout=120)
        driver.say("stop")
        driver.finish()
    finally:
        driver.kill()
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    again = sorted(m for m in os.listdir(marks) if m.startswith(f"{attempt}-")
                   and not m.endswith(".tmp"))
    if retries:
        assert result == "GOT True", result
        assert len(again) == 2, again          # it ran twice: there, then on the other node
        places = {(marks / m).read_text() for m in again}
        assert len(places) == 2, places
    else:
        assert result.startswith("LOST") and "lost with the node that made it" in result, result
        assert len(again) == 1, again
