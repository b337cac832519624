"""What one client process knows about objects: pending, or where (and what) each one is.

The table is the meeting point of the threads of a client::

    reader threads (node, leased workers, actors) ─▶ resolve_many ─▶ wake waiters, run callbacks
    user threads: get / wait ─▶ wait_ready (a counter hung on the pending entries)

It does no I/O: subscribing, flushing and telling the node that a worker blocks are the
client's part, given to :meth:`ObjectTable.wait_ready` as callables.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Sequence

from ...exceptions import UniparError
from ..wire import protocol as P
from ..wire import serialization as S


class ClusterGoneError(UniparError):
    """The node daemon this process was connected to went away."""


class Entry:
    """What this process knows about one object: pending (kind None) or its location.

    ``local``: the result of a task pushed directly; only this process knows it (until the
    client promotes it to the node)."""

    __slots__ = ("kind", "payload", "path", "subscribed", "callbacks", "waiters", "local")

    def __init__(self, subscribed: bool = False, local: bool = False) -> None:
        self.local = local
        self.kind: str | None = None
        self.payload: Any = None
        self.path = ""
        self.subscribed = subscribed
        self.callbacks: list[Callable[[], None]] = []
        self.waiters: list[Waiter] = []


class Waiter:
    """One blocked get/wait: done when ``remaining`` more objects are ready (or one failed)."""

    __slots__ = ("remaining", "stop_on_error", "done")

    def __init__(self, remaining: int, stop_on_error: bool) -> None:
        self.remaining = remaining
        self.stop_on_error = stop_on_error
        self.done = False

    def hit(self, kind: str) -> bool:
        self.remaining -= 1
        if self.remaining <= 0 or (kind == "error" and self.stop_on_error):
            self.done = True
        return self.done


class ObjectTable:
    """The entries of one client, guarded by ``cond`` (also what waiters sleep on)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.entries: dict[bytes, Entry] = {}
        self.dead = False   # the node went away: waiters give up

    # -- recording values ----------------------------------------------------------------------
    def add(self, oid: bytes, entry: Entry) -> None:
        with self.cond:
            self.entries[oid] = entry

    def resolve_many(self, found: list[tuple[bytes, str, Any, str, bool]]) -> list[bytes]:
        """Record many objects' values under one lock, one wake-up; returns the ids nobody
        here holds any more (or that were resolved already)."""
        unwanted: list[bytes] = []
        callbacks: list[Callable[[], None]] = []
        woke = False
        with self.cond:
            entries = self.entries
            for oid, kind, payload, path, local in found:
                entry = entries.get(oid)
                if entry is None or entry.kind is not None:
                    unwanted.append(oid)
                    continue
                entry.kind = kind
                entry.payload = payload
                entry.path = path
                entry.local = local
                if entry.callbacks:
                    callbacks.extend(entry.callbacks)
                    entry.callbacks = []
                if entry.waiters:
                    for waiter in entry.waiters:
                        woke = waiter.hit(kind) or woke
                    entry.waiters = []
            if woke:
                self.cond.notify_all()
        for callback in callbacks:
            callback()
        return unwanted

    def resolve(self, oid: bytes, kind: str, payload: Any, path: str,
                local: bool = False) -> bool:
        """Record one object's value; False when nobody here holds it any more."""
        return not self.resolve_many([(oid, kind, payload, path, local)])

    def drop(self, oids: Sequence[bytes], still_held: Callable[[bytes], bool]) -> None:
        """Forget entries of objects this process no longer holds."""
        with self.cond:
            for oid in oids:
                if not still_held(oid):
                    self.entries.pop(oid, None)

    def wake_all(self) -> None:
        with self.cond:
            self.dead = True
            self.cond.notify_all()

    # -- reading -------------------------------------------------------------------------------
    def snapshot(self, oids: Sequence[bytes]) -> list[Entry | None]:
        with self.cond:
            return [self.entries.get(oid) for oid in oids]

    def local_pending(self, oids: Sequence[bytes]) -> list[bytes]:
        """Those of ``oids`` that are direct results still being computed here."""
        with self.cond:
            return [oid for oid in oids if (e := self.entries.get(oid)) is not None
                    and e.local and e.kind is None]

    def unsubscribed(self, oids: Sequence[bytes]) -> list[bytes]:
        """Mark ``oids`` subscribed (creating entries); returns those that were not."""
        need = []
        with self.cond:
            for oid in oids:
                entry = self.entries.get(oid)
                if entry is None:
                    entry = self.entries[oid] = Entry()
                if not entry.subscribed:
                    entry.subscribed = True
                    need.append(oid)
        return need

    def forget_locations(self, oids: Sequence[bytes]) -> None:
        """Files of ``oids`` vanished (spilled): their next read asks the node again."""
        with self.cond:
            for oid in oids:
                entry = self.entries.get(oid)
                if entry is not None and entry.kind == "shm":
                    entry.kind, entry.subscribed = None, False

    def when_local_ready(self, oids: Sequence[bytes], then: Callable[[], None]) -> None:
        """Call ``then`` once none of ``oids`` is a local object still being computed (at
        once, usually; else on the thread that delivers the last of them)."""
        pending = self.local_pending(oids)
        if not pending:
            then()
            return
        remaining = [len(pending)]
        lock = threading.Lock()

        def one_ready() -> None:
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                then()
        with self.cond:
            late = 0
            for oid in pending:
                entry = self.entries.get(oid)
                if entry is not None and entry.kind is None:
                    entry.callbacks.append(one_ready)
                else:
                    late += 1
        for _ in range(late):
            one_ready()

    def take_local(self, oids: Sequence[bytes]) -> list[tuple[bytes, str, Any]]:
        """``(oid, kind, payload)`` of the ready local objects among ``oids``, now marked as
        known to the node (the caller hands them over)."""
        moving = []
        with self.cond:
            for oid in oids:
                entry = self.entries.get(oid)
                if entry is not None and entry.local and entry.kind is not None:
                    entry.local = False
                    moving.append((oid, entry.kind, entry.payload))
        return moving

    def not_local(self, oids: Sequence[bytes]) -> None:
        """These results will come from the node (the work went through it)."""
        with self.cond:
            for oid in oids:
                entry = self.entries.get(oid)
                if entry is not None:
                    entry.local = False

    def ready_for(self, direct: bool, deps: Sequence[bytes], contained: Sequence[bytes],
                  then: Callable[[], None]) -> tuple[bool, list[bytes]]:
        """``(whether a call with these arguments can leave now, ids to subscribe to)``; if
        not, ``then`` runs when one more of what it waits for is ready. Direct: every
        dependency's value must be here (unknown ones get an entry; the caller subscribes);
        through the node: only our own unfinished local results hold it back (the node waits
        for the rest itself)."""
        wait_for: bytes | None = None
        unknown: list[bytes] = []
        with self.cond:
            entries = self.entries
            for oid in deps:
                entry = entries.get(oid)
                if entry is None and direct:
                    entry = entries[oid] = Entry()
                    unknown.append(oid)
                if entry is not None and entry.kind is None and (direct or entry.local):
                    wait_for = oid
                    break
            if wait_for is None:
                for oid in contained:
                    entry = entries.get(oid)
                    if entry is not None and entry.local and entry.kind is None:
                        wait_for = oid
                        break
            if wait_for is not None:
                entries[wait_for].callbacks.append(then)
        return wait_for is None, unknown

    def dep_values(self, deps: Sequence[bytes]) -> list | bytes:
        """``[oid, kind, payload, path]`` per dependency (all ready), or the packed error of
        the first that failed."""
        values = []
        with self.cond:
            for oid in deps:
                entry = self.entries[oid]
                if entry.kind == "error":
                    return entry.payload
                if entry.kind == "shm":
                    values.append([oid, "shm", None, entry.path])
                else:
                    values.append([oid, entry.kind, P.blob(entry.payload), ""])
        return values

    # -- waiting -------------------------------------------------------------------------------
    def scan(self, oids: Sequence[bytes],
             errors: bool = True) -> tuple[Sequence[int], list[int], bool]:
        """``(ready indices, pending indices, any failed)``; call with the lock held. Without
        ``errors``, failed ones are not looked for (``any failed`` is False).

        Comprehensions over ``map``, not a loop of appends: a wait on 1,000 finished refs is a
        benchmark, and this was a third of it."""
        if len(oids) == 1:   # a get of one ref, the most common call of all
            entry = self.entries.get(oids[0])
            if entry is None or entry.kind is None:
                return [], [0], False
            return [0], [], errors and entry.kind == "error"
        found = list(map(self.entries.get, oids))
        try:
            kinds = [e.kind for e in found]   # AttributeError: one is not known here yet
        except AttributeError:
            kinds = [None]
        if None not in kinds:   # every one finished: a batch's wait, and no list of indices
            return range(len(oids)), [], errors and "error" in kinds
        ready = [i for i, e in enumerate(found) if e is not None and e.kind is not None]
        pending = [] if len(ready) == len(found) else [
            i for i, e in enumerate(found) if e is None or e.kind is None]
        failed = errors and any(found[i].kind == "error" for i in ready)   # type: ignore[union-attr]
        return ready, pending, failed

    def wait_ready(self, oids: Sequence[bytes], count: int, timeout: float | None,
                   stop_on_error: bool, prepare: Callable[[list[bytes]], None],
                   blocking: Callable[[bool], None]) -> Sequence[int]:
        """Indices of ready ``oids`` (a list, or a range when all are) once ``count`` are
        ready (or one failed, if ``stop_on_error``) or the timeout passed. Each object's
        arrival costs O(1): the waiter is a counter hung on the pending entries, not a rescan
        of all ``oids``.

        ``prepare(pending ids)`` runs first when something is missing (subscribe, flush);
        ``blocking(True/False)`` brackets the sleep (a worker lends its CPU meanwhile).
        Raises ClusterGoneError when the node goes away while waiting.
        """
        with self.cond:
            ready, pending, failed = self.scan(oids, stop_on_error)
            if len(ready) >= count or failed:
                return ready
        prepare([oids[i] for i in pending])
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            ready, pending, failed = self.scan(oids, stop_on_error)
            if len(ready) >= count or failed or timeout == 0:
                return ready
            waiter = Waiter(count - len(ready), stop_on_error)
            for i in pending:   # once per occurrence: a repeated ref counts each time
                entry = self.entries.get(oids[i])
                if entry is None:
                    entry = self.entries[oids[i]] = Entry(subscribed=True)
                entry.waiters.append(waiter)
        blocking(True)
        try:
            return self._sleep(waiter, oids, deadline)
        finally:
            blocking(False)

    def _sleep(self, waiter: Waiter, oids: Sequence[bytes],
               deadline: float | None) -> Sequence[int]:
        with self.cond:
            while not waiter.done:
                if self.dead:
                    raise ClusterGoneError("the unipar node daemon went away")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self.cond.wait(1.0 if remaining is None else min(remaining, 1.0))
            return self.scan(oids, False)[0]


def load(entry: Entry) -> Any:
    """The value of a ready entry (raises the remote error of a failed one)."""
    if entry.kind == "inline":
        return S.load_packed(entry.payload)
    if entry.kind == "shm":
        return S.load_file(entry.path)
    raise S.load_packed(entry.payload)
