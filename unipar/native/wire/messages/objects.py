"""Objects: puts, readiness, reference counts, and big objects moved in chunks.
"""

from __future__ import annotations

from typing import Any

from .base import Message, message


# Objects: ``kind`` is "inline" (payload holds the packed value), "shm" (path names a file in
# the store), or "error" (payload holds a packed exception). ``contained`` lists the object ids
# of refs pickled inside the value: they live as long as it does.

@message
class PutObject(Message):
    op = "put_object"
    oid: bytes
    kind: str
    payload: Any
    path: str
    size: int
    contained: list


@message
class PutFor(Message):
    """Worker -> node, a request: store a task's result for ``owner`` (a client id), which
    then holds it as if it had put it. Used for big results and results holding refs of a
    task pushed directly; Reply.value is True."""
    op = "put_for"
    req_id: int
    owner: int
    oid: bytes
    kind: str
    payload: Any
    path: str
    size: int
    contained: list


@message
class Alloc(Message):
    """Ask where to write a large object of ``size`` bytes; Reply.value is the file path."""
    op = "alloc"
    req_id: int
    oid: bytes
    size: int


@message
class Subscribe(Message):
    op = "subscribe"
    oids: list


@message
class ObjectReady(Message):
    op = "object_ready"
    oid: bytes
    kind: str
    payload: Any
    path: str
    size: int


@message
class RefUpdates(Message):
    """Ordered refcount changes of one process: ``adds`` first, then ``releases``."""
    op = "ref_updates"
    adds: list
    releases: list


@message
class Forget(Message):
    """Node -> worker: these objects were freed or moved; drop cached mappings of them."""
    op = "forget"
    oids: list


# -- chunked transfer (issue #4 point 4: big objects stream in chunks; see node/transfers.py) --
# An object file bigger than one chunk never travels in one frame. ObjectReady gets kind
# "chunked" (payload None, size = the file's size): pull it with FetchChunk.

@message
class FetchChunk(Message):
    """Ask for ``size`` bytes at ``offset`` of an object's file (a node pulling it into its
    store, or a remote driver); answered by :class:`ObjectChunk`. A few are kept in flight."""
    op = "fetch_chunk"
    oid: bytes
    offset: int
    size: int


@message
class ObjectChunk(Message):
    """The answer to FetchChunk: ``data`` (out of band), or ``error`` when the object is not
    (any more) in the sender's store."""
    op = "object_chunk"
    oid: bytes
    offset: int
    data: Any
    error: str = ""


@message
class OfferObject(Message):
    """Node -> peer, instead of a PutObject with the contents: a task sent there needs this
    big object; pull it (FetchChunk) from node ``node_id``."""
    op = "offer_object"
    oid: bytes
    size: int
    node_id: str


@message
class PutChunk(Message):
    """Remote driver -> node: ``data`` goes at ``offset`` of the file an Alloc reserved. A
    nonzero ``req_id`` asks for a Reply (flow control, and where errors are reported); a
    PutObject(kind "shm") after the last chunk makes the object ready."""
    op = "put_chunk"
    req_id: int
    oid: bytes
    offset: int
    data: Any
