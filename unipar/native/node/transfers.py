"""Chunked transfer of big objects: node to node, and between a node and a remote driver.

An object file bigger than one chunk never travels in one frame, and no daemon holds it whole in
memory on the way: the receiver pulls chunks, a few at a time, and writes each where it belongs::

    node A (wants oid)                                    node B (has oid's file)
      alloc(oid, size) in A's store (may spill)
      FetchChunk(oid, off, CHUNK_SIZE)  x WINDOW  ───────▶  pread the range from the file
      pwrite it into <path>.tmp   ◀──────── ObjectChunk(oid, off, data)   (data out of band)
      ask for the next one ...
      last chunk in: rename .tmp -> path; the object is ready here (ObjectReady to waiters,
      dependent tasks wake); every worker on A maps this one copy

How a node learns it should pull: instead of the contents it gets ObjectReady(kind "chunked",
size) — the answer to its Subscribe (a fetch), or a result of a task it forwarded — or
OfferObject(oid, size, node_id) — an argument of a task a peer sent it. One pull per object per
node: everything else that wants the object waits on the pending object, as for any other.
If the sender dies half-way, the partial file goes and the node asks its other peers (a copy may
live there) before the object fails with ObjectLostError.

A remote driver (cannot map node files) pulls the same way into one buffer it owns
(:class:`Downloads`: that copy is the value it gets), and uploads a big ``put`` in PutChunk
frames written in place into the file an Alloc reserved (:func:`upload`); PutObject seals it.
Objects up to one chunk keep travelling whole, inline, as before.
"""

from __future__ import annotations

import errno
import os
from typing import Any, Callable

from ...exceptions import ObjectLostError, ObjectStoreFullError
from ..wire import protocol as P
from ..wire.buffers import ChunkBuffers
from ..wire.chunks import CHUNK_SIZE, WINDOW
from .objects import ObjectDirectory
from .store import PARTIAL, StoreFullError


Send = Callable[[P.Message], bool]    # sends a message to a transfer's other end; False: gone
# Chunks read to be sent, reused once sent. WINDOW + 2: the event loop holds a chunk until its
# write is done, which may be after the puller has asked for the next ones.
_CHUNKS = ChunkBuffers(CHUNK_SIZE, keep=WINDOW + 2)


def conn_sender(conn: Any) -> Send:
    """A :class:`~.server.ServerConnection` as a :data:`Send` (its writes never block)."""
    def send(msg: P.Message) -> bool:
        conn.send(msg)
        return not conn.closed
    return send


def _open_partial(path: str) -> int:
    """The file a pull writes, ``<path>.tmp``: the pooled segment the store put at ``path``
    (renamed, its pages kept: writing into memory written before costs a copy, while fresh
    memory costs a page allocation on top, which on a VM was 0.4-1.3 s per GiB), or a new one."""
    try:
        os.rename(path, path + PARTIAL)
    except FileNotFoundError:
        return os.open(path + PARTIAL, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return os.open(path + PARTIAL, os.O_WRONLY)


def _pwrite_all(fd: int, data: Any, offset: int) -> None:
    view = memoryview(data)
    while view.nbytes:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _read_range(path: str, size: int, offset: int) -> bytes:
    # pread, not a mapping: a mapping would fault every page of the object into this daemon's
    # resident set (the test of "no extra copies" looks at it), and reads of one chunk into a
    # buffer freed once it is sent cost one memcpy, nothing next to the socket.
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


def _read_chunk(path: str, size: int, offset: int) -> Any:
    """A range of ``path``: a whole chunk into a reused buffer (wire/buffers.py: fresh pages
    per chunk were a third of a transfer's time), a shorter last one as bytes."""
    if size != CHUNK_SIZE:
        return _read_range(path, size, offset)
    buf = _CHUNKS.take()
    fd = os.open(path, os.O_RDONLY)
    try:
        got = os.preadv(fd, [buf], offset)
    finally:
        os.close(fd)
    if got != size:
        raise OSError(errno.EIO, f"read {got} of {size} bytes at {offset}")
    return buf


def _full_error(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


class _Pull:
    """One object being pulled into this node's store from ``source``."""

    __slots__ = ("oid", "size", "source", "send", "path", "fd", "next", "pending", "done", "then")

    def __init__(self, oid: bytes, size: int, source: Any, send: Send, path: str, fd: int,
                 then: Callable[[], None] | None) -> None:
        self.oid = oid
        self.size = size
        self.source = source          # a Peer or a ServerConnection: whose loss aborts it
        self.send = send
        self.path = path
        self.fd = fd
        self.next = 0                 # offset of the next chunk to ask for
        self.pending: set[int] = set()   # offsets asked for, not yet in
        self.done = 0                 # bytes written
        self.then = then              # run once the object is ready here


class Transfers:
    """Both ends of chunked transfers for one node. ``pull_ended(oid)`` runs when a pull is
    over, either way; ``pull_source_lost(oid)`` decides what to do with an object whose
    source went away mid-copy (ask elsewhere, wait for a retried task, or fail it)."""

    def __init__(self, objects: ObjectDirectory) -> None:
        self.objects = objects
        self.store = objects.store
        self.pulls: dict[bytes, _Pull] = {}
        self.pull_ended: Callable[[bytes], None] = lambda oid: None
        self.pull_source_lost: Callable[[bytes], None] = lambda oid: self.objects.fail(
            oid, ObjectLostError(f"the node holding object {oid.hex()} was lost"))

    def pull_source(self, oid: bytes) -> Any:
        """Where ``oid`` is being pulled from (a Peer or a connection), or None."""
        pull = self.pulls.get(oid)
        return pull.source if pull is not None else None

    # -- sending -------------------------------------------------------------------------------
    def on_fetch_chunk(self, conn: Any, msg: P.FetchChunk) -> None:
        self.serve_chunk(conn_sender(conn), msg)

    def serve_chunk(self, reply: Send, msg: P.FetchChunk) -> None:
        """Answer one FetchChunk from the object's file (never more than one chunk)."""
        obj = self.objects.get(msg.oid)
        data, error = None, ""
        if obj is None or obj.kind != "shm":
            error = f"object {msg.oid.hex()} is not in the store of this node (freed or lost)"
        elif not 0 <= msg.offset < obj.size or msg.size <= 0:
            error = f"bad chunk request: {msg.size} bytes at {msg.offset} of {obj.size}"
        else:
            size = min(msg.size, CHUNK_SIZE, obj.size - msg.offset)
            try:
                data = _read_chunk(self.store.path(msg.oid) or obj.path, size, msg.offset)
            except OSError as exc:
                error = f"cannot read object {msg.oid.hex()}: {exc}"
        if data is not None:
            self.store.traffic["served_bytes"] += len(data)
        reply(P.ObjectChunk(msg.oid, msg.offset, P.blob(data), error))

    # -- pulling -------------------------------------------------------------------------------
    def pull(self, oid: bytes, size: int, source: Any, send: Send,
             then: Callable[[], None] | None = None) -> None:
        """Copy object ``oid`` (pending here) of ``size`` bytes from ``source`` into this
        node's store; it becomes ready when the last chunk is in. No-op when already pulling."""
        if oid in self.pulls:
            return
        try:
            # This node writes the file: it may get a pooled segment, whose pages are warm
            # (fresh memory is what a pull into shared memory mostly costs; see _open_partial).
            path = self.store.alloc(oid, size, producer=os.getpid())
        except StoreFullError as exc:
            self.objects.forget_spilled()
            self._cannot_pull(oid, then, ObjectStoreFullError(
                f"object {oid.hex()} ({size} bytes) cannot be copied to this node: {exc}"))
            return
        self.objects.forget_spilled()   # the alloc may have spilled others: their readers must know
        try:
            fd = _open_partial(path)
        except OSError as exc:
            self.store.free(oid)
            self._cannot_pull(oid, then, ObjectLostError(
                f"cannot create a file for object {oid.hex()} on this node: {exc}"))
            return
        pull = self.pulls[oid] = _Pull(oid, size, source, send, path, fd, then)
        self._ask_chunks(pull)

    def _cannot_pull(self, oid: bytes, then: Callable[[], None] | None, exc: Exception) -> None:
        self._pull_error(oid, exc)
        self.pull_ended(oid)
        if then is not None:
            then()

    def _ask_chunks(self, pull: _Pull) -> None:
        while pull.next < pull.size and len(pull.pending) < WINDOW:
            size = min(CHUNK_SIZE, pull.size - pull.next)
            pull.pending.add(pull.next)
            if not pull.send(P.FetchChunk(pull.oid, pull.next, size)):
                self.pulls_lost(pull.source)
                return
            pull.next += size

    def on_object_chunk(self, conn: Any, msg: P.ObjectChunk) -> None:
        self.chunk_arrived(conn, msg)

    def chunk_arrived(self, source: Any, msg: P.ObjectChunk) -> None:
        """Write one chunk where it belongs; ask for the next; finish after the last."""
        pull = self.pulls.get(msg.oid)
        if pull is None or pull.source is not source or msg.offset not in pull.pending:
            return   # the pull was dropped meanwhile (or this is not its source)
        obj = self.objects.get(msg.oid)
        if obj is None or obj.kind is not None:   # freed here meanwhile: nobody wants it
            self._fail_pull(pull, None)
            return
        expect = min(CHUNK_SIZE, pull.size - msg.offset)
        if msg.error or msg.data is None or len(msg.data) != expect:
            self._fail_pull(pull, ObjectLostError(
                f"object {msg.oid.hex()} could not be copied from the node holding it: "
                f"{msg.error or 'it sent a chunk of the wrong size'}"))
            return
        try:
            _pwrite_all(pull.fd, msg.data, msg.offset)
        except OSError as exc:
            kind = ObjectStoreFullError if _full_error(exc) else ObjectLostError
            self._fail_pull(pull, kind(f"cannot write object {msg.oid.hex()} on this node: "
                                       f"{exc}"))
            return
        pull.pending.discard(msg.offset)
        pull.done += expect
        if pull.done < pull.size:
            self._ask_chunks(pull)
            return
        self._finish_pull(pull)

    def _finish_pull(self, pull: _Pull) -> None:
        del self.pulls[pull.oid]
        try:
            try:
                os.ftruncate(pull.fd, pull.size)   # a pooled segment may have been bigger
            finally:
                os.close(pull.fd)
            os.rename(pull.path + PARTIAL, pull.path)
        except OSError as exc:
            self.store.free(pull.oid)
            self._fail_pull(pull, ObjectLostError(f"object {pull.oid.hex()}: {exc}"))
            return
        self.store.traffic["pulled"] += 1
        self.store.traffic["pulled_bytes"] += pull.size
        self.objects.resolve(pull.oid, "shm", None, pull.path, pull.size, [])
        self.pull_ended(pull.oid)
        if pull.then is not None:
            pull.then()

    def _fail_pull(self, pull: _Pull, exc: Exception | None) -> None:
        """Drop the pull; the object fails with ``exc`` (None: it was freed here meanwhile).
        ``then`` still runs: a forwarded task's bookkeeping ends as if the result came."""
        self._drop_pull(pull)
        if exc is None:
            self.pull_ended(pull.oid)
            if pull.then is not None:
                pull.then()
        else:
            self._cannot_pull(pull.oid, pull.then, exc)

    def _drop_pull(self, pull: _Pull) -> None:
        """Stop a pull: close and remove its partial file, give its room back."""
        if self.pulls.get(pull.oid) is not pull:
            return
        del self.pulls[pull.oid]
        self.store.traffic["pulls_failed"] += 1
        try:
            os.close(pull.fd)
        except OSError:
            pass
        self.store.free(pull.oid)   # removes <path>.tmp too

    def _pull_error(self, oid: bytes, exc: Exception) -> None:
        self.objects.fail(oid, exc)

    def pulls_lost(self, source: Any) -> None:
        """``source`` is gone: drop what was being pulled from it, then let the node decide
        per object (ask elsewhere, wait for a retried task, or fail it)."""
        lost = [p for p in self.pulls.values() if p.source is source]
        for pull in lost:
            self._drop_pull(pull)
        for pull in lost:
            self.pull_source_lost(pull.oid)

    # -- what peers and remote drivers send ------------------------------------------------------
    def on_put_chunk(self, conn: Any, msg: P.PutChunk) -> None:
        """A remote driver's big put, one piece: written in place into the allocated file
        (readers learn its path only from the PutObject that follows the last piece)."""
        failed: dict[bytes, str] = conn.info.setdefault("upload_failed", {})
        error = failed.get(msg.oid) or self._write_upload(conn, msg)
        if error and msg.oid not in failed:
            failed[msg.oid] = error
            if self.store.unsealed(msg.oid) is not None:
                self.store.free(msg.oid)
        if msg.req_id:
            if error:
                failed.pop(msg.oid, None)   # reported: the client gives up this put
                full = error.startswith("store full")
                conn.send(P.Reply(msg.req_id, None, error, "store_full" if full else ""))
            else:
                conn.send(P.Reply(msg.req_id, True))

    def _write_upload(self, conn: Any, msg: P.PutChunk) -> str:
        where = self.store.unsealed(msg.oid)
        if where is None:
            return f"object {msg.oid.hex()} was not allocated (alloc) or is sealed already"
        path, size = where
        data = msg.data if msg.data is not None else b""
        if msg.offset < 0 or msg.offset + len(data) > size:
            return f"chunk of {len(data)} bytes at {msg.offset} is outside the {size} allocated"
        uploads: set[bytes] = conn.info.setdefault("uploads", set())
        first = msg.oid not in uploads
        try:
            flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if first else 0)
            fd = os.open(path, flags, 0o600)
            try:
                if first:   # full size at once: the padding between parts reads as zeros
                    os.ftruncate(fd, size)
                _pwrite_all(fd, data, msg.offset)
            finally:
                os.close(fd)
        except OSError as exc:
            return f"{'store full: ' if _full_error(exc) else ''}cannot write object: {exc}"
        uploads.add(msg.oid)
        return ""

    def disconnected(self, conn: Any) -> None:
        """A connection closed: pulls over it stop; its unfinished uploads are removed."""
        self.pulls_lost(conn)
        for oid in conn.info.get("uploads", ()):
            if self.store.unsealed(oid) is not None:
                self.store.free(oid)
