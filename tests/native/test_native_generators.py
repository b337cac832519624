"""Streaming generators on the native engine (issue #18.1): values stream from the worker as
they are produced, on the direct path and through the node; a worker that dies mid-stream is
handled by the task's retries (the re-run's repeats are skipped) or fails the rest.

Each test runs a driver script in a subprocess (its own one-machine cluster), as
test_native_direct.py does. Nothing waits on time: generators block on marker files that the
driver creates only after it saw what it waits for; every wait has a deadline.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

# Driver-side helpers every script shares: a generator that yields (i, pid) and, after
# ``hold`` values, waits (bounded) for a marker file.
PRELUDE = """
import os, signal, time, numpy as np, unipar

def wait_file(path, deadline_s=60):
    end = time.monotonic() + deadline_s
    while not os.path.exists(path) and time.monotonic() < end:
        time.sleep(0.01)
    return os.path.exists(path)

@unipar.remote
def held(n, hold, marker, ballast=None):
    for i in range(n):
        if i == hold:
            wait_file(marker)
        yield (i, os.getpid())
"""


def _run(code: str, timeout: float = 120) -> str:
    env = {**os.environ, "UNIPAR_BACKEND": "native"}
    env.pop("UNIPAR_ADDRESS", None)
    script = PRELUDE + textwrap.dedent(code)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_a_killed_worker_reruns_the_generator_and_skips_what_arrived(tmp_path):
    out = _run(f"""
        unipar.init(num_cpus=1)
        marker = {str(tmp_path / "go")!r}
        gen = held.options(max_retries=1).remote(5, 2, marker)
        first = [unipar.get(gen.next(timeout=60), timeout=60) for _ in range(2)]
        os.kill(first[0][1], signal.SIGKILL)    # mid-stream: it waits for the marker
        open(marker, "w").close()
        rest = [unipar.get(ref, timeout=60) for ref in gen]
        values = first + rest
        print("indexes", [i for i, _ in values])
        print("rerun elsewhere", all(pid != first[0][1] for _, pid in rest))
        unipar.shutdown()
    """)
    assert "indexes [0, 1, 2, 3, 4]" in out and "rerun elsewhere True" in out


def test_a_killed_worker_without_retries_fails_the_rest(tmp_path):
    out = _run(f"""
        unipar.init(num_cpus=1)
        gen = held.options(max_retries=0).remote(5, 1, {str(tmp_path / "never")!r})
        i, pid = unipar.get(next(gen), timeout=60)
        os.kill(pid, signal.SIGKILL)
        last = next(gen)
        try:
            unipar.get(last, timeout=60)
        except unipar.WorkerCrashedError:
            print("crashed")
        print("ended", list(gen) == [])
        print("still works", unipar.get(unipar.remote(lambda: 7).remote(), timeout=60))
        unipar.shutdown()
    """)
    assert "crashed" in out and "ended True" in out and "still works 7" in out


def test_streaming_through_the_node_big_values_and_backpressure(tmp_path):
    # A big argument sends the task through the node; big values travel via the store.
    out = _run(f"""
        unipar.init(num_cpus=2)
        marker = {str(tmp_path / "go")!r}
        gen = held.remote(3, 1, marker, np.zeros(300_000))
        print("first", unipar.get(gen.next(timeout=60), timeout=60)[0])
        open(marker, "w").close()
        print("rest", [unipar.get(r, timeout=60)[0] for r in gen])

        @unipar.remote
        def big(n, path):
            for i in range(n):
                with open(path, "a") as f:
                    f.write("x")
                yield np.full(200_000, i)

        path = {str(tmp_path / "progress")!r}
        gen = big.options(_generator_backpressure_num_objects=1).remote(6, path)
        first = unipar.get(next(gen), timeout=60)
        wait_file(path)
        time.sleep(0.3)   # room for a producer that ignored the bound to run ahead
        print("produced", len(open(path).read()))
        print("values", [int(first[0])] + [int(unipar.get(r, timeout=60)[-1]) for r in gen])
        unipar.shutdown()
    """)
    assert "first 0" in out and "rest [1, 2]" in out
    produced = int(out.split("produced ")[1].split()[0])
    assert produced <= 1 + 1 + 1   # taken + bound (+ one in flight)
    assert "values [0, 1, 2, 3, 4, 5]" in out


def test_cancel_wakes_a_generator_waiting_for_room_and_frees_its_worker(tmp_path):
    out = _run("""
        unipar.init(num_cpus=1)

        @unipar.remote
        def endless():
            i = 0
            while True:
                yield i
                i += 1

        gen = endless.options(_generator_backpressure_num_objects=1).remote()
        print("first", unipar.get(next(gen), timeout=60))
        unipar.cancel(gen)
        outcome = []
        for ref in gen:
            try:
                unipar.get(ref, timeout=60)
            except unipar.TaskCancelledError:
                outcome.append("cancelled")
        print("outcome", outcome[-1:])
        # one CPU: this runs only once the cancelled generator gave its worker back
        print("next task", unipar.get(unipar.remote(lambda: 5).remote(), timeout=60))

        @unipar.remote(max_concurrency=2)
        class Source:
            def numbers(self):
                i = 0
                while True:
                    yield i
                    i += 1

        source = Source.remote()
        gen = source.numbers.options(_generator_backpressure_num_objects=1).remote()
        print("actor first", unipar.get(next(gen), timeout=60))
        gen.cancel()
        tail = []
        for ref in gen:
            try:
                unipar.get(ref, timeout=60)
            except unipar.TaskCancelledError:
                tail.append("cancelled")
        print("actor outcome", tail[-1:])
        unipar.shutdown()
    """)
    assert "first 0" in out and "outcome ['cancelled']" in out and "next task 5" in out
    assert "actor first 0" in out and "actor outcome ['cancelled']" in out


def test_a_task_consuming_a_stream_lends_its_cpu(tmp_path):
    # One CPU: the consumer waits in next() while the producer needs that CPU.
    out = _run("""
        unipar.init(num_cpus=1)

        @unipar.remote
        def numbers(n):
            for i in range(n):
                yield i * i

        @unipar.remote
        def consume(n):
            return [unipar.get(r, timeout=60) for r in numbers.remote(n)]

        print("consumed", unipar.get(consume.remote(4), timeout=60))
        unipar.shutdown()
    """)
    assert "consumed [0, 1, 4, 9]" in out


# A worker's reply connection (a socket pair) whose first write gets a cancel's SIGINT in
# its middle, by construction; ``received`` collects what reaches the other end.
INTERRUPTED_WRITE = """
import socket, threading
from unipar.native.wire import protocol as P
from unipar.native.wire.transport import Connection
from unipar.native.worker import interrupts, streaming

interrupts.install()   # as a worker does

class InterruptedOnce:
    def __init__(self, sock):
        self.sock, self.armed = sock, True
    def sendall(self, data):
        if self.armed:
            self.armed = False
            interrupts.cancel(b"task")   # what the worker does on CancelTask
            for _ in range(1000):   # the handler runs here, mid-write
                pass
        self.sock.sendall(data)
    def __getattr__(self, name):
        return getattr(self.sock, name)

mine, theirs = socket.socketpair()
worker_side = Connection("test", None, sock=InterruptedOnce(mine))
client_side = Connection("test", None, sock=theirs)
received, two = [], threading.Event()
def on_message(msg):
    received.append((msg.op, getattr(msg, "index", None)))
    if len(received) == 2:
        two.set()
threading.Thread(target=client_side.serve_forever, args=(on_message,), daemon=True).start()
"""


def test_a_cancel_landing_in_the_send_of_a_value_tears_and_wedges_nothing():
    # A cancel's SIGINT reaches the worker at any point of a running generator, also while
    # the worker itself sends a value (the race of a cancel just after a warm worker's first
    # yield). The value must arrive whole, the generator end cancelled, and the connection
    # keep working (else the task's result never leaves and its stream waits forever).
    out = _run(INTERRUPTED_WRITE + """
class Host:
    def stream_conn(self):
        return worker_side
    def stream_record(self, value, owner):
        return [b"v%d" % value, "inline", b"x", "", 1, []]
    def node_conn(self):
        raise AssertionError("values go over the task's reply connection")
streaming.install(Host())

def numbers():
    yield 0
    yield 1
    yield 2

try:
    with interrupts.running(b"task"):   # as the worker runs a task's code
        streaming.Streaming(numbers)([b"stream", 1, 0])
    print("outcome ran to the end")
except KeyboardInterrupt:
    print("outcome cancelled")
worker_side.send(P.StreamAck(b"stream", 7))   # stands for the task's result
print("arrived", two.wait(30), received)
""")
    assert "outcome cancelled" in out
    assert "arrived True [('stream_item', 0), ('stream_ack', None)]" in out


def test_a_cancel_landing_in_the_send_of_a_printed_line_wedges_nothing():
    # The same for what a task prints (a cancelled task printing in a loop hung this way).
    out = _run(INTERRUPTED_WRITE + """
from unipar.native.worker.output import Forward
forward = Forward("stdout", lambda: "task", lambda: worker_side)
try:
    with interrupts.running(b"task"):
        for i in range(3):
            forward.write(f"line {i}\\n")
    print("outcome ran to the end")
except KeyboardInterrupt:
    print("outcome cancelled")
worker_side.send(P.StreamAck(b"stream", 7))   # stands for the task's result
print("arrived", two.wait(30), received)
""")
    assert "outcome cancelled" in out
    assert "arrived True [('log', None), ('stream_ack', None)]" in out


def test_cancel_of_a_generator_its_warm_worker_ran_before(tmp_path):
    # The conformance case that hung: the worker already ran the function, so the cancel
    # meets the task at its first yield. Each round must end, at most value 0 then the cancel.
    out = _run(f"""
        unipar.init(num_cpus=1)
        never = {str(tmp_path / "never")!r}
        done = {str(tmp_path / "done")!r}
        open(done, "w").close()
        print("warm", [unipar.get(r, timeout=60)[0] for r in held.remote(2, 1, done)])
        tails = set()
        for round in range(6):
            gen = held.remote(3, 1, never)
            if round % 2:   # after its first value instead of at once
                unipar.get(gen.next(timeout=60), timeout=60)
            unipar.cancel(gen)
            tail = []
            while True:
                try:
                    ref = gen.next(timeout=60)
                except StopIteration:
                    break
                try:
                    tail.append(unipar.get(ref, timeout=60)[0])
                except unipar.TaskCancelledError:
                    tail.append("cancelled")
            tails.add(tail[-1])
        print("tails", sorted(map(str, tails)))
        print("still works", unipar.get(unipar.remote(lambda: 7).remote(), timeout=60))
        unipar.shutdown()
    """)
    assert "warm [0, 1]" in out and "tails ['cancelled']" in out and "still works 7" in out


def test_cancel_of_generators_queued_behind_another_task(tmp_path):
    # One CPU, busy with a blocked generator: the ones submitted after it wait (pipelined on
    # its worker once the function is known to be quick, or here) and are cancelled there.
    out = _run(f"""
        unipar.init(num_cpus=1)
        marker = {str(tmp_path / "go")!r}
        for _ in range(20):   # known quick: later ones may be pipelined behind the next
            assert [unipar.get(r, timeout=60)[0] for r in held.remote(2, 5, None)] == [0, 1]
        blocker = held.remote(2, 1, marker)
        queued = [held.remote(2, 5, None) for _ in range(3)]
        print("blocker first", unipar.get(blocker.next(timeout=60), timeout=60)[0])
        for gen in queued:
            unipar.cancel(gen)
        open(marker, "w").close()
        print("blocker rest", [unipar.get(r, timeout=60)[0] for r in blocker])
        for gen in queued:
            outcome = []
            while True:
                try:
                    ref = gen.next(timeout=60)
                except StopIteration:
                    break
                try:
                    outcome.append(unipar.get(ref, timeout=60))
                except unipar.TaskCancelledError:
                    outcome.append("cancelled")
            print("queued", outcome)
        print("still works", [unipar.get(r, timeout=60)[0] for r in held.remote(2, 5, None)])
        unipar.shutdown()
    """)
    assert "blocker first 0" in out and "blocker rest [1]" in out
    assert out.count("queued ['cancelled']") == 3 and "still works [0, 1]" in out
