"""UniparExecutor cases that need no cluster: the local backend is enough."""

from __future__ import annotations

import concurrent.futures
import threading

import pytest

import unipar
from unipar.util import UniparExecutor


@pytest.fixture
def local():
    unipar.shutdown()
    unipar.init(backend="local", num_cpus=2)
    yield
    unipar.shutdown()


def identity(x):
    return x


@pytest.mark.parametrize("max_workers", [None, 1])
def test_a_call_that_cannot_start_fails_its_future_not_the_executor(local, max_workers):
    with UniparExecutor(max_workers=max_workers) as executor:
        bad = executor.submit(identity, threading.Lock())  # cannot be pickled
        assert isinstance(bad.exception(timeout=30), TypeError)
        assert executor.submit(identity, 7).result(timeout=30) == 7


def test_task_options_reach_the_tasks(local):
    with pytest.raises(TypeError, match="unknown option"):
        UniparExecutor(bogus=1)
    with UniparExecutor(num_cpus=2) as executor:
        assert executor.submit(identity, 1).result(timeout=30) == 1
    with pytest.raises(unipar.InfeasibleResourcesError):
        with UniparExecutor(num_cpus=3) as executor:
            executor.submit(identity, 1).result(timeout=30)


def test_shutdown_without_wait_and_as_completed_of_nothing(local):
    executor = UniparExecutor(max_workers=2)
    futures = [executor.submit(identity, i) for i in range(4)]
    executor.shutdown(wait=False)
    assert sorted(f.result(timeout=30) for f in concurrent.futures.as_completed(futures, timeout=30)) \
        == [0, 1, 2, 3]
