"""R2: a node SIGKILLed or frozen (SIGSTOP) during maps, nested tasks and actor calls.

A ``unipar start`` cluster: the head's node (no ``slot``) and nodes B and C (``slot``), so the
work runs on B and C. The driver, on the head's node, puts an object from a task on B or C,
then maps (flat and nested) and calls an actor while it kills or freezes the node that holds
the object. Checks: the head declares it dead within ``--node-timeout`` (plus its 1 s check
period), every result is right (tasks re-run, the actor restarts), and the put object survives:
the result that carried its ref to the driver copied it to the driver's node. (An object only
the dead node held raises ObjectLostError: tests/native/test_native_failover.py.)
"""

from __future__ import annotations

import json

import pytest

from multinode import Cluster, base_env, ok

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]

NODE_TIMEOUT = 4.0
HEAD = ["--num-cpus", "1", "--node-timeout", str(NODE_TIMEOUT)]
SLOT_NODE = ["--num-cpus", "2", "--resources", '{"slot": 100}']

DRIVER = """
    import json, os, random, signal, sys, time
    import unipar
    from unipar.exceptions import ObjectLostError
    failure, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    unipar.init()
    deadline = time.monotonic() + 60
    while len([x for x in unipar.nodes() if x["Alive"]]) < 3:
        assert time.monotonic() < deadline, "the nodes never joined"
        time.sleep(0.1)

    def daemon(address):   # the pid of the node daemon at ``address``
        with open(os.path.join(os.environ["UNIPAR_STATE_DIR"], "cluster.json")) as f:
            procs = json.load(f)["procs"]
        return next(r["pid"] for r in procs if r.get("session_dir") and r["session_dir"] in address)

    @unipar.remote(resources={"slot": 1})
    def hold():   # a put object that lives only on the node that ran this
        return os.environ["UNIPAR_NODE_ADDRESS"], [unipar.put(b"x" * (4 << 20))]

    @unipar.remote(resources={"slot": 1}, max_retries=-1)
    def square(x):
        time.sleep(0.01)
        return x * x

    @unipar.remote(resources={"slot": 1}, max_retries=-1)
    def nested(x):   # its children run anywhere with a slot; it waits for them
        return sum(unipar.get([square.remote(x + k) for k in range(3)], timeout=120))

    @unipar.remote(resources={"slot": 1}, max_restarts=-1, max_task_retries=-1)
    class Counter:
        def __init__(self):
            self.n = 0
        def add(self, k):
            self.n += k
            return k

    victim, held = unipar.get(hold.remote(), timeout=60)
    counter = Counter.remote()
    flat = [square.remote(i) for i in range(n)]
    deep = [nested.remote(i) for i in range(n // 10)]
    calls = [counter.add.remote(i) for i in range(n // 2)]
    unipar.get(flat[: n // 10], timeout=120)        # the map is under way
    time.sleep(rng.uniform(0, 0.3))
    pid = daemon(victim)
    os.kill(pid, signal.SIGKILL if failure == "killed" else signal.SIGSTOP)
    hit = time.monotonic()
    calls += [counter.add.remote(i) for i in range(n // 2, n)]
    while len([x for x in unipar.nodes() if x["Alive"]]) > 2:
        assert time.monotonic() < hit + 60, "the head never declared the node dead"
        time.sleep(0.05)
    detected = time.monotonic() - hit
    wrong = sum(v != i * i for i, v in enumerate(unipar.get(flat, timeout=240)))
    wrong += sum(v != sum((i + k) ** 2 for k in range(3))
                 for i, v in enumerate(unipar.get(deep, timeout=240)))
    wrong += sum(v != i for i, v in enumerate(unipar.get(calls, timeout=240)))
    finished = time.monotonic() - hit
    try:
        lost = "answered" if unipar.get(held[0], timeout=60) == b"x" * (4 << 20) else "wrong"
    except ObjectLostError:
        lost = "ObjectLostError"
    if failure == "frozen":
        os.kill(pid, signal.SIGCONT)   # it wakes up declared dead, and stops
    print(json.dumps({"failure": failure, "tasks": n + n // 10 * 4, "actor_calls": n,
                      "wrong": wrong, "detected_s": round(detected, 2),
                      "all_done_s": round(finished, 2), "put_object": lost}))
"""


@pytest.mark.parametrize("failure", ["killed", "frozen"])
def test_a_node_killed_or_frozen_mid_work(tmp_path, chaos, failure):
    state = str(tmp_path / "state")
    cluster = Cluster(state, base_env(state))
    try:
        cluster.start(HEAD, [SLOT_NODE, SLOT_NODE])
        out = ok(cluster.driver(DRIVER.replace("sys.argv[1]", repr(failure))
                                .replace("sys.argv[2]", str(chaos.scaled(300)))
                                .replace("sys.argv[3]", str(chaos.seed)), timeout=280))
    finally:
        cluster.stop()
    figures = json.loads(out.splitlines()[-1])
    chaos.record(**figures, node_timeout_s=NODE_TIMEOUT)
    assert figures["wrong"] == 0
    # A put object made on the node and handed to the driver was copied to the driver's node
    # with the result that carried it (forwarding._adopt): it survives, byte-identical.
    assert figures["put_object"] == "answered"
    # The head checks heartbeats once a second; a killed node's connection closes at once.
    assert figures["detected_s"] <= NODE_TIMEOUT + 1.5
