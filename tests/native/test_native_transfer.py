"""Big objects move between nodes, and to and from a remote driver, in chunks (transfer.py).

A real cluster (``unipar start``): the head's node A and a node B. Objects of a few hundred MiB
(more than one chunk, sized for a 2-core CI machine with a small /dev/shm) are made on B and
read on A, and the daemons' peak resident memory is checked: a transfer must not cost either of
them anything near a copy of the object. Drivers are subprocesses; those that must pause while
the test looks at a daemon read a line from stdin.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any, Iterator

import pytest

from multinode import Cluster, base_env
from unipar.native.dashboard.server import query_node
from unipar.native.wire.chunks import CHUNK_SIZE, WINDOW
from unipar.testing import wait_for

pytestmark = pytest.mark.timeout(300)

MiB = 1024 * 1024
BIG = 320 * MiB               # 40 chunks: well over one, and it fits a small /dev/shm
HEAD = ["--num-cpus", "2", "--resources", '{"res_a": 2}']
NODE_B = ["--num-cpus", "1", "--resources", '{"res_b": 1}']
SIZES = [96 * MiB, 96 * MiB - 3 * 4096, 96 * MiB]   # pulled one after another


def _nodes(cluster: Cluster) -> list[dict[str, Any]]:
    """Node records, the head's node (A, where drivers connect) first."""
    return [r for r in cluster.records if r["role"] == "node"]


def _secret(cluster: Cluster) -> bytes:
    with open(cluster.secret_file) as f:
        return bytes.fromhex(f.read().strip())


def _store(cluster: Cluster, record: dict[str, Any]) -> dict[str, Any]:
    return query_node(record["address"], _secret(cluster), 30)["store"]


def _kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak(pid: int) -> int:
    """Reset the process's peak resident size to its current one (returns that, in bytes)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
    return _kib(pid, "VmRSS") * 1024


def _partials(record: dict[str, Any]) -> list[str]:
    objects = os.path.join(record["session_dir"], "objects")
    return [n for n in os.listdir(objects) if n.endswith(".tmp")] if os.path.isdir(objects) else []


class Driver:
    """A driver subprocess we talk to: it prints lines, and waits for ours where it asks."""

    def __init__(self, cluster: Cluster, code: str, env: dict[str, str] | None = None,
                 address: str = "auto") -> None:
        run_env = dict(env if env is not None else cluster.env, UNIPAR_ADDRESS=address)
        self.proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=run_env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []      # every line, as it came (expect() consumes the queue)
        self.err: list[str] = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self._line),
                         daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.err.append),
                         daemon=True).start()

    def _line(self, line: str) -> None:
        self.seen.append(line)
        self.lines.put(line)

    @staticmethod
    def _pump(stream: Any, put: Any) -> None:
        for line in stream:
            put(line.rstrip("\n"))

    def expect(self, prefix: str, timeout: float = 120) -> str:
        """The rest of the next line starting with ``prefix`` (earlier lines are skipped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break   # it exited (failed): its stderr says why
                continue
            if line.startswith(prefix):
                return line[len(prefix):].strip()
        raise AssertionError(f"the driver did not print {prefix!r} (exit code "
                             f"{self.proc.poll()}); stderr: {chr(10).join(self.err)[-3000:]}")

    def say(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 120) -> None:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self.kill()
        assert code == 0, "\n".join(self.err)[-3000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@contextlib.contextmanager
def _own_cluster(tmp_path: Any) -> Iterator[Cluster]:
    """A started cluster (A and B), stopped after its tests whatever happens."""
    state = str(tmp_path / "state")
    c = Cluster(state, base_env(state))
    try:
        c.start(HEAD, [NODE_B])
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    with _own_cluster(tmp_path_factory.mktemp("unipar-transfer")) as c:
        yield c


MADE_ON_B = f"""
    import hashlib, sys, numpy as np, unipar
    unipar.init()

    def digest(a):
        return hashlib.blake2b(memoryview(a).cast("B")).hexdigest()

    @unipar.remote(resources={{"res_b": 1}}, num_returns=2)
    def make(n):   # the array lives on B; the box (a small result) holds a ref to it
        a = np.random.default_rng(7).integers(0, 1 << 62, n, dtype=np.int64)
        return [unipar.put(a)], digest(a)

    @unipar.remote(resources={{"res_a": 1}})
    def read_on_a(box):   # a task on A: unpickling the box makes A fetch the array
        return digest(unipar.get(box[0]))

    box_ref, made_ref = make.remote({BIG // 8})
    made = unipar.get(made_ref)      # (the box stays unopened here: nothing fetched yet)
    print("MADE", flush=True)
    sys.stdin.readline()             # the test resets the daemons' peak memory here
    seen = unipar.get([read_on_a.remote(box_ref), read_on_a.remote(box_ref)])
    assert seen == [made, made], (seen, made)
    array = unipar.get(unipar.get(box_ref)[0])
    assert digest(array) == made and array.nbytes == {BIG}
    print("READ", flush=True)
    sys.stdin.readline()
    del array
    unipar.shutdown()
"""


def test_big_object_from_b_is_read_on_a_once_without_copies_in_the_daemons(cluster: Cluster):
    node_a, node_b = _nodes(cluster)
    before_a, before_b = _store(cluster, node_a), _store(cluster, node_b)
    driver = Driver(cluster, MADE_ON_B)
    try:
        driver.expect("MADE")
        rss = {r["pid"]: _reset_peak(r["pid"]) for r in (node_a, node_b)}
        driver.say("go")
        driver.expect("READ", timeout=240)
        growth = {pid: _kib(pid, "VmHWM") * 1024 - start for pid, start in rss.items()}
        after_a, after_b = _store(cluster, node_a), _store(cluster, node_b)
        driver.say("done")
        driver.finish()
    finally:
        driver.kill()
    # Two tasks and the driver on A read it: one copy came over, once.
    assert after_a["pulled"] - before_a["pulled"] == 1
    assert after_a["pulled_bytes"] - before_a["pulled_bytes"] >= BIG
    served = after_b["served_bytes"] - before_b["served_bytes"]
    assert BIG <= served < BIG + CHUNK_SIZE
    assert after_a["pulls_failed"] == before_a["pulls_failed"]
    # Neither daemon held anything near a copy of it (chunks in flight only).
    for pid, grew in growth.items():
        assert grew < BIG // 4, f"node pid {pid}: peak memory grew by {grew / MiB:.0f} MiB"
    assert not _partials(node_a)


def test_copies_survive_their_container_being_dropped_and_nothing_leaks(cluster: Cluster):
    # The only thing keeping the array alive on B is the list holding its ref, and the driver
    # drops the list as soon as it has the ref: A's copy must still arrive whole (A holds the
    # array on B while it copies). Big results of tasks A sent to B are pulled too, and each
    # such task ends when its result is in (else the next one would wait for B's only slot
    # forever). Afterwards every store is empty again.
    code = f"""
        import numpy as np, unipar
        unipar.init()

        @unipar.remote(resources={{"res_b": 1}})
        def make(n):
            return [unipar.put(np.arange(n, dtype=np.float64))]

        for _ in range(2):
            inner = unipar.get(make.remote({BIG // 2 // 8}))[0]   # the list is gone now
            array = unipar.get(inner)
            assert array[-1] == {BIG // 2 // 8 - 1} and float(array[::4096].sum()) > 0
            del inner, array

        @unipar.remote(resources={{"res_b": 1}})
        def full(n):
            return np.full(n, 2.0)
        for _ in range(3):
            assert float(unipar.get(full.remote({BIG // 4 // 8})).sum()) == {BIG // 4 // 4}
        unipar.shutdown()
        print("SURVIVED")
    """
    out = cluster.driver(code)
    assert out.returncode == 0 and "SURVIVED" in out.stdout, out.stderr[-3000:]
    for node in _nodes(cluster):
        wait_for(lambda: _store(cluster, node)["objects"] == 0, timeout=60, interval=0.5,
                 message=f"the store of node {node['address']} to be empty")


PULLED_AGAIN = f"""
    import hashlib, sys, numpy as np, unipar
    unipar.init()

    @unipar.remote(resources={{"res_b": 1}}, num_returns=2)
    def make(n, seed):   # lives on B
        a = np.random.default_rng(seed).integers(0, 255, n, dtype=np.uint8)
        return a, hashlib.blake2b(a).hexdigest()

    @unipar.remote(resources={{"res_a": 1}})
    def digest_on_a(a):   # A pulls it; the worker lets go of it when the task ends
        return hashlib.blake2b(a).hexdigest()

    for seed, n in enumerate({SIZES}):
        ref, made = make.remote(n, seed)
        assert unipar.get(digest_on_a.remote(ref)) == unipar.get(made), seed
        del ref, made
        print("PULLED", n, flush=True)
        sys.stdin.readline()   # the test looks at A's pool here
    unipar.shutdown()
"""


def test_a_node_writes_pulled_objects_into_memory_it_used_before(tmp_path):
    # Fresh memory is most of what a pull costs (a page allocation under every copied page;
    # 0.4-1.3 s a GiB on this project's VM): a pulled object's file goes to the segment pool
    # when freed, and the next pull of about its size writes into it: byte-identical, also
    # when the segment was bigger than the new object (it is cut to size). A cluster of its
    # own: A's pool starts empty, whatever the other tests left in theirs.
    with _own_cluster(tmp_path) as cluster:
        node_a, _node_b = _nodes(cluster)
        driver = Driver(cluster, PULLED_AGAIN)
        try:
            pooled = []
            for n in SIZES:
                assert int(driver.expect("PULLED")) == n
                pooled.append(wait_for(lambda: _store(cluster, node_a)["pooled"], timeout=60,
                                       interval=0.2, message="A's pool to hold the pulled file"))
                driver.say("next")
            driver.finish()
        finally:
            driver.kill()
        assert not _partials(node_a)
    assert pooled[0] >= SIZES[0]
    # Each later pull took the pooled segment (else the pool would hold both files now).
    assert pooled[1] < SIZES[0] + SIZES[1] and pooled[2] < SIZES[1] + SIZES[2]


def test_remote_driver_puts_and_gets_objects_bigger_than_its_frame_limit(cluster: Cluster,
                                                                        tmp_path):
    # A driver outside the cluster (role "remote", reached with unipar://): it cannot map the
    # nodes' files, so big values travel over its connection, in chunks. Its frame limit is
    # lowered to 16 MiB, so an object of 96 MiB sent in one frame (as before) is refused.
    env = base_env(str(tmp_path / "elsewhere"))
    env["UNIPAR_CLUSTER_SECRET"] = _secret(cluster).hex()
    code = f"""
        import numpy as np, unipar
        from unipar.native.wire import protocol as P
        from unipar.native.wire import transport
        LIMIT = 16 << 20
        transport.Connection.__init__.__kwdefaults__["max_frame"] = LIMIT
        frames, encode = [], P.encode
        def counting(msg):
            parts = encode(msg)
            frames.append(sum(memoryview(p).nbytes for p in parts))
            return parts
        P.encode = counting
        unipar.init()
        from unipar import _state
        assert _state.current().client.remote

        big = np.random.default_rng(3).random({96 * MiB // 8})
        one_frame = encode(P.ObjectReady(b"o" * 16, "inline", P.blob(big.data.cast("B")), "", 0))
        try:
            P.frame_length(one_frame[0][:4], LIMIT)
            raise SystemExit("a 96 MiB frame passed the limit")
        except P.ProtocolError:
            pass

        ref = unipar.put(big)                       # up, in chunks
        assert max(frames) <= {CHUNK_SIZE} + 4096, max(frames)
        back = unipar.get(ref)                      # down, in chunks
        assert np.array_equal(back, big) and not back.flags.writeable

        @unipar.remote
        def total(a):
            return float(a.sum())

        @unipar.remote(resources={{"res_b": 1}})
        def make(n):
            return np.full(n, 7.0)

        # on B: A offers the driver's object to B, which pulls it
        assert unipar.get(total.options(resources={{"res_b": 1}}).remote(ref)) == float(big.sum())
        # a big argument: uploaded as an object of its own
        assert unipar.get(total.options(resources={{"res_b": 1}}).remote(big)) == float(big.sum())
        made = unipar.get(make.remote({40 * MiB // 8}))   # a result made on B, pulled here
        assert made.shape == ({40 * MiB // 8},) and float(made.sum()) == 7.0 * made.size
        assert max(frames) <= {CHUNK_SIZE} + 4096, max(frames)
        unipar.shutdown()
        print("REMOTE OK")
    """
    hostport = cluster.head.removeprefix("tcp://")
    out = cluster.driver(code, address=f"unipar://{hostport}", env=env, timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "REMOTE OK" in out.stdout


KILLED_SOURCE = f"""
    import sys, numpy as np, unipar
    unipar.init()

    @unipar.remote(resources={{"res_b": 1}})
    def make(n):
        return [unipar.put(np.ones(n))]

    for attempt in range(5):
        box_ref = make.remote({BIG // 8})
        unipar.wait([box_ref])
        print("WATCH", flush=True)       # the test watches A's store from now on
        box = unipar.get(box_ref)        # A starts fetching the array now
        print("OID", box[0]._handle.oid.hex(), flush=True)
        try:
            unipar.get(box[0], timeout=120)
            print("RESULT GOT", flush=True)
        except unipar.exceptions.ObjectLostError as exc:
            print("RESULT LOST", exc, flush=True)
        if sys.stdin.readline().strip() != "again":
            break
        del box, box_ref
"""


def test_a_transfer_whose_source_dies_fails_cleanly(tmp_path):
    with _own_cluster(tmp_path) as c:
        _source_dies_mid_transfer(c)


def _source_dies_mid_transfer(c: Cluster) -> None:
    driver = None
    try:
        node_a, node_b = _nodes(c)
        driver = Driver(c, KILLED_SOURCE)
        for _attempt in range(5):
            driver.expect("WATCH")
            caught = _stop_mid_transfer(node_a, driver)
            oid = driver.expect("OID")
            if caught:
                os.kill(node_b["pid"], signal.SIGKILL)
                os.kill(node_a["pid"], signal.SIGCONT)
                break
            assert driver.expect("RESULT") == "GOT"   # done before we looked: a new object
            driver.say("again")
        else:
            pytest.fail("never caught a transfer half-way in 5 tries")
        assert "no longer exists on any node" in driver.expect("RESULT LOST")
        driver.say("stop")
        driver.finish()
        assert not _partials(node_a)
        assert not os.path.exists(os.path.join(node_a["session_dir"], "objects", oid))
        store = _store(c, node_a)
        assert store["pulls_failed"] == 1 and store["pulled"] == 0
    finally:
        if driver is not None:
            driver.kill()
        for record in _nodes(c):
            try:
                os.kill(record["pid"], signal.SIGCONT)
            except ProcessLookupError:
                pass


def _stop_mid_transfer(node: dict[str, Any], driver: Driver) -> bool:
    """Freeze ``node`` (SIGSTOP) while it holds a partial object file; True if it does (its
    transfer is then frozen half-way), False if the transfer ended first (node resumed)."""
    def partial_or_done() -> bool:
        return (bool(_partials(node)) or driver.proc.poll() is not None
                or any(line.startswith("RESULT") for line in driver.seen))
    wait_for(partial_or_done, timeout=120, interval=0.001, message="a transfer to start")
    os.kill(node["pid"], signal.SIGSTOP)
    objects = os.path.join(node["session_dir"], "objects")
    written = [os.stat(os.path.join(objects, n)).st_size for n in _partials(node)]
    # Chunks are written in order; the chunks it asked for may still come after we kill the
    # sender (they sit in the socket): far enough from the end, the copy cannot complete.
    if written and written[0] < BIG - 2 * WINDOW * CHUNK_SIZE:
        return True
    os.kill(node["pid"], signal.SIGCONT)
    return False
