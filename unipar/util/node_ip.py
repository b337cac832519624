"""``get_node_ip_address()``: the IP of the node the calling code runs on, as in Ray.

On every backend it is what ``unipar.nodes()`` says of the caller's node
(``NodeManagerAddress`` of the row whose ``NodeID`` is ``get_runtime_context()``'s); on
native, ray and local that node also has the resource ``node:<ip>`` = 1, so work can be
pinned to a machine with ``resources={f"node:{ip}": 0.01}``. Outside any backend (none
running), or where the backend cannot say, it is this machine's primary IPv4 address.
"""

from __future__ import annotations

from .. import _state
from ..hostip import machine_ip

__all__ = ["get_node_ip_address"]


def get_node_ip_address() -> str:
    """The IP address of the node running the caller (a string such as ``"127.0.0.1"``).

    Starts nothing: with no backend running it returns this machine's address."""
    backend = _state.current()
    if backend is not None:
        node_id = backend.runtime_context().get("node_id")
        for node in backend.nodes():
            if node.get("NodeID") == node_id and node.get("NodeManagerAddress"):
                return str(node["NodeManagerAddress"])
    return machine_ip()

