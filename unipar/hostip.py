"""This machine's primary IPv4 address, for the engine (what a wildcard-bound daemon
advertises) and for ``unipar.util.get_node_ip_address()`` alike."""

from __future__ import annotations

import socket

__all__ = ["machine_ip"]


def machine_ip() -> str:
    """The address the default route uses (a UDP socket is connected, so the kernel picks a
    route; no packet is sent), else what the host name resolves to, else 127.0.0.1."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 1))
        return probe.getsockname()[0]
    except OSError:
        try:
            return socket.gethostbyname(socket.gethostname())
        except OSError:
            return "127.0.0.1"
    finally:
        probe.close()
