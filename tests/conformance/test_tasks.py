"""Remote functions: calling, arguments, results, nesting — the same on every backend."""

from __future__ import annotations

import os
import threading
import time

import pytest

import unipar


@unipar.remote
def double(x):
    return x * 2


@unipar.remote
def add(a, b=0):
    return a + b


@unipar.remote
def identity(x):
    return x


@unipar.remote
def describe(value):
    """What arrived: refs nested in containers must stay refs."""
    if isinstance(value, dict):
        return {k: type(v).__name__ for k, v in value.items()}
    return [type(v).__name__ for v in value]


@unipar.remote
def sum_nested(refs):
    return sum(unipar.get(list(refs)))


@unipar.remote
def token():
    return os.urandom(16).hex()


@unipar.remote(num_returns=2)
def pair(x):
    return x, x + 1


@unipar.remote(num_returns=0)
def nothing():
    return None


@unipar.remote
def fib(n):
    """Each level blocks in get() on its children: more blocked tasks than CPUs."""
    if n < 2:
        return n
    return sum(unipar.get([fib.remote(n - 1), fib.remote(n - 2)]))


@unipar.remote
def fan_out(width):
    refs = [double.remote(i) for i in range(width)]
    ready, _ = unipar.wait(refs, num_returns=width, timeout=60)
    return sum(unipar.get(ready))


def test_remote_returns_ref_and_get_returns_value(unipar_backend):
    ref = double.remote(21)
    assert isinstance(ref, unipar.ObjectRef)
    assert unipar.get(ref) == 42


def test_calling_a_remote_function_directly_is_a_type_error(unipar_backend):
    with pytest.raises(TypeError, match=r"double\.remote"):
        double(1)


def test_kwargs_and_options(unipar_backend):
    assert unipar.get(add.remote(1, b=2)) == 3
    refs = add.options(num_returns=1, name="custom-name").remote(5)
    assert unipar.get(refs) == 5


def test_num_returns_splits_results(unipar_backend):
    a, b = pair.remote(10)
    assert unipar.get([a, b]) == [10, 11]
    assert nothing.remote() is None
    three = identity.options(num_returns=3).remote((1, 2, 3))
    assert unipar.get(three) == [1, 2, 3]


def test_top_level_refs_arrive_as_values(unipar_backend):
    x = unipar.put(20)
    assert unipar.get(add.remote(x, b=double.remote(1))) == 22


def test_nested_refs_arrive_as_refs(unipar_backend):
    refs = [unipar.put(1), double.remote(2)]
    assert unipar.get(describe.remote(refs)) == ["ObjectRef", "ObjectRef"]
    assert unipar.get(describe.remote({"a": refs[0]})) == {"a": "ObjectRef"}
    assert unipar.get(sum_nested.remote(refs)) == 5


def test_ref_inside_an_object_comes_back(unipar_backend):
    ref = unipar.put("inner")
    box = unipar.get(identity.remote({"ref": ref}))
    assert box["ref"] == ref
    assert unipar.get(box["ref"]) == "inner"


def test_every_call_is_a_new_task(unipar_backend):
    values = unipar.get([token.remote() for _ in range(6)])
    assert len(set(values)) == 6


def test_tasks_start_tasks(unipar_backend):
    assert unipar.get(fan_out.remote(5), timeout=120) == sum(2 * i for i in range(5))


def test_nested_blocking_does_not_deadlock(unipar_backend):
    # fib(7) keeps ~20 tasks blocked in get() at once, far more than the 4 logical CPUs.
    assert unipar.get(fib.remote(7), timeout=180) == 13


def test_arguments_are_snapshots(unipar_backend):
    data = [1, 2, 3]
    ref = identity.remote(data)
    data.append(4)
    assert unipar.get(ref) == [1, 2, 3]


def test_get_keeps_order_and_takes_tuples(unipar_backend):
    refs = [double.remote(i) for i in range(10)]
    assert unipar.get(refs) == [2 * i for i in range(10)]
    assert unipar.get(tuple(refs[:3])) == [0, 2, 4]
    assert unipar.get([]) == []


def test_unpicklable_argument_is_a_clear_error(unipar_backend):
    with pytest.raises(TypeError, match="(?i)pickl|serializ"):
        identity.remote(threading.Lock())


def test_wrong_num_returns_fails_the_task(unipar_backend):
    a, b = pair.options(num_returns=2).remote(1)  # fine
    assert unipar.get(b) == 2
    bad = identity.options(num_returns=2).remote((1, 2, 3))
    with pytest.raises(ValueError, match="num_returns"):
        unipar.get(bad[0])
    with pytest.raises(ValueError, match="num_returns"):
        double.options(num_returns=-1)


def test_infeasible_resources_fail_fast(unipar_backend):
    # As in Ray: where nodes may still join (a cluster started elsewhere), such a task waits
    # and says so; where none can (the private cluster of unipar.init(), local), it fails.
    if unipar._state.current().can_grow():
        with pytest.warns(unipar.InfeasibleWarning, match="CPU"):
            waiting = double.options(num_cpus=10_000).remote(1)
        with pytest.warns(unipar.InfeasibleWarning, match="no_such_resource"):
            also = double.options(resources={"no_such_resource": 1}).remote(1)
        unipar.cancel(waiting, force=True)
        unipar.cancel(also, force=True)
        return
    with pytest.raises(unipar.InfeasibleResourcesError, match="num_cpus|CPU"):
        double.options(num_cpus=10_000).remote(1)
    with pytest.raises(unipar.InfeasibleResourcesError, match="no_such_resource"):
        double.options(resources={"no_such_resource": 1}).remote(1)


@unipar.remote
def total_of(value):
    """Sums refs nested in a list, tuple or dict (values) — fetched here, by the task."""
    refs = list(value.values()) if isinstance(value, dict) else list(value)
    return sum(unipar.get(refs, timeout=30))


def test_refs_nested_in_arguments_live_while_the_task_waits(unipar_backend):
    # The caller keeps no handle of its own to the inner refs: only the pending task does.
    assert unipar.get(total_of.remote([double.remote(i) for i in range(3)]), timeout=60) == 6
    assert unipar.get(total_of.remote(tuple(double.remote(i) for i in range(3))),
                      timeout=60) == 6
    assert unipar.get(total_of.remote({i: double.remote(i) for i in range(3)}), timeout=60) == 6


@unipar.remote
def wait_for_file(path):
    """Blocks until ``path`` exists (bounded, so a failed test leaves nothing running long)."""
    deadline = time.monotonic() + 120
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.005)
    return os.path.exists(path)


def test_short_tasks_finish_while_one_task_is_blocked(unipar_backend, tmp_path):
    marker = str(tmp_path / "go")
    assert unipar.get([double.remote(i) for i in range(50)], timeout=60) == [
        2 * i for i in range(50)]   # double is known to be short: worth pipelining
    slow = wait_for_file.remote(marker)
    short = [double.remote(i) for i in range(100)]
    try:
        assert unipar.get(short, timeout=60) == [2 * i for i in range(100)]
    finally:
        open(marker, "w").close()
    assert unipar.get(slow, timeout=60) is True
