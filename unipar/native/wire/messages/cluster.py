"""The head and the nodes: membership, node resources, named actors, where actors
live, and placement groups.
"""

from __future__ import annotations

from typing import Any

from .base import Message, message


@message
class RegisterNode(Message):
    op = "register_node"
    req_id: int
    node_id: str
    address: str
    resources: dict


@message
class ListNodes(Message):
    op = "list_nodes"
    req_id: int


@message
class NodeInfo(Message):
    """Ask a node for its resources: Reply.value is ``{"total": {...}, "available": {...}}``."""
    op = "node_info"
    req_id: int


@message
class NodeStatus(Message):
    """A node's free resources, sent to the head about once a second (for cluster views)."""
    op = "node_status"
    node_id: str
    available: dict


# -- node failure (issue #4: a node declared dead is told so) --

@message
class NodeDeclaredDead(Message):
    """Head -> node: you were declared dead (``reason``); the cluster has retried or failed
    your work and dropped you. The node stops its workers and exits; a node started again
    joins as a new node."""
    op = "node_declared_dead"
    node_id: str
    reason: str


@message
class RegisterName(Message):
    """Reply.value: ``[actor_id, meta, created]``; an existing actor is returned when the name is
    taken and ``get_if_exists``, else Reply.error says the name is taken."""
    op = "register_name"
    req_id: int
    name: str
    actor_id: bytes
    meta: Any
    get_if_exists: bool


@message
class LookupName(Message):
    op = "lookup_name"
    req_id: int
    name: str


@message
class UnregisterName(Message):
    op = "unregister_name"
    req_id: int
    name: str
    actor_id: bytes


# -- where actors live, and actor fail-over (issue #4 point 5: actors restart on another node;
# see node/remote_actors.py). ActorLocation with node_id "" means the actor is dead for good
# (LookupActor then answers "").

@message
class ActorLocation(Message):
    """A node hosts this actor (so any node can route calls from handles it receives).
    ``node_id`` "": it died for good, ``death`` its packed error; the head passes that on to
    the actor's owner (ActorOwner) when another node hosted it."""
    op = "actor_location"
    actor_id: bytes
    node_id: str
    death: bytes | None = None


@message
class LookupActor(Message):
    """Reply.value: the id of the node hosting the actor, or None."""
    op = "lookup_actor"
    req_id: int
    actor_id: bytes


@message
class ActorOwner(Message):
    """Node -> head: node ``node_id`` created this actor on another node and re-creates it if
    that node dies (it has restarts left), so its name outlives its node; the owner frees the
    name (UnregisterName) if it gives up."""
    op = "actor_owner"
    actor_id: bytes
    node_id: str


# -- placement groups (issue #14 point 3; docs/scheduling.md) --
# The head owns the table and decides where bundles go (node/placement.py: place_bundles); it
# reserves them all or none: ReserveBundles to each chosen node, and ReleaseBundles to those
# that said yes when any said no.

@message
class CreatePlacementGroup(Message):
    """Driver -> head. Reply.value: True; error kind "value" when ``name`` is taken.
    ``bundles``: one ``{resource: amount}`` per bundle; ``pg_id``: 16 hex digits."""
    op = "create_placement_group"
    req_id: int
    pg_id: str
    bundles: list
    strategy: str
    name: str


@message
class RemovePlacementGroup(Message):
    """Driver -> head: release the group's bundles (idempotent). Reply.value: True."""
    op = "remove_placement_group"
    req_id: int
    pg_id: str


@message
class ListPlacementGroups(Message):
    """Reply.value: one row per group (``placement_group_id``, ``name``, ``strategy``,
    ``state``, ``bundles`` {index: resources}, ``bundles_to_node_id``, ``error``)."""
    op = "list_placement_groups"
    req_id: int


@message
class ReserveBundles(Message):
    """Head -> node: reserve ``bundles`` (``[[index, {resource: amount}], ...]``) of group
    ``pg_id`` out of what is free now. Reply.value (node -> head): True, or False when they do
    not fit now (nothing is reserved then)."""
    op = "reserve_bundles"
    req_id: int
    pg_id: str
    bundles: list


@message
class ReleaseBundles(Message):
    """Head -> node: give back every bundle of group ``pg_id`` held here (idempotent)."""
    op = "release_bundles"
    pg_id: str
