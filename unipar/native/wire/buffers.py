"""Chunk-sized buffers, reused once nothing holds them (both ends of a chunked transfer).

A big object crosses between nodes in chunks (:mod:`.chunks`): the sender reads each chunk
into a buffer, the receiver reads each frame into one. A fresh buffer per chunk is a fresh
mapping (a daemon's mmap threshold is fixed at 1 MiB, node/memory.py), so every one of its
pages faults in and is zeroed by the kernel, and the pages of a 1 GiB object are faulted twice
more on their way: a third of the daemons' time in a transfer over loopback. A buffer taken
again once its last user let go of it has its pages in place already.

"Nothing holds it" is CPython's reference count: whatever reads a buffer holds a reference to
it (a queued message, a memoryview over it, the event loop's pending write), so a buffer
whose only reference is the pool's is free. At most ``keep`` buffers are kept, a fixed
amount of memory (``keep`` chunks: 48 MiB for the 6 of transport.py and of node/transfers.py)
per process that ever moved a chunk, held for good; more at once are plain fresh buffers,
dropped after use.
"""

from __future__ import annotations

import sys
import threading

__all__ = ["ChunkBuffers"]


class ChunkBuffers:
    """Buffers of exactly ``size`` bytes; ``take()`` is safe from any thread."""

    def __init__(self, size: int, keep: int) -> None:
        self.size = size
        self.keep = keep
        self._items: list[bytearray] = []
        self._lock = threading.Lock()

    def take(self) -> bytearray:
        """A buffer of ``size`` bytes nobody else holds (its contents are stale: overwrite
        all of it)."""
        with self._lock:
            items = self._items
            for i in range(len(items)):
                # 2: the list's reference and getrefcount's argument; anyone else's is more.
                if sys.getrefcount(items[i]) == 2:
                    return items[i]
            fresh = bytearray(self.size)
            if len(items) < self.keep:
                items.append(fresh)
            return fresh
