"""A remote driver's side of chunked transfer: it cannot map a node's files, so big objects are
pulled chunk by chunk into one buffer it owns (:class:`Downloads`) and big ``put`` values are
uploaded in PutChunk frames (:func:`upload`). The node's side is :mod:`..node.transfers`.
"""

from __future__ import annotations

from typing import Any, Callable

from ...exceptions import ObjectLostError
from ..wire import protocol as P
from ..wire import serialization as S
from ..wire.chunks import CHUNK_SIZE, WINDOW


# -- the remote driver's side --------------------------------------------------------------------

class _Download:
    __slots__ = ("size", "buf", "next", "pending", "done")

    def __init__(self, size: int) -> None:
        self.size = size
        self.buf = bytearray(size)   # the one copy a remote driver cannot avoid: its value
        self.next = 0
        self.pending: set[int] = set()
        self.done = 0


class Downloads:
    """A remote driver's chunked gets. Both methods run on the client's reader thread (they
    only send small requests, which never wait on a reply), so no lock is needed.

    ``deliver`` gets an ObjectReady once the object is complete (kind "inline", the payload a
    read-only view of the assembled buffer, so numpy arrays come back read-only as from a
    mapped file) or failed (kind "error"). ``wanted(oid)``: does this process still hold a
    ref to it (else it is not fetched at all)?"""

    def __init__(self, send: Callable[[P.Message], None],
                 deliver: Callable[[P.ObjectReady], None],
                 wanted: Callable[[bytes], bool] = lambda oid: True) -> None:
        self.send = send
        self.deliver = deliver
        self.wanted = wanted
        self.active: dict[bytes, _Download] = {}

    def start(self, msg: P.ObjectReady) -> None:
        if msg.oid in self.active or not self.wanted(msg.oid):
            return
        download = self.active[msg.oid] = _Download(msg.size)
        self._ask(msg.oid, download)

    def _ask(self, oid: bytes, download: _Download) -> None:
        while download.next < download.size and len(download.pending) < WINDOW:
            size = min(CHUNK_SIZE, download.size - download.next)
            download.pending.add(download.next)
            try:
                self.send(P.FetchChunk(oid, download.next, size))
            except ConnectionError:
                return   # the client's waits see the connection drop and raise
            download.next += size

    def on_chunk(self, msg: P.ObjectChunk) -> None:
        download = self.active.get(msg.oid)
        if download is None or msg.offset not in download.pending:
            return
        if not self.wanted(msg.oid):   # every ref to it was dropped meanwhile
            del self.active[msg.oid]
            return
        expect = min(CHUNK_SIZE, download.size - msg.offset)
        if msg.error or msg.data is None or len(msg.data) != expect:
            del self.active[msg.oid]
            error = ObjectLostError(f"object {msg.oid.hex()} could not be fetched: "
                                    f"{msg.error or 'a chunk of the wrong size came'}")
            self.deliver(P.ObjectReady(msg.oid, "error", S.pack_error(error), "", 0))
            return
        download.buf[msg.offset:msg.offset + expect] = msg.data
        download.pending.discard(msg.offset)
        download.done += expect
        if download.done < download.size:
            self._ask(msg.oid, download)
            return
        del self.active[msg.oid]
        self.deliver(P.ObjectReady(msg.oid, "inline", memoryview(download.buf).toreadonly(),
                                   "", download.size))


def upload(client: Any, data: bytes, buffers: list[Any], contained: list[bytes]) -> bytes:
    """Put a big value from a remote driver in chunks; returns its object id once the node
    has every byte (so the caller may change its buffers afterwards).

    The value's pieces (the layout of an object file, :mod:`.serialization`) go as they are,
    never packed into one buffer: each PutChunk carries a slice of the caller's memory.

    Raises:
        ObjectStoreFullError: the node has no room for it.
    """
    parts = S._views(data, buffers)
    header, offsets = S._layout(parts)
    last = parts[-1].nbytes
    size = offsets[-1] + last + S._pad(last)
    oid = client.new_id()
    client.request(lambda r: P.Alloc(r, oid, size))
    slices = [(at + i, view[i:i + CHUNK_SIZE])
              for at, view in [(0, memoryview(header)), *zip(offsets, parts)]
              for i in range(0, view.nbytes, CHUNK_SIZE)]
    for n, (offset, piece) in enumerate(slices, 1):
        if n % WINDOW == 0 or n == len(slices):
            # A reply every WINDOW chunks: bounds what is queued, and the last one proves the
            # node wrote everything before we return (the caller's buffers may change next).
            client.request(lambda r, at=offset, part=piece: P.PutChunk(r, oid, at, P.blob(part)))
        else:
            client.conn.send(P.PutChunk(0, oid, offset, P.blob(piece)))
    client.conn.send(P.PutObject(oid, "shm", None, "", size, contained))
    return oid
