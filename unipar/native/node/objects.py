"""The node's object directory: what each object is, who holds it, who waits for it.

Objects live here as metadata plus small inline payloads; large ones are files in the store
(:mod:`.store`). An object is freed when no process holds a ref to it (``holders``) and nothing
pins it (pending tasks using it, objects containing it). When an object's value arrives
(:meth:`ObjectDirectory.resolve`) its subscribers are told and the tasks waiting for it wake
(``deps_ready``). An object this node does not know is asked of the peers (:class:`~.ports.Fetcher`).
"""

from __future__ import annotations

from typing import Any, Callable

from ...exceptions import ObjectLostError
from ..wire import protocol as P
from ..wire import serialization as S
from ..wire.chunks import CHUNK_SIZE
from ..wire.server import ServerConnection
from .ports import Fetcher
from .records import Obj, Task
from .store import ObjectStore, StoreFullError


class ObjectDirectory:
    """Objects of one node. ``deps_ready(task)`` runs when a task's last dependency
    resolves; ``worker_conn(wid)`` finds a worker's connection (to tell it to forget a
    mapping); ``clients`` are the node's connections by client id; ``fetcher`` asks peers."""

    def __init__(self, store: ObjectStore, clients: dict[int, ServerConnection],
                 deps_ready: Callable[[Task], None],
                 worker_conn: Callable[[str], ServerConnection | None]) -> None:
        self.store = store
        self.clients = clients
        self.deps_ready = deps_ready
        self.worker_conn = worker_conn
        # Processes on this machine that may map object files: a freed file is reused only
        # when none of them (nor one seen before that still lives) maps it (store.py).
        store.local_pids = lambda: [c.info["pid"] for c in clients.values()
                                    if c.info.get("pid") and not c.info.get("remote")]
        self.fetcher: Fetcher | None = None   # set once the peers part exists
        self.objects: dict[bytes, Obj] = {}
        self.waiters: dict[bytes, list[Task]] = {}

    def get(self, oid: bytes) -> Obj | None:
        return self.objects.get(oid)

    def __len__(self) -> int:
        return len(self.objects)

    # -- holding and pinning -------------------------------------------------------------------
    def hold(self, conn: ServerConnection, oid: bytes, obj: Obj) -> None:
        obj.holders.add(conn.info["client_id"])
        conn.info["held"].add(oid)

    def add(self, oid: bytes, obj: Obj | None = None) -> Obj:
        """Record a pending object (``obj``, or a new one) under ``oid``."""
        obj = obj if obj is not None else Obj()
        self.objects[oid] = obj
        return obj

    def new_result(self, conn: ServerConnection | None, oid: bytes, task_id: bytes) -> None:
        """A result of a task: held by, and pushed to, whoever submitted it."""
        obj = Obj(task_id)
        if conn is not None:
            self.hold(conn, oid, obj)
            obj.subscribers.append(conn)
        self.objects[oid] = obj

    def pin(self, oid: bytes) -> None:
        obj = self.objects.get(oid)
        if obj is not None:
            obj.pins += 1

    def unpin(self, oid: bytes) -> None:
        obj = self.objects.get(oid)
        if obj is not None:
            obj.pins -= 1
            self.maybe_free(oid, obj)

    def release(self, conn: ServerConnection, oid: bytes) -> None:
        """``conn`` holds ``oid`` no more."""
        obj = self.objects.get(oid)
        if obj is not None:
            obj.holders.discard(conn.info["client_id"])
            self.maybe_free(oid, obj)

    def maybe_free(self, oid: bytes, obj: Obj) -> None:
        if obj.holders or obj.pins > 0:
            return
        del self.objects[oid]
        if self.fetcher is not None:
            self.fetcher.freed(oid)
        if obj.kind == "shm":
            self.store.free(oid)
            self.forget(oid, obj)
        for inner in obj.contained:
            self.unpin(inner)

    def forget(self, oid: bytes, obj: Obj | None) -> None:
        """Tell workers that may have ``oid``'s file mapped to let go (it was freed or spilled:
        a cached mapping would keep its shared memory in use)."""
        if obj is None or not obj.readers:
            return
        for wid in obj.readers:
            conn = self.worker_conn(wid)
            if conn is not None:
                conn.send(P.Forget([oid]))
        obj.readers = None

    def forget_spilled(self) -> None:
        moved, self.store.moved = self.store.moved, []
        for oid in moved:
            self.forget(oid, self.objects.get(oid))

    # -- values --------------------------------------------------------------------------------
    def resolve(self, oid: bytes, kind: str, payload: Any, path: str, size: int,
                contained: list) -> None:
        """An object's value exists now: record it, tell subscribers, wake dependents."""
        obj = self.objects.get(oid)
        if obj is None or obj.kind is not None:
            if kind == "shm" and (obj is None or obj.path != path):
                self.store.free(oid)       # nobody wants it any more
            return
        obj.kind, obj.size = kind, size
        if kind == "shm":
            obj.path = self.store.seal(oid, size) or path
        else:
            obj.payload = payload
        obj.contained = list(contained)
        for inner in obj.contained:
            self.pin(inner)
        subscribers, obj.subscribers = obj.subscribers, []
        for conn in subscribers:
            self.send_ready(conn, oid, obj)
        for task in self.waiters.pop(oid, ()):
            task.missing -= 1
            if task.missing == 0:
                self.deps_ready(task)

    def fail(self, oid: bytes, error: Exception) -> None:
        """A pending object fails with ``error`` (no-op once it has a value)."""
        obj = self.objects.get(oid)
        if obj is not None and obj.kind is None:
            self.resolve(oid, "error", S.pack_error(error), "", 0, [])

    def send_ready(self, conn: ServerConnection, oid: bytes, obj: Obj) -> None:
        if obj.kind == "shm" and conn.info.get("remote"):
            conn.send(self.ready_for_remote(oid, obj))   # contents, or "chunked": pull them
        elif obj.kind == "shm":
            conn.send(P.ObjectReady(oid, "shm", None, self.store.path(oid) or obj.path, obj.size))
        else:
            conn.send(P.ObjectReady(oid, obj.kind, P.blob(obj.payload), "", obj.size))  # type: ignore[arg-type]

    def ready_for_remote(self, oid: bytes, obj: Obj) -> P.ObjectReady:
        """What a remote client (driver or peer node) is told about an object file here: its
        contents when they fit in one chunk, else that it must pull them (transfers.py)."""
        if obj.size > CHUNK_SIZE:
            return P.ObjectReady(oid, "chunked", None, "", obj.size)
        return P.ObjectReady(oid, "inline", P.blob(self.read_object(oid, obj)), "", obj.size)

    def read_object(self, oid: bytes, obj: Obj) -> bytes:
        """The bytes of an object file (the same layout as an inline value), for a remote
        driver. Read on the loop: a very large object pauses this node while it is read."""
        with open(self.store.path(oid) or obj.path, "rb") as f:
            return f.read(obj.size)

    def dep_values(self, task: Task, wid: str) -> list:
        """Dependency values for worker ``wid``; it may keep files mapped until told to
        forget them (:meth:`forget`), so repeated use of a big argument costs no new mapping."""
        values = []
        for oid in task.deps:
            obj = self.objects[oid]
            if obj.kind == "shm":
                if obj.readers is None:
                    obj.readers = set()
                obj.readers.add(wid)
                values.append([oid, "shm", None, self.store.path(oid) or obj.path])
            else:
                values.append([oid, obj.kind, P.blob(obj.payload), ""])
        return values

    def failed_dep(self, task: Task) -> Any:
        """The error payload of the first failed or lost dependency, else None."""
        for oid in task.deps:
            obj = self.objects.get(oid)
            if obj is None:
                return S.pack_error(ObjectLostError(
                    f"an argument of {task.name} ({oid.hex()}) no longer exists"))
            if obj.kind == "error":
                return obj.payload
        return None

    def watch(self, task: Task) -> int:
        """Count the task's pending dependencies and wait for them (``deps_ready`` runs when
        the last resolves); objects made on another node are fetched. Returns the count."""
        missing = 0
        for oid in task.deps:
            obj = self.objects.get(oid)
            if obj is None and self.fetcher is not None and self.fetcher.fetch(None, oid):
                obj = self.objects[oid]
                obj.pins += 1                            # as make_task would have
            if obj is not None and obj.kind is None:
                self.waiters.setdefault(oid, []).append(task)
                missing += 1
        task.missing = missing
        return missing

    # -- handlers ------------------------------------------------------------------------------
    def on_put_object(self, conn: ServerConnection, msg: P.PutObject) -> None:
        known = self.objects.get(msg.oid)
        if known is not None:   # a peer pushed an object we have (or are fetching)
            self.hold(conn, msg.oid, known)
            if known.kind is None and self.fetcher is not None:
                self.fetcher.adopt(msg.oid, msg.kind, msg.payload, msg.size, msg.contained)
            return
        obj = self.add(msg.oid)
        self.hold(conn, msg.oid, obj)
        if conn.info.get("remote") and msg.kind == "inline" and self.fetcher is not None:
            self.fetcher.adopt(msg.oid, msg.kind, msg.payload, msg.size, msg.contained)
            return
        self.resolve(msg.oid, msg.kind, msg.payload, msg.path, msg.size, msg.contained)

    def on_alloc(self, conn: ServerConnection, msg: P.Alloc) -> None:
        try:
            # A local producer writes the file itself and may get a pooled segment (store.py).
            producer = None if conn.info.get("remote") else conn.info.get("pid")
            path = self.store.alloc(msg.oid, msg.size, producer)
        except StoreFullError as exc:
            self.forget_spilled()
            conn.send(P.Reply(msg.req_id, None, str(exc), "store_full"))
            return
        self.forget_spilled()
        conn.send(P.Reply(msg.req_id, path))

    def on_put_for(self, conn: ServerConnection, msg: P.PutFor) -> None:
        owner = self.clients.get(msg.owner)
        if owner is None:   # the client that pushed the task is gone: nobody wants it
            if msg.kind == "shm":
                self.store.free(msg.oid)
            conn.send(P.Reply(msg.req_id, False))
            return
        obj = self.add(msg.oid)
        self.hold(owner, msg.oid, obj)
        self.resolve(msg.oid, msg.kind, msg.payload, msg.path, msg.size, msg.contained)
        conn.send(P.Reply(msg.req_id, True))

    def on_subscribe(self, conn: ServerConnection, msg: P.Subscribe) -> None:
        for oid in msg.oids:
            obj = self.objects.get(oid)
            if obj is None and self.fetcher is not None and self.fetcher.fetch(conn, oid):
                continue
            if obj is None:
                conn.send(P.ObjectReady(oid, "error", S.pack_error(ObjectLostError(
                    f"object {oid.hex()} no longer exists (every ref to it was dropped, or "
                    "its node was lost)")), "", 0))
            elif obj.kind is not None:
                self.send_ready(conn, oid, obj)
            elif conn not in obj.subscribers:
                obj.subscribers.append(conn)

    def on_ref_updates(self, conn: ServerConnection, msg: P.RefUpdates) -> None:
        cid = conn.info["client_id"]
        held = conn.info["held"]
        for oid in msg.adds:
            obj = self.objects.get(oid)
            if obj is not None:
                obj.holders.add(cid)
                held.add(oid)
            elif self.fetcher is not None and not conn.info.get("peer"):
                # A ref to an object made on another node (it came nested in a result): copy
                # it here now, while the node that made it still keeps it for us.
                self.fetcher.fetch(conn, oid, subscribe=False)
        for oid in msg.releases:
            held.discard(oid)
            self.release(conn, oid)
