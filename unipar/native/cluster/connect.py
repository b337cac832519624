"""Connecting a driver to a running cluster: resolve an address, find the secret, pick a node.

Addresses a user may give (``init(address=...)`` or ``UNIPAR_ADDRESS``):

- ``"auto"``: the cluster ``unipar start`` started on this machine (its state directory,
  :mod:`.session`); the driver uses the local node's Unix socket and maps objects directly;
- ``"unipar://HOST:PORT"`` (also ``tcp://HOST:PORT`` or bare ``HOST:PORT``): the head at that
  address; the driver asks it for the nodes and connects to the first live one over TCP, as a
  *remote* driver (object contents travel over the connection, so it may be on another machine).

Every connection proves it knows the cluster secret before the daemon decodes anything; a
daemon that does not like the proof closes the connection, which this module turns into a
message saying so.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any

from ..wire import protocol as P
from . import session
from ..wire.transport import Connection

TIMEOUT = 30.0


class ConnectError(ConnectionError):
    """The cluster could not be reached or refused us; the message says what to do."""


@dataclass
class Target:
    node_address: str    # where the driver's Client connects
    secret: bytes
    role: str            # "driver" (same machine, maps files) or "remote"
    head_address: str


def head_address_of(address: str) -> str:
    """``unipar://H:P``, ``tcp://H:P`` or ``H:P`` -> ``tcp://H:P``."""
    for scheme in ("unipar://", "tcp://"):
        if address.startswith(scheme):
            address = address[len(scheme):]
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"bad cluster address {address!r}: expected 'auto' or "
                         "'unipar://HOST:PORT'")
    return f"tcp://{host}:{port}"


def _secret(where: str) -> bytes:
    secret = session.load_secret()
    if secret is None:
        raise ConnectError(
            f"no cluster secret to connect to {where}: set {session.SECRET_ENV} to the hex "
            f"secret (or {session.SECRET_FILE_ENV} to a file holding it); `unipar start "
            f"--head` wrote it to {session.secret_path()} on the head machine")
    return secret


def open_connection(address: str, secret: bytes) -> Connection:
    """An authenticated connection, with errors a user can act on."""
    return explained(address, lambda: Connection(address, secret, timeout=TIMEOUT))


def explained(address: str, connect: Any) -> Any:
    """``connect()``, with handshake and socket errors turned into a :class:`ConnectError`."""
    try:
        return connect()
    except P.AuthenticationError as exc:
        raise ConnectError(f"the handshake with {address} failed: {exc}") from None
    except ConnectionRefusedError:
        raise ConnectError(f"nothing is listening at {address}: is the cluster running "
                           "(`unipar status`)?") from None
    except (ConnectionError, EOFError):
        raise ConnectError(
            f"the cluster at {address} refused the connection: wrong or missing cluster "
            f"secret ({session.SECRET_ENV} / {session.SECRET_FILE_ENV}, or the secret file "
            f"`unipar start --head` wrote); the daemon closed the connection during the "
            "handshake") from None
    except OSError as exc:
        raise ConnectError(f"cannot reach the cluster at {address}: {exc}") from None


def ask(conn: Connection, make: Any, timeout: float = TIMEOUT) -> Any:
    """Send one request on a fresh connection and return the reply's value."""
    replies: queue.Queue = queue.Queue()
    threading.Thread(target=conn.serve_forever, args=(replies.put,), daemon=True,
                     name="unipar-ask").start()
    conn.send(make(1))
    try:
        reply = replies.get(timeout=timeout)
    except queue.Empty:
        raise ConnectError(f"no answer from {conn.address} within {timeout:g} s") from None
    if getattr(reply, "error", None):
        raise ConnectError(f"{conn.address} answered with an error: {reply.error}")
    return reply.value


def list_nodes(head_address: str, secret: bytes) -> list[dict[str, Any]]:
    conn = open_connection(head_address, secret)
    try:
        return ask(conn, lambda r: P.ListNodes(r))
    finally:
        conn.close()


def connect_client(address: str, log_to_driver: bool = True) -> Any:
    """A driver :class:`~.client.Client` of the running cluster at ``address``."""
    from ..client.client import Client
    target = resolve(address)
    return explained(target.node_address, lambda: Client(
        target.node_address, target.secret, role=target.role, log_to_driver=log_to_driver))


def resolve(address: str) -> Target:
    """Where a driver connects for ``address`` (see the module docstring)."""
    if address == "auto":
        state = session.read_state()
        if not state.get("node"):
            raise ConnectError(
                "address='auto' found no cluster started on this machine (looked in "
                f"{session.state_dir()}): start one with `unipar start --head`, or pass "
                "address='unipar://HOST:PORT'")
        secret = _secret(state["head"])
        return Target(state["node"], secret, "driver", state["head"])
    head = head_address_of(address)
    secret = _secret(head)
    alive = [n for n in list_nodes(head, secret) if n.get("Alive")]
    if not alive:
        raise ConnectError(f"the cluster at {head} has no live node")
    return Target(alive[0]["Address"], secret, "remote", head)
