"""Client connections: the handshake and framing of :mod:`.protocol` over TCP or Unix sockets.

:class:`Connection` is a blocking socket for drivers and workers (the daemons' side is
:mod:`.server`, on asyncio). ``send`` coalesces: frames queued while another thread is writing go
out with that thread's next write, so a burst of submissions becomes a few large writes. A
reader thread (``serve_forever``) hands each message to a callback.

Addresses are ``tcp://HOST:PORT`` or ``unix:///path``. Servers bind 127.0.0.1 unless told
otherwise.

TLS (optional): with ``UNIPAR_TLS_CA`` set, every TCP connection is wrapped in TLS and the
daemon's certificate must chain to that CA; the secret handshake then runs inside TLS. Unix
sockets never use TLS (they do not leave the machine; their files are mode 0600).
"""

from __future__ import annotations

import functools
import os
import socket
import ssl
import threading
from collections import deque
from typing import Any, Callable

from ... import config
from . import protocol as P
from .buffers import ChunkBuffers
from .chunks import CHUNK_SIZE, WINDOW

HANDSHAKE_TIMEOUT = 10.0
POST_BATCH = 128   # frames queued by post() before the poster writes them itself
BIG_FRAME = 1 << 20   # frames from this size on are read into their own buffer (serve_forever)
# Frames of an object's chunks: CHUNK_SIZE bytes of data and a header of a few dozen bytes.
# WINDOW + 2: a frame is held until the node's loop has written it, and with only WINDOW kept
# one frame in ten of a 1 GiB pull still found every kept buffer busy.
_CHUNK_FRAMES = ChunkBuffers(CHUNK_SIZE + 4096, keep=WINDOW + 2)


def parse_address(address: str) -> tuple[str, Any]:
    """``("tcp", (host, port))`` or ``("unix", path)``."""
    if address.startswith("unix://"):
        return "unix", address[len("unix://"):]
    rest = address[len("tcp://"):] if address.startswith("tcp://") else address
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"bad address {address!r}: expected tcp://HOST:PORT or unix:///PATH")
    return "tcp", (host, int(port))


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        part = sock.recv(n - len(chunks))
        if not part:
            raise ConnectionError("connection closed during the handshake")
        chunks += part
    return bytes(chunks)


def _frame_rest(sock: socket.socket, buf: bytearray, max_frame: int,
                handle: Callable[[P.Message], None]) -> bool | None:
    """``buf`` begins a frame that is not all here: if it is big (a chunk of an object),
    read the rest of it straight into one buffer and hand the message on, then empty
    ``buf``. True: done (or a small frame, left to the caller); None: the peer closed.

    Why: read 64 KiB at a time, a big frame is copied three times in this process (recv,
    append to ``buf``, cut out of ``buf``), and the growing ``buf`` faults in fresh pages
    each time; this way the kernel copies it once, into the buffer the message keeps."""
    n = P.frame_length(memoryview(buf)[:4], max_frame)
    if n < BIG_FRAME:
        return True
    # A chunk's frame goes into a reused buffer (wire/buffers.py: no fresh pages to fault in).
    body = _CHUNK_FRAMES.take() if CHUNK_SIZE <= n <= _CHUNK_FRAMES.size else bytearray(n)
    have = len(buf) - 4
    view = memoryview(body)[:n]
    view[:have] = memoryview(buf)[4:]
    while have < n:
        got = sock.recv_into(view[have:], n - have)
        if not got:
            return None
        have += got
    del buf[:]
    # Read-only, as the bytes of a small frame are: values unpickled from it must not be
    # writable (a numpy array got from the store is read-only).
    handle(P.decode(view.toreadonly()))
    return True


@functools.lru_cache(maxsize=4)
def _client_context(ca_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    # Daemons are reached by the IPs they advertise, which a cluster's certificate need not
    # name; the private CA (and, inside TLS, the cluster secret) is what authenticates them.
    context.check_hostname = False
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def client_tls() -> ssl.SSLContext | None:
    """The TLS context for TCP connections (``UNIPAR_TLS_CA``), or None: plain TCP."""
    ca_file = config.tls_ca()
    return _client_context(os.path.abspath(ca_file)) if ca_file else None


def _connect(address: str, secret: bytes, timeout: float) -> socket.socket:
    """A socket connected to ``address`` that passed the handshake as the client (inside TLS
    for a TCP address when :func:`client_tls` gives a context)."""
    kind, where = parse_address(address)
    tls = None
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = client_tls()
    sock.settimeout(timeout)
    try:
        sock.connect(where)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=where[0])
        hello = _recv_exact(sock, P.SERVER_HELLO_SIZE)
        nonce_c = os.urandom(P.NONCE_SIZE)
        sock.sendall(P.client_proof(secret, hello, nonce_c))
        P.check_server_proof(secret, nonce_c, _recv_exact(sock, P.DIGEST_SIZE))
    except BaseException:
        sock.close()
        raise
    sock.settimeout(None)
    return sock


def _accept_handshake(sock: socket.socket, secret: bytes) -> None:
    """The server's side of the handshake on an accepted socket; raises on a bad peer.
    Nothing the peer sends is decoded before its proof checks out."""
    sock.settimeout(HANDSHAKE_TIMEOUT)
    nonce = os.urandom(P.NONCE_SIZE)
    sock.sendall(P.server_hello(nonce))
    answer = P.check_client_proof(secret, nonce, _recv_exact(sock, P.CLIENT_PROOF_SIZE))
    sock.sendall(answer)
    sock.settimeout(None)


class Listener:
    """A blocking Unix-socket server for a process that is not a daemon (a worker taking
    tasks pushed to it directly). Each peer must pass the handshake; ``on_connection`` gets
    a :class:`Connection` for it, on the accepting thread."""

    def __init__(self, path: str, secret: bytes,
                 on_connection: Callable[["Connection"], None]) -> None:
        self.path = path
        self.address = f"unix://{path}"
        self.secret = secret
        self.on_connection = on_connection
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        os.chmod(path, 0o600)
        self.sock.listen(64)
        threading.Thread(target=self._accept_loop, name="unipar-listener", daemon=True).start()

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._admit, args=(sock,), daemon=True,
                             name="unipar-admit").start()

    def _admit(self, sock: socket.socket) -> None:
        try:
            _accept_handshake(sock, self.secret)
        except (OSError, ConnectionError, P.ProtocolError):
            sock.close()   # a bad or foreign peer: refused; we keep serving others
            return
        self.on_connection(Connection(self.address, None, sock=sock))

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            try:
                os.unlink(self.path)
            except OSError:
                pass


class Connection:
    """A blocking, authenticated connection to a head or node daemon (or, accepted by a
    :class:`Listener`, from a client pushing tasks to a worker).

    ``send`` is safe from any thread; messages from one thread keep their order.
    """

    def __init__(self, address: str, secret: bytes | None, *, timeout: float = HANDSHAKE_TIMEOUT,
                 max_frame: int = P.DEFAULT_MAX_FRAME, sock: socket.socket | None = None) -> None:
        if sock is None:   # sock given: accepted and authenticated already (see Listener)
            sock = _connect(address, secret or b"", timeout)
        self.address = address
        self.sock = sock
        self.max_frame = max_frame
        self._out: deque[list[Any]] = deque()
        self._lock = threading.Lock()
        self._writing = False
        self.posted = threading.Event()   # set when post() left frames for a flusher
        self.closed = False
        # A TLS socket closed while serve_forever reads it is closed by that reader instead:
        # OpenSSL reads by fd number, so a fd closed under it could be reused by the next
        # connection and have its bytes read here.
        self._reader = threading.Lock()
        self._reading = False
        self._close_deferred = False
        # Called under the send lock before each message is queued: returns a message (the
        # process's pending refcount changes) that must precede it, or None. Under the lock, so
        # the changes of two threads cannot overtake each other.
        self.prelude: Callable[[], P.Message | None] | None = None

    def send(self, msg: P.Message | None) -> None:
        """Queue ``msg`` and write everything queued unless another thread is writing now.

        ``None`` sends only the prelude (pending refcount changes), if any.
        """
        parts = P.encode(msg) if msg is not None else None
        with self._lock:
            if self.prelude is not None:
                pre = self.prelude()
                if pre is not None:
                    self._out.append(P.encode(pre))
            if parts is not None:
                self._out.append(parts)
            if self._writing or not self._out:
                return   # the writing thread picks this up before it lets go
            self._writing = True
        self._drain()

    def post(self, msg: P.Message) -> None:
        """Queue ``msg`` without writing (unless many are queued); ``flush`` or the owner's
        flusher thread writes it soon. Bursts of submissions so become a few large writes."""
        parts = P.encode(msg)
        with self._lock:
            if self.prelude is not None:
                pre = self.prelude()
                if pre is not None:
                    self._out.append(P.encode(pre))
            self._out.append(parts)
            if self._writing or len(self._out) < POST_BATCH:
                self.posted.set()
                return
            self._writing = True
        self._drain()

    def flush(self) -> None:
        """Write everything queued now (returns at once if another thread is writing it)."""
        with self._lock:
            if self._writing or not self._out:
                return
            self._writing = True
        self._drain()

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._out:
                    self._writing = False
                    return
                batch = [part for parts in self._out for part in parts]
                self._out.clear()
            try:
                self._write_all(batch)
            except OSError:
                with self._lock:
                    self._writing = False
                    self._out.clear()
                self.closed = True
                raise ConnectionError(f"connection to {self.address} is closed") from None

    def _write_all(self, parts: list[Any]) -> None:
        small = bytearray()
        for part in parts:   # join small parts; big buffers go out as they are, uncopied
            view = memoryview(part)
            if view.nbytes < 65536:
                small += view
                continue
            if small:
                self.sock.sendall(small)
                small = bytearray()
            self.sock.sendall(view)
        if small:
            self.sock.sendall(small)

    def serve_forever(self, handle: Callable[[P.Message], None],
                      drained: Callable[[], None] | None = None) -> None:
        """Read messages and pass each to ``handle`` until the connection closes.
        ``drained`` runs after the messages of each read: a reader can act once per burst."""
        buf = bytearray()
        sock = self.sock
        with self._reader:
            self._reading = True
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buf += chunk
                pos = 0
                while len(buf) - pos >= 4:
                    n = P.frame_length(memoryview(buf)[pos:pos + 4], self.max_frame)
                    if len(buf) - pos - 4 < n:
                        break
                    body = memoryview(bytes(memoryview(buf)[pos + 4:pos + 4 + n]))
                    pos += 4 + n
                    handle(P.decode(body))
                if pos:
                    del buf[:pos]
                if len(buf) >= 4 and _frame_rest(sock, buf, self.max_frame, handle) is None:
                    return
                if drained is not None:
                    drained()
        except OSError:
            return
        finally:
            self.closed = True
            with self._reader:
                self._reading = False
                deferred = self._close_deferred
            if deferred:
                sock.close()

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)   # a reader's recv returns now
        except OSError:
            pass
        with self._reader:
            if self._reading and isinstance(self.sock, ssl.SSLSocket):
                self._close_deferred = True
                return
        self.sock.close()
