"""The head's durable state: one JSON snapshot, rewritten atomically after each change.

What the head knows that nobody else can tell it again — the nodes of the cluster, which of
them were declared dead, the named actors with their specs, where each actor lives and which
node re-creates it — is written to ``head.json`` in the state directory of ``unipar start``::

    head handler ── mutates ──▶ Head ── dirty() ──▶ Journal.save() at the end of the loop turn
                                                    (temp file, fsync, os.replace)
    head started again ── Journal.load() ──▶ Head.restore(): nodes count as alive, silent
                                              ones are declared dead after --node-timeout

The snapshot is written before the replies of the same loop turn go out (the save is
scheduled before their flush), so a caller that got an answer never finds it forgotten after a
crash. What changes every second (free resources per node) is not written: nodes report it
again within a second of reconnecting.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

log = logging.getLogger("unipar.native.head")

VERSION = 1


class Journal:
    """Reads and writes one snapshot file; ``path`` "" means the head keeps nothing."""

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> dict[str, Any] | None:
        """The last snapshot, or None when there is none (or it cannot be read: a head that
        cannot trust its file starts empty, and says so, rather than refusing to start)."""
        if not self.path:
            return None
        try:
            with open(self.path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring the head's state file %s: %s", self.path, exc)
            return None
        if not isinstance(data, dict) or data.get("version") != VERSION:
            log.warning("ignoring the head's state file %s: unknown format", self.path)
            return None
        return data

    def save(self, data: dict[str, Any]) -> None:
        """Replace the snapshot atomically: a reader (or a crash) sees the old or the new one,
        never half of one."""
        if not self.path:
            return
        tmp = f"{self.path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(dict(data, version=VERSION), f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:   # a full disk must not take the head down with it
            log.warning("cannot write the head's state file %s: %s", self.path, exc)
            try:
                os.unlink(tmp)
            except OSError:
                pass

    def remove(self) -> None:
        """Forget the snapshot (the cluster was stopped on purpose). Idempotent."""
        if self.path:
            try:
                os.unlink(self.path)
            except OSError:
                pass


def encode_state(nodes: dict[str, dict[str, Any]], dead: dict[str, str],
                 names: dict[str, tuple[bytes, bytes]], actor_nodes: dict[bytes, str],
                 actor_owners: dict[bytes, str]) -> dict[str, Any]:
    """The head's tables as JSON-safe data (actor ids and pickled specs as hex)."""
    return {
        "nodes": nodes, "dead": dead,
        "names": {name: [aid.hex(), meta.hex()] for name, (aid, meta) in names.items()},
        "actor_nodes": {aid.hex(): nid for aid, nid in actor_nodes.items()},
        "actor_owners": {aid.hex(): nid for aid, nid in actor_owners.items()},
    }


def decode_state(data: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, str],
                                                dict[str, tuple[bytes, bytes]],
                                                dict[bytes, str], dict[bytes, str]]:
    """The inverse of :func:`encode_state`."""
    names = {name: (bytes.fromhex(aid), bytes.fromhex(meta))
             for name, (aid, meta) in data.get("names", {}).items()}
    return (dict(data.get("nodes", {})), dict(data.get("dead", {})), names,
            {bytes.fromhex(a): n for a, n in data.get("actor_nodes", {}).items()},
            {bytes.fromhex(a): n for a, n in data.get("actor_owners", {}).items()})
