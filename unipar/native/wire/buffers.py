"""Chunk-sized buffers, reused once nothing holds them (both ends of a chunked transfer).

A big object crosses between nodes in chunks (:mod:`.chunks`): the sender reads each chunk
into a buffer, the receiver reads each frame into one. A fresh buffer per chunk is a fresh
mapping (a daemon's mmap threshold is fixed at 1 MiB, node/memory.py), so every one of its
pages faults in and is zeroed by the kernel, and the pages of a 1 GiB object are faulted twice
more on their way: a third of the daemons' time in a transfer over loopback. A buffer taken
again once its last user let go of it has its pages in place already.

"Nothing holds it" is CPython's reference count: whatever reads a buffer holds a reference to
it (a queued message, a memoryview over it, the event loop's pending write), so a buffer
whose only reference is the pool's is free. At most ``keep`` buffers are kept (``keep``
chunks: 48 MiB for the 6 of transport.py and of node/transfers.py); more at once are plain
fresh buffers, dropped after use. The kept ones are let go once no buffer was taken for
``idle`` seconds, so a daemon that moved a big object once does not keep its memory for good
(each buffer is its own mapping: freed, it leaves the process's RSS).
"""

from __future__ import annotations

import sys
import threading
import time

__all__ = ["ChunkBuffers"]


class ChunkBuffers:
    """Buffers of exactly ``size`` bytes; ``take()`` is safe from any thread."""

    def __init__(self, size: int, keep: int, idle: float = 5.0) -> None:
        self.size = size
        self.keep = keep
        self.idle = idle
        self._items: list[bytearray] = []
        self._lock = threading.Lock()
        self._last = 0.0          # when a buffer was last taken
        self._trimming = False    # a thread waits to let the kept buffers go

    def take(self) -> bytearray:
        """A buffer of ``size`` bytes nobody else holds (its contents are stale: overwrite
        all of it)."""
        with self._lock:
            self._last = time.monotonic()
            if not self._trimming:
                self._trimming = True
                threading.Thread(target=self._trim_when_idle, name="unipar-chunk-buffers",
                                 daemon=True).start()
            items = self._items
            for i in range(len(items)):
                # 2: the list's reference and getrefcount's argument; anyone else's is more.
                if sys.getrefcount(items[i]) == 2:
                    return items[i]
            fresh = bytearray(self.size)
            if len(items) < self.keep:
                items.append(fresh)
            return fresh

    def kept(self) -> int:
        """How many buffers the pool keeps now."""
        return len(self._items)

    def _trim_when_idle(self) -> None:
        """Wait until no buffer was taken for ``idle`` seconds, then drop the kept ones (a
        buffer still in use lives on with its user and is freed after it)."""
        while True:
            with self._lock:
                left = self._last + self.idle - time.monotonic()
                if left <= 0:
                    self._items = []
                    self._trimming = False
                    return
            time.sleep(left)
