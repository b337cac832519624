"""Streaming generators on the ``dask`` backend, the side that runs in the worker: each value a
generator task or actor method yields reaches the driver as soon as it is yielded.

Two ``distributed.Queue``s per stream, both made by the driver (generators.py), named in the
:class:`Header` that rides as the generator's first argument::

    worker (this module)                                  scheduler          driver
    --------------------                                  ---------          ------
    attach both queues; values <- "s"
    each value i: store it here as key <prefix><i>-<rand>
                  values <- that Future  ───────────────▶ holds the key ───▶ next(): one ref
                  bound > 0: wait while i + 1 - consumed >= bound
                  control -> the items waiting ◀──────────────────── consumed counts / -1 (stop)
                             (while waiting for room, else every CHECK_EVERY_S at most)
    the end (values, error, stop): values <- "e"; detach both queues
    the task's own result: how many values it yielded

A Future in a Dask queue keeps its key alive for the queue until a client takes it, so no value
is lost between the worker and the driver, and a queue's keys are released with it. Each side
attaches (``queue_create`` counts clients) and detaches when done with it, so a queue never
vanishes under a producer still putting into it. A run again (the worker died; retries) yields
from the start: the driver skips the indices it has, which assumes a deterministic generator,
as Ray does. A -1 on the control queue (the stream was cancelled or dropped) ends the generator
with TaskCancelledError at the first ``yield`` that looks (the next one, unless the generator
yields faster than every CHECK_EVERY_S).
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from ... import _state
from ..._yielding import bound_method
from ...exceptions import TaskCancelledError
from . import actors as worker_side
from .actors import dumps, pin

__all__ = ["END", "START", "STOP", "STREAM", "Header", "Streaming", "method_of", "value_index"]

STREAM = "__unipar_dask_stream__:"   # method-name prefix: a streaming call of a generator method
START = "s"      # on the values queue: a run of the generator attached the queues
END = "e"        # on the values queue: that run ended and detaches
STOP = -1        # on the control queue: stop at the next yield
WAIT_SLICE_S = 1.0   # each wait for room is this long at most (a cancel's interrupt lands between)
CHECK_EVERY_S = 0.05  # how often a producer with room looks for a stop (one scheduler trip)


@dataclass(frozen=True)
class Header:
    """What names a stream: its queues, the prefix of its values' keys, the bound (0: none)."""

    values: str
    control: str
    prefix: str
    bound: int


def value_index(key: str, prefix: str) -> int:
    """The index a stream value's key carries (see :meth:`_Producer._send`)."""
    return int(key[len(prefix):].split("-", 1)[0])


class _Stopped(Exception):
    """The driver stopped the stream (cancelled or dropped it)."""


class _Producer:
    """One run of one streaming generator: puts its values, in order, and waits for room."""

    def __init__(self, header: Header) -> None:
        from distributed import Queue
        # The worker backend's client: actor threads are no Dask task threads (no get_client).
        self.client = getattr(_state.current(), "dask_client", None)
        assert self.client is not None, "a dask stream runs inside a dask worker"
        self.header = header
        self.count = 0
        self.consumed = 0
        self.next_check = 0.0
        self.values = Queue(header.values, client=self.client)
        self.control = Queue(header.control, client=self.client)
        self.values.put(START)

    def emit(self, value: Any) -> None:
        """Send one value, then check for a stop and wait while the window is full.

        Raises:
            _Stopped: the driver stopped the stream.
        """
        self._send(value)
        self.count += 1
        if time.monotonic() >= self.next_check:   # a stop: read at most every CHECK_EVERY_S
            self._read(self.control.get(batch=True))
            self.next_check = time.monotonic() + CHECK_EVERY_S
        bound = self.header.bound
        while 0 < bound <= self.count - self.consumed:
            try:
                self._read([self.control.get(timeout=WAIT_SLICE_S)])
            except TimeoutError:
                continue

    def _send(self, value: Any) -> None:
        # A function of its own: no frame that an exception may keep (a stop raised while
        # waiting for room) holds the value's Future, which would pin it in the scheduler.
        data, nested = dumps(value)
        pin(nested)   # refs inside the value: kept here, as for a task's result (actors.py)
        key = f"{self.header.prefix}{self.count}-{uuid.uuid4().hex[:8]}"
        # Stored on this worker, as a task's result is (scatter() finds no worker in an
        # actor's threads, and would send the bytes through the scheduler to any worker).
        future = self.client.sync(self.client._scatter, {key: data}, hash=False,
                                  local_worker=worker_side.local_worker())[key]
        self.values.put(future)

    def _read(self, items: list) -> None:
        for item in items:
            if item == STOP:
                raise _Stopped
            self.consumed = max(self.consumed, int(item))

    def close(self) -> None:
        """Say this run ended and detach from both queues (the driver frees them)."""
        try:
            self.values.put(END)
        finally:
            self.values.close()
            self.control.close()


class Streaming:
    """A generator function (or bound method) run as a streaming task or call: called with
    the stream's :class:`Header` before the user's arguments; returns the number of values it
    yielded (a coroutine of it for an async generator). An exception the generator raises
    propagates (the task fails with it, after its values)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__qualname__ = getattr(fn, "__qualname__", "generator")
        self.__name__ = getattr(fn, "__name__", "generator")

    def __call__(self, header: Header, *args: Any, **kwargs: Any) -> Any:
        gen = self.fn(*args, **kwargs)
        if inspect.isasyncgen(gen):
            return _produce_async(gen, header, self.__qualname__)
        producer = _Producer(header)
        try:
            for value in gen:
                producer.emit(value)
        except _Stopped:
            gen.close()
            raise TaskCancelledError(f"generator {self.__qualname__} was cancelled") from None
        finally:
            producer.close()
        return producer.count


async def _produce_async(gen: Any, header: Header, name: str) -> int:
    # The queue calls block: they run off the event loop, so other calls keep running.
    producer = await asyncio.to_thread(_Producer, header)
    try:
        async for value in gen:
            await asyncio.to_thread(producer.emit, value)
    except _Stopped:
        await gen.aclose()
        raise TaskCancelledError(f"generator {name} was cancelled") from None
    finally:
        await asyncio.to_thread(producer.close)
    return producer.count


def method_of(instance: Any, method: str) -> Callable[..., Any]:
    """The callable an actor call names: a :class:`Streaming` of the generator method when
    ``method`` carries the STREAM prefix, else what :func:`bound_method` finds."""
    if method.startswith(STREAM):
        return Streaming(getattr(instance, method[len(STREAM):]))
    return bound_method(instance, method)
