"""Streaming generators on the spark backend: each yielded value reaches the driver as its own
ref while the task (or actor method) still runs::

    executor (task or actor method)                     driver (ChannelServer handler)
    -------------------------------                     ------------------------------
    StreamRunner(fn)(stream_id, *args)
      for value in fn(*args):
        ("yield", stream_id, index, pickled value) --->  StreamTable.on_yield: a new result-table
                                                         entry, appended to the stream; the reply
        <--- True (go on) | False (stop: cancelled,      is withheld while ``bound`` values wait
                                   dropped, shut down)   unconsumed (backpressure)
      return None  ---- task_done / actor "result" --->  the task's one return ends the stream;
                                                         its error comes after the values

* The stream id rides as the task's first argument (``streams.header_spec``/``header_call``);
  actor hosts find the wrapped method by the :data:`STREAM` method-name prefix.
* A task run again after its worker died yields from the start: values with an index the
  stream already has are skipped (assumes a deterministic generator, as Ray and native do).
* Values travel as task results do: cloudpickle'd on the executor, stored as bytes in the
  result table (results.py), refs inside them keep their usual semantics.
* A stream dropped by its user (the driver's table holds it weakly) or cancelled answers the
  next yield with False: the generator is closed at that ``yield``.
* Streams opened from executor code live in the driver's table (``held``) until they end, are
  reported dropped, or the session ends; the executor side is executor.py's ExecutorStream.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import itertools
import threading
import time
import weakref
from typing import Any, Callable, Iterable, Protocol

import cloudpickle

from ...exceptions import GetTimeoutError, TaskCancelledError
from ..base import Stream
from .executor import SparkRef, channel_call

__all__ = ["STREAM", "StreamRunner", "SparkStream", "StreamTable"]

STREAM = "__unipar_spark_stream__:"   # actor method-name prefix: stream this generator method

# How often a yield held back by backpressure looks again at its stream: a stream dropped by
# its user disappears from the weak table without a notify.
_RECHECK_S = 0.5


# -- the executor side -------------------------------------------------------------------------

class StreamRunner:
    """``fn`` (a generator function) run so that each value goes to the driver as it is
    yielded; called with the stream id before ``fn``'s own arguments. Returns None (an
    awaitable of None for an async generator); an exception of the generator propagates, so
    the task (or call) fails with it after the values it yielded."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, stream_id: int, *args: Any, **kwargs: Any) -> Any:
        gen = self.fn(*args, **kwargs)
        if inspect.isasyncgen(gen):
            return _pump_async(gen, stream_id)
        _pump(gen, stream_id)
        return None


def _send_value(stream_id: int, index: int, data: bytes) -> bool:
    return channel_call("yield", stream_id, index, data)


def _pump(gen: Any, stream_id: int) -> None:
    try:
        for index, value in enumerate(gen):
            if not _send_value(stream_id, index, cloudpickle.dumps(value)):
                return   # cancelled or dropped: close() stops the generator at this yield
    finally:
        gen.close()


async def _pump_async(gen: Any, stream_id: int) -> None:
    index = 0
    try:
        async for value in gen:
            data = cloudpickle.dumps(value)
            # In a thread: an async actor's other calls run on this loop meanwhile.
            if not await asyncio.to_thread(_send_value, stream_id, index, data):
                return
            index += 1
    finally:
        await gen.aclose()


# -- the driver side ---------------------------------------------------------------------------

class Entry(Protocol):
    """What the stream table reads of an entry of results.py's table (not imported from there:
    results.py sees actors.py, which starts actor_server.py, which imports this module)."""

    done: bool
    error: BaseException | None


class Owner(Protocol):
    """What the stream table may ask of the spark backend (results.py's table and its lock)."""

    lock: "threading.RLock"
    cond: threading.Condition
    entries: dict[int, Entry]
    _stopped: bool

    def new_entry(self, producer: int | None = None) -> tuple[int, SparkRef]: ...
    def finish(self, oid: int, value: bytes | None = None,
               error: BaseException | None = None) -> None: ...
    def drain_counts(self) -> None: ...
    def cancel(self, handle: SparkRef, force: bool, recursive: bool) -> None: ...


class SparkStream(Stream):
    """One generator's values on the driver, in order; state guarded by the owner's lock."""

    def __init__(self, table: "StreamTable", stream_id: int, bound: int) -> None:
        self._table = table
        self.id = stream_id
        self.bound = bound                     # > 0: unconsumed values at most
        self.values: collections.deque[SparkRef] = collections.deque()
        self.received = 0                      # values accepted so far (the next index)
        self.end: SparkRef | None = None       # the task's (or call's) one return
        self.cancelled = False
        self.finished = False                  # every handle was given

    def next(self, timeout: float | None) -> SparkRef:
        return self._table.next(self, timeout)

    def cancel(self, force: bool) -> None:
        self._table.cancel(self, force)


class StreamTable:
    """The open streams of one spark session, by id."""

    def __init__(self, owner: Owner) -> None:
        self._o = owner
        # Weak: a stream its user dropped disappears, and its generator stops at its next yield.
        self._streams: weakref.WeakValueDictionary[int, SparkStream] = \
            weakref.WeakValueDictionary()
        self._held: dict[int, SparkStream] = {}   # opened from executors (module docstring)
        self._ids = itertools.count(1)

    def open(self, bound: int, start: Callable[[int], SparkRef], held: bool = False) -> SparkStream:
        """A new stream whose producer ``start(stream_id)`` submits (returning its one ref).

        ``held``: keep it until it ends or :meth:`drop` (a stream opened by executor code).
        """
        with self._o.lock:
            stream = SparkStream(self, next(self._ids), bound)
            self._streams[stream.id] = stream
            if held:
                self._held[stream.id] = stream
        try:
            end = start(stream.id)
        except BaseException:
            self._forget(stream)
            raise
        with self._o.lock:
            stream.end = end
            self._o.cond.notify_all()
        return stream

    def get(self, stream_id: int) -> SparkStream | None:
        """A held stream by id (None: it ended or was dropped)."""
        with self._o.lock:
            return self._held.get(stream_id)

    def drop(self, stream_ids: Iterable[int]) -> None:
        """Executor code let go of these streams: their generators stop at the next yield."""
        with self._o.lock:
            for stream_id in stream_ids:
                stream = self._held.pop(stream_id, None)
                if stream is not None:
                    self._forget(stream)

    def _forget(self, stream: SparkStream) -> None:
        with self._o.lock:
            self._streams.pop(stream.id, None)
            self._held.pop(stream.id, None)
            self._o.cond.notify_all()   # a yield held back for it answers False now

    def clear(self) -> None:
        """The session ends: forget every stream (their yields answer False)."""
        with self._o.lock:
            self._streams.clear()
            self._held.clear()
            self._o.cond.notify_all()

    def on_yield(self, stream_id: int, index: int, data: bytes) -> bool:
        """A value the generator of ``stream_id`` yielded (the "yield" op); returns whether it
        should go on. Withheld while the stream's bound of unconsumed values is reached."""
        o = self._o
        with o.lock:
            stream = self._streams.get(stream_id)
            if stream is None or stream.cancelled or stream.finished:
                return False
            if index < stream.received:
                return True   # a run after a worker death: this value was delivered already
            o.drain_counts()
            oid, ref = o.new_entry()
            o.finish(oid, value=data)
            stream.values.append(ref)
            stream.received += 1
            o.cond.notify_all()
            del stream, ref   # the wait below must not keep a dropped stream alive
            while True:
                stream = self._streams.get(stream_id)
                if stream is None or stream.cancelled or o._stopped:
                    return False
                if stream.bound <= 0 or len(stream.values) < stream.bound:
                    return True
                del stream
                o.cond.wait(_RECHECK_S)

    def next(self, stream: SparkStream, timeout: float | None) -> SparkRef:
        """The stream's next ref (the seam's Stream.next contract)."""
        o = self._o
        deadline = None if timeout is None else time.monotonic() + timeout
        with o.lock:
            while True:
                if stream.values:
                    ref = stream.values.popleft()
                    o.cond.notify_all()   # a yield held back by backpressure may go on
                    return ref
                if stream.finished:
                    raise StopIteration
                end = o.entries.get(stream.end.oid) if stream.end is not None else None
                if stream.cancelled or (end is not None and end.done) or o._stopped:
                    return self._last(stream, end)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise GetTimeoutError(f"no next generator value within {timeout} s")
                o.cond.wait(1.0 if remaining is None else min(remaining, 1.0))

    def _last(self, stream: SparkStream, end: Entry | None) -> SparkRef:
        """End the stream: its producer's failure as one last ref, else StopIteration."""
        o = self._o
        stream.finished = True
        self._forget(stream)
        ref, stream.end = stream.end, None
        if end is not None and end.done:
            if end.error is not None:
                return ref   # its get raises the generator's (or the task's) failure
            raise StopIteration
        if stream.cancelled:   # the producer has not ended yet (an actor method)
            oid, failed = o.new_entry()
            o.finish(oid, error=TaskCancelledError("the generator was cancelled"))
            return failed
        raise StopIteration    # the session was shut down

    def cancel(self, stream: SparkStream, force: bool) -> None:
        """Stop the producer: at its next yield, and a task's job now (as any cancel)."""
        with self._o.lock:
            if stream.finished:
                return
            stream.cancelled = True
            end = stream.end
            self._o.cond.notify_all()
        if end is not None:
            self._o.cancel(end, force, True)   # a task's: fails it, ends its job; a call's: no-op
