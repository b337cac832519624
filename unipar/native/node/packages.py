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

Once per cluster: the node tells the head each package it keeps or lets go (PackagesKept); a
node asked for digests it does not keep asks the head where they are (LocatePackages), pulls a
copy of each like any object of a peer, keeps it, and only then answers (at most
``FIND_WAIT`` s: what has not arrived by then, the driver uploads)::

    driver ── FindPackages ──▶ node B ── LocatePackages ──▶ head: {digest: [node A, oid]}
    node B ── Subscribe(oid) to peers (forwarding.fetch) ──▶ node A sends / B pulls the copy
    node B keeps it (PackagesKept ──▶ head) ──▶ Reply {digest: oid} to the driver

Workers note which folders their env uses before they install them
(runtime_env.note_use), keyed by the env's tag, so the node needs no message to know.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from typing import Any, Callable, Protocol

from ...runtime_env import cached_names, forget_use, noted_use, noted_users, remove_cached
from ..wire import protocol as P
from ..wire.server import ServerConnection
from .objects import ObjectDirectory

FIND_WAIT = 10.0   # s a FindPackages answer waits for copies from peers (then: upload them)


class HeadPort(Protocol):
    """What packages ask of the node's link to the head (:class:`~.head_link.HeadLink`)."""

    def ask(self, make: Callable[[int], P.Message], callback: Callable[[Any], None]) -> bool: ...

    def tell(self, msg: P.Message) -> None: ...


class _Finding:
    """One FindPackages being answered: ``found`` so far, and how many pulls it waits for."""

    __slots__ = ("answered", "conn", "found", "req_id", "waiting")

    def __init__(self, conn: ServerConnection, req_id: int, found: dict[str, bytes]) -> None:
        self.conn = conn
        self.req_id = req_id
        self.found = found
        self.waiting = 1          # the locate itself, until its answer is handled
        self.answered = False


class _Arrival:
    """Stands in for a connection among a pending object's subscribers: the object
    directory "sends" it the object once it is resolved (or failed), and it calls ``then``."""

    def __init__(self, then: Callable[[], None]) -> None:
        self.info: dict[str, Any] = {}
        self.closed = False
        self.then = then

    def send(self, msg: P.Message) -> None:
        self.then()


class Packages:
    """The node's runtime env packages.

    Args:
        objects: the node's object directory (kept objects are pinned there).
        cache_dir: where workers unpack packages (``<session>/runtime_envs``).
        live_tags: the env tags (``runtime_env:<spec id>``) of this node's live workers.
        grace: seconds an unused package (kept object or cached folder) stays.
    """

    def __init__(self, objects: ObjectDirectory, cache_dir: str,
                 live_tags: Callable[[], set[str]], grace: float, *, node_id: str = "",
                 head: HeadPort | None = None, fetch: Callable[[bytes], bool] | None = None
                 ) -> None:
        self.objects = objects
        self.node_id = node_id
        self.head = head
        self.fetch = fetch     # ask the peers for an object id unknown here; True if asked
        self.cache_dir = cache_dir
        self.live_tags = live_tags
        self.grace = grace
        self.kept: dict[str, bytes] = {}          # digest -> object id, pinned
        self.pulling: dict[bytes, tuple[str, list[_Finding]]] = {}   # oid -> digest, waiters
        self.last_used: dict[str, float] = {}     # digest or folder name -> when seen in use
        self.counts = {"uploaded": 0, "uploaded_bytes": 0, "reused": 0, "removed": 0,
                       "sweeps": 0, "pulled": 0, "pulled_bytes": 0}
        self._next_sweep = 0.0

    def handlers(self) -> dict[str, Callable[[ServerConnection, Any], None]]:
        return {P.FindPackages.op: self.on_find_packages, P.KeepPackages.op: self.on_keep_packages}

    def report(self) -> dict[str, Any]:
        """For the node's report: what it keeps, what it was spared (``reused``), copied from
        peers instead of an upload (``pulled``), and removed."""
        return {"kept": len(self.kept), **self.counts}

    # -- handlers ------------------------------------------------------------------------------
    def on_find_packages(self, conn: ServerConnection, msg: P.FindPackages) -> None:
        """Answer with the digests kept here, and those another node keeps once a copy is
        here (asked of the head, pulled from the peer; the answer waits ``FIND_WAIT`` s at
        most)."""
        finding = _Finding(conn, msg.req_id, {})
        for digest in msg.digests:
            oid = self.kept.get(digest)
            if oid is not None and self._usable(oid):
                finding.found[digest] = oid
        missing = [d for d in msg.digests if d not in finding.found]
        if (missing and self.head is not None and self.fetch is not None
                and self.head.ask(lambda r: P.LocatePackages(r, self.node_id, missing),
                                  lambda value: self._located(finding, value))):
            asyncio.get_running_loop().call_later(FIND_WAIT, self._answer, finding)
        else:
            self._answer(finding)

    def on_keep_packages(self, conn: ServerConnection, msg: P.KeepPackages) -> None:
        kept = {}
        for digest, oid in msg.packages.items():
            obj = self.objects.get(oid)
            if obj is None or not self._replaceable(digest):   # kept already (a driver racing us)
                continue
            self._keep(digest, oid)
            kept[digest] = oid
            self.counts["uploaded"] += 1
            self.counts["uploaded_bytes"] += obj.size
        if kept and self.head is not None:
            self.head.tell(P.PackagesKept(self.node_id, kept, []))
        conn.send(P.Reply(msg.req_id, None))

    # -- copies of packages another node keeps -------------------------------------------------
    def _located(self, finding: _Finding, where: Any) -> None:
        """The head's answer to LocatePackages: pull each package found elsewhere."""
        if finding.answered:
            return
        for digest, (_node, oid) in (where or {}).items():
            self._pull(digest, bytes(oid), finding)
        self._wait_done(finding)

    def _pull(self, digest: str, oid: bytes, finding: _Finding) -> None:
        """Copy ``oid`` here (pinned while it comes); ``finding`` waits for it."""
        entry = self.pulling.get(oid)
        if entry is None:
            if self.objects.get(oid) is None and not self.fetch(oid):   # type: ignore[misc]
                return    # no peer to ask
            obj = self.objects.get(oid)
            if obj is None:
                return
            self.objects.pin(oid)
            entry = self.pulling[oid] = (digest, [])
            if obj.kind is None:
                arrival = _Arrival(lambda: self._pulled(oid))
                obj.subscribers.append(arrival)   # type: ignore[arg-type]
            else:
                asyncio.get_running_loop().call_soon(self._pulled, oid)
        entry[1].append(finding)
        finding.waiting += 1

    def _pulled(self, oid: bytes) -> None:
        """``oid`` arrived here (or failed): keep it, and tell those who wait for it."""
        entry = self.pulling.pop(oid, None)
        if entry is None:
            return
        digest, findings = entry
        obj = self.objects.get(oid)
        ok = obj is not None and self._usable(oid)
        if ok and self._replaceable(digest):
            self._keep(digest, oid)
            self.counts["pulled"] += 1
            self.counts["pulled_bytes"] += obj.size   # type: ignore[union-attr]
            if self.head is not None:
                self.head.tell(P.PackagesKept(self.node_id, {digest: oid}, []))
        for finding in findings:
            if ok and not finding.answered:
                finding.found[digest] = self.kept.get(digest, oid)
            self._wait_done(finding)
        self.objects.unpin(oid)   # the pull's own pin (_keep took one of its own)

    def _wait_done(self, finding: _Finding) -> None:
        finding.waiting -= 1
        if finding.waiting == 0:
            self._answer(finding)

    def _answer(self, finding: _Finding) -> None:
        if finding.answered:
            return
        finding.answered = True
        self.counts["reused"] += len(finding.found)
        finding.conn.send(P.Reply(finding.req_id, finding.found))

    # -- what is kept ----------------------------------------------------------------------------
    def _usable(self, oid: bytes) -> bool:
        obj = self.objects.get(oid)
        return obj is not None and obj.kind not in (None, "error")

    def _replaceable(self, digest: str) -> bool:
        """Whether a new copy of ``digest`` may be kept: none is, or the kept one failed."""
        oid = self.kept.get(digest)
        if oid is None:
            return True
        if self._usable(oid):
            return False
        del self.kept[digest]
        self.objects.unpin(oid)
        return True

    def _keep(self, digest: str, oid: bytes) -> None:
        self.objects.pin(oid)
        self.kept[digest] = oid

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
        dropped = []
        for digest, oid in list(self.kept.items()):
            obj = self.objects.get(oid)
            # Our own pin is one; more mean an env spec (or a task) contains it.
            if obj is not None and not self._unused_for(
                    "kept:" + digest, bool(obj.holders) or obj.pins > 1, now):
                continue
            del self.kept[digest]
            dropped.append(digest)
            self.last_used.pop("kept:" + digest, None)
            if obj is not None:
                self.objects.unpin(oid)
        if dropped and self.head is not None:
            self.head.tell(P.PackagesKept(self.node_id, {}, dropped))

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
