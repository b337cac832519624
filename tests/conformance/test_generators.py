"""Generator tasks and actor methods (issue #18.1): the same on every backend, except where
tests/conformance/limits.py says a backend runs generators to completion (collected)."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

import unipar


@unipar.remote
def count(n):
    for i in range(n):
        yield i


@unipar.remote
def count_then_fail(n):
    for i in range(n):
        yield i
    raise ValueError("boom after values")


@unipar.remote(num_returns="dynamic")
def count_dynamic(n):
    for i in range(n):
        yield i * 10


@unipar.remote
def wait_for_flag(flag, deadline_s):
    """Yields 0, then waits (bounded) for the driver to create ``flag`` after it saw 0."""
    yield 0
    end = time.monotonic() + deadline_s
    while not os.path.exists(flag) and time.monotonic() < end:
        time.sleep(0.01)
    yield "flag seen" if os.path.exists(flag) else "deadline"


@unipar.remote
def record_progress(path, n):
    for i in range(n):
        with open(path, "a") as f:
            f.write(f"{i}\n")
        yield i


@unipar.remote
class Counter:
    def count(self, n):
        for i in range(n):
            yield i

    async def acount(self, n):
        for i in range(n):
            yield i

    def plain(self):
        return 1


def test_streaming_is_the_default_for_generators(unipar_backend):
    gen = count.remote(4)
    assert isinstance(gen, unipar.ObjectRefGenerator)
    assert [unipar.get(ref, timeout=60) for ref in gen] == [0, 1, 2, 3]


def test_async_for_over_a_generator(unipar_backend):
    async def main():
        return [await ref async for ref in count.remote(3)]
    assert asyncio.run(main()) == [0, 1, 2]


def test_exception_mid_stream_arrives_in_its_place(unipar_backend):
    refs = list(count_then_fail.remote(2))
    assert len(refs) == 3
    assert unipar.get(refs[:2], timeout=60) == [0, 1]
    with pytest.raises(ValueError, match="boom after values"):
        unipar.get(refs[2], timeout=60)
    with pytest.raises(unipar.TaskError):
        unipar.get(refs[2], timeout=60)


def test_dynamic_returns_one_ref_to_a_generator_of_refs(unipar_backend):
    ref = count_dynamic.remote(3)
    assert isinstance(ref, unipar.ObjectRef)
    dyn = unipar.get(ref, timeout=60)
    assert isinstance(dyn, unipar.DynamicObjectRefGenerator)
    assert unipar.get(list(dyn), timeout=60) == [0, 10, 20]


def test_actor_generator_methods(unipar_backend):
    counter = Counter.remote()
    assert [unipar.get(r, timeout=60) for r in counter.count.remote(3)] == [0, 1, 2]
    assert [unipar.get(r, timeout=60) for r in counter.acount.remote(2)] == [0, 1]
    dyn = unipar.get(counter.count.options(num_returns="dynamic").remote(2), timeout=60)
    assert unipar.get(list(dyn), timeout=60) == [0, 1]


def test_non_generator_with_streaming_is_refused_as_in_ray(unipar_backend):
    with pytest.raises(ValueError, match="can only be used with generator functions"):
        @unipar.remote(num_returns="streaming")
        def not_a_generator():
            return 1
    with pytest.raises(ValueError, match="can only be used with generator functions"):
        Counter.remote().plain.options(num_returns="streaming")


def test_values_arrive_before_the_task_ends(unipar_backend, tmp_path):
    flag = str(tmp_path / "flag")
    gen = wait_for_flag.remote(flag, 5)
    assert unipar.get(gen.next(timeout=30), timeout=30) == 0
    open(flag, "w").close()   # only now may the task finish
    assert unipar.get(next(gen), timeout=30) == "flag seen"
    with pytest.raises(StopIteration):
        next(gen)


def test_backpressure_bounds_unconsumed_values(unipar_backend, tmp_path):
    path = str(tmp_path / "progress")
    gen = record_progress.options(_generator_backpressure_num_objects=2).remote(path, 20)
    assert unipar.get(next(gen), timeout=30) == 0

    def produced():
        return len(open(path).read().split()) if os.path.exists(path) else 0
    end = time.monotonic() + 30
    while produced() < 2 and time.monotonic() < end:
        time.sleep(0.02)
    time.sleep(0.5)   # room for a producer that ignored the bound to run ahead
    assert produced() <= 1 + 2 + 1   # taken + bound (+ one in flight)
    assert [unipar.get(r, timeout=60) for r in gen] == list(range(1, 20))


def test_cancel_stops_a_generator(unipar_backend, tmp_path):
    flag = str(tmp_path / "never")
    gen = wait_for_flag.remote(flag, 30)
    unipar.cancel(gen)
    got = []
    for ref in gen:
        try:
            got.append(unipar.get(ref, timeout=60))
        except unipar.TaskCancelledError as exc:
            assert isinstance(exc, unipar.TaskError)
            got.append("cancelled")
    assert "flag seen" not in got and "deadline" not in got
