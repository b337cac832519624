"""The channel between the Spark driver and code running on executors.

Spark gives executor code no way to call back into the driver, so the spark backend opens its
own: a TCP listener on the driver (loopback for a local session, the driver host on a cluster)
that speaks ``multiprocessing.connection`` framing::

    executor thread                         driver
    ---------------                         ------
    Client(address, authkey) ---- HMAC challenge/response, both ways ----> accept thread
    send(("get", ...))        ------------------------------------------> handler thread
    recv() <------------------ ("ok", value) | ("err", exception) ------- per connection

Authentication comes first: ``deliver_challenge``/``answer_challenge`` run an HMAC exchange with
the per-session secret before a single byte is unpickled, so only code that received the secret
(inside a task closure) can talk to the driver. After that, messages are cloudpickle'd tuples
``(op, *args)``.

Ops whose name is in ``oneway`` (log lines) get no reply. A connection whose first message is
``("actor_hello", ...)`` belongs to an actor process and is handed over whole to ``on_actor``.
"""

from __future__ import annotations

import os
import secrets
import socket
import struct
import threading
from multiprocessing.connection import Client, Connection, answer_challenge, deliver_challenge
from typing import Any, Callable, Mapping

import cloudpickle

__all__ = ["ChannelServer", "ChannelClient", "send", "recv", "hang_up"]

_AUTH_TIMEOUT_S = 10  # a peer that connects and never answers the challenge is dropped


def send(conn: Connection, message: Any) -> None:
    """Send one message (cloudpickle, so functions defined in ``__main__`` travel by value)."""
    conn.send_bytes(cloudpickle.dumps(message))


def recv(conn: Connection) -> Any:
    """Receive one message; raises EOFError/OSError when the peer is gone."""
    return cloudpickle.loads(conn.recv_bytes())


def _set_recv_timeout(sock: socket.socket, seconds: int) -> None:
    # SO_RCVTIMEO bounds os.read on the raw fd, which Connection uses (socket.settimeout does not).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", seconds, 0))


def _clear_recv_timeout(conn: Connection) -> None:
    dup = socket.socket(fileno=os.dup(conn.fileno()))
    try:
        _set_recv_timeout(dup, 0)
    finally:
        dup.close()


class ChannelServer:
    """The driver end: accepts authenticated connections and serves ``handlers``.

    ``handlers`` maps op name -> callable(*args) returning the reply value; an exception it raises
    travels back and is re-raised in the caller. Every connection gets one daemon thread.
    """

    def __init__(self, host: str, handlers: Mapping[str, Callable[..., Any]],
                 oneway: Mapping[str, Callable[..., None]],
                 on_actor: Callable[[Connection, tuple], None]) -> None:
        self.authkey = secrets.token_bytes(32)
        self._handlers = handlers
        self._oneway = oneway
        self._on_actor = on_actor
        self._sock = socket.create_server((host, 0), backlog=256)
        self._sock.settimeout(0.2)  # the accept loop polls ``_closed`` at this pace
        self.address: tuple[str, int] = (host, self._sock.getsockname()[1])
        self._closed = threading.Event()
        self._conns: set[Connection] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, name="unipar-spark-accept",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop accepting and close every open connection (peers see EOF). Idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._thread.join(timeout=5)
        self._sock.close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            hang_up(conn)

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                sock, _ = self._sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            sock.setblocking(True)
            threading.Thread(target=self._serve, args=(sock,), name="unipar-spark-conn",
                             daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        _set_recv_timeout(sock, _AUTH_TIMEOUT_S)
        conn = Connection(sock.detach())
        try:
            deliver_challenge(conn, self.authkey)
            answer_challenge(conn, self.authkey)
            _clear_recv_timeout(conn)
            first = recv(conn)
        except Exception:  # failed authentication, a port scanner, a peer that left
            _close_quietly(conn)
            return
        with self._lock:
            if self._closed.is_set():
                _close_quietly(conn)
                return
            self._conns.add(conn)
        try:
            if first[0] == "actor_hello":
                self._on_actor(conn, first)
            else:
                self._request_loop(conn, first)
        finally:
            with self._lock:
                self._conns.discard(conn)
            _close_quietly(conn)

    def _request_loop(self, conn: Connection, message: tuple) -> None:
        while True:
            op, args = message[0], message[1:]
            if op in self._oneway:
                try:
                    self._oneway[op](*args)
                except Exception:  # a log line that failed to print must not end the connection
                    pass
            else:
                try:
                    reply: tuple = ("ok", self._handlers[op](*args))
                except BaseException as exc:  # travels back to the caller, who re-raises it
                    reply = ("err", exc)
                try:
                    send(conn, reply)
                except Exception as exc:  # an unpicklable reply value
                    try:
                        send(conn, ("err", RuntimeError(f"could not send the reply to {op}: {exc}")))
                    except Exception:
                        return
            try:
                message = recv(conn)
            except (EOFError, OSError):
                return


def hang_up(conn: Connection) -> None:
    """Shut a connection down so that a thread blocked reading it wakes with EOF.

    (Closing the fd alone does not wake a reader blocked in another thread on Linux.) The
    reading thread then closes it.
    """
    try:
        dup = socket.socket(fileno=os.dup(conn.fileno()))
    except (OSError, ValueError):  # already closed
        return
    try:
        dup.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        dup.close()


def _close_quietly(conn: Connection) -> None:
    try:
        conn.close()
    except OSError:
        pass


class ChannelClient:
    """The executor end of one connection; not thread-safe (use one per thread)."""

    def __init__(self, address: tuple[str, int], authkey: bytes) -> None:
        self.conn = Client(address, authkey=authkey)
        self._lock = threading.Lock()

    def call(self, op: str, *args: Any) -> Any:
        """Send a request and return the reply value, or raise the exception the driver sent."""
        with self._lock:
            send(self.conn, (op, *args))
            status, value = recv(self.conn)
        if status == "err":
            raise value
        return value

    def notify(self, op: str, *args: Any) -> None:
        """Send a one-way message (no reply)."""
        with self._lock:
            send(self.conn, (op, *args))

    def close(self) -> None:
        _close_quietly(self.conn)
