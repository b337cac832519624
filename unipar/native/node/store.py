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
removes a partial file too. The store counts that traffic (:meth:`usage`).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import OrderedDict
from dataclasses import dataclass

log = logging.getLogger("unipar.native")

DISK_HEADROOM = 256 * 1024 * 1024   # never fill the spill disk completely
PARTIAL = ".tmp"                    # suffix of a file still being written (producer or pull)


class StoreFullError(Exception):
    """Neither shared memory nor the spill directory can take an object of this size."""


@dataclass
class _File:
    path: str
    size: int
    in_shm: bool
    sealed: bool = False


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

    def alloc(self, oid: bytes, size: int) -> str:
        """Reserve room for ``size`` bytes; returns the path the producer must write.

        Raises:
            StoreFullError: no room in memory or on disk.
        """
        name = oid.hex()
        if self.shm_used + size > self.limit:
            self._spill(self.shm_used + size - self.limit)
        if self.shm_used + size <= self.limit:
            entry = _File(os.path.join(self.shm_dir, name), size, True)
            self.shm_used += size
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
        entry = self.files.pop(oid, None)
        if entry is None:
            return
        if entry.in_shm:
            self.shm_used -= entry.size
        else:
            self.spill_used -= entry.size
        for path in (entry.path, entry.path + PARTIAL):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def usage(self) -> dict[str, int]:
        return {"shm_used": self.shm_used, "spill_used": self.spill_used, "limit": self.limit,
                "objects": len(self.files), **self.traffic}

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
