"""Streaming generators, the worker's side: each value a generator task or actor method yields
goes to the client that submitted it as soon as it is produced::

    client: RunTask(Streaming(f), args=(header, ...))  ─▶ worker runs f's generator
    worker: value i ─▶ record (inline, or stored at the node for the owner: PutFor)
                    ─▶ StreamItem(stream_id, owner, i, record) ─▶ the task's reply connection
                       (pushed directly) or the node, which passes it to the owner
            waits while i + 1 - consumed >= bound   ◀── StreamAck(stream_id, consumed)
    the task returns how many values it yielded: its one return value ends the stream

An exception the generator raises fails the task as any task's does (the owner hands that
failure out after the values). A stop (StreamAck -1: the stream was cancelled) ends the
generator at its next ``yield`` with TaskCancelledError. A task that runs again (its worker
died; retries) yields from the start again: the owner skips what it already has, which
assumes a deterministic generator, as Ray does.

The worker's Runtime installs a :class:`StreamHost` (:func:`install`); this module never
imports the worker process module.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any, Callable, Protocol

from ...exceptions import TaskCancelledError
from ..wire import protocol as P
from ..wire.transport import Connection
from .interrupts import shielded

__all__ = ["STREAM", "StreamHost", "Streaming", "install", "on_ack", "method_of"]

STREAM = "__unipar_stream__:"   # method-name prefix: a streaming call of a generator method
WAIT_SLICE = 1.0                # seconds per wait for room (a cancel's SIGINT ends it sooner)


class StreamHost(Protocol):
    """What the producer may ask of the worker that runs it."""

    def stream_conn(self) -> Connection | None:
        """Where the running task's results go: its reply connection, or None (the node)."""

    def stream_record(self, value: Any, owner: int) -> list:
        """A result record of ``value`` under a fresh id, stored for client ``owner`` at the
        node when it is big or holds refs."""

    def node_conn(self) -> Connection:
        """This worker's connection to its node."""


_host: StreamHost | None = None
_windows: dict[bytes, "_Window"] = {}
_lock = threading.Lock()


def install(host: StreamHost) -> None:
    """Called once by the worker, before it runs anything."""
    global _host
    _host = host


def on_ack(msg: P.StreamAck) -> None:
    """A StreamAck from the owner (any reader thread): room for more values, or stop."""
    with _lock:
        window = _windows.get(msg.stream_id)
    if window is not None:
        window.ack(msg.consumed)


def method_of(instance: Any, method: str, lookup: Callable[[Any, str], Any]) -> Any:
    """The callable an actor call names: ``lookup(instance, method)``, or a streaming
    wrapper of the generator method when ``method`` carries the STREAM prefix."""
    if method.startswith(STREAM):
        return Streaming(getattr(instance, method[len(STREAM):]))
    return lookup(instance, method)


class _Stopped(Exception):
    """The owner stopped the stream (cancelled)."""


class _Window:
    """How far the producer may run ahead of what the owner took."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.consumed = 0
        self.stopped = False
        self.cond = threading.Condition()

    def ack(self, consumed: int) -> None:
        with self.cond:
            if consumed < 0:
                self.stopped = True
            else:
                self.consumed = max(self.consumed, consumed)
            self.cond.notify_all()

    def wait_room(self, produced: int) -> None:
        """Return once fewer than ``bound`` values are unconsumed; raises _Stopped."""
        with self.cond:
            while not self.stopped and 0 < self.bound <= produced - self.consumed:
                self.cond.wait(WAIT_SLICE)
            if self.stopped:
                raise _Stopped


class _Producer:
    """One run of one streaming generator: sends its values, in order."""

    def __init__(self, header: list) -> None:
        self.stream_id, self.owner, bound = header
        self.count = 0
        self.window = _Window(bound)
        assert _host is not None, "streaming generators run in a native worker"
        self.host = _host
        self.conn = _host.stream_conn()
        with _lock:
            _windows[self.stream_id] = self.window

    def emit(self, value: Any) -> None:
        # The worker's own work inside the task: a cancel's interrupt arriving meanwhile waits
        # for the value to be sent whole (one cut mid-write wedged the connection).
        with shielded():
            record = self.host.stream_record(value, self.owner)
            self._send(P.StreamItem(self.stream_id, self.owner, self.count, record))
            self.count += 1

    def _send(self, msg: P.Message) -> None:
        (self.conn or self.host.node_conn()).send(msg)

    def close(self) -> None:
        with _lock:
            _windows.pop(self.stream_id, None)
        if self.conn is None:   # through the node: it may forget the stream's route
            with shielded():
                try:
                    self._send(P.StreamItem(self.stream_id, self.owner, -1, None))
                except ConnectionError:
                    pass


class Streaming:
    """A generator function (or bound method) run as a streaming task: called with the
    stream's header ``[stream_id, owner client id, backpressure bound]`` before the user's
    arguments; returns the number of values (a coroutine of it for an async generator)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__qualname__ = getattr(fn, "__qualname__", "generator")
        self.__name__ = getattr(fn, "__name__", "generator")

    def __call__(self, header: list, *args: Any, **kwargs: Any) -> Any:
        gen = self.fn(*args, **kwargs)
        if inspect.isasyncgen(gen):
            return _produce_async(gen, header, self.__qualname__)
        producer = _Producer(header)
        try:
            for value in gen:
                producer.emit(value)
                producer.window.wait_room(producer.count)
        except _Stopped:
            gen.close()
            raise TaskCancelledError(f"generator {self.__qualname__} was cancelled") from None
        finally:
            producer.close()
        return producer.count


async def _produce_async(gen: Any, header: list, name: str) -> int:
    producer = _Producer(header)
    loop = asyncio.get_running_loop()
    try:
        async for value in gen:
            producer.emit(value)
            if 0 < producer.window.bound <= producer.count - producer.window.consumed:
                # Wait off the loop: other calls of this actor keep running meanwhile.
                await loop.run_in_executor(None, producer.window.wait_room, producer.count)
            elif producer.window.stopped:
                raise _Stopped
    except _Stopped:
        await gen.aclose()
        raise TaskCancelledError(f"generator {name} was cancelled") from None
    finally:
        producer.close()
    return producer.count
