"""The daemons' side of a connection: an asyncio protocol speaking :mod:`.protocol`.

Frames read in one ``data_received`` are handled in one go, and the replies they cause are
flushed once, at the end of that loop iteration, so many small messages become one write.
Servers bind 127.0.0.1 unless told otherwise.

Every stage of a connection has a time limit: the handshake ``HANDSHAKE_TIMEOUT``, and after it
a frame begun must go on arriving — no byte of it for ``FRAME_STALL_TIMEOUT`` s and the
connection is closed (an idle connection between frames is fine: drivers may wait for hours).
Closed connections are logged at most ``LOG_BURST`` times per ``LOG_WINDOW`` s, then counted: a
flood of bad connections cannot flood the log.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import ssl
import time
from typing import Any, Coroutine

from ... import config
from . import protocol as P
from .transport import HANDSHAKE_TIMEOUT

log = logging.getLogger("unipar.native")

FRAME_STALL_TIMEOUT = 30.0   # s a frame begun may go without a byte before we close
LOG_WINDOW, LOG_BURST = 10.0, 10   # closed connections logged per window, then counted


class _RateLimited:
    """At most ``burst`` warnings per ``window`` seconds; the rest are counted and the count
    logged with the first warning of a later window."""

    def __init__(self, window: float, burst: int) -> None:
        self.window, self.burst = window, burst
        self.start = 0.0
        self.logged = 0
        self.dropped = 0

    def warning(self, text: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self.start >= self.window:
            if self.dropped:
                log.warning("%d more connection(s) closed in %g s, not logged one by one",
                            self.dropped, self.window)
            self.start, self.logged, self.dropped = now, 0, 0
        if self.logged < self.burst:
            self.logged += 1
            log.warning(text, *args)
        else:
            self.dropped += 1


_closed_log = _RateLimited(LOG_WINDOW, LOG_BURST)


def run_loop(main: Coroutine[Any, Any, Any]) -> Any:
    """Run a daemon's main coroutine on uvloop where it is installed, else on asyncio's loop.

    uvloop is a dependency on Linux and macOS: a daemon's per-message cost is mostly the event
    loop's, and uvloop cuts a request round trip through a daemon to about a third.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


class ServerConnection(asyncio.Protocol):
    """One authenticated peer of a daemon.

    ``server.handlers`` maps op -> ``handler(conn, msg)``; ``server.on_disconnect(conn)`` runs
    once when the peer goes away. Nothing the peer sends is decoded before the handshake
    succeeds; a peer that fails it, or sends a malformed or oversized frame, is disconnected
    and the daemon carries on serving others.
    """

    def __init__(self, server: Any, secret: bytes, max_frame: int = P.DEFAULT_MAX_FRAME) -> None:
        self.server = server
        self.secret = secret
        self.max_frame = max_frame
        self.transport: asyncio.Transport | None = None
        self.authenticated = False
        self.nonce = os.urandom(P.NONCE_SIZE)
        self.buf = bytearray()
        self.out: list[Any] = []
        self.flush_scheduled = False
        self.closed = False
        self.info: dict[str, Any] = {}      # what the server learns about this peer
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._received = 0   # data_received calls: progress, for the stall check

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.write(P.server_hello(self.nonce))  # type: ignore[attr-defined]
        loop = asyncio.get_running_loop()
        self._handshake_timer = loop.call_later(HANDSHAKE_TIMEOUT, self._handshake_expired)

    def _handshake_expired(self) -> None:
        if not self.authenticated:
            self.abort("handshake timed out")

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._received += 1
        if not self.authenticated:
            if len(self.buf) < P.CLIENT_PROOF_SIZE:
                return
            try:
                answer = P.check_client_proof(self.secret, self.nonce,
                                              bytes(self.buf[:P.CLIENT_PROOF_SIZE]))
            except P.AuthenticationError as exc:
                self.abort(str(exc))
                return
            del self.buf[:P.CLIENT_PROOF_SIZE]
            self.authenticated = True
            if self._handshake_timer is not None:
                self._handshake_timer.cancel()
            self.transport.write(answer)  # type: ignore[union-attr]
        self._read_frames()
        if self.buf and self._stall_timer is None and not self.closed:
            self._arm_stall_check()

    def _arm_stall_check(self) -> None:
        """A frame is half here: check in FRAME_STALL_TIMEOUT s that more of it came."""
        seen = self._received

        def check() -> None:
            self._stall_timer = None
            if self.closed or not self.buf:
                return
            if self._received == seen:
                self.abort(f"no byte of a frame begun for {FRAME_STALL_TIMEOUT:g} s")
            else:
                self._arm_stall_check()
        self._stall_timer = asyncio.get_running_loop().call_later(FRAME_STALL_TIMEOUT, check)

    def _read_frames(self) -> None:
        buf = self.buf
        pos = 0
        try:
            while len(buf) - pos >= 4 and not self.closed:
                n = P.frame_length(memoryview(buf)[pos:pos + 4], self.max_frame)
                if len(buf) - pos - 4 < n:
                    break
                body = memoryview(bytes(memoryview(buf)[pos + 4:pos + 4 + n]))
                pos += 4 + n
                msg = P.decode(body)
                handler = self.server.handlers.get(msg.op)
                if handler is None:
                    raise P.ProtocolError(f"unexpected message {msg.op!r}")
                handler(self, msg)
        except P.ProtocolError as exc:
            self.abort(str(exc))
            return
        finally:
            if pos:
                del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._handshake_timer, self._stall_timer):
            if timer is not None:
                timer.cancel()
        was_authenticated = self.authenticated
        self.closed = True
        if was_authenticated:
            self.server.on_disconnect(self)

    # sending
    def send(self, msg: P.Message) -> None:
        """Queue ``msg``; everything queued in this loop iteration goes out in one write."""
        if self.closed:
            return
        self.out.extend(P.encode(msg))
        if not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        if self.closed or not self.out or self.transport is None:
            self.out.clear()
            return
        parts, self.out = self.out, []
        self.transport.writelines(parts)

    def abort(self, reason: str) -> None:
        _closed_log.warning("closing connection from %s: %s", self.peer(), reason)
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def peer(self) -> str:
        if self.transport is None:
            return "?"
        return str(self.transport.get_extra_info("peername") or "unix socket")


@functools.lru_cache(maxsize=4)
def _server_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def server_tls() -> ssl.SSLContext | None:
    """The TLS context of this daemon's TCP listeners (``UNIPAR_TLS_CERT``/``_KEY``, set by
    ``unipar start --tls-cert/--tls-key``), or None: plain TCP."""
    pair = config.tls_server()
    return _server_context(*map(os.path.abspath, pair)) if pair else None


async def serve(server: Any, secret: bytes, host: str = "127.0.0.1", port: int = 0,
                unix_path: str | None = None, tcp_fd: int | None = None,
                unix_fd: int | None = None) -> list[asyncio.AbstractServer]:
    """Start listeners for ``server``: TCP, and a Unix socket when ``unix_path`` is given.

    ``tcp_fd``/``unix_fd`` are sockets already bound and listening, inherited from the process
    that started this daemon: it knew our addresses before we ran, so clients could connect
    (and wait in the backlog) while we were still starting. The TCP listener speaks TLS only
    when :func:`server_tls` gives a context (the secret handshake then runs inside TLS).
    """
    loop = asyncio.get_running_loop()
    tls = server_tls()
    secure: dict[str, Any] = {"ssl": tls, "ssl_handshake_timeout": HANDSHAKE_TIMEOUT} if tls else {}

    def factory() -> ServerConnection:
        return ServerConnection(server, secret)
    if tcp_fd is not None:
        servers = [await loop.create_server(factory, sock=socket.socket(fileno=tcp_fd), **secure)]
    else:
        servers = [await loop.create_server(factory, host, port, **secure)]
    if unix_fd is not None:
        servers.append(await loop.create_unix_server(factory, sock=socket.socket(fileno=unix_fd)))
    elif unix_path:
        servers.append(await loop.create_unix_server(factory, unix_path))
    return servers
