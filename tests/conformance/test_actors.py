"""Actors: state, ordering, concurrency, handles as arguments, names, kill."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest

import unipar


@unipar.remote
class Counter:
    def __init__(self, start=0):
        self.value = start
        self.log = []

    def incr(self, by=1):
        self.value += by
        return self.value

    def record(self, item):
        self.log.append(item)
        return len(self.log)

    def history(self):
        return list(self.log)

    def fail(self):
        raise ValueError("actor method failed")

    @unipar.method(num_returns=2)
    def split(self):
        return self.value, -self.value


@unipar.remote
class Rendezvous:
    """Two calls meet: only possible when both run at once."""

    def __init__(self):
        self.events = {"a": threading.Event(), "b": threading.Event()}

    def meet(self, me, other):
        self.events[me].set()
        return self.events[other].wait(timeout=10)


@unipar.remote
class AsyncRendezvous:
    def __init__(self):
        self.events = None

    async def meet(self, me, other):
        if self.events is None:
            self.events = {"a": asyncio.Event(), "b": asyncio.Event()}
        self.events[me].set()
        try:
            await asyncio.wait_for(self.events[other].wait(), timeout=10)
            return True
        except asyncio.TimeoutError:
            return False


@unipar.remote
class FileRendezvous:
    def meet(self, mine, other, timeout=10.0):
        import os
        import time
        open(mine, "w").close()
        deadline = time.monotonic() + timeout
        while not os.path.exists(other):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True


@unipar.remote
class Broken:
    def __init__(self):
        raise RuntimeError("constructor failed")

    def ping(self):
        return "pong"


@unipar.remote
def fail_with(message):
    raise ValueError(message)


@unipar.remote
def use_counter(counter, times):
    return unipar.get([counter.incr.remote() for _ in range(times)])[-1]


@unipar.remote
class Relay:
    def __init__(self, counter):
        self.counter = counter

    def bump(self):
        return unipar.get(self.counter.incr.remote(10))


@unipar.remote
def plus(a, b):
    return a + b


def test_actor_keeps_state(unipar_backend):
    counter = Counter.remote(5)
    assert unipar.get(counter.incr.remote()) == 6
    assert unipar.get(counter.incr.remote(by=4)) == 10


def test_actor_class_cannot_be_instantiated_directly(unipar_backend):
    with pytest.raises(TypeError, match=r"Counter\.remote"):
        Counter()
    counter = Counter.remote()
    with pytest.raises(TypeError, match=r"\.remote"):
        counter.incr()
    with pytest.raises(AttributeError, match="no_such_method"):
        counter.no_such_method.remote()


def test_actor_calls_run_in_submission_order(unipar_backend):
    counter = Counter.remote()
    refs = [counter.record.remote(i) for i in range(50)]
    assert unipar.get(refs) == list(range(1, 51))
    assert unipar.get(counter.history.remote()) == list(range(50))


def test_actor_results_are_ordinary_refs(unipar_backend):
    counter = Counter.remote(1)
    ref = counter.incr.remote()
    assert unipar.get(plus.remote(ref, 100)) == 102
    ready, not_ready = unipar.wait([ref, unipar.put(0)], num_returns=2, timeout=60)
    assert not_ready == [] and ready[0] == ref
    a, b = counter.split.remote()
    assert unipar.get([a, b]) == [2, -2]


def test_handles_pass_to_tasks_and_actors(unipar_backend):
    counter = Counter.remote()
    assert unipar.get(use_counter.remote(counter, 3), timeout=120) == 3
    relay = Relay.remote(counter)
    assert unipar.get(relay.bump.remote(), timeout=120) == 13
    assert unipar.get(counter.incr.remote()) == 14


def test_actor_method_error_keeps_type_and_actor_lives(unipar_backend):
    counter = Counter.remote()
    with pytest.raises(ValueError, match="actor method failed"):
        unipar.get(counter.fail.remote())
    assert unipar.get(counter.incr.remote()) == 1


def test_actor_max_concurrency_runs_calls_together(unipar_backend):
    actor = Rendezvous.options(max_concurrency=2).remote()
    first = actor.meet.remote("a", "b")
    second = actor.meet.remote("b", "a")
    assert unipar.get([first, second], timeout=60) == [True, True]


def test_async_actor_interleaves_calls(unipar_backend):
    actor = AsyncRendezvous.remote()
    first = actor.meet.remote("a", "b")
    second = actor.meet.remote("b", "a")
    assert unipar.get([first, second], timeout=60) == [True, True]


def test_named_actor_and_get_actor(unipar_backend):
    name = f"counter-{uuid.uuid4().hex[:8]}"
    counter = Counter.options(name=name).remote(100)
    found = unipar.get_actor(name)
    assert unipar.get(found.incr.remote()) == 101
    with pytest.raises(ValueError, match=name):
        Counter.options(name=name).remote()
    same = Counter.options(name=name, get_if_exists=True).remote()
    assert unipar.get(same.incr.remote()) == 102
    unipar.kill(counter)
    with pytest.raises(ValueError, match=name):
        unipar.get_actor(name)
    with pytest.raises(ValueError):
        unipar.get_actor(f"never-{name}")


def test_call_on_killed_actor_raises_actor_died(unipar_backend):
    counter = Counter.remote()
    assert unipar.get(counter.incr.remote()) == 1
    unipar.kill(counter)
    with pytest.raises(unipar.ActorDiedError):
        unipar.get(counter.incr.remote(), timeout=60)
    with pytest.raises(TypeError):
        unipar.kill("not an actor")


def test_failed_constructor_makes_calls_raise_actor_died(unipar_backend):
    broken = Broken.remote()
    with pytest.raises(unipar.ActorDiedError, match="constructor failed"):
        unipar.get(broken.ping.remote(), timeout=60)


def test_a_named_actor_whose_constructor_failed_keeps_its_name(unipar_backend):
    # As in Ray 2.60: an actor whose constructor raised is dead, but its name stays taken while
    # its creator holds it (a killed actor's name is freed): get_actor gives a handle whose
    # calls raise the constructor's error, whether or not its death is known yet.
    broken = Broken.options(name="broken-ctor").remote()
    with pytest.raises(unipar.ActorDiedError, match="constructor failed"):
        unipar.get(broken.ping.remote(), timeout=60)
    found = unipar.get_actor("broken-ctor")
    with pytest.raises(unipar.ActorDiedError, match="constructor failed"):
        unipar.get(found.ping.remote(), timeout=60)
    with pytest.raises(ValueError):
        Counter.options(name="broken-ctor").remote()
    unipar.kill(broken)
    with pytest.raises(ValueError):
        unipar.get_actor("broken-ctor")


def test_a_named_actor_whose_constructor_argument_failed_keeps_its_name(unipar_backend):
    # Its creation failed before the constructor ran: the same as a raising constructor.
    bad_arg = fail_with.remote("no argument for you")
    broken = Counter.options(name="broken-arg").remote(bad_arg)
    with pytest.raises(unipar.ActorDiedError):
        unipar.get(broken.incr.remote(), timeout=60)
    with pytest.raises(unipar.ActorDiedError):
        unipar.get(unipar.get_actor("broken-arg").incr.remote(), timeout=60)
    unipar.kill(broken)
    with pytest.raises(ValueError):
        unipar.get_actor("broken-arg")


def test_actors_run_in_parallel(unipar_backend, tmp_path):
    # Each actor announces itself with a file, then waits for the other's: both calls can only
    # return True if they are in progress at the same time, i.e. the actors run in parallel.
    left, right = FileRendezvous.remote(), FileRendezvous.remote()
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    refs = [left.meet.remote(a, b), right.meet.remote(b, a)]
    assert unipar.get(refs, timeout=60) == [True, True]


@unipar.remote
def twice(x):
    return 2 * x


@unipar.remote
class Gate:
    """Sums refs nested in its argument; or blocks until a file exists (bounded)."""

    def total(self, refs):
        return sum(unipar.get(list(refs), timeout=30))

    def wait_for(self, path):
        import os
        import time
        deadline = time.monotonic() + 120
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.005)
        return os.path.exists(path)


def test_refs_nested_in_actor_call_arguments_live_until_the_call_ran(unipar_backend):
    gate = Gate.remote()
    # The caller keeps no handle of its own to the inner refs: only the pending call does.
    assert unipar.get(gate.total.remote([twice.remote(i) for i in range(3)]), timeout=60) == 6
    unipar.kill(gate)


def test_an_actor_blocked_in_a_call_holds_up_no_other_actor(unipar_backend, tmp_path):
    marker = str(tmp_path / "go")
    blocked, free = Gate.remote(), Gate.remote()
    slow = blocked.wait_for.remote(marker)
    try:
        refs = [free.total.remote([]) for _ in range(50)]
        assert unipar.get(refs, timeout=60) == [0] * 50
    finally:
        open(marker, "w").close()
    assert unipar.get(slow, timeout=60) is True
    unipar.kill(blocked)
    unipar.kill(free)
