"""Runtime env packages (docs/runtime-env.md): a client asks its node which package digests the
cluster holds already, and hands the node the ones it uploaded, so the next driver with the
same code uploads nothing; nodes tell the head what they keep, and ask it where a package
they lack is kept, so that holds for drivers connected to any node.
"""

from __future__ import annotations

from .base import Message, message


@message
class FindPackages(Message):
    """Client -> node: which of ``digests`` (runtime_env package digests) this node keeps.
    Reply.value: {digest: object id} for those it keeps, including copies it pulled (within
    a bounded wait) of those another node keeps; the client takes a ref to each (the node
    keeps them through its grace period, so the ref arrives in time)."""
    op = "find_packages"
    req_id: int
    digests: list


@message
class KeepPackages(Message):
    """Client -> node: keep these package objects ({digest: object id}, already put and
    promoted) for later drivers, until no one has used them for the node's grace period.
    Reply.value: None."""
    op = "keep_packages"
    req_id: int
    packages: dict


@message
class PackagesKept(Message):
    """Node -> head (one-way): the packages this node keeps now ({digest: object id}) and
    those it let go (digests), so a node that lacks one can find where it lives."""
    op = "packages_kept"
    node_id: str
    kept: dict
    dropped: list


@message
class LocatePackages(Message):
    """Node -> head: which live node keeps each of ``digests`` (not ``node_id`` itself).
    Reply.value: {digest: [node id, object id]} for those some node keeps."""
    op = "locate_packages"
    req_id: int
    node_id: str
    digests: list
