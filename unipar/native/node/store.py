"""The node's bookkeeping for large objects: one file each, in shared memory or spilled to disk.

Producers (driver or worker) ask the node where to write (:meth:`ObjectStore.alloc`), write the
file themselves (:func:`serialization.write_file`) and report it sealed. Readers map the file
read-only. The node alone decides placement, spills and deletes::

    alloc(oid, size) ──▶ fits under the limit?  ──yes──▶ path in the shm dir
                              │ no: spill least-recently-sealed shm files to the spill dir
                              │ still no: the new object goes straight to the spill dir
                              └ disk cannot take it either: StoreFullError

Deleting or moving a file never disturbs a reader that has it mapped (the mapping holds the
inode). A reader that looks up a path just before a spill retries with the new path.

Objects copied from another node (or uploaded by a remote driver) are allocated here the same
way and written chunk by chunk (:mod:`.transfer`): a pull writes ``<path>.tmp`` and renames it
when the last chunk is in; an entry is never spilled before it is sealed, and :meth:`free`
removes a partial file too. The store counts that traffic (:meth:`usage`). A pull is a producer
like any other (this node writes the file): it may write into a pooled segment, and its file
goes to the pool when freed.

**Segments are reused.** Writing a fresh shared-memory file costs a page fault and the zeroing
of every 4 KiB page, which halves the speed of a large put. So a freed object's file goes to a
pool (:class:`SegmentPool`) instead of being unlinked, and the next producer of about that size
gets it renamed to its object's name: its pages are there already, and the producer only copies
(serialization.write_file). A freed file is reused only when no process can still see it: a
reader's mapping outlives its ref (``get`` is zero-copy), and paths travel between clients too
(direct results, actor arguments), so every process on this machine that ever connected to the
node and still lives (``local_pids``) is checked in ``/proc/<pid>/maps``, off the event loop;
if any maps the file, it is unlinked as before. (A process that never connected, such as a
child forked by a task after mapping an argument, is not seen.) Nothing is written ahead: a
thread zeroing memory for a guessed next object competes with the producer for the same
memory bandwidth, and measured slower.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable

log = logging.getLogger("unipar.native")

DISK_HEADROOM = 256 * 1024 * 1024   # never fill the spill disk completely
PARTIAL = ".tmp"                    # suffix of a file still being written (producer or pull)


class StoreFullError(Exception):
    """Neither shared memory nor the spill directory can take an object of this size."""


POOL_MIN = 4 * 2**20      # smaller objects get a new file each: reuse would save little
POOL_SHARE = 4            # the pool holds at most this fraction of the store's limit ...
POOL_MAX = 4 * 2**30      # ... and at most this much
# A segment serves any object it holds, the smallest such first; a bigger one gives its tail back
# when the producer truncates it (serialization.write_file). Not only its own size: the tail's
# pages go back to the kernel warm, and the next new file gets them. Memory never touched
# before costs far more (on this project's VM, an 80 MB new file took 220 ms instead of 25
# once a pool held the big segments of 800 MB puts that could not serve it).
POOL_SLACK = 2**20        # a segment this much smaller serves too (the producer's estimate is
                          # a little over what it writes; the file grows by what is missing)
# A freed file still mapped somewhere is looked at again this many times, this often, before it
# is unlinked: the node tells a worker caching a mapping to let go (Forget) as it frees the
# object, and the worker's reader thread does within milliseconds (a pulled object read by a
# task was pooled one time in five without this).
RECHECKS, RECHECK_S = 10, 0.05
# Reuse needs to see every process's mappings; elsewhere (no /proc) files are never reused.
CAN_POOL = os.path.exists("/proc/self/maps")


@dataclass
class _File:
    path: str
    size: int
    in_shm: bool
    sealed: bool = False
    pooled: bool = False    # may be reused when freed: a local producer wrote it


class SegmentPool:
    """Shared-memory files whose pages were written before, ready to become objects.

    ``bytes`` counts what the pool holds or has promised (a freed file being checked), so the
    store's limit covers it. One daemon thread checks, off the node's event loop, that a freed
    file is mapped nowhere before pooling it. All methods are thread-safe."""

    def __init__(self, directory: str, capacity: int) -> None:
        self.dir = directory
        self.capacity = capacity
        self.segments: list[tuple[int, str]] = []   # (size, path)
        self.bytes = 0
        self._gone: set[int] = set()                # pids found dead by the thread
        self._names = itertools.count()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0                           # jobs queued or running
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def take(self, size: int, path: str) -> bool:
        """Rename the smallest segment that fits ``size`` to ``path``; False when none does."""
        with self._lock:
            fits = [seg for seg in self.segments if size - POOL_SLACK <= seg[0]]
            if not fits:
                return False
            seg = min(fits)
            self.segments.remove(seg)
            self.bytes -= seg[0]
        try:
            os.rename(seg[1], path)
        except OSError:
            return False
        return True

    def recycle(self, path: str, size: int, pids: set[int]) -> bool:
        """Take a freed object's file if there is room; the thread checks that none of
        ``pids`` maps it, then pools it (or unlinks it). False: the caller unlinks it."""
        if not self._reserve(size):
            return False
        self._submit((path, size, pids, 0))
        return True

    def shrink(self, need: int) -> None:
        """Unlink segments, largest first, until ``need`` bytes are given back."""
        with self._lock:
            self.segments.sort()
            gone = []
            while need > 0 and self.segments:
                size, path = self.segments.pop()
                self.bytes -= size
                need -= size
                gone.append(path)
        for path in gone:
            _unlink(path)

    def gone(self) -> set[int]:
        """Pids the thread found dead since the last call (no need to check them again)."""
        with self._lock:
            dead, self._gone = self._gone, set()
        return dead

    def _reserve(self, size: int) -> bool:
        with self._lock:
            if self.bytes + size > self.capacity:
                return False
            self.bytes += size
            return True

    def wait_idle(self, timeout: float) -> bool:
        """Block until the thread has done every job given so far (tests, shutdown)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def _submit(self, job: tuple[str, int, set[int], int]) -> None:
        with self._lock:
            self._pending += 1
        self._jobs.put(job)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="unipar-segments",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        later: list[tuple[float, tuple[str, int, set[int], int]]] = []   # rechecks, by time
        while True:
            try:
                wait = max(0.0, later[0][0] - time.monotonic()) if later else None
                path, size, pids, checks = self._jobs.get(timeout=wait)
            except queue.Empty:
                path, size, pids, checks = later.pop(0)[1]
            try:
                st = os.stat(path)
                key = (f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}", str(st.st_ino))
                if any(self._maps(pid, key) for pid in sorted(pids)):
                    if checks < RECHECKS:   # a reader told to let go (Forget) may not have yet
                        later.append((time.monotonic() + RECHECK_S, (path, size, pids,
                                                                     checks + 1)))
                        continue
                    _unlink(path)   # still seen somewhere: it must not change under a reader
                    path = ""
                else:
                    target = os.path.join(self.dir, f"pool-{next(self._names)}")
                    os.rename(path, target)
                    path = target
            except OSError as exc:   # the session is going away, or memory is short
                log.debug("segment pool: %s", exc)
                path = ""
            self._done(path, size)

    def _done(self, path: str, size: int) -> None:
        with self._lock:
            if path:
                self.segments.append((size, path))
            else:
                self.bytes -= size
            self._pending -= 1
            self._idle.notify_all()

    def _maps(self, pid: int, key: tuple[str, str]) -> bool:
        """Whether process ``pid`` maps the file whose (device, inode) is ``key``, as
        ``/proc/<pid>/maps`` writes them (by inode: a path may have been renamed, or reached
        through a link). True when that cannot be read."""
        try:
            with open(f"/proc/{pid}/maps", "rb") as f:
                lines = f.read().decode("ascii", "replace").splitlines()
        except (FileNotFoundError, ProcessLookupError):
            with self._lock:
                self._gone.add(pid)
            return False   # the process is gone, and its mappings with it
        except OSError:
            return True
        return any(tuple(line.split(maxsplit=5)[3:5]) == key for line in lines)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class ObjectStore:
    """Placement and accounting of object files; the files themselves are written by producers."""

    def __init__(self, shm_dir: str, spill_dir: str, limit: int, spill_limit: int | None = None) -> None:
        self.shm_dir = shm_dir
        self.spill_dir = spill_dir
        self.limit = limit
        self.spill_limit = spill_limit
        self.files: OrderedDict[bytes, _File] = OrderedDict()   # oldest first: spill order
        self.shm_used = 0
        self.spill_used = 0
        self.moved: list[bytes] = []   # spilled since the node last looked (it tells readers)
        # Chunked traffic (reported by usage()): objects and bytes pulled in from other nodes,
        # bytes served to them (or to remote drivers), pulls that failed half-way.
        self.traffic = {"pulled": 0, "pulled_bytes": 0, "served_bytes": 0, "pulls_failed": 0}
        # Pooled files wait beside the objects, not among them: the objects folder lists live
        # objects only (what tests and people count), and a rename between the two is free.
        pool_dir = os.path.join(os.path.dirname(os.path.abspath(shm_dir)), "pool")
        os.makedirs(pool_dir, exist_ok=True)
        self.pool = SegmentPool(pool_dir, min(limit // POOL_SHARE, POOL_MAX))
        # The pids of this machine's processes that may map object files (set by the node:
        # its local clients); with the producers and this process, every one ever seen.
        self.local_pids: Callable[[], Iterable[int]] = lambda: ()
        self._seen: set[int] = {os.getpid()}

    def alloc(self, oid: bytes, size: int, producer: int | None = None) -> str:
        """Reserve room for ``size`` bytes; returns the path the producer must write.

        ``producer``: the pid of the process on this machine that writes the file
        (serialization.write_file, or this node pulling it in chunks); it may get a pooled
        segment, already at ``path``, of about ``size`` bytes (the producer truncates it to
        what it wrote). Without it (a remote driver's upload) the path is free.

        Raises:
            StoreFullError: no room in memory or on disk.
        """
        name = oid.hex()
        if self.shm_used + self.pool.bytes + size > self.limit:
            self.pool.shrink(self.shm_used + self.pool.bytes + size - self.limit)
        if self.shm_used + size > self.limit:
            self._spill(self.shm_used + size - self.limit)
        if self.shm_used + size <= self.limit:
            entry = _File(os.path.join(self.shm_dir, name), size, True)
            self.shm_used += size
            if producer is not None and size >= POOL_MIN and CAN_POOL:
                entry.pooled = True
                self._seen.add(producer)
                if not self.pool.take(size, entry.path):
                    # None holds it: the new file needs as much fresh memory, and pages given
                    # back now are the warm ones the kernel hands out next (memory never
                    # touched costs far more on a VM), so the pool gives that much back.
                    self.pool.shrink(size)
        else:
            self._check_disk(size)
            entry = _File(os.path.join(self._spill_dir(), name), size, False)
            self.spill_used += size
        self.files[oid] = entry
        return entry.path

    def seal(self, oid: bytes, size: int) -> str | None:
        """The producer finished writing; returns the path (None if the oid was never allocated)."""
        entry = self.files.get(oid)
        if entry is None:
            return None
        entry.sealed = True
        if size != entry.size:   # the producer's estimate was off: keep the books right
            delta = size - entry.size
            entry.size = size
            if entry.in_shm:
                self.shm_used += delta
            else:
                self.spill_used += delta
        return entry.path

    def path(self, oid: bytes) -> str | None:
        entry = self.files.get(oid)
        return entry.path if entry is not None else None

    def unsealed(self, oid: bytes) -> tuple[str, int] | None:
        """``(path, size)`` of an allocated entry not yet sealed (being written), else None."""
        entry = self.files.get(oid)
        if entry is None or entry.sealed:
            return None
        return entry.path, entry.size

    def free(self, oid: bytes) -> None:
        """Forget the object; its file goes to the pool when it may be reused, else away."""
        entry = self.files.pop(oid, None)
        if entry is None:
            return
        if entry.in_shm:
            self.shm_used -= entry.size
        else:
            self.spill_used -= entry.size
        _unlink(entry.path + PARTIAL)
        if entry.in_shm and entry.sealed and entry.pooled:
            self._seen -= self.pool.gone()
            self._seen.update(self.local_pids())
            if self.pool.recycle(entry.path, entry.size, set(self._seen)):
                return
        _unlink(entry.path)

    def usage(self) -> dict[str, int]:
        return {"shm_used": self.shm_used, "spill_used": self.spill_used, "limit": self.limit,
                "objects": len(self.files), "pooled": self.pool.bytes, **self.traffic}

    def _spill_dir(self) -> str:
        os.makedirs(self.spill_dir, exist_ok=True)
        return self.spill_dir

    def _check_disk(self, size: int) -> None:
        if self.spill_limit is not None:
            if self.spill_used + size > self.spill_limit:
                raise StoreFullError(
                    f"object store full: {size} bytes do not fit in memory (limit "
                    f"{self.limit}, used {self.shm_used}) nor in the spill space (limit "
                    f"{self.spill_limit}, used {self.spill_used})")
            return
        free = shutil.disk_usage(os.path.dirname(self.spill_dir.rstrip("/")) or "/").free
        if size + DISK_HEADROOM > free:
            raise StoreFullError(
                f"object store full: {size} bytes do not fit in memory (limit {self.limit}, "
                f"used {self.shm_used}) and the spill disk has only {free} bytes free")

    def _spill(self, need: int) -> None:
        """Move sealed shm files to disk, oldest first, until ``need`` bytes are freed."""
        for oid, entry in list(self.files.items()):
            if need <= 0:
                return
            if not entry.in_shm or not entry.sealed:
                continue
            try:
                self._check_disk(entry.size)
            except StoreFullError:
                return
            target = os.path.join(self._spill_dir(), os.path.basename(entry.path))
            try:
                shutil.copyfile(entry.path, target + ".tmp")
                os.rename(target + ".tmp", target)
                os.unlink(entry.path)
            except OSError as exc:
                log.warning("could not spill %s: %s", entry.path, exc)
                return
            entry.path, entry.in_shm = target, False
            self.moved.append(oid)
            self.shm_used -= entry.size
            self.spill_used += entry.size
            need -= entry.size
