"""What generated programs run: a few remote functions and actor classes, driven by arguments.

A generated program (dt_program.py) only ever calls the names defined here, so a program is
data and its rendering is plain Python that imports this module. Everything is deterministic:
a value depends only on the arguments, never on timing or on which process ran it.

Conventions every function and method keeps:

* the first two arguments are ``log`` (a file path) and ``tag`` (the step's number);
* the call appends one line ``<who> <tag>`` to ``log`` before anything else (the side effect
  the tester compares as a set: ``t`` for a task, ``a<actor tag>`` for an actor);
* refs nested in the other arguments are resolved here, one at a time in argument order, each
  ``get`` with a timeout (so a lost object surfaces as an error, not a hang); an actor handle
  among the arguments gets one ``add`` call, whose value counts;
* the value is ``tag`` plus the sum of every integer reachable from the resolved arguments.

Workers cannot import this module: the harness (and a rendered program) registers it with
``cloudpickle.register_pickle_by_value``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import unipar

# Inside tasks: shorter than the driver's timeout, so a lost nested object surfaces as a
# GetTimeoutError of the task instead of a hang of the driver.
INNER_TIMEOUT = float(os.environ.get("UNIPAR_FUZZ_INNER_TIMEOUT", "8"))
MODULUS = 1_000_003


class DiffError(Exception):
    """A user-defined exception type: it must reach the driver as itself on every backend."""


ERRORS: dict[str, type[Exception]] = {
    "ValueError": ValueError, "KeyError": KeyError, "ZeroDivisionError": ZeroDivisionError,
    "DiffError": DiffError,
}


def note(log: str, who: str, tag: int) -> None:
    """Append ``<who> <tag>`` to the program's log (one short O_APPEND write: atomic)."""
    with open(log, "a") as f:
        f.write(f"{who} {tag}\n")


def total(value: Any) -> int:
    """The sum of every int reachable in lists, tuples and dict values (others count 0)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, (list, tuple)):
        return sum(total(v) for v in value)
    if isinstance(value, dict):
        return sum(total(v) for v in value.values())
    return 0


def resolve(value: Any, log: str, tag: int) -> Any:
    """``value`` with every nested ref replaced by its (resolved) value, in order; an actor
    handle becomes the value of one ``add`` call on it."""
    if isinstance(value, unipar.ObjectRef):
        return resolve(unipar.get(value, timeout=INNER_TIMEOUT), log, tag)
    if isinstance(value, unipar.ActorHandle):
        return unipar.get(value.add.remote(log, tag), timeout=INNER_TIMEOUT)
    if isinstance(value, (list, tuple)):
        return [resolve(v, log, tag) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v, log, tag) for k, v in value.items()}
    return value


async def aresolve(value: Any, log: str, tag: int) -> Any:
    """:func:`resolve` for async actors: refs are awaited (with a timeout), never blocked on."""
    if isinstance(value, unipar.ObjectRef):
        return await aresolve(await asyncio.wait_for(_awaited(value), INNER_TIMEOUT), log, tag)
    if isinstance(value, unipar.ActorHandle):
        return await asyncio.wait_for(_awaited(value.add.remote(log, tag)), INNER_TIMEOUT)
    if isinstance(value, (list, tuple)):
        return [await aresolve(v, log, tag) for v in value]
    if isinstance(value, dict):
        return {k: await aresolve(v, log, tag) for k, v in value.items()}
    return value


async def _awaited(ref: unipar.ObjectRef) -> Any:
    return await ref


def _outputs(tag: int, values: Any, n: int) -> Any:
    v = (tag + total(values)) % MODULUS
    return v if n == 1 else tuple(v + i for i in range(n))


@unipar.remote
def work(log: str, tag: int, *args: Any, n: int = 1, nap: float = 0.0) -> Any:
    """Resolve ``args``; return their value (``n`` values for ``num_returns=n``)."""
    note(log, "t", tag)
    if nap:
        time.sleep(nap)   # a target worth cancelling: likely still running or queued
    return _outputs(tag, resolve(list(args), log, tag), n)


@unipar.remote
def fail(log: str, tag: int, kind: str, *args: Any) -> Any:
    """Resolve ``args`` (an input's error wins), then raise ``ERRORS[kind]``."""
    note(log, "t", tag)
    resolve(list(args), log, tag)
    raise ERRORS[kind](f"step {tag}")


@unipar.remote
def echo(log: str, tag: int, *args: Any) -> list[Any]:
    """Return ``args`` unresolved: nested refs come back to the caller as refs."""
    note(log, "t", tag)
    return list(args)


class Acc:
    """An actor that sums what it is given; it may hold refs in its state (``keep``)."""

    def __init__(self, log: str, tag: int, *held: Any, fail: str | None = None) -> None:
        note(log, f"a{tag}", tag)
        if fail:
            raise ERRORS[fail](f"actor {tag}")
        self.tag = tag
        self.sum = 0
        self.held: list[Any] = list(held)
        self.lock = threading.Lock()   # max_concurrency > 1 runs calls on several threads
        self.adding = 0                # add calls started, not yet counted in sum

    def add(self, log: str, tag: int, *args: Any, n: int = 1) -> Any:
        with self.lock:
            self.adding += 1
        try:
            note(log, f"a{self.tag}", tag)
            out = _outputs(tag, resolve(list(args), log, tag), n)
            with self.lock:
                self.sum += total(out)
            return out
        finally:
            with self.lock:
                self.adding -= 1

    def fail(self, log: str, tag: int, kind: str, *args: Any) -> Any:
        note(log, f"a{self.tag}", tag)
        resolve(list(args), log, tag)
        raise ERRORS[kind](f"step {tag}")

    def keep(self, log: str, tag: int, *args: Any) -> int:
        """Hold ``args`` (refs inside stay refs) in the actor's state until it dies."""
        note(log, f"a{self.tag}", tag)
        with self.lock:
            self.held.append(list(args))
        return tag

    def forward(self, log: str, tag: int, peer: Any, *args: Any) -> Any:
        """Call ``peer.add`` with ``args`` and return its value (actor to actor)."""
        note(log, f"a{self.tag}", tag)
        return unipar.get(peer.add.remote(log, tag, *args), timeout=INNER_TIMEOUT)

    def state(self, log: str) -> tuple[int, int]:
        """(sum of values returned so far, value of everything held): order-independent.
        Waits (bounded) for add calls in progress on other threads: one that started (its
        side effect is in the log) counts, as on the oracle, where it finished at once."""
        deadline = time.monotonic() + INNER_TIMEOUT
        while self.adding and time.monotonic() < deadline:
            time.sleep(0.01)
        with self.lock:
            held = list(self.held)
        return self.sum, total(resolve(held, log, -1))


class AsyncAcc:
    """:class:`Acc` with async methods: calls interleave at each await."""

    def __init__(self, log: str, tag: int, *held: Any, fail: str | None = None) -> None:
        note(log, f"a{tag}", tag)
        if fail:
            raise ERRORS[fail](f"actor {tag}")
        self.tag = tag
        self.sum = 0
        self.held: list[Any] = list(held)
        self.adding = 0   # add calls started, not yet counted in sum (they await refs)

    async def add(self, log: str, tag: int, *args: Any, n: int = 1) -> Any:
        self.adding += 1
        try:
            note(log, f"a{self.tag}", tag)
            out = _outputs(tag, await aresolve(list(args), log, tag), n)
            self.sum += total(out)   # no await in between: atomic on the event loop
            return out
        finally:
            self.adding -= 1

    async def fail(self, log: str, tag: int, kind: str, *args: Any) -> Any:
        note(log, f"a{self.tag}", tag)
        await aresolve(list(args), log, tag)
        raise ERRORS[kind](f"step {tag}")

    async def keep(self, log: str, tag: int, *args: Any) -> int:
        note(log, f"a{self.tag}", tag)
        self.held.append(list(args))
        return tag

    async def forward(self, log: str, tag: int, peer: Any, *args: Any) -> Any:
        note(log, f"a{self.tag}", tag)
        return await asyncio.wait_for(_awaited(peer.add.remote(log, tag, *args)), INNER_TIMEOUT)

    async def state(self, log: str) -> tuple[int, int]:
        deadline = time.monotonic() + INNER_TIMEOUT   # as Acc.state: started adds count
        while self.adding and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.sum, total(await aresolve(list(self.held), log, -1))


SyncActor = unipar.remote(Acc)
AsyncActor = unipar.remote(AsyncAcc)
