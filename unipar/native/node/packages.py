"""Runtime env packages on one node: uploads kept for later drivers, and the cache's cleanup.

::

    driver ── FindPackages(digests) ──▶ node: {digest: object id} of those it keeps
           ◀─ the driver refs those, puts only the others ──▶ KeepPackages({digest: id})
    node   pins each kept object (it outlives the driver that put it); peers pull it by id
           like any object, so a worker on any node gets the bytes
    tick ─▶ sweep(): a kept object no one holds or contains, for ``grace`` s ─▶ unpinned
                     a cached folder (<session>/runtime_envs/<digest> or pip-<key>) that no
                     live worker's env and no env spec held here notes, for ``grace`` s ─▶
                     removed (under its install lock, deleted on a thread)

Workers note which folders their env uses before they install them
(runtime_env.note_use), keyed by the env's tag, so the node needs no message to know.
"""

from __future__ import annotations

import shutil
import threading
from typing import Any, Callable

from ...runtime_env import cached_names, forget_use, noted_use, noted_users, remove_cached
from ..wire import protocol as P
from ..wire.server import ServerConnection
from .objects import ObjectDirectory


class Packages:
    """The node's runtime env packages.

    Args:
        objects: the node's object directory (kept objects are pinned there).
        cache_dir: where workers unpack packages (``<session>/runtime_envs``).
        live_tags: the env tags (``runtime_env:<spec id>``) of this node's live workers.
        grace: seconds an unused package (kept object or cached folder) stays.
    """

    def __init__(self, objects: ObjectDirectory, cache_dir: str,
                 live_tags: Callable[[], set[str]], grace: float) -> None:
        self.objects = objects
        self.cache_dir = cache_dir
        self.live_tags = live_tags
        self.grace = grace
        self.kept: dict[str, bytes] = {}          # digest -> object id, pinned
        self.last_used: dict[str, float] = {}     # digest or folder name -> when seen in use
        self.counts = {"uploaded": 0, "uploaded_bytes": 0, "reused": 0, "removed": 0,
                       "sweeps": 0}
        self._next_sweep = 0.0

    def handlers(self) -> dict[str, Callable[[ServerConnection, Any], None]]:
        return {P.FindPackages.op: self.on_find_packages, P.KeepPackages.op: self.on_keep_packages}

    def report(self) -> dict[str, Any]:
        """For the node's report: what it keeps, and what it was spared and removed."""
        return {"kept": len(self.kept), **self.counts}

    # -- handlers ------------------------------------------------------------------------------
    def on_find_packages(self, conn: ServerConnection, msg: P.FindPackages) -> None:
        found = {}
        for digest in msg.digests:
            oid = self.kept.get(digest)
            obj = self.objects.get(oid) if oid is not None else None
            if obj is not None and obj.kind not in (None, "error"):
                found[digest] = oid
        self.counts["reused"] += len(found)
        conn.send(P.Reply(msg.req_id, found))

    def on_keep_packages(self, conn: ServerConnection, msg: P.KeepPackages) -> None:
        for digest, oid in msg.packages.items():
            obj = self.objects.get(oid)
            if digest in self.kept or obj is None:   # kept already (a driver racing us)
                continue
            self.objects.pin(oid)
            self.kept[digest] = oid
            self.counts["uploaded"] += 1
            self.counts["uploaded_bytes"] += obj.size
        conn.send(P.Reply(msg.req_id, None))

    # -- cleanup -------------------------------------------------------------------------------
    def sweep(self, now: float) -> None:
        """Drop what nothing has used for ``grace`` seconds (checks every grace/2, at most
        every 30 s). Runs on the node's loop; the deleting itself runs on a thread."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + min(self.grace / 2, 30.0)
        self.counts["sweeps"] += 1
        self._sweep_kept(now)
        self._sweep_cache(now)

    def _unused_for(self, name: str, in_use: bool, now: float) -> bool:
        if in_use:
            self.last_used[name] = now
            return False
        return now - self.last_used.setdefault(name, now) >= self.grace

    def _sweep_kept(self, now: float) -> None:
        for digest, oid in list(self.kept.items()):
            obj = self.objects.get(oid)
            # Our own pin is one; more mean an env spec (or a task) contains it.
            if obj is not None and not self._unused_for(
                    "kept:" + digest, bool(obj.holders) or obj.pins > 1, now):
                continue
            del self.kept[digest]
            self.last_used.pop("kept:" + digest, None)
            if obj is not None:
                self.objects.unpin(oid)

    def _sweep_cache(self, now: float) -> None:
        used: set[str] = set()
        live = {tag.partition(":")[2] for tag in self.live_tags()}
        for user in noted_users(self.cache_dir):
            if user in live or self._holds(user):
                used.update(noted_use(self.cache_dir, user) or ())
            else:   # no worker here, no spec held here: a new worker notes it again first
                forget_use(self.cache_dir, user)
        trash = []
        for name in cached_names(self.cache_dir):
            if self._unused_for(name, name in used, now):
                self.last_used.pop(name, None)
                where = remove_cached(self.cache_dir, name)
                if where is not None:
                    trash.append(where)
                    self.counts["removed"] += 1
        if trash:
            threading.Thread(target=_delete, args=(trash,), daemon=True,
                             name="unipar-env-cleanup").start()

    def _holds(self, user: str) -> bool:
        """Whether this node holds the env spec object ``user`` names: a connected driver or
        job put it, or a worker here still holds it."""
        try:
            return self.objects.get(bytes.fromhex(user)) is not None
        except ValueError:
            return False


def _delete(paths: list[str]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
