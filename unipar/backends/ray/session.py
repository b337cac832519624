"""The session around Ray: the environment it reads, the private instance's files and processes.

Ray reads environment variables when it is imported and hands them to the processes it starts,
so they are set (where the user has not chosen otherwise) before ``import ray`` and put back at
shutdown by :class:`Environment`. A private local instance keeps its session files in a
temporary directory (:func:`make_temp_dir`) whose processes :func:`reap` waits for at shutdown.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import tempfile
from typing import Any, Iterator, Sequence

import psutil

__all__ = ["DEFAULT_OBJECT_STORE_BYTES", "DEFAULT_NAMESPACE", "IMPORT_ENV", "SESSION_ENV",
           "LOOPBACK_ENV", "AUTH_TOKEN", "RAY_SET_ENV", "ray_module", "joins_loopback",
           "Environment", "make_temp_dir", "reap", "quiet"]

log = logging.getLogger("unipar.ray")

DEFAULT_OBJECT_STORE_BYTES = 2 * 1024**3   # the machine is shared; Ray's default is 30% of RAM
DEFAULT_NAMESPACE = "unipar"               # one namespace, so named actors are cluster-wide

# Ray reads these when it is imported (and hands them to the processes it starts); set only
# where the user has not chosen otherwise.
IMPORT_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",        # every worker line reaches the driver, as on other backends
}
# Read on every forwarded line: no colour codes before the "(name pid=N)" prefix.
SESSION_ENV = {"RAY_COLOR_PREFIX": "0"}
# Ray replaces 127.0.0.1 by the machine's routable address unless it thinks it runs on one
# machine (the knob is named for macOS/Windows, where that is the default).
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
# One token per driver process: Ray's C++ side caches the token it first read.
AUTH_TOKEN = secrets.token_hex(32)
# Ray's ray.init() sets RAY_AUTH_MODE=token for a new local cluster and leaves it set; left there,
# the next session would take it for the user's choice, start no token of its own, and the new
# cluster's daemons would refuse the driver (InvalidAuthToken). Put back to what it was before.
RAY_SET_ENV = ("RAY_AUTH_MODE",)


def ray_module() -> Any:
    """Ray itself, imported on first use (after the environment above is set)."""
    import ray
    return ray


def joins_loopback(address: str) -> bool:
    """Whether the cluster at ``address`` listens on loopback (so must this driver: Ray would
    otherwise bind it to the machine's routable address, which such a cluster cannot reach).

    ``auto`` means ``RAY_ADDRESS``, else the cluster ``ray start`` last recorded on this machine.
    """
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "")
        if not address:
            base = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
            record = os.path.join(base, "ray", "ray_current_cluster")   # as Ray looks for it
            with contextlib.suppress(OSError):
                with open(record) as file:
                    address = file.read().strip()
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")



class Environment:
    """Environment variables set for the session and put back at shutdown."""

    def __init__(self) -> None:
        self._saved: dict[str, str | None] = {}

    def track(self, keys: Sequence[str]) -> None:
        """Put ``keys`` back at shutdown to what they are now, whoever changes them later."""
        for key in keys:
            self._saved.setdefault(key, os.environ.get(key))

    def set_default(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            if key not in os.environ:
                self._saved.setdefault(key, None)
                os.environ[key] = value

    def restore(self) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved.clear()


def make_temp_dir() -> str:
    # Ray puts unix sockets under it; their paths must stay under ~107 bytes.
    base = tempfile.gettempdir()
    if len(base) > 40:
        base = "/tmp"
    return tempfile.mkdtemp(prefix="unipar-ray-", dir=base)


def _processes_using(path: str) -> list[psutil.Process]:
    """Processes whose command line names ``path`` (every Ray daemon of a session does)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.pid != os.getpid() and any(path in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def reap(path: str, children: Sequence[psutil.Process], timeout: float = 10.0) -> None:
    """Wait for the session's processes to exit; kill what is left after ``timeout``."""
    procs = {p.pid: p for p in [*children, *_processes_using(path)]}
    _, alive = psutil.wait_procs(list(procs.values()), timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            log.warning("killing Ray process %s left after shutdown", proc.pid)
            proc.kill()
    psutil.wait_procs(alive, timeout=5)


@contextlib.contextmanager
def quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
