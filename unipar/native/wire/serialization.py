"""Values to bytes and back: pickle protocol 5 with out-of-band buffers, and object files.

A value is pickled with cloudpickle; every pickle-5 buffer (numpy arrays, bytes-like objects
that support it) is kept out of band. Small values are *packed* into one bytes object that
travels inline in messages; large ones are written to one file per object in the node's store
and *mapped* read-only by readers, so their buffers are never copied::

    packed / file layout:  b"UPK1" | u32 n | u64 len_0 .. len_n | pad to 64 | pickle | pad | buf_1 | pad | ...

(buffer 0 is the pickle stream itself; every part starts 64-byte aligned, which numpy likes.)

While pickling, every native ref met is recorded (:func:`collect_refs`): the object that contains
them keeps them alive.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import pickle
import struct
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Iterator

import cloudpickle

MAGIC = b"UPK1"
ALIGN = 64
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")

_local = threading.local()


@contextmanager
def collect_refs() -> Iterator[list[bytes]]:
    """Within the block, object ids of refs being pickled are appended to the yielded list."""
    previous = getattr(_local, "refs", None)
    found: list[bytes] = []
    _local.refs = found
    try:
        yield found
    finally:
        _local.refs = previous


def note_ref(oid: bytes) -> None:
    """Called by a ref's ``__reduce__``: record it when a collection is active."""
    found = getattr(_local, "refs", None)
    if found is not None:
        found.append(oid)


_PLAIN = (type(None), bool, int, float, str, bytes)


def _is_plain(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is built only of types the standard pickler handles exactly as
    cloudpickle does (no functions or classes that may need pickling by value)."""
    kind = type(value)
    if kind in _PLAIN or kind is DepSlot:
        return True
    if depth > 2:
        return False
    if kind is tuple or kind is list:
        if len(value) > 16:
            return False
        for item in value:
            if type(item) not in _PLAIN and not _is_plain(item, depth + 1):
                return False
        return True
    if kind is dict:
        if len(value) > 16:
            return False
        for key, item in value.items():
            if type(key) is not str or (type(item) not in _PLAIN
                                        and not _is_plain(item, depth + 1)):
                return False
        return True
    return False


def dumps(value: Any) -> tuple[bytes, list[pickle.PickleBuffer], list[bytes]]:
    """``(pickle stream, out-of-band buffers, ids of refs inside)``.

    Raises:
        TypeError: the value cannot be pickled (the message says so).
    """
    if _is_plain(value):   # the hot path (no-op tasks, small scalars): the C pickler alone
        return pickle.dumps(value, protocol=5), [], []
    buffers: list[pickle.PickleBuffer] = []
    with collect_refs() as refs:
        try:
            data = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
        except Exception as exc:
            raise TypeError(f"could not serialize {type(value).__name__}: {exc} "
                            "(values sent to tasks must be picklable)") from exc
    return data, buffers, list(dict.fromkeys(refs))


def loads(data: Any, buffers: list[Any]) -> Any:
    return pickle.loads(data, buffers=buffers)


def _pad(n: int) -> int:
    return (-n) % ALIGN


def _layout(parts: list[memoryview]) -> tuple[bytes, list[int]]:
    header = MAGIC + _U32.pack(len(parts)) + b"".join(_U64.pack(p.nbytes) for p in parts)
    header += b"\0" * _pad(len(header))
    offsets, at = [], len(header)
    for p in parts:
        offsets.append(at)
        at += p.nbytes + _pad(p.nbytes)
    return header, offsets


def payload_size(data: bytes, buffers: list[Any]) -> int:
    """Bytes of the pickle stream plus its out-of-band buffers (before padding)."""
    return len(data) + sum(memoryview(b).nbytes for b in buffers)


def _views(data: bytes, buffers: list[Any]) -> list[memoryview]:
    views = [memoryview(data)]
    for b in buffers:
        view = b.raw() if isinstance(b, pickle.PickleBuffer) else memoryview(b)
        views.append(view.cast("B") if view.format != "B" or view.ndim != 1 else view)
    return views


_ONE_PART = MAGIC + _U32.pack(1)
_ONE_PAD = b"\0" * _pad(len(_ONE_PART) + 8)
_ONE_HEADER = len(_ONE_PART) + 8 + len(_ONE_PAD)


def pack(data: bytes, buffers: list[Any]) -> bytes:
    """One bytes object holding the pickle stream and its buffers (for small values)."""
    if not buffers:   # the common case, laid out the same way without the general loop
        return b"".join((_ONE_PART, _U64.pack(len(data)), _ONE_PAD, data,
                         b"\0" * _pad(len(data))))
    parts = _views(data, buffers)
    header, _ = _layout(parts)
    out = bytearray(header)
    for p in parts:
        out += p
        out += b"\0" * _pad(p.nbytes)
    return bytes(out)


def unpack(packed: Any) -> tuple[memoryview, list[memoryview]]:
    """The pickle stream and buffers inside ``packed``, as views (nothing is copied)."""
    view = memoryview(packed)
    if view[:4] != MAGIC:
        raise ValueError("not a packed unipar object")
    (n,) = _U32.unpack_from(view, 4)
    if n == 1:
        (size,) = _U64.unpack_from(view, 8)
        return view[_ONE_HEADER:_ONE_HEADER + size], []
    sizes = [_U64.unpack_from(view, 8 + 8 * i)[0] for i in range(n)]
    at = 8 + 8 * n
    at += _pad(at)
    parts = []
    for size in sizes:
        parts.append(view[at:at + size])
        at += size + _pad(size)
    return parts[0], parts[1:]


def pack_error(exc: BaseException) -> bytes:
    """An exception packed as an object value (``get`` raises it)."""
    data, buffers, _ = dumps(exc)
    return pack(data, buffers)


def load_packed(packed: Any) -> Any:
    data, buffers = unpack(packed)
    return loads(data, buffers)


def write_file(path: str, data: bytes, buffers: list[Any]) -> int:
    """Write one object file (same layout as :func:`pack`); returns its size in bytes.

    One copy either way. When ``path`` already exists it is a segment from the node's pool
    (node/store.py): memory that was written before, so its pages need no fault and no
    zeroing; it is mapped (pre-faulted) and the buffers are copied in, large ones by several
    threads at once. Otherwise the file is new: ``write`` fills it (the kernel allocates and
    copies page by page, faster than faulting a fresh mapping), under a temporary name that
    is renamed at the end. No reader sees half a file: readers learn the path only once the
    producer reports the object sealed.
    """
    parts = _views(data, buffers)
    header, offsets = _layout(parts)
    size = offsets[-1] + parts[-1].nbytes + _pad(parts[-1].nbytes)
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return _write_new(path, header, parts)
    try:
        if os.fstat(fd).st_size != size:   # a larger segment gives its tail back
            os.ftruncate(fd, size)
        with mmap.mmap(fd, size, flags=mmap.MAP_SHARED | _POPULATE) as mapped:
            mapped[:len(header)] = header
            _copy_parts(mapped, offsets, parts)
    finally:
        os.close(fd)
    return size


def _write_new(path: str, header: bytes, parts: list[memoryview]) -> int:
    tmp = path + ".tmp"
    size = 0
    with open(tmp, "wb", buffering=0) as f:
        f.write(header)
        size += len(header)
        for p in parts:
            f.write(p)
            pad = _pad(p.nbytes)
            if pad:
                f.write(b"\0" * pad)
            size += p.nbytes + pad
    os.rename(tmp, path)
    return size


# Copies of at least this many bytes are split over threads: one core's memcpy does not use all
# of the memory bandwidth (Ray copies with several threads too).
PARALLEL_MIN = 8 * 2**20
_COPY_THREADS = max(1, min(4, os.cpu_count() or 1))
_copier: tuple[int, ThreadPoolExecutor] | None = None   # (pid, ThreadPoolExecutor): a forked child makes its own


def _copy_parts(mapped: mmap.mmap, offsets: list[int], parts: list[memoryview]) -> None:
    """Copy ``parts`` to their ``offsets`` in ``mapped``: small ones here, large ones in
    pieces on threads (ctypes.memmove releases the GIL; numpy gives a read-only buffer's
    address). Without numpy loaded, one thread copies everything."""
    numpy = sys.modules.get("numpy")
    big = [(at, p) for at, p in zip(offsets, parts) if p.nbytes >= PARALLEL_MIN]
    for at, part in zip(offsets, parts):
        if part.nbytes and (numpy is None or part.nbytes < PARALLEL_MIN):
            mapped[at:at + part.nbytes] = part
    if numpy is None or not big:
        return
    dst = numpy.frombuffer(mapped, dtype=numpy.uint8)
    try:
        base = dst.ctypes.data
        jobs = []
        for at, part in big:
            src = numpy.frombuffer(part, dtype=numpy.uint8)
            step = -(-part.nbytes // _COPY_THREADS)
            jobs += [(base + at + i, src.ctypes.data + i, min(step, part.nbytes - i), src)
                     for i in range(0, part.nbytes, step)]
        for future in [_pool().submit(ctypes.memmove, d, s, n) for d, s, n, _ in jobs]:
            future.result()
    finally:
        del dst   # the mapping closes next: no view of it may remain


def _pool() -> ThreadPoolExecutor:
    global _copier
    if _copier is None or _copier[0] != os.getpid():
        _copier = (os.getpid(), ThreadPoolExecutor(_COPY_THREADS, "unipar-copy"))
    return _copier[1]


_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


def map_file(path: str, populate: bool = False) -> tuple[memoryview, list[memoryview]]:
    """Map an object file read-only; the views keep the mapping alive (and unlinking the file
    later does not disturb them).

    ``populate`` pre-faults every page in one call: slower to map, but a task that reads all of
    its argument then takes no page fault per 4 KiB (about half the total time for 100 MiB).
    ``get`` in a driver does not populate: mapping stays O(1), whatever the size.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        flags = mmap.MAP_SHARED | (_POPULATE if populate else 0)
        mapped = mmap.mmap(fd, size, flags=flags, prot=mmap.PROT_READ) if size else b""
    finally:
        os.close(fd)
    return unpack(mapped)


def load_file(path: str, populate: bool = False) -> Any:
    data, buffers = map_file(path, populate)
    return loads(data, buffers)


class DepSlot:
    """Stands in a task's arguments for the value of its ``index``-th dependency."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self) -> tuple[Any, ...]:
        return (DepSlot, (self.index,))


def fill_slots(args: tuple, kwargs: dict, values: list[Any]) -> tuple[tuple, dict]:
    """Replace top-level :class:`DepSlot` entries by their dependency's value."""
    if not values:
        return args, kwargs

    def one(v: Any) -> Any:
        return values[v.index] if type(v) is DepSlot else v
    return tuple(one(a) for a in args), {k: one(v) for k, v in kwargs.items()}
