"""The spark backend streams generators (issue #18): beyond the conformance suite's checks.

* Actor generator methods (plain and ``async def``) hand out each value before the call ends,
  and honour backpressure.
* A Python worker killed mid-stream: with a retry the task (or, restarted, the actor's method)
  runs again and the values already delivered are not delivered twice; without one the stream
  ends with WorkerCrashedError.
* A dropped stream and a cancelled actor stream stop their generator at its next ``yield``.
* Values keep unipar's object semantics (big numpy arrays, values holding refs), and a task
  can iterate a generator it started itself (giving its CPUs back while it waits).
"""

from __future__ import annotations

import gc
import os
import signal
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest

import unipar
from unipar.backends.base import current_backend
from unipar.testing import wait_for

pytest.importorskip("pyspark")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

if not (os.environ.get("JAVA_HOME") or __import__("shutil").which("java")):
    pytest.skip("the spark backend needs Java 17+", allow_module_level=True)


def _write_whole(path: Path, text: str) -> None:
    temp = path.with_suffix(".tmp")
    temp.write_text(text)
    os.replace(temp, path)  # whole, or not there


def _wait_file(path: str, deadline_s: float) -> bool:
    end = time.monotonic() + deadline_s
    while not os.path.exists(path) and time.monotonic() < end:
        time.sleep(0.01)
    return os.path.exists(path)


@unipar.remote
def two_then_hang(marker_dir):
    yield from two_then_hang_values(marker_dir)


@unipar.remote
def endless(closed_path):
    """Yields forever; writes ``closed_path`` when it is stopped at a yield."""
    i = 0
    try:
        while True:
            yield i
            i += 1
            time.sleep(0.01)
    finally:
        _write_whole(Path(closed_path), "closed")


@unipar.remote
def big_and_refs():
    np = __import__("numpy")
    yield np.ones(1_000_000)             # 8 MB
    inner = unipar.put("inner value")
    yield {"ref": inner}                 # a value holding a ref
    yield [unipar.put(i) for i in range(3)]


@unipar.remote
def squares(n):
    for i in range(n):
        yield i * i


@unipar.remote
def sum_of_stream(n):
    """Iterates a generator task it started itself."""
    return sum(unipar.get(ref, timeout=120) for ref in squares.remote(n))


@unipar.remote
class Streamer:
    def until_flag(self, flag):
        yield 0
        yield "flag seen" if _wait_file(flag, 30) else "deadline"

    async def until_flag_async(self, flag):
        yield 0
        yield "flag seen" if _wait_file(flag, 30) else "deadline"

    def record(self, path, n):
        for i in range(n):
            with open(path, "a") as f:
                f.write(f"{i}\n")
            yield i

    def endless(self, closed_path):
        yield from _endless_values(closed_path)

    def two_then_hang(self, marker_dir):
        yield from two_then_hang_values(marker_dir)

    def ping(self):
        return "pong"


def two_then_hang_values(marker_dir: str) -> Iterator[int]:
    """0 and 1; the first run then writes its pid to a marker and hangs until killed; 2, 3."""
    yield 0
    yield 1
    marker = Path(marker_dir) / "pid"
    if not marker.exists():
        _write_whole(marker, str(os.getpid()))
        time.sleep(600)
    yield 2
    yield 3


def _endless_values(closed_path: str) -> Iterator[int]:
    i = 0
    try:
        while True:
            yield i
            i += 1
            time.sleep(0.01)
    finally:
        _write_whole(Path(closed_path), "closed")


def _kill_descendant(pid: int) -> None:
    """SIGKILL ``pid``, which must be one of the processes this test process started."""
    ours = {p.pid for p in psutil.Process().children(recursive=True)}
    assert pid in ours, f"process {pid} is not a descendant of this test process"
    os.kill(pid, signal.SIGKILL)


def _marker_pid(marker: Path) -> int:
    wait_for(marker.exists, timeout=300, interval=0.05, message=f"the marker {marker.name}")
    return int(marker.read_text())


def _produced(path: str) -> int:
    return len(open(path).read().split()) if os.path.exists(path) else 0


def _open_streams() -> int:
    backend = current_backend()
    with backend.lock:
        return len(backend.streams._streams)


@pytest.fixture(scope="module", autouse=True)
def spark_session() -> Iterator[None]:
    unipar.shutdown()
    unipar.init(backend="spark", num_cpus=2)
    try:
        yield
    finally:
        unipar.shutdown()


@pytest.mark.parametrize("method", ["until_flag", "until_flag_async"])
def test_actor_method_values_arrive_before_the_call_ends(tmp_path, method):
    streamer = Streamer.remote()
    flag = str(tmp_path / "flag")
    gen = getattr(streamer, method).remote(flag)
    assert unipar.get(gen.next(timeout=60), timeout=60) == 0
    open(flag, "w").close()   # only now may the call finish
    assert unipar.get(next(gen), timeout=60) == "flag seen"
    with pytest.raises(StopIteration):
        next(gen)
    assert unipar.get(streamer.ping.remote(), timeout=60) == "pong"


def test_actor_method_backpressure(tmp_path):
    streamer = Streamer.remote()
    path = str(tmp_path / "progress")
    gen = streamer.record.options(_generator_backpressure_num_objects=2).remote(path, 20)
    assert unipar.get(next(gen), timeout=60) == 0
    wait_for(lambda: _produced(path) >= 3, timeout=60, message="the values up to the bound")
    time.sleep(0.5)   # room for a producer that ignored the bound to run ahead
    assert _produced(path) <= 1 + 2 + 1   # taken + bound (+ one in flight)
    assert [unipar.get(r, timeout=60) for r in gen] == list(range(1, 20))


def test_killed_worker_reruns_and_skips_delivered_values(tmp_path):
    gen = two_then_hang.options(max_retries=1).remote(str(tmp_path))
    assert [unipar.get(gen.next(timeout=120), timeout=60) for _ in range(2)] == [0, 1]
    _kill_descendant(_marker_pid(tmp_path / "pid"))
    assert [unipar.get(r, timeout=120) for r in gen] == [2, 3]


def test_killed_worker_without_retries_ends_the_stream_with_the_crash(tmp_path):
    gen = two_then_hang.options(max_retries=0).remote(str(tmp_path))
    assert [unipar.get(gen.next(timeout=120), timeout=60) for _ in range(2)] == [0, 1]
    _kill_descendant(_marker_pid(tmp_path / "pid"))
    last = gen.next(timeout=120)
    with pytest.raises(unipar.WorkerCrashedError):
        unipar.get(last, timeout=60)
    with pytest.raises(StopIteration):
        next(gen)


def test_killed_actor_reruns_the_method_and_skips_delivered_values(tmp_path):
    streamer = Streamer.options(max_restarts=1, max_task_retries=1).remote()
    gen = streamer.two_then_hang.remote(str(tmp_path))
    assert [unipar.get(gen.next(timeout=120), timeout=60) for _ in range(2)] == [0, 1]
    _kill_descendant(_marker_pid(tmp_path / "pid"))
    assert [unipar.get(r, timeout=120) for r in gen] == [2, 3]


def test_dropped_stream_stops_its_generator(tmp_path):
    closed = tmp_path / "closed"
    gen = endless.remote(str(closed))
    assert unipar.get(next(gen), timeout=60) == 0
    del gen
    gc.collect()
    wait_for(closed.exists, timeout=60, message="the generator to be closed at a yield")
    wait_for(lambda: _open_streams() == 0, timeout=30, message="no stream state left")


def test_cancelled_actor_stream_stops_the_method_at_its_next_yield(tmp_path):
    streamer = Streamer.remote()
    closed = tmp_path / "closed"
    gen = streamer.endless.remote(str(closed))
    assert unipar.get(next(gen), timeout=60) == 0
    unipar.cancel(gen)
    wait_for(closed.exists, timeout=60, message="the method to be closed at a yield")
    outcomes = []
    for ref in gen:
        try:
            outcomes.append(unipar.get(ref, timeout=60))
        except unipar.TaskCancelledError:
            outcomes.append("cancelled")
    assert outcomes.count("cancelled") <= 1
    assert all(isinstance(v, int) for v in outcomes if v != "cancelled")
    assert unipar.get(streamer.ping.remote(), timeout=60) == "pong"   # the actor lives on


def test_values_keep_object_semantics():
    np = pytest.importorskip("numpy")
    big, holder, refs = (unipar.get(r, timeout=120) for r in big_and_refs.remote())
    assert isinstance(big, np.ndarray) and big.shape == (1_000_000,) and big.sum() == 1e6
    assert unipar.get(holder["ref"], timeout=60) == "inner value"
    assert unipar.get(refs, timeout=60) == [0, 1, 2]


def test_a_task_iterates_a_generator_it_started():
    assert unipar.get(sum_of_stream.remote(5), timeout=120) == 0 + 1 + 4 + 9 + 16


def test_tasks_waiting_on_their_streams_give_their_cpus_back():
    # Both CPUs go to the two parents; their generator tasks run only if a parent waiting for
    # its stream's next value gives its CPU back, as a parent waiting in get() does.
    assert unipar.get([sum_of_stream.remote(4) for _ in range(2)], timeout=300) == [14, 14]


def test_ended_streams_leave_no_state():
    for _ in range(3):
        assert [unipar.get(r, timeout=60) for r in squares.remote(3)] == [0, 1, 4]
    gc.collect()
    assert _open_streams() == 0
