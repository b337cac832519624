"""The head's record of where each actor lives and which node owns it, bounded over time.

::

    ActorLocation(aid, node)      ─▶ nodes[aid] = node            (lookups route calls there)
    ActorOwner(aid, owner)        ─▶ owners[aid] = owner          (it re-creates aid elsewhere)
    ActorLocation(aid, "", death) ─▶ nodes[aid] = "" (dead), owners[aid] dropped
                                     └─▶ returned owner is told, with the death

A cluster may create millions of actors over its life: a dead actor keeps only its ""
entry (LookupActor answers "": dead for good, so an owner never re-creates it), and only the
last ``dead_kept`` of those; an older one is forgotten (lookups answer None: unknown).
"""

from __future__ import annotations

from collections import deque

DEAD_KEPT = 10_000   # dead actors whose lookups still answer "" (dead), then None (unknown)


class ActorTable:
    """``nodes``: actor id -> hosting node id ("" once dead); ``owners``: actor id -> the
    node that re-creates it when its node dies. Both are plain dicts (journal.py saves them)."""

    def __init__(self, dead_kept: int = DEAD_KEPT) -> None:
        self.nodes: dict[bytes, str] = {}
        self.owners: dict[bytes, str] = {}
        self.dead_kept = dead_kept
        # Dead ids, oldest first (one re-created, then dead again, is listed twice: harmless,
        # it is dropped only while it is dead). A deque of the keys: 8 bytes per entry.
        self._dead: deque[bytes] = deque()

    def load(self, nodes: dict[bytes, str], owners: dict[bytes, str]) -> None:
        """Take the tables a snapshot saved (dead ones in the order they were saved)."""
        self.nodes, self.owners = nodes, owners
        self._dead = deque(aid for aid, nid in nodes.items() if nid == "")
        self._trim()

    def located(self, aid: bytes, node_id: str) -> tuple[bool, str | None]:
        """``aid`` lives on ``node_id`` ("": it died for good). Returns whether the tables
        changed, and (on a death) the owner to tell, if another node than the host owns it."""
        if self.nodes.get(aid) == node_id:
            return False, None
        self.nodes[aid] = node_id
        if node_id:
            return True, None   # (re-created: its old place in ``_dead`` no longer counts)
        owner = self.owners.pop(aid, None)
        self._dead.append(aid)
        self._trim()
        return True, owner

    def owned(self, aid: bytes, node_id: str) -> bool:
        """``node_id`` owns ``aid``; True if that is news. An actor already dead stays dead."""
        if self.owners.get(aid) == node_id or self.nodes.get(aid) == "":
            return False
        self.owners[aid] = node_id
        return True

    def _trim(self) -> None:
        while len(self._dead) > self.dead_kept:
            aid = self._dead.popleft()
            if self.nodes.get(aid) == "":
                del self.nodes[aid]

    def size(self) -> dict[str, int]:
        """Counts, for tests and the soak: entries, dead ones among them, owners, the bound."""
        return {"nodes": len(self.nodes), "dead": len(self._dead), "owners": len(self.owners),
                "dead_kept": self.dead_kept}
