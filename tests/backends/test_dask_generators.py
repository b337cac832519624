"""Streaming generators on the dask backend (issue #18): what the conformance suite does not
check — nothing left behind in the scheduler, actor methods stopped by cancel, a worker's
death mid-stream, values that hold refs or big arrays.

The cluster is the private local one ``unipar.init(backend="dask")`` starts (2 workers).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("distributed")

import numpy as np  # noqa: E402

import unipar  # noqa: E402
from unipar.backends.base import current_backend  # noqa: E402
from unipar.testing import wait_for  # noqa: E402


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    """unipar on a private 2-worker dask cluster; yields its Dask client."""
    unipar.shutdown()
    unipar.init(backend="dask", num_cpus=2)
    try:
        yield current_backend().dask_client  # type: ignore[union-attr]
    finally:
        unipar.shutdown()


def _stream_leftovers(client: Any) -> tuple[dict, list]:
    """The stream queues the scheduler holds (with their clients and items), and the stream
    values it keeps (with who wants them)."""
    def state(dask_scheduler: Any = None) -> tuple[dict, list]:
        # Defined in here so that it travels by value (the scheduler cannot import tests).
        ext = dask_scheduler.extensions["queues"]
        queues = {name: (ext.client_refcount.get(name),
                         [r["value"] if r["type"] != "Future" else "Future" for r in q._queue])
                  for name, q in ext.queues.items() if str(name).startswith("unipar-stream-")}
        values = [(key, sorted(c.client_key for c in ts.who_wants))
                  for key, ts in dask_scheduler.tasks.items()
                  if str(key).startswith("bytes-unipar-stream-")]
        return queues, values
    return client.run_on_scheduler(state)


def _nothing_left(client: Any, timeout: float = 30) -> None:
    """Wait until the scheduler holds no stream queue and no stream value."""
    left: Any = None

    def clean() -> bool:
        nonlocal left
        left = _stream_leftovers(client)
        return left == ({}, [])
    try:
        wait_for(clean, timeout=timeout)
    except pytest.fail.Exception:
        pytest.fail(f"left in the scheduler after {timeout} s: {left}", pytrace=False)


def _lines(path: Path) -> int:
    return len(path.read_text().split()) if path.exists() else 0


@unipar.remote
def count(n):
    for i in range(n):
        yield i


@unipar.remote
def fail_after(n):
    for i in range(n):
        yield i
    raise KeyError("after the values")


@unipar.remote
def record(path, n):
    for i in range(n):
        with open(path, "a") as f:
            f.write(f"{i}\n")
        yield i


@unipar.remote
class Recorder:
    def record(self, path, n):
        for i in range(n):
            with open(path, "a") as f:
                f.write(f"{i}\n")
            yield i

    def ping(self):
        return "pong"


def test_finished_failed_and_dropped_streams_leave_nothing_in_the_scheduler(dask_client,
                                                                          tmp_path):
    assert [unipar.get(r, timeout=60) for r in count.remote(3)] == [0, 1, 2]
    refs = list(fail_after.remote(2))
    with pytest.raises(KeyError):
        unipar.get(refs[-1], timeout=60)
    del refs
    # Dropped after one value while the producer waits for room: it stops, and the values it
    # had sent are freed with the queues.
    path = tmp_path / "dropped"
    gen = record.options(_generator_backpressure_num_objects=2).remote(str(path), 1000)
    assert unipar.get(next(gen), timeout=60) == 0
    del gen
    _nothing_left(dask_client)
    assert _lines(path) < 1000


@unipar.remote
def gate(flag):
    wait_for(lambda: os.path.exists(flag), timeout=60)
    return "open"


@unipar.remote
def record_after(path, n, opened):
    for i in range(n):
        with open(path, "a") as f:
            f.write(f"{i}\n")
        yield i


def test_a_stream_dropped_before_its_task_starts_stops_it(dask_client, tmp_path):
    flag, path = tmp_path / "flag", tmp_path / "progress"
    opened = gate.remote(str(flag))
    gen = record_after.options(_generator_backpressure_num_objects=1).remote(
        str(path), 1000, opened)
    del gen   # the task waits for ``opened``: it has not started
    flag.touch()
    assert unipar.get(opened, timeout=60) == "open"
    _nothing_left(dask_client)   # it started, saw the stop at its first yield, and went
    assert _lines(path) <= 1


def test_cancel_stops_an_actor_generator_method_at_its_next_yield(dask_client, tmp_path):
    path = tmp_path / "progress"
    actor = Recorder.remote()
    gen = actor.record.options(_generator_backpressure_num_objects=1).remote(str(path), 1000)
    assert unipar.get(next(gen), timeout=60) == 0
    unipar.cancel(gen)
    rest = []
    for ref in gen:
        with pytest.raises(unipar.TaskCancelledError):
            unipar.get(ref, timeout=60)
        rest.append(ref)
    assert len(rest) <= 1
    assert unipar.get(actor.ping.remote(), timeout=60) == "pong"   # its thread is free again
    assert _lines(path) <= 3
    _nothing_left(dask_client)


def test_actor_generator_backpressure(dask_client, tmp_path):
    path = tmp_path / "progress"
    actor = Recorder.remote()
    gen = actor.record.options(_generator_backpressure_num_objects=2).remote(str(path), 30)
    assert unipar.get(next(gen), timeout=60) == 0
    wait_for(lambda: _lines(path) >= 3, timeout=30)
    # Paused while two values wait unconsumed (one more may be on its way).
    assert _lines(path) <= 1 + 2 + 1
    assert [unipar.get(r, timeout=60) for r in gen] == list(range(1, 30))


@unipar.remote(max_retries=2)
def die_once(got, n):
    """Yields 0..n-1; the first run kills its worker process once the driver has value 2."""
    for i in range(n):
        yield i
        if i == 2 and not os.path.exists(got + ".died"):
            wait_for(lambda: os.path.exists(got), timeout=60)
            open(got + ".died", "w").close()
            os._exit(1)


@unipar.remote(max_retries=0)
def die_always(got, n):
    for i in range(n):
        yield i
        if i == 1:
            wait_for(lambda: os.path.exists(got), timeout=60)
            os._exit(1)


# Values live on the worker that yielded them (as put() values do): the driver takes each
# one before that worker dies.
def test_a_worker_death_reruns_and_skips_what_was_delivered(dask_client, tmp_path):
    got = tmp_path / "got"
    gen = die_once.remote(str(got), 6)
    assert [unipar.get(next(gen), timeout=60) for _ in range(3)] == [0, 1, 2]
    got.touch()
    assert [unipar.get(r, timeout=60) for r in gen] == [3, 4, 5]
    assert (tmp_path / "got.died").exists()
    _nothing_left(dask_client)


def test_a_worker_death_past_max_retries_ends_with_worker_crashed(dask_client, tmp_path):
    got = tmp_path / "got"
    gen = die_always.remote(str(got), 5)
    assert [unipar.get(next(gen), timeout=60) for _ in range(2)] == [0, 1]
    got.touch()
    with pytest.raises(unipar.WorkerCrashedError):
        unipar.get(next(gen), timeout=60)
    with pytest.raises(StopIteration):
        next(gen)
    _nothing_left(dask_client)


@unipar.remote(max_restarts=1, max_task_retries=1)
class DiesOnce:
    def count(self, got, n):
        """Yields 0..n-1; the first run kills the actor's worker once the driver has value 2."""
        for i in range(n):
            yield i
            if i == 2 and not os.path.exists(got + ".died"):
                wait_for(lambda: os.path.exists(got), timeout=60)
                open(got + ".died", "w").close()
                os._exit(1)


def test_an_actor_generator_method_is_retried_on_the_restarted_actor(dask_client, tmp_path):
    got = tmp_path / "got"
    gen = DiesOnce.remote().count.remote(str(got), 6)
    assert [unipar.get(next(gen), timeout=60) for _ in range(3)] == [0, 1, 2]
    got.touch()
    assert [unipar.get(r, timeout=60) for r in gen] == [3, 4, 5]
    assert (tmp_path / "got.died").exists()
    _nothing_left(dask_client)


@unipar.remote
def objects(n):
    inner = unipar.put({"inner": n})
    yield [inner]
    yield np.arange(n)


def test_values_keep_object_semantics(dask_client):
    gen = objects.remote(3_000_000)
    box = unipar.get(next(gen), timeout=60)
    assert unipar.get(box[0], timeout=60) == {"inner": 3_000_000}
    array = unipar.get(next(gen), timeout=60)
    assert array.shape == (3_000_000,) and int(array[-1]) == 2_999_999


@unipar.remote
class Waiter:
    def wait(self, started, flag):
        open(started, "w").close()
        wait_for(lambda: os.path.exists(flag), timeout=60)
        return "flag seen"

    def ping(self):
        return "pong"


def test_cancelling_a_running_actor_call_leaves_the_actor_alive(dask_client, tmp_path):
    # What cancelling a streaming method does to the call behind it. The call's own thread
    # is the actor's: cancel skips a call not started yet and leaves a running one alone
    # (as Ray does for sync actors), and must not kill the actor's worker.
    for attempt in range(3):   # the call's Dask task runs on the actor's worker or on another
        actor = Waiter.remote()
        started, flag = tmp_path / f"started{attempt}", tmp_path / f"flag{attempt}"
        ref = actor.wait.remote(str(started), str(flag))
        wait_for(started.exists, timeout=60)
        unipar.cancel(ref)
        with pytest.raises(unipar.TaskCancelledError):
            unipar.get(ref, timeout=60)
        flag.touch()
        assert unipar.get(actor.ping.remote(), timeout=60) == "pong"
