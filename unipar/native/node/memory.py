"""Daemon memory: big buffers a daemon frees go back to the system (R8: flat RSS in a soak).

glibc serves an allocation of at least its *mmap threshold* with a mapping of its own, which
``free`` unmaps. The threshold starts at 128 KiB but rises to the size of each such block
freed (up to 32 MiB): after one 16 MB object passed through a daemon, the next ones come
from the heap, and a heap cannot shrink below a small block allocated after them. The
daemon's RSS then steps up by the size of the objects that pass, for good (the chaos soak saw
+15 MiB steps at each 16 MB put). A fixed threshold stops the drift.
"""

from __future__ import annotations

import ctypes
import sys

M_MMAP_THRESHOLD = -3           # mallopt's parameter number (malloc.h)
MMAP_THRESHOLD = 1024 * 1024    # blocks of this size and more: mapped, unmapped when freed


def return_big_buffers(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes for this process (and processes it
    forks later). Call it once, early, in a daemon's ``main``; idempotent.

    Returns:
        True if set; False where the C library has no ``mallopt`` (not Linux, or a libc
        without it), and nothing changed.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, threshold) == 1
