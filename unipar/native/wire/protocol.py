"""The native engine's wire protocol: every message, the frame format and the handshake.

This module is the protocol's table of contents: it re-exports every message (one immutable record
class each, with its ``op`` name), which live by area in ``wire/messages/`` (see its
``__init__``); servers map ``op -> handler``. docs/protocol.md describes the same thing in prose.

Frame (after the handshake)::

    u32 length of the rest | u16 n | u32 len_1 .. len_n | msgpack header | buffer_1 .. buffer_n

The header is ``[op, field_1, field_2, ...]`` in the class's field order. A field value that
is a :class:`Blob` travels out of band as one of the buffers (msgpack ext type 1 holding its
index), so large payloads are never copied into the msgpack header and arrive as memoryviews
over the received frame. The length is checked against a limit before anything is allocated.

Handshake (raw bytes, nothing is unpickled or even msgpack-decoded before it succeeds)::

    server -> client   b"UNIPAR" | u16 PROTOCOL_VERSION | 32-byte nonce_s
    client -> server   HMAC-SHA256(secret, b"client" + nonce_s) | 32-byte nonce_c
    server -> client   HMAC-SHA256(secret, b"server" + nonce_c)

Both sides prove they know the cluster secret; the secret itself never crosses the wire.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import threading
from typing import Any

import msgpack

from .messages.base import MESSAGES, Message, message
from .messages.connection import (
    Hello, HelloOk, Reply, Ping, Shutdown,
)
from .messages.tasks import (
    RegisterFunction, SubmitTask, RunTask, TaskDone, Blocked, Unblocked, Cancel, CancelTask,
    RequestLease, LeaseGranted, LeaseRefused, ReturnLease, Attach, TakeBack, StreamItem, StreamAck,
)
from .messages.objects import (
    PutObject, PutFor, Alloc, Subscribe, ObjectReady, RefUpdates, Forget, FetchChunk, ObjectChunk,
    OfferObject, PutChunk,
)
from .messages.actors import (
    CreateActor, InitActor, ActorReady, CallActor, RunActorTask, KillActor, ActorAddress,
)
from .messages.cluster import (
    RegisterNode, ListNodes, NodeInfo, NodeStatus, NodeDeclaredDead, RegisterName, LookupName,
    UnregisterName, ActorLocation, LookupActor, ActorOwner, CreatePlacementGroup,
    RemovePlacementGroup, ListPlacementGroups, ReserveBundles, ReleaseBundles,
)
from .messages.observability import (
    Log, TaskEvents, QueueReport, ListTasks, Timeline, ListLogs, ReadLog,
)
from .messages.jobs import (
    SubmitJob, ListJobs, JobLogs, StopJob,
)
from .messages.runtime_env import (
    FindPackages, KeepPackages, PackagesKept, LocatePackages,
)

__all__ = [
    "PROTOCOL_VERSION", "MAGIC", "NONCE_SIZE", "DIGEST_SIZE", "SERVER_HELLO_SIZE",
    "CLIENT_PROOF_SIZE", "DEFAULT_MAX_FRAME", "BLOB_MIN", "ProtocolError", "AuthenticationError",
    "Blob", "blob", "server_hello", "client_proof", "check_client_proof", "check_server_proof",
    "MESSAGES", "Message", "message", "encode", "frame_length", "decode",
    # messages, by module
    "Hello", "HelloOk", "Reply", "Ping", "Shutdown",
    "RegisterFunction", "SubmitTask", "RunTask", "TaskDone", "Blocked", "Unblocked", "Cancel",
    "CancelTask", "RequestLease", "LeaseGranted", "LeaseRefused", "ReturnLease", "Attach",
    "TakeBack", "StreamItem", "StreamAck",
    "PutObject", "PutFor", "Alloc", "Subscribe", "ObjectReady", "RefUpdates", "Forget",
    "FetchChunk", "ObjectChunk", "OfferObject", "PutChunk",
    "CreateActor", "InitActor", "ActorReady", "CallActor", "RunActorTask", "KillActor",
    "ActorAddress",
    "RegisterNode", "ListNodes", "NodeInfo", "NodeStatus", "NodeDeclaredDead", "RegisterName",
    "LookupName", "UnregisterName", "ActorLocation", "LookupActor", "ActorOwner",
    "CreatePlacementGroup", "RemovePlacementGroup", "ListPlacementGroups", "ReserveBundles",
    "ReleaseBundles",
    "Log", "TaskEvents", "QueueReport", "ListTasks", "Timeline", "ListLogs", "ReadLog",
    "SubmitJob", "ListJobs", "JobLogs", "StopJob",
    "FindPackages", "KeepPackages", "PackagesKept", "LocatePackages",
]

PROTOCOL_VERSION = 3
MAGIC = b"UNIPAR"
NONCE_SIZE = 32
DIGEST_SIZE = 32
SERVER_HELLO_SIZE = len(MAGIC) + 2 + NONCE_SIZE
CLIENT_PROOF_SIZE = DIGEST_SIZE + NONCE_SIZE
DEFAULT_MAX_FRAME = 512 * 1024 * 1024   # large values travel through the object store
BLOB_MIN = 1024                          # smaller payloads ride inside the header

_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")
_EXT_BLOB = 1
_NO_BUFFERS = b"\0\0"


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame or message; the connection is closed."""


class AuthenticationError(ProtocolError):
    """The peer does not know the cluster secret (or speaks another protocol version)."""


class Blob:
    """A bytes-like payload that travels out of band (as a frame buffer, not in msgpack)."""

    __slots__ = ("data",)

    def __init__(self, data: Any) -> None:
        self.data = data


def blob(data: Any) -> Any:
    """``data`` wrapped for out-of-band travel when it is big enough to be worth it."""
    if data is None or len(data) < BLOB_MIN:
        return bytes(data) if isinstance(data, memoryview) else data
    return Blob(data)


# -- handshake ---------------------------------------------------------------------------------

def server_hello(nonce: bytes) -> bytes:
    return MAGIC + _U16.pack(PROTOCOL_VERSION) + nonce


def client_proof(secret: bytes, hello: bytes, nonce_c: bytes) -> bytes:
    """The client's answer to ``hello``; raises AuthenticationError on a foreign server."""
    if len(hello) != SERVER_HELLO_SIZE or not hello.startswith(MAGIC):
        raise AuthenticationError("the server is not a unipar daemon")
    (version,) = _U16.unpack_from(hello, len(MAGIC))
    if version != PROTOCOL_VERSION:
        raise AuthenticationError(f"protocol version {version} differs from ours ({PROTOCOL_VERSION}); "
                                  "driver and cluster must run the same unipar version")
    nonce_s = hello[len(MAGIC) + 2:]
    return hmac.new(secret, b"client" + nonce_s, hashlib.sha256).digest() + nonce_c


def check_client_proof(secret: bytes, nonce_s: bytes, proof: bytes) -> bytes:
    """Verify the client's proof; returns the server's answer to the client's nonce."""
    expect = hmac.new(secret, b"client" + nonce_s, hashlib.sha256).digest()
    if len(proof) != CLIENT_PROOF_SIZE or not hmac.compare_digest(expect, proof[:DIGEST_SIZE]):
        raise AuthenticationError("wrong cluster secret")
    return hmac.new(secret, b"server" + proof[DIGEST_SIZE:], hashlib.sha256).digest()


def check_server_proof(secret: bytes, nonce_c: bytes, proof: bytes) -> None:
    expect = hmac.new(secret, b"server" + nonce_c, hashlib.sha256).digest()
    if not hmac.compare_digest(expect, proof):
        raise AuthenticationError("the server does not know the cluster secret")


# -- frames ------------------------------------------------------------------------------------

_tls = threading.local()   # per thread: a reusable Packer and the frame being encoded


def _default(obj: Any) -> Any:
    if isinstance(obj, Blob):
        buffers = _tls.buffers
        buffers.append(obj.data)
        return msgpack.ExtType(_EXT_BLOB, _U32.pack(len(buffers) - 1))
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"cannot encode {type(obj).__name__} in a message")


def _packer() -> msgpack.Packer:
    packer = getattr(_tls, "packer", None)
    if packer is None:
        packer = _tls.packer = msgpack.Packer(default=_default, use_bin_type=True)
    return packer


def encode(msg: Message) -> list[Any]:
    """The frame for ``msg`` as a list of bytes-like parts (write them in order, unjoined)."""
    buffers: list[Any] = []
    _tls.buffers = buffers
    header = _packer().pack([msg.op, *msg._values(msg)])
    if not buffers:
        return [_U32.pack(2 + len(header)) + _NO_BUFFERS + header]
    sizes = [memoryview(b).nbytes for b in buffers]
    prefix = _U16.pack(len(buffers)) + b"".join(_U32.pack(s) for s in sizes)
    total = len(prefix) + len(header) + sum(sizes)
    return [_U32.pack(total) + prefix + header, *buffers]


def frame_length(prefix: bytes | memoryview, max_frame: int) -> int:
    """The body length announced by a 4-byte prefix, checked against ``max_frame``."""
    (n,) = _U32.unpack_from(prefix)
    if n > max_frame:
        raise ProtocolError(f"frame of {n} bytes exceeds the limit of {max_frame}")
    if n < 2:
        raise ProtocolError("frame too short")
    return n


def _no_ext(code: int, data: bytes) -> Any:
    raise ProtocolError(f"ext type {code} without out-of-band buffers")


def decode(body: memoryview) -> Message:
    """The message in one frame body (without its length prefix). Blobs come back as
    memoryviews over ``body``."""
    try:
        (nbuf,) = _U16.unpack_from(body, 0)
        if nbuf == 0:   # most messages: no out-of-band buffers
            items = msgpack.unpackb(body[2:], ext_hook=_no_ext, raw=False,
                                    strict_map_key=False, use_list=True)
            return MESSAGES[items[0]](*items[1:])
        pos = 2 + 4 * nbuf
        sizes = [_U32.unpack_from(body, 2 + 4 * i)[0] for i in range(nbuf)]
        header_len = len(body) - pos - sum(sizes)
        if header_len <= 0:
            raise ProtocolError("frame buffers exceed the frame")
        buffers: list[memoryview] = []
        at = pos + header_len
        for size in sizes:
            buffers.append(body[at:at + size])
            at += size

        def ext_hook(code: int, data: bytes) -> Any:
            if code != _EXT_BLOB:
                raise ProtocolError(f"unknown ext type {code}")
            return buffers[_U32.unpack(data)[0]]

        items = msgpack.unpackb(body[pos:pos + header_len], ext_hook=ext_hook, raw=False,
                                strict_map_key=False, use_list=True)
        cls = MESSAGES[items[0]]
        return cls(*items[1:])
    except ProtocolError:
        raise
    except Exception as exc:  # any malformed header: bad msgpack, unknown op, wrong arity
        raise ProtocolError(f"malformed frame: {type(exc).__name__}: {exc}") from None
