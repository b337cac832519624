"""``multiprocessing.Pool`` on unipar: ``from unipar.util.multiprocessing import Pool``.

The pool's processes are unipar actors on the current backend (started by ``unipar.init``, or
on first use); everything else reads as the standard library's ``multiprocessing.Pool``.
"""

from multiprocessing import TimeoutError

from .pool import Pool
from .results import AsyncResult, IMapIterator, IMapUnorderedIterator

__all__ = ["Pool", "AsyncResult", "IMapIterator", "IMapUnorderedIterator", "TimeoutError"]
