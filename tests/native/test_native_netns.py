"""Nodes on different network stacks: each node daemon runs in its own Linux network namespace,
joined to the head's by veth pairs, and is cut off (`ip link set ... down`) and plugged back in.
A node declared dead is told so when it comes back, and stops; the first test checks the head's
side of that on loopback (it runs everywhere).

The head and its node run in the root namespace on the test network's address; nodes ``a`` and
``b`` join from namespaces with ``ip netns exec ... unipar start --address=...``; the driver
runs in the root namespace. Each test gets a fresh network and cluster, and its teardown checks
that no namespace, link or process is left. Root only (CI runs these as root).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import psutil
import pytest

from multinode import NetnsCluster, Netns, base_env, netns_unavailable
from unipar.native.wire import protocol as P
from unipar.native.cluster.connect import list_nodes
from unipar.native.wire.transport import Connection
from unipar.testing import wait_for

pytestmark = pytest.mark.timeout(60)
WHY_NOT = netns_unavailable()
needs_netns = pytest.mark.skipif(WHY_NOT is not None, reason=f"netns tests: {WHY_NOT}")

NODE_TIMEOUT = 3.0
# A silent node is declared dead after NODE_TIMEOUT; its last status may be up to 1 s older
# than the cut and the head checks once a second. The rest is slack for a loaded machine.
DECLARED_WITHIN = NODE_TIMEOUT + 2.0 + 3.0
HEAD = ["--num-cpus", "1", "--resources", '{"root": 1}', "--node-timeout", str(NODE_TIMEOUT)]
NODE_A = ["--num-cpus", "2", "--resources", '{"ns_a": 1, "ns": 2}']
NODE_B = ["--num-cpus", "2", "--resources", '{"ns_b": 1, "ns": 2}']

# A driver that runs one command per line of stdin and answers each with one line
# ("OUT <json>" or "ERR <text>"), so a test can act on the network between its steps.
DRIVER = r'''
import json, os, sys, time, traceback, uuid
import unipar
MARKS = sys.argv[1]
unipar.init()

def node():
    return os.environ["UNIPAR_NODE_ADDRESS"]

@unipar.remote
def where(blob):
    return [node(), os.readlink("/proc/self/ns/net"), len(blob)]

@unipar.remote(max_retries=5)
def work(i, delay):
    """Leaves a mark per run (start and end), so the test sees every execution."""
    token = uuid.uuid4().hex
    base = os.path.join(MARKS, f"{i}-{token}")
    with open(base + ".start", "w") as f:
        f.write(node())
    time.sleep(delay)
    with open(base + ".done", "w") as f:
        f.write(node())
    return [i, node(), token]

refs = []
for line in sys.stdin:
    cmd, _, arg = line.strip().partition(" ")
    args = json.loads(arg) if arg else {}
    try:
        if cmd == "where":
            out = {r: unipar.get(where.options(resources={r: 1}).remote(b"x" * 300_000),
                                 timeout=30) for r in args["resources"]}
        elif cmd == "map":
            refs = [work.options(resources=args.get("resources", {})).remote(i, args["delay"])
                    for i in range(args["n"])]
            out = unipar.get(refs, timeout=40)
        elif cmd == "again":
            out = unipar.get(refs, timeout=30)
        else:
            raise ValueError(cmd)
    except Exception:
        print("ERR", json.dumps(traceback.format_exc()), flush=True)
        continue
    print("OUT", json.dumps(out), flush=True)
'''


class Driver:
    """The driver above, in a subprocess of the root namespace (``address="auto"``)."""

    def __init__(self, cluster: NetnsCluster, marks: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER, marks], env=dict(cluster.env, UNIPAR_ADDRESS="auto"),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.errors: list[str] = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put),
                         daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.errors.append),
                         daemon=True).start()

    @staticmethod
    def _pump(stream: Any, put: Any) -> None:
        for line in stream:
            put(line)

    def post(self, cmd: str, **args: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{cmd} {json.dumps(args)}\n")
        self.proc.stdin.flush()

    def result(self, timeout: float = 45) -> Any:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"the driver did not answer within {timeout} s; its stderr:\n"
                        + "".join(self.errors)[-3000:], pytrace=False)
        kind, _, body = line.partition(" ")
        if kind != "OUT":
            pytest.fail(f"the driver failed:\n{json.loads(body)}\nstderr:\n"
                        + "".join(self.errors)[-3000:], pytrace=False)
        return json.loads(body)

    def ask(self, cmd: str, timeout: float = 45, **args: Any) -> Any:
        self.post(cmd, **args)
        return self.result(timeout)

    def close(self) -> None:
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@dataclass
class Lab:
    cluster: NetnsCluster
    net: Netns
    marks: str
    drivers: list[Driver] = field(default_factory=list)

    def driver(self) -> Driver:
        d = Driver(self.cluster, self.marks)
        self.drivers.append(d)
        return d

    def nodes(self) -> list[dict[str, Any]]:
        """The head's node list, asked from here (only the head answers: no cut-off node
        can make this wait)."""
        with open(self.cluster.secret_file) as f:
            secret = bytes.fromhex(f.read().strip())
        return list_nodes(self.cluster.head, secret)

    def alive(self, ip: str) -> bool:
        return any(n["Alive"] for n in self.nodes() if f"//{ip}:" in n["Address"])

    def record(self, i: int) -> dict[str, Any]:
        """The latest node daemon started in namespace ``i``."""
        return [r for r in self.cluster.records if f"node-ns{i}-" in r.get("state_dir", "")][-1]

    def runs(self, stage: str, after: float = 0.0) -> dict[int, list[str]]:
        """Task index -> the node addresses of its runs that reached ``stage`` (at or after
        the wall-clock time ``after``)."""
        found: dict[int, list[str]] = {}
        for name in os.listdir(self.marks):
            path = os.path.join(self.marks, name)
            if name.endswith(f".{stage}") and os.stat(path).st_mtime >= after:
                with open(path) as f:
                    found.setdefault(int(name.split("-")[0]), []).append(f.read())
        return found


class HeadLink:
    """A raw connection to the head, with what it receives queued."""

    def __init__(self, address: str, secret: bytes) -> None:
        self.conn = Connection(address, secret)
        self.got: queue.Queue[P.Message] = queue.Queue()
        threading.Thread(target=self.conn.serve_forever, args=(self.got.put,),
                         daemon=True).start()

    def ask(self, msg: P.Message) -> P.Message:
        """Send ``msg`` and return the next message received."""
        self.conn.send(msg)
        return self.got.get(timeout=10)


def test_the_head_tells_a_node_declared_dead_and_refuses_it(loop_server):
    node = HeadLink(loop_server.address, loop_server.secret)
    driver = HeadLink(loop_server.address, loop_server.secret)
    assert node.ask(P.RegisterNode(1, "n1", "tcp://127.0.0.1:9", {"CPU": 1.0})) == P.Reply(1, True)
    actor = b"a" * 16
    node.conn.send(P.ActorLocation(actor, "n1"))
    assert node.ask(P.LookupActor(2, actor)) == P.Reply(2, "n1")
    assert driver.ask(P.RegisterName(3, "svc", actor, b"", False)).value[2] is True
    loop_server.call(lambda: loop_server.head.check_heartbeats(-1.0))   # silent "too long"

    told = node.got.get(timeout=10)
    assert isinstance(told, P.NodeDeclaredDead) and told.node_id == "n1"
    assert "heard nothing from it" in told.reason
    # Whatever it sends now is dropped (and it is told only once per connection): a status does
    # not revive it, a node list is not sent to it. Its name reply comes after both.
    node.conn.send(P.NodeStatus("n1", {"CPU": 1.0}))
    node.conn.send(P.ListNodes(4))
    assert node.ask(P.LookupName(5, "svc")) == P.Reply(5, None)   # its actor's name was freed
    assert node.got.empty()
    (entry,) = driver.ask(P.ListNodes(6)).value
    assert entry["NodeID"] == "n1" and entry["Alive"] is False
    # It may not register again as itself.
    again = HeadLink(loop_server.address, loop_server.secret)
    refused = again.ask(P.RegisterNode(7, "n1", "tcp://127.0.0.1:9", {"CPU": 1.0}))
    assert refused.req_id == 7 and refused.error_kind == "dead"
    assert isinstance(again.got.get(timeout=10), P.NodeDeclaredDead)
    assert driver.ask(P.ListNodes(8)).value[0]["Alive"] is False
    for link in (node, driver, again):
        link.conn.close()


@pytest.fixture
def lab(tmp_path) -> Iterator[Lab]:
    state = str(tmp_path / "state")
    marks = tmp_path / "marks"
    marks.mkdir()
    net = Netns(2)
    cluster = NetnsCluster(state, base_env(state))
    lab = Lab(cluster, net, str(marks))
    try:
        cluster.start_netns(net, HEAD, [NODE_A, NODE_B])
        yield lab
    finally:
        try:
            for d in lab.drivers:
                d.close()
            net.pids()                  # remember what ran inside, to check it is gone
            cluster.stop()
        finally:
            net.destroy()
        left = net.leftovers() + [f"process {p.pid}" for p in cluster.processes()]
        assert not left, f"left behind: {left}"


def _check_unique(results: list[list[Any]], n: int) -> None:
    """Every task's result once: indexes 0..n-1 in order, and no token twice."""
    assert [r[0] for r in results] == list(range(n))
    tokens = [r[2] for r in results]
    assert len(tokens) == len(set(tokens)) == n


@needs_netns
def test_tasks_run_in_each_namespace_and_results_come_back(lab: Lab):
    addresses = sorted(n["Address"] for n in lab.nodes() if n["Alive"])
    assert len(addresses) == 3
    for ip in (lab.net.root_ip, *lab.net.ips):
        assert any(a.startswith(f"tcp://{ip}:") for a in addresses), (ip, addresses)
    out = lab.driver().ask("where", resources=["ns_a", "ns_b", "root"])
    # Each task ran in its node's namespace, got its 300 kB argument and sent its result back
    # over TCP between two network stacks.
    assert out["ns_a"][1] == f"net:[{lab.net.ns_inode(0)}]"
    assert out["ns_b"][1] == f"net:[{lab.net.ns_inode(1)}]"
    assert out["root"][1] == os.readlink("/proc/self/ns/net")
    assert all(o[2] == 300_000 for o in out.values())
    assert out["ns_a"][0] == f"unix://{lab.record(0)['session_dir']}/node.sock"
    assert out["ns_b"][0] == f"unix://{lab.record(1)['session_dir']}/node.sock"
    assert len({o[0] for o in out.values()}) == 3


@needs_netns
def test_a_node_cut_off_is_declared_dead_and_its_tasks_run_elsewhere(lab: Lab):
    driver = lab.driver()
    driver.ask("where", resources=["ns_b"])       # b is known and connected to everyone
    b_dir = lab.record(1)["session_dir"]
    cut_at = time.monotonic()
    lab.net.cut(1)
    driver.post("map", n=24, delay=0.3)         # the head's node forwards some tasks to b
    wait_for(lambda: not lab.alive(lab.net.ips[1]), timeout=DECLARED_WITHIN, interval=0.2,
             message="the cut-off node to be declared dead")
    declared_after = time.monotonic() - cut_at
    assert declared_after >= NODE_TIMEOUT - 1.5, declared_after   # not before it was silent
    results = driver.result()
    _check_unique(results, 24)
    assert not [r for r in results if b_dir in r[1]]
    # Tasks sent to b never reached it; each of the others ran exactly once.
    done = lab.runs("done")
    assert sorted(done) == list(range(24)) and all(len(v) == 1 for v in done.values()), done
    assert sum(1 for n in lab.nodes() if n["Alive"]) == 2


# A driver on node a, whose task there runs until a stops.
DRIVER_ON_A = """
    import time, unipar
    unipar.init()
    @unipar.remote(resources={"ns_a": 1})
    def forever():
        time.sleep(120)
    ref = forever.remote()
    print("READY", flush=True)
    try:
        unipar.get(ref, timeout=50)
    except Exception as exc:
        print("RAISED", type(exc).__name__, flush=True)
"""


@needs_netns
def test_a_node_that_comes_back_is_told_it_was_declared_dead(lab: Lab):
    driver = lab.driver()
    a = lab.record(0)
    on_a = lab.cluster.driver_in(a, DRIVER_ON_A)
    assert on_a.stdout is not None and on_a.stdout.readline() == "READY\n"
    driver.post("map", n=8, delay=1.5, resources={"ns": 1})   # runs on a and b only
    wait_for(lambda: any(a["session_dir"] in w for ws in lab.runs("start").values() for w in ws),
             timeout=30, interval=0.05, message="a task to start on node a")
    cut_at = time.time()
    lab.net.cut(0)        # a's tasks finish while it is cut off: their results are late
    wait_for(lambda: not lab.alive(lab.net.ips[0]), timeout=DECLARED_WITHIN, interval=0.2,
             message="the cut-off node to be declared dead")
    results = driver.result()
    _check_unique(results, 8)
    late = {i for i, where in lab.runs("done", after=cut_at).items()
            if any(a["session_dir"] in w for w in where)}
    assert late, "node a finished nothing while cut off"
    assert not [i for i in late if a["session_dir"] in results[i][1]]   # they ran again on b

    lab.net.restore(0)
    daemon = psutil.Process(a["pid"])
    wait_for(lambda: not daemon.is_running() or daemon.status() == psutil.STATUS_ZOMBIE,
             timeout=30, interval=0.2, message="node a to stop once told it was declared dead")
    assert "declared this node" in lab.cluster.node_log(a)
    # Its driver was told too, and its pending get raised instead of hanging.
    out, err = on_a.communicate(timeout=20)
    assert "RAISED ClusterGoneError" in out, out + err
    assert "declared this node" in err and "dead" in err, err
    # Its late results were dropped: the refs still hold the retries' results.
    assert driver.ask("again") == results
    _check_unique(driver.ask("map", n=4, delay=0, resources={"ns": 1}), 4)

    # Started again, a node joins as a new node, and work needing it runs there.
    again = lab.cluster.join(0, NODE_A)
    out = driver.ask("where", resources=["ns_a"])
    assert out["ns_a"][0] == f"unix://{again['session_dir']}/node.sock"
    assert out["ns_a"][1] == f"net:[{lab.net.ns_inode(0)}]"
    nodes = lab.nodes()
    assert sum(1 for n in nodes if n["Alive"]) == 3 and len(nodes) == 4
