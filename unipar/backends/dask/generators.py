"""Streaming generators on the ``dask`` backend, the driver's side (streaming.py is the
worker's): the values of one generator task or actor call, in order, as the worker yields them.

::

    open: two distributed.Queues (values, control), named in the Header the task gets first
    the task or call runs ─▶ values queue: "s", Future of value 0, 1, ... , "e" (per run)
    the task's future is done (any way) ─▶ a done-callback puts "d" after them
    next() ─▶ takes the next item (all that wait, in one trip): a value's Future becomes its ref (an index it already has,
              from a run again after a worker died, is dropped); "d" ends the stream, handing
              out the task's own failure (raised by the generator, cancelled, worker lost past
              its retries) once, in the values' place
    bound > 0: each value taken puts how many were taken on the control queue (room)
    cancel / drop ─▶ -1 on the control queue (the generator stops at its next yield)
    end / drop, and the task's future done ─▶ detach the queues; the scheduler frees them, and
                  any value in them, once no run is attached either
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
import uuid
import weakref
from typing import Any, Callable, Hashable

from ...exceptions import GetTimeoutError
from ..base import Stream
from .actors import Failed
from .handles import DaskRef
from .streaming import END, START, STOP, Header, value_index
from .waiting import slot_released

__all__ = ["DaskStream"]

DONE = "d"   # on the values queue, put by the driver: the task's future is done


class _Queues:
    """A stream's two queues, as the driver holds them. The driver detaches once the stream
    is closed (its end was handed out, or it was dropped) and the task's future is done: a
    queue freed before a run of the task attached would be made afresh by that run, which
    would then never see the stop."""

    def __init__(self, client: Any, bound: int) -> None:
        from distributed import Queue
        name = f"unipar-stream-{uuid.uuid4().hex}"
        self.client = client
        self.values = Queue(f"{name}-values", client=client)
        self.control = Queue(f"{name}-control", client=client)
        # "bytes-" as put() values: a value lost with its worker is ObjectLostError on get.
        self.header = Header(self.values.name, self.control.name, f"bytes-{name}-",
                             max(bound, 0))
        self.open_runs = 0       # runs of the generator that attached and did not end
        self.ended = False       # "d" seen: the task is over
        self.runs_over = False   # ... and no run can still put (it was not cancelled)
        self._lock = threading.Lock()
        self._closed = self._done = self._detached = False

    def send(self, name: str, item: Any) -> None:
        """Put ``item`` on queue ``name`` without waiting (from any thread, even a finalizer);
        a queue already freed is ignored."""
        with contextlib.suppress(Exception):
            self.client.loop.add_callback(_put_quietly, self.client, name, item)

    def on_done(self) -> None:
        """The task's future is done (a Dask callback thread): "d" goes after its values."""
        self.send(self.values.name, DONE)
        with self._lock:
            self._done = True
        self._detach_when_both()

    def close(self) -> None:
        """The stream is closed; one dropped before its end stops its generator first."""
        if not self.ended:
            self.send(self.control.name, STOP)
        with self._lock:
            self._closed = True
        self._detach_when_both()

    def _detach_when_both(self) -> None:
        with self._lock:
            if self._detached or not (self._closed and self._done):
                return
            self._detached = True
        # Runs that died (their worker did) never detached: detach for them too once every
        # run is known to be over (only when this side read every marker).
        times = 1 + (self.open_runs if self.runs_over else 0)
        with contextlib.suppress(Exception):
            for _ in range(times):
                self.values.close()
                self.control.close()


def _failed(end: DaskRef) -> bool:
    """Whether the (done) task behind ``end`` failed: a Dask error, or a stored failure."""
    if end.future.status != "finished":
        return True
    try:
        with slot_released():
            return isinstance(end.future.result(timeout=60), Failed)
    except Exception:   # its result could not be read: its get raises why
        return True


async def _put_quietly(client: Any, name: str, item: Any) -> None:
    with contextlib.suppress(Exception):
        await client.scheduler.queue_put(name=name, data=item)


class DaskStream(Stream):
    """One streaming generator's refs. Make it, submit the task with ``header`` as its first
    argument, then ``start`` with the task's handle; ``next``/``cancel`` from any thread."""

    def __init__(self, client: Any, bound: int,
                 cancel_task: Callable[[DaskRef, bool], None]) -> None:
        self._queues = _Queues(client, bound)
        self.header = self._queues.header
        self._cancel_task = cancel_task
        self._lock = threading.Lock()
        self._buffer: collections.deque = collections.deque()
        self._received = 0               # values handed out (indices below are duplicates)
        self._end: DaskRef | None = None
        self._end_given = False
        self._failed: bool | None = None   # how the task ended, once "d" came
        self._cancelled = False
        self._closer = weakref.finalize(self, self._queues.close)

    def start(self, end: DaskRef) -> None:
        """``end``: the task's one result (the number of values, or its failure)."""
        self._end = end
        queues = self._queues   # the callback must not keep a dropped stream alive
        end.future.add_done_callback(lambda _: queues.on_done())

    def next(self, timeout: float | None) -> Hashable:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                if self._queues.ended:
                    if self._end is None:
                        raise StopIteration
                    return self._finish()
                item = self._take(deadline, timeout)
                ref = self._on_item(item)
                if ref is not None:
                    return ref

    def _take(self, deadline: float | None, timeout: float | None) -> Any:
        """The next item of the values queue, waiting until ``deadline``."""
        if not self._buffer:
            left = None if deadline is None else deadline - time.monotonic()
            values = self._queues.values
            try:
                with slot_released():
                    # Whatever is waiting, in one trip (a producer ahead of us sent several);
                    # else wait for the next one.
                    self._buffer.extend(values.get(batch=True))
                    if not self._buffer and (left is None or left > 0):
                        self._buffer.append(values.get(timeout=left))
            except TimeoutError:
                pass
            if not self._buffer:
                raise GetTimeoutError(f"no next value of the generator within {timeout} s")
        return self._buffer.popleft()

    def _on_item(self, item: Any) -> DaskRef | None:
        """A value's ref to hand out, or None (a marker, a duplicate, a value after cancel)."""
        queues = self._queues
        if item == START:
            queues.open_runs += 1
        elif item == END:
            queues.open_runs -= 1
        elif item == DONE:
            assert self._end is not None
            queues.ended = True
            queues.runs_over = self._end.future.status != "cancelled"
        elif isinstance(item, str):
            raise AssertionError(f"unexpected item {item!r} on a stream's queue")
        elif not self._cancelled:
            index = value_index(item.key, queues.header.prefix)
            if index == self._received:
                self._received += 1
                self._room()
                return DaskRef(item)
            if index < self._received:   # a run again yields from the start: say what we took
                self._room()
        return None

    def _room(self) -> None:
        # Not waited for: counts only grow, so the producer takes the largest it has.
        if self._queues.header.bound > 0:
            self._queues.send(self._queues.control.name, self._received)

    def _finish(self) -> DaskRef:
        """After "d": the task's failure once (if it failed), then the end."""
        end = self._end
        assert end is not None
        if self._failed is None:
            self._failed = _failed(end)
            self._closer()
            self._buffer.clear()   # values a cancelled run sent after the end: let them go
        if self._failed and not self._end_given:
            self._end_given = True
            return end
        # Let go of the task's result (the caller has the failure's ref): Dask would run the
        # whole task again to get it back if its worker died while this stream is kept.
        self._end = None
        raise StopIteration

    def cancel(self, force: bool) -> None:
        end = self._end
        if end is None or self._cancelled or end.future.done():
            return   # finished: the values stay to be taken
        self._cancelled = True
        self._queues.send(self._queues.control.name, STOP)
        self._cancel_task(end, force)
