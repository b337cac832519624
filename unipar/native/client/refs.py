"""Native object refs and the per-process reference counter.

A :class:`NativeRef` names one object by a 16-byte id. Every live instance counts: creating one
(including by unpickling) and dropping one append ``(oid, ±1)`` to a process-wide deque —
``deque.append`` is atomic and never calls back into Python, so this is safe inside ``__del__``
run by the garbage collector at any moment. The client drains the deque under its send lock
(:meth:`RefTracker.drain`) and turns the net changes (now held / no longer held) into one
``ref_updates`` message, which always precedes the message that was about to be sent: a worker
that unpickled a ref therefore tells the node before it reports its task done.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from ..wire.serialization import note_ref


class RefTracker:
    """Counts live refs per object id in this process."""

    def __init__(self) -> None:
        self.changes: deque[tuple[bytes, int]] = deque()
        self.counts: dict[bytes, int] = {}
        self.unpickled = 0   # refs made by unpickling, ever (a worker asks: did a call borrow?)

    def drain(self) -> tuple[list[bytes], list[bytes]]:
        """Apply queued changes; returns ``(now_held, now_free)``, disjoint.

        ``now_held``: ids this process did not hold and now holds. ``now_free``: ids it no longer
        holds that it held at some point during the drained changes — including ids created and
        dropped within one drain (the node may hold those on this process's behalf since the
        submit or put that made them).
        """
        counts = self.counts
        changes = self.changes
        initial: dict[bytes, int] = {}
        touched_positive: set[bytes] = set()
        while changes:
            try:
                oid, delta = changes.popleft()
            except IndexError:
                break
            before = counts.get(oid, 0)
            if oid not in initial:
                initial[oid] = before
            after = before + delta
            if after <= 0:
                counts.pop(oid, None)
            else:
                counts[oid] = after
                touched_positive.add(oid)
        adds = [oid for oid, first in initial.items() if first == 0 and oid in counts]
        releases = [oid for oid, first in initial.items()
                    if oid not in counts and (first > 0 or oid in touched_positive)]
        return adds, releases

    def own(self, oid: bytes) -> None:
        """Count a new ref to an object the node already holds for this process (a result
        of our own submit or put): no ``adds`` message is needed for it. Safe without the
        send lock: the id is brand new, so no queued change can concern it yet."""
        self.counts[oid] = self.counts.get(oid, 0) + 1

    def held(self, oid: bytes) -> bool:
        return self.counts.get(oid, 0) > 0


TRACKER = RefTracker()


class NativeRef:
    """The native engine's handle: hashable, picklable, counted while alive."""

    __slots__ = ("oid", "__weakref__")

    def __init__(self, oid: bytes) -> None:
        self.oid = oid
        TRACKER.changes.append((oid, 1))

    @classmethod
    def owned(cls, oid: bytes) -> "NativeRef":
        """The first ref to an object this process just created (submit, put, actor call)."""
        ref = object.__new__(cls)
        ref.oid = oid
        TRACKER.own(oid)
        return ref

    def __del__(self) -> None:
        try:
            TRACKER.changes.append((self.oid, -1))
        except Exception:   # interpreter shutdown
            pass

    def __reduce__(self) -> tuple[Any, ...]:
        note_ref(self.oid)
        return (_unpickled, (self.oid,))

    def __hash__(self) -> int:
        return hash(self.oid)   # bytes keep their hash: no need to keep it here too

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NativeRef) and other.oid == self.oid

    def __repr__(self) -> str:
        return f"native:{self.oid.hex()}"


def _unpickled(oid: bytes) -> NativeRef:
    """A ref rebuilt from a pickle: another process's ref, now also held here (borrowed)."""
    TRACKER.unpickled += 1
    return NativeRef(oid)


class ActorId:
    """Names one actor anywhere in the cluster; ``name`` is set for named actors."""

    __slots__ = ("id", "name")

    def __init__(self, id: bytes, name: str | None = None) -> None:
        self.id = id
        self.name = name

    def __reduce__(self) -> tuple[Any, ...]:
        return (ActorId, (self.id, self.name))

    def __hash__(self) -> int:
        return hash(self.id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorId) and other.id == self.id

    def __repr__(self) -> str:
        return f"actor:{self.id.hex()[:12]}" + (f"({self.name})" if self.name else "")
