"""A node's log files: its own daemon log, and one file per worker and actor process.

::

    <log_dir>/                      on disk; <session_dir>/logs links here (workers find it so)
        node.log                    the daemon: timestamps, levels (``--log-level``)
        worker-<wid>-<pid>.log      what that worker's tasks (or that actor) printed

Every file rotates by size (MAX_BYTES, BACKUPS old copies: ``node.log.1`` ...). The node lists
them with who wrote them (:meth:`LogFiles.listing`) and hands them out in pages
(:meth:`LogFiles.read`): a huge log is never read whole, and only names it listed are opened.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
from collections import OrderedDict
from typing import Any

MAX_BYTES = 20 * 1024 * 1024    # a log file rotates past this size
BACKUPS = 3                     # rotated copies kept per file
PAGE_MAX = 1024 * 1024          # bytes one ReadLog answers at most
ENDED_KEPT = 1000               # ended workers whose role the listing still shows
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_WORKER_FILE = re.compile(r"^worker-(w\d+)-(\d+)\.log(\.\d+)?$")


def rotating(path: str, fmt: str = FORMAT) -> logging.Handler:
    """A size-rotated file handler for ``path`` (its directory is made if missing)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=MAX_BYTES,
                                                   backupCount=BACKUPS, delay=True)
    handler.setFormatter(logging.Formatter(fmt))
    return handler


def setup_daemon_log(log_dir: str, level: str, name: str = "node.log") -> None:
    """Send the ``unipar`` loggers to ``<log_dir>/<name>`` (and stderr), with timestamps."""
    for handler in logging.getLogger().handlers:   # stderr (maybe a driver's terminal)
        handler.setLevel(max(handler.level, logging.WARNING))
    root = logging.getLogger("unipar")
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    if log_dir:
        root.addHandler(rotating(os.path.join(log_dir, name)))
        root.info("logging at level %s to %s", level.upper(), os.path.join(log_dir, name))


def link_session(session_dir: str, log_dir: str) -> None:
    """``<session_dir>/logs`` -> ``log_dir``: where this node's workers write their files."""
    os.makedirs(log_dir, mode=0o700, exist_ok=True)
    link = os.path.join(session_dir, "logs")
    if not os.path.lexists(link):
        os.symlink(log_dir, link)


class LogFiles:
    """The log files of one node, and who wrote each (``note`` records worker roles).

    A node starts workers for as long as it lives: who wrote a file is kept for the live
    workers (``writers``) and for the last :data:`ENDED_KEPT` that ended (``ended``); older
    files are still listed and readable, without their role's details."""

    def __init__(self, log_dir: str, ended_kept: int = ENDED_KEPT) -> None:
        self.log_dir = log_dir
        self.writers: dict[str, dict[str, Any]] = {}   # live worker id -> role, actor, ...
        self.ended: OrderedDict[str, dict[str, Any]] = OrderedDict()   # oldest first
        self.ended_kept = ended_kept
        self._by_pid: dict[int, str] = {}   # live writer's pid -> worker id

    def note(self, worker_id: str, **info: Any) -> None:
        """Remember who worker ``worker_id`` is (role, pid, actor id and class, name)."""
        self.writers.setdefault(worker_id, {}).update(info)
        if "pid" in info:
            self._by_pid[info["pid"]] = worker_id

    def writer_of(self, pid: int) -> str:
        """The live worker with process id ``pid``, "" if none."""
        return self._by_pid.get(pid, "")

    def gone(self, worker_id: str) -> None:
        """Worker ``worker_id`` ended: its record moves to the bounded ``ended`` table (its
        file stays on disk, for ``unipar logs``)."""
        info = self.writers.pop(worker_id, None)
        if info is None:
            return
        if self._by_pid.get(info.get("pid", -1)) == worker_id:
            del self._by_pid[info["pid"]]
        self.ended[worker_id] = info
        while len(self.ended) > self.ended_kept:
            self.ended.popitem(last=False)

    def table_size(self) -> dict[str, int]:
        """Its records, for ``node_info``: live writers, ended ones kept, the bound."""
        return {"writers": len(self.writers), "ended": len(self.ended),
                "ended_kept": self.ended_kept}

    def listing(self) -> dict[str, Any]:
        files = []
        try:
            names = sorted(os.listdir(self.log_dir))
        except OSError:
            names = []
        for name in names:
            try:
                st = os.stat(os.path.join(self.log_dir, name))
            except OSError:
                continue
            entry: dict[str, Any] = {"name": name, "size": st.st_size, "mtime": st.st_mtime,
                                     "role": "node" if name.startswith("node.log") else "",
                                     "pid": None, "worker_id": "", "actor_id": "",
                                     "class_name": "", "actor_name": ""}
            match = _WORKER_FILE.match(name)
            if match:
                wid = match.group(1)
                entry.update(role="worker", worker_id=wid, pid=int(match.group(2)))
                entry.update(self.writers.get(wid) or self.ended.get(wid) or {})
            files.append(entry)
        return {"log_dir": self.log_dir, "files": files}

    def read(self, name: str, offset: int, length: int) -> dict[str, Any]:
        """At most ``length`` (<= PAGE_MAX) bytes of file ``name`` from ``offset`` (negative:
        that many bytes before its end).

        Raises:
            ValueError: ``name`` is not one of this node's log files.
        """
        if name not in {f["name"] for f in self.listing()["files"]}:
            raise ValueError(f"no log file {name!r} on this node")
        path = os.path.join(self.log_dir, name)
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            start = max(0, size + offset) if offset < 0 else offset
            f.seek(start)   # past the end (rotated since): no data, and size < offset says so
            data = f.read(max(0, min(length, PAGE_MAX))) if start < size else b""
        return {"data": data, "offset": start, "size": size}
