"""Where the cluster keeps each runtime env package, so it is uploaded once per cluster.

::

    node ── PackagesKept(node, kept={digest: oid}, dropped=[digest]) ──▶ head   (one-way)
    node ── LocatePackages(node, digests) ──▶ head: {digest: [node id, oid]} kept elsewhere

A node tells the head each package it starts keeping (a driver uploaded it, or it pulled a
copy) and each it lets go on its sweep; a node asked for digests it does not keep asks here
and pulls a copy from the node named (node/packages.py). The table is bounded by what live
nodes keep: entries of a node go when it lets them go or is declared dead. It is not in the
head's snapshot: after a restart of the head, drivers upload packages again until nodes tell
it anew, which is a cost, not an error.
"""

from __future__ import annotations

from typing import Any, Callable

from ..wire import protocol as P
from ..wire.server import ServerConnection


class PackageTable:
    """digest -> {node id: object id} of the packages live nodes keep.

    Args:
        alive: whether a node id names a live node (a dead one's entries are never handed
            out, even before :meth:`node_dead` drops them).
    """

    def __init__(self, alive: Callable[[str], bool]) -> None:
        self.alive = alive
        self.where: dict[str, dict[str, bytes]] = {}

    def handlers(self) -> dict[str, Callable[[ServerConnection, Any], None]]:
        return {P.PackagesKept.op: self.on_packages_kept,
                P.LocatePackages.op: self.on_locate_packages}

    def on_packages_kept(self, conn: ServerConnection, msg: P.PackagesKept) -> None:
        if not self.alive(msg.node_id):
            return
        for digest, oid in msg.kept.items():
            self.where.setdefault(digest, {})[msg.node_id] = bytes(oid)
        for digest in msg.dropped:
            self._drop(digest, msg.node_id)

    def on_locate_packages(self, conn: ServerConnection, msg: P.LocatePackages) -> None:
        found = {}
        for digest in msg.digests:
            for node_id, oid in self.where.get(digest, {}).items():
                if node_id != msg.node_id and self.alive(node_id):
                    found[digest] = [node_id, oid]
                    break
        conn.send(P.Reply(msg.req_id, found))

    def node_dead(self, node_id: str) -> None:
        """Forget everything ``node_id`` kept (it was declared dead)."""
        for digest in [d for d, nodes in self.where.items() if node_id in nodes]:
            self._drop(digest, node_id)

    def _drop(self, digest: str, node_id: str) -> None:
        nodes = self.where.get(digest)
        if nodes is not None:
            nodes.pop(node_id, None)
            if not nodes:
                del self.where[digest]
