"""The native engine's wire protocol: every message, the frame format and the handshake.

This module is the protocol's table of contents: one immutable record class per message, each with its
``op`` name; servers map ``op -> handler``. docs/protocol.md describes the same thing in prose.

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
import operator
import struct
import threading
from typing import Any, ClassVar

import msgpack

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


# -- messages ----------------------------------------------------------------------------------

MESSAGES: dict[str, type["Message"]] = {}


class Message:
    """Base of every message: an immutable record with a unique ``op``.

    Subclasses list their fields as annotations (like a dataclass) and are registered with
    :func:`message`. A hand-rolled record instead of ``@dataclass(frozen=True, slots=True)``:
    same shape, but defining ~30 of them costs no ``exec`` at import time (worker start-up) and
    construction is cheaper on the hot path.
    """

    __slots__ = ()
    op: ClassVar[str]
    _names: ClassVar[tuple[str, ...]] = ()
    _values: ClassVar[Any] = staticmethod(lambda msg: ())   # all field values, in order
    _defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        names = self._names
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes {len(names)} fields, got {len(args)}")
        setter = object.__setattr__
        for name, value in zip(names, args):
            setter(self, name, value)
        for name in names[len(args):]:
            if name in kwargs:
                setter(self, name, kwargs.pop(name))
            elif name in self._defaults:
                setter(self, name, self._defaults[name])
            else:
                raise TypeError(f"{type(self).__name__} is missing field {name!r}")
        if kwargs:
            raise TypeError(f"{type(self).__name__} has no field(s) {sorted(kwargs)}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} messages are immutable")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            getattr(self, n) == getattr(other, n) for n in self._names)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r:.60}" for n in self._names)
        return f"{type(self).__name__}({fields})"


def message(cls: type) -> type:
    """Register a message class (decorator): slotted, immutable, unique ``op``."""
    annotations = cls.__dict__.get("__annotations__", {})
    names = tuple(n for n, t in annotations.items() if "ClassVar" not in str(t))
    defaults = {n: cls.__dict__[n] for n in names if n in cls.__dict__}
    namespace = {k: v for k, v in cls.__dict__.items()
                 if k not in names and k not in ("__dict__", "__weakref__")}
    namespace.update(__slots__=names, _names=names, _defaults=defaults)
    if len(names) == 1:
        one = operator.attrgetter(names[0])
        namespace["_values"] = staticmethod(lambda msg: (one(msg),))
    elif names:
        namespace["_values"] = staticmethod(operator.attrgetter(*names))
    if names:
        params = ", ".join(f"{n}=_defaults[{n!r}]" if n in defaults else n for n in names)
        body = "".join(f"    _set(self, {n!r}, {n})\n" for n in names)
        scope: dict[str, Any] = {"_set": object.__setattr__, "_defaults": defaults}
        exec(f"def __init__(self, {params}):\n{body}", scope)   # one small function per message
        namespace["__init__"] = scope["__init__"]
    record = type(cls.__name__, cls.__bases__, namespace)
    if record.op in MESSAGES:
        raise ValueError(f"duplicate op {record.op!r}")
    MESSAGES[record.op] = record
    return record


# Objects: ``kind`` is "inline" (payload holds the packed value), "shm" (path names a file in
# the store), or "error" (payload holds a packed exception). ``contained`` lists the object ids
# of refs pickled inside the value: they live as long as it does.

@message
class Hello(Message):
    op = "hello"
    role: str                 # "driver", "worker" or "actor"
    worker_id: str
    pid: int


@message
class HelloOk(Message):
    op = "hello_ok"
    client_id: int
    node_id: str
    session_dir: str
    inline_max: int
    head_address: str


@message
class Reply(Message):
    """The answer to any request that carries a ``req_id``; ``error`` is a message or ""."""
    op = "reply"
    req_id: int
    value: Any
    error: str = ""
    error_kind: str = ""


@message
class RegisterFunction(Message):
    op = "register_function"
    key: str
    blob: Any


@message
class SubmitTask(Message):
    op = "submit_task"
    task_id: bytes
    fn_key: str
    name: str
    args: Any
    deps: list
    contained: list
    return_ids: list
    resources: dict
    max_retries: int


@message
class RunTask(Message):
    """Node -> worker. ``deps`` holds ``[oid, kind, payload, path]`` for each dependency."""
    op = "run_task"
    task_id: bytes
    fn_key: str
    fn_blob: Any
    name: str
    args: Any
    deps: list
    return_ids: list
    gpu_ids: list


@message
class TaskDone(Message):
    """Worker -> node (or client). ``status``: "ok", "error", "retry", or "returned" (a task
    given back unstarted, see TakeBack); results are ``[oid, kind, payload, path, size,
    contained]``."""
    op = "task_done"
    task_id: bytes
    status: str
    results: list


# The direct path (docs/architecture.md, "The path of one task"): a client leases a worker from
# its node and pushes tasks to it over a connection of their own; the node sees only the lease.

@message
class RequestLease(Message):
    """Client -> node: a worker with ``resources`` free, for tasks of that shape."""
    op = "request_lease"
    lease_id: bytes
    resources: dict
    label: str = ""          # what waits for it, for the "waited for resources" warning


@message
class LeaseGranted(Message):
    """Node -> client: connect to ``address`` (the worker's own socket) and push tasks."""
    op = "lease_granted"
    lease_id: bytes
    worker_id: str
    address: str
    pid: int
    gpu_ids: list


@message
class LeaseRefused(Message):
    """Node -> client: no lease now (another node may have room): submit through the node."""
    op = "lease_refused"
    lease_id: bytes
    reason: str


@message
class ReturnLease(Message):
    """Client -> node: the lease (granted or still queued) is no longer needed. ``kill``:
    stop its worker first (a forced cancel of the task it runs)."""
    op = "return_lease"
    lease_id: bytes
    kill: bool = False


@message
class ActorAddress(Message):
    """Client -> node, a request: where to push calls to an actor directly. Answered once the
    actor is alive (or dead). Reply.value: ``{"state": "alive", "worker_id", "address",
    "pid", "restarts", "max_task_retries", "class_name"}``, ``{"state": "dead", "death":
    packed error}``, or ``{"state": "node"}`` (not on this node: call it through the node)."""
    op = "actor_address"
    req_id: int
    actor_id: bytes


@message
class Ping(Message):
    """A request answered with an empty Reply once everything sent before it was handled."""
    op = "ping"
    req_id: int


@message
class Attach(Message):
    """Client -> leased worker, first on a direct connection: who is pushing tasks (its
    client id at the node, so big results can be registered on its behalf)."""
    op = "attach"
    client_id: int


@message
class TakeBack(Message):
    """Client -> leased worker: give back these pushed tasks unless they have started (a
    slot elsewhere is free). Each one given back is answered ``TaskDone(task_id,
    "returned", [])``; one that started is answered as usual when it ends."""
    op = "take_back"
    task_ids: list


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
class PutObject(Message):
    op = "put_object"
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
class Blocked(Message):
    op = "blocked"


@message
class Unblocked(Message):
    op = "unblocked"


@message
class Cancel(Message):
    """Cancel the task producing ``oid``; ``recursive`` also cancels the tasks it submitted."""
    op = "cancel"
    oid: bytes
    force: bool
    recursive: bool = True


@message
class CancelTask(Message):
    """Node -> worker: raise KeyboardInterrupt in the task if it is still running."""
    op = "cancel_task"
    task_id: bytes


@message
class Forget(Message):
    """Node -> worker: these objects were freed or moved; drop cached mappings of them."""
    op = "forget"
    oids: list


@message
class CreateActor(Message):
    op = "create_actor"
    actor_id: bytes
    class_key: str
    class_name: str
    args: Any
    deps: list
    contained: list
    resources: dict
    max_restarts: int
    max_task_retries: int
    concurrency: int
    is_async: bool
    name: str
    detached: bool = False   # lifetime="detached": it outlives the driver that created it


@message
class InitActor(Message):
    op = "init_actor"
    actor_id: bytes
    class_key: str
    class_blob: Any
    class_name: str
    args: Any
    deps: list
    concurrency: int
    is_async: bool
    gpu_ids: list


@message
class ActorReady(Message):
    op = "actor_ready"
    actor_id: bytes
    error: Any               # a packed exception when the constructor raised, else None


@message
class CallActor(Message):
    op = "call_actor"
    actor_id: bytes
    task_id: bytes
    method: str
    args: Any
    deps: list
    contained: list
    return_ids: list


@message
class RunActorTask(Message):
    op = "run_actor_task"
    task_id: bytes
    method: str
    args: Any
    deps: list
    return_ids: list


@message
class KillActor(Message):
    op = "kill_actor"
    req_id: int
    actor_id: bytes
    no_restart: bool


@message
class NodeInfo(Message):
    """Ask a node for its resources: Reply.value is ``{"total": {...}, "available": {...}}``."""
    op = "node_info"
    req_id: int


@message
class Log(Message):
    """Lines a worker printed, already prefixed with ``(name pid=N) ``."""
    op = "log"
    stream: str              # "stdout" or "stderr"
    text: str


@message
class Shutdown(Message):
    op = "shutdown"


# -- head --------------------------------------------------------------------------------------

@message
class RegisterNode(Message):
    op = "register_node"
    req_id: int
    node_id: str
    address: str
    resources: dict


@message
class ListNodes(Message):
    op = "list_nodes"
    req_id: int


@message
class RegisterName(Message):
    """Reply.value: ``[actor_id, meta, created]``; an existing actor is returned when the name is
    taken and ``get_if_exists``, else Reply.error says the name is taken."""
    op = "register_name"
    req_id: int
    name: str
    actor_id: bytes
    meta: Any
    get_if_exists: bool


@message
class LookupName(Message):
    op = "lookup_name"
    req_id: int
    name: str


@message
class UnregisterName(Message):
    op = "unregister_name"
    req_id: int
    name: str
    actor_id: bytes


@message
class NodeStatus(Message):
    """A node's free resources, sent to the head about once a second (for cluster views)."""
    op = "node_status"
    node_id: str
    available: dict


@message
class ActorLocation(Message):
    """A node hosts this actor (so any node can route calls from handles it receives)."""
    op = "actor_location"
    actor_id: bytes
    node_id: str


@message
class LookupActor(Message):
    """Reply.value: the id of the node hosting the actor, or None."""
    op = "lookup_actor"
    req_id: int
    actor_id: bytes


# -- node failure (issue #4: a node declared dead is told so) ----------------------------------

@message
class NodeDeclaredDead(Message):
    """Head -> node: you were declared dead (``reason``); the cluster has retried or failed
    your work and dropped you. The node stops its workers and exits; a node started again
    joins as a new node."""
    op = "node_declared_dead"
    node_id: str
    reason: str


# -- chunked transfer (issue #4 point 4: big objects stream in chunks; see transfer.py) -------
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


# -- actor fail-over (issue #4 point 5: actors restart on another node; see node_failover.py) --
# ActorLocation with node_id "" means the actor is dead for good (LookupActor then answers "").

@message
class ActorOwner(Message):
    """Node -> head: node ``node_id`` created this actor on another node and re-creates it if
    that node dies (it has restarts left), so its name outlives its node; the owner frees the
    name (UnregisterName) if it gives up."""
    op = "actor_owner"
    actor_id: bytes
    node_id: str


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


# -- observability (issue #17: see what the cluster does; docs/observability.md) ---------------

@message
class TaskEvents(Message):
    """Worker -> node, batched (at most every ~0.1 s, off the hot path): tasks and actor
    calls that started or ended here, whoever sent them. Each event is ``["start", task_id,
    time, name, kind]`` (kind "task" or "actor_call") or ``["end", task_id, time, status,
    error]`` (status as in TaskDone; error: the failure's text and traceback, or "")."""
    op = "task_events"
    events: list


@message
class QueueReport(Message):
    """Client -> node, when it changed (at most every ~0.1 s): tasks this client holds
    waiting for a worker of its node, as ``[[name, count], ...]`` (one entry per shape)."""
    op = "queue_report"
    queued: list


@message
class ListTasks(Message):
    """Reply.value: the node's tasks, newest first: running, queued, then finished ones (at
    most ``limit``), filtered by ``name`` (substring) and ``state`` ("" for any)."""
    op = "list_tasks"
    req_id: int
    limit: int
    name: str = ""
    state: str = ""


@message
class Timeline(Message):
    """Reply.value: one ``{"task_id", "name", "kind", "worker_id", "pid", "start", "end",
    "status"}`` per task that ran on this node since ``since`` (a Unix time)."""
    op = "timeline"
    req_id: int
    since: float


@message
class ListLogs(Message):
    """Reply.value: ``{"log_dir", "files": [{"name", "size", "mtime", "role", "pid",
    "worker_id", "actor_id", "class_name", "actor_name"}]}`` for this node's log files."""
    op = "list_logs"
    req_id: int


@message
class ReadLog(Message):
    """Reply.value: ``{"data": bytes, "offset", "size"}``: at most ``length`` bytes of the
    log file ``name`` (one listed by ListLogs) from ``offset`` (negative: from the end)."""
    op = "read_log"
    req_id: int
    name: str
    offset: int
    length: int


# -- placement groups (issue #14 point 3; docs/scheduling.md) ---------------------------------
# The head owns the table and decides where bundles go (node/placement.py: place_bundles); it
# reserves them all or none: ReserveBundles to each chosen node, and ReleaseBundles to those
# that said yes when any said no.

@message
class CreatePlacementGroup(Message):
    """Driver -> head. Reply.value: True; error kind "value" when ``name`` is taken.
    ``bundles``: one ``{resource: amount}`` per bundle; ``pg_id``: 16 hex digits."""
    op = "create_placement_group"
    req_id: int
    pg_id: str
    bundles: list
    strategy: str
    name: str


@message
class RemovePlacementGroup(Message):
    """Driver -> head: release the group's bundles (idempotent). Reply.value: True."""
    op = "remove_placement_group"
    req_id: int
    pg_id: str


@message
class ListPlacementGroups(Message):
    """Reply.value: one row per group (``placement_group_id``, ``name``, ``strategy``,
    ``state``, ``bundles`` {index: resources}, ``bundles_to_node_id``, ``error``)."""
    op = "list_placement_groups"
    req_id: int


@message
class ReserveBundles(Message):
    """Head -> node: reserve ``bundles`` (``[[index, {resource: amount}], ...]``) of group
    ``pg_id`` out of what is free now. Reply.value (node -> head): True, or False when they do
    not fit now (nothing is reserved then)."""
    op = "reserve_bundles"
    req_id: int
    pg_id: str
    bundles: list


@message
class ReleaseBundles(Message):
    """Head -> node: give back every bundle of group ``pg_id`` held here (idempotent)."""
    op = "release_bundles"
    pg_id: str


# Jobs (unipar job ...): a driver the head runs with the working dir the submitter uploaded.
# Job rows (Reply values) are dicts: job_id, status (RUNNING, SUCCEEDED, FAILED, STOPPED),
# entrypoint, exit_code, message, pid, submitted_at, start_time, end_time (see head/jobs.py).

@message
class SubmitJob(Message):
    """Client -> head: run ``entrypoint`` (argv) in the working dir packed as ``package`` (a
    zip named by ``digest``, from runtime_env.pack; "" and None: no working dir).
    Reply.value: the new job's row, or an error saying what was wrong."""
    op = "submit_job"
    req_id: int
    entrypoint: list
    digest: str
    package: Any


@message
class ListJobs(Message):
    """Client -> head. Reply.value: every job's row ("" job_id), or [that one job's row]
    (an unknown id is an error)."""
    op = "list_jobs"
    req_id: int
    job_id: str = ""


@message
class JobLogs(Message):
    """Client -> head: the job's output from byte ``offset`` on (at most a chunk).
    Reply.value: [bytes, the offset after them, the job's row]."""
    op = "job_logs"
    req_id: int
    job_id: str
    offset: int


@message
class StopJob(Message):
    """Client -> head: end the job's driver and its process group (SIGTERM, then SIGKILL).
    Reply.value: the job's row (a job already finished is left as it was)."""
    op = "stop_job"
    req_id: int
    job_id: str


# Streaming generators (num_returns="streaming"): each value a task or actor call yields goes
# to the client that submitted it while the task runs (worker/streaming.py, client/streams.py).

@message
class StreamItem(Message):
    """Worker -> client (directly, or through the node, which passes it to client ``owner``):
    value number ``index`` of stream ``stream_id``; ``result`` is a result record as in
    TaskDone (big values are stored at the node for ``owner`` first). ``index`` -1 (result
    None): the producer ended; only the node needs it (to forget the stream's route)."""
    op = "stream_item"
    stream_id: bytes
    owner: int
    index: int
    result: Any


@message
class StreamAck(Message):
    """Client -> worker (the way its items came): ``consumed`` values were taken, so the
    producer may run up to ``consumed`` + its backpressure bound; -1: stop producing (the
    stream was cancelled or dropped)."""
    op = "stream_ack"
    stream_id: bytes
    consumed: int
