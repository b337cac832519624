"""Streaming generators, the submitting client's side: the values of one generator task or
actor call, in order, as its worker produces them (worker/streaming.py is the other side)::

    open() ─▶ NativeStream (header [stream_id, client id, bound] rides as the first argument)
    reader threads (worker, actor or node connection) ─▶ StreamTable.on_item ─▶ the stream
        a value: recorded like a direct result (deliver), one owned ref per index
        an index it already has (the task ran again after its worker died): dropped
    next() ─▶ the next ref; with a bound, StreamAck(consumed) goes back the way items came
    the task's own result (the count) ends the stream; its failure (the generator raised,
    cancelled, worker lost past its retries) is handed out after the values, in their place
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
import weakref
from typing import Callable, Protocol

from ...exceptions import GetTimeoutError
from ..wire import protocol as P
from ..wire.transport import Connection
from .objects import Entry, ObjectTable
from .refs import NativeRef

__all__ = ["NativeStream", "StreamOwner", "StreamTable"]


class StreamOwner(Protocol):
    """What streams may ask of their client."""

    client_id: int
    remote: bool      # cannot map the node's files: big values are fetched on get
    objects: ObjectTable

    def new_id(self) -> bytes: ...

    def deliver(self, results: list) -> None: ...

    def to_node(self, msg: P.Message, now: bool = False) -> None: ...

    def future(self, ref: NativeRef) -> concurrent.futures.Future: ...

    def cancel(self, ref: NativeRef, force: bool, recursive: bool = True) -> None: ...


class StreamTable:
    """The open streams of one client, by stream id (weakly: a dropped stream is stopped)."""

    def __init__(self, owner: StreamOwner, blocking: Callable[[bool], None]) -> None:
        """``blocking(True/False)``: around a wait (a worker's node lends its CPU meanwhile)."""
        self.owner = owner
        self.blocking = blocking
        self.streams: weakref.WeakValueDictionary[bytes, NativeStream] = \
            weakref.WeakValueDictionary()

    def open(self, bound: int) -> "NativeStream":
        """A new stream; ``bound`` > 0: unconsumed values at most (backpressure)."""
        stream = NativeStream(self.owner, self.owner.new_id(), bound, self.blocking)
        self.streams[stream.stream_id] = stream
        return stream

    def on_item(self, msg: P.StreamItem, conn: Connection) -> None:
        """A StreamItem that came over ``conn`` (any reader thread)."""
        if msg.index < 0:
            return
        stream = self.streams.get(msg.stream_id)
        if stream is None or not stream.add(msg.index, msg.result, conn):
            self.release(msg.result)
            if stream is None:   # dropped by its user: the producer may stop
                _send(conn, P.StreamAck(msg.stream_id, -1))

    def release(self, record: list) -> None:
        """Let go of a value we will not use (stored at the node for us: release it)."""
        oid, kind, _payload, _path, _size, contained = record
        if kind == "shm" or contained:
            self.owner.to_node(P.RefUpdates([], [oid]))


class NativeStream:
    """One streaming generator's refs. ``start(end)`` once the task is submitted; then
    ``next``/``cancel`` (from any thread)."""

    def __init__(self, owner: StreamOwner, stream_id: bytes, bound: int,
                 blocking: Callable[[bool], None]) -> None:
        self.owner = owner
        self.blocking = blocking
        self.stream_id = stream_id
        self.bound = bound
        self.header = [stream_id, owner.client_id, bound]
        self.cond = threading.Condition()
        self.refs: list[NativeRef | None] = []   # by index; None once handed out
        self.given = 0
        self.source: Connection | None = None   # where items came from: acks go back there
        self.end: NativeRef | None = None
        self.count: int | None = None            # values the task yielded (it ended well)
        self.failed = False                      # the task failed: ``end`` raises on get
        self.end_given = False
        self.cancelled = False

    def start(self, end: NativeRef) -> None:
        """``end``: the task's one result (the count of values, or its failure)."""
        self.end = end
        me = weakref.ref(self)   # the pending result must not keep a dropped stream alive

        def ended(fut: concurrent.futures.Future) -> None:
            stream = me()
            if stream is not None:
                stream._ended(fut)
        self.owner.future(end).add_done_callback(ended)

    def _ended(self, fut: concurrent.futures.Future) -> None:
        with self.cond:
            if fut.exception() is None:
                self.count = fut.result()
            else:
                self.failed = True
            self.cond.notify_all()

    def add(self, index: int, record: list, conn: Connection) -> bool:
        """Record value ``index``; False when it is one we have (a re-run sends it again)."""
        oid, kind = record[0], record[1]
        with self.cond:
            self.source = conn
            fresh = index == len(self.refs)
            if fresh:
                self.owner.objects.add(oid, Entry(subscribed=True, local=True))
                self.refs.append(NativeRef.owned(oid))
            consumed = -1 if self.cancelled else self.given
        if consumed < 0 or not fresh:
            if self.bound > 0 or consumed < 0:   # a re-run starts from 0: say what we took
                _send(conn, P.StreamAck(self.stream_id, consumed))
            if not fresh:
                return False
        if self.owner.remote and kind == "shm":   # not mappable here: fetched on get
            self.owner.objects.add(oid, Entry(subscribed=False))
        else:
            self.owner.deliver([record])
        with self.cond:
            self.cond.notify_all()
        return True

    def next(self, timeout: float | None) -> NativeRef:
        """The next value's ref (or, after the values, the task's failure once).

        Raises:
            StopIteration: every value was given (and the failure, if any).
            GetTimeoutError: nothing new within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        blocked = False
        try:
            with self.cond:
                while True:
                    ref = self._take()
                    if ref is not None:
                        break
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise GetTimeoutError(f"no next value of the generator within "
                                              f"{timeout} s")
                    if not blocked:
                        blocked = True
                        self.blocking(True)
                    self.cond.wait(left)
                ack = self.bound > 0 and ref is not self.end and not self.cancelled
                consumed, conn = self.given, self.source
        finally:
            if blocked:
                self.blocking(False)
        if ack and conn is not None:
            _send(conn, P.StreamAck(self.stream_id, consumed))
        return ref

    def _take(self) -> NativeRef | None:
        """Under ``cond``: the next ref to hand out, None to wait; raises StopIteration."""
        if self.given < len(self.refs):
            ref = self.refs[self.given]
            self.refs[self.given] = None   # the caller holds it now
            self.given += 1
            return ref
        if self.failed and not self.end_given:
            self.end_given = True
            return self.end
        if self.failed or (self.count is not None and self.given >= self.count):
            raise StopIteration
        return None

    def cancel(self, force: bool) -> None:
        """Stop the task (its worker gets the cancel; a producer waiting for room wakes)."""
        with self.cond:
            if self.cancelled or self.end is None:
                return
            self.cancelled = True
            conn = self.source
        if conn is not None:
            _send(conn, P.StreamAck(self.stream_id, -1))
        self.owner.cancel(self.end, force, True)

    def __del__(self) -> None:
        # Dropped before its end: stop the producer (it may wait for room forever). Sent
        # from a thread of its own: __del__ may run while this thread holds a writer's lock.
        if self.count is None and not self.failed and self.source is not None:
            threading.Thread(target=_send, args=(self.source, P.StreamAck(self.stream_id, -1)),
                             daemon=True).start()


def _send(conn: Connection, msg: P.Message) -> None:
    try:
        conn.send(msg)
    except ConnectionError:
        pass   # that worker is gone; a re-run's items come over another connection
