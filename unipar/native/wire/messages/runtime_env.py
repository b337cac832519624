"""Runtime env packages (docs/runtime-env.md): a client asks its node which package digests the
cluster holds already, and hands the node the ones it uploaded, so the next driver with the
same code uploads nothing.
"""

from __future__ import annotations

from .base import Message, message


@message
class FindPackages(Message):
    """Client -> node: which of ``digests`` (runtime_env package digests) this node keeps.
    Reply.value: {digest: object id} for those it keeps; the client takes a ref to each (the
    node keeps them through its grace period, so the ref arrives in time)."""
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
