"""The one backend this process talks to: set by ``init`` on a driver, by a backend in a worker."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .backends.base import Backend

lock = threading.RLock()
_backend: "Backend | None" = None


def current() -> "Backend | None":
    return _backend


def install(backend: "Backend | None") -> None:
    global _backend
    with lock:
        _backend = backend
