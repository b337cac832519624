"""Hostile input: random bytes for the frame decoder and the handshake, malicious pickles from
peers without the secret, stalled frames, floods of bad and silent connections.

The daemons' side of a connection is one class (``ServerConnection``) for head, nodes and
their Unix sockets, so an in-process head served on a private loop stands for all of them;
the flood runs against a real ``unipar start`` cluster while a driver works.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import pickle
import socket
import struct
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from multinode import Cluster, base_env, ok
from unipar.native.head.daemon import Head
from unipar.native.wire import protocol as P
from unipar.native.wire import server as S
from unipar.testing import wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]

SECRET = b"s" * 32
# Inputs per fuzz test: a fixed budget in CI; UNIPAR_FUZZ_FRAMES=100000 for a long run.
FUZZ = int(os.environ.get("UNIPAR_FUZZ_FRAMES", "2000"))


class _Evil:
    """Unpickling it creates a file: proof that something was unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


# -- the decoder and the handshake, fed random bytes -------------------------------------------

@settings(max_examples=FUZZ, deadline=None)
@given(st.binary(max_size=256), st.integers(0, 2**32 - 1))
def test_frame_decoder_raises_only_protocol_errors(body: bytes, announced: int) -> None:
    try:
        n = P.frame_length(struct.pack("!I", announced), 1 << 20)
        assert 2 <= n <= 1 << 20
    except P.ProtocolError:
        pass
    try:
        P.decode(memoryview(body))
    except P.ProtocolError:
        pass


class _Recorder:
    """A server whose every handler is recorded; stands for a daemon."""

    def __init__(self) -> None:
        self.handled: list[str] = []
        self.handlers = {op: self._record for op in P.MESSAGES}

    def _record(self, conn: Any, msg: P.Message) -> None:
        self.handled.append(msg.op)

    def on_disconnect(self, conn: Any) -> None:
        pass


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.aborted = False

    def write(self, data: Any) -> None:
        self.written += bytes(data)

    def writelines(self, parts: Any) -> None:
        for part in parts:
            self.write(part)

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def _valid_frames() -> list[bytes]:
    """Real frames (one message each, some with out-of-band blobs) to mutate."""
    msgs = [P.Ping(7), P.ListNodes(1), P.Ping(2**40)]
    msgs += [m for m in (_blob_message(),) if m is not None]
    return [b"".join(bytes(part) for part in P.encode(m)) for m in msgs]


def _blob_message() -> P.Message | None:
    """A message type with a blob field, filled with a big blob (out-of-band buffer)."""
    try:
        return P.PutObject(b"o" * 16, "inline", P.blob(b"x" * 5000), "", 5000, [])
    except TypeError:   # its fields changed: the other frames still cover decoding
        return None


_MUTATIONS = st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert", "len"]),
                                st.integers(0, 1 << 16), st.integers(0, 255)), max_size=6)


@settings(max_examples=FUZZ, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_valid_frames()), _MUTATIONS)
def test_mutated_valid_frames_decode_or_raise_protocol_errors(frame: bytes, edits) -> None:
    """A valid frame with bytes flipped, cut, inserted or its length prefix changed: the
    length check and the decoder raise ProtocolError or return a message, nothing else."""
    data = bytearray(frame)
    for kind, where, value in edits:
        at = where % (len(data) + 1)
        if kind == "flip" and data:
            data[at % len(data)] ^= value or 1
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = bytes([value])
        elif kind == "len" and len(data) >= 4:
            data[:4] = struct.pack("!I", (where << 16 | value) & 0xFFFFFFFF)
    if len(data) < 4:
        return
    try:
        n = P.frame_length(bytes(data[:4]), 1 << 20)
        P.decode(memoryview(bytes(data[4:4 + n])))
    except P.ProtocolError:
        pass


def test_a_huge_declared_length_is_refused_before_allocation() -> None:
    """An authenticated peer announcing a 4 GiB frame: refused from its 4-byte prefix, with
    no buffer of that size ever allocated."""
    import tracemalloc

    async def run() -> tuple[_Recorder, _Transport]:
        server = _Recorder()
        conn = S.ServerConnection(server, SECRET, max_frame=1 << 20)
        transport = _Transport()
        conn.connection_made(transport)
        nonce_c = os.urandom(P.NONCE_SIZE)
        conn.data_received(P.client_proof(SECRET, bytes(transport.written), nonce_c))
        assert not transport.aborted
        tracemalloc.start()
        conn.data_received(struct.pack("!I", 0xFFFFFFFF) + b"\0" * 64)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 1 << 20, peak
        conn.connection_lost(None)
        return server, transport
    server, transport = asyncio.run(run())
    assert transport.aborted and server.handled == []


@settings(max_examples=max(50, FUZZ // 10), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_nothing_is_decoded_before_the_handshake(chunks: list[bytes]) -> None:
    """Random bytes (a wrong proof, pickles, frames) from a peer without the secret reach no
    handler; the connection is aborted as soon as its proof is complete and wrong."""
    async def run() -> tuple[_Recorder, _Transport, int]:
        server = _Recorder()
        conn = S.ServerConnection(server, SECRET, max_frame=1 << 20)
        transport = _Transport()
        conn.connection_made(transport)
        fed = 0
        for chunk in chunks:
            if transport.aborted:
                break
            conn.data_received(chunk)
            fed += len(chunk)
        conn.connection_lost(None)
        return server, transport, fed
    server, transport, fed = asyncio.run(run())
    assert server.handled == []
    # A random 64-byte proof is wrong (1 in 2**256 it is not): aborted once it is complete.
    assert transport.aborted == (fed >= P.CLIENT_PROOF_SIZE)


# -- a real server on a private loop -----------------------------------------------------------

class _HeadServer:
    """An in-process head on 127.0.0.1, its loop on a thread; stopped by :meth:`close`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.head = Head(SECRET)
        ready = threading.Event()

        async def start() -> None:
            self.servers = await S.serve(self.head, SECRET, "127.0.0.1", 0)
            self.port = self.servers[0].sockets[0].getsockname()[1]
            ready.set()
        self.thread = threading.Thread(target=self._run, args=(start,), daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def _run(self, start: Any) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def close(self) -> None:
        def stop() -> None:
            for server in self.servers:
                server.close()
            self.loop.stop()
        self.loop.call_soon_threadsafe(stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def head_server() -> Iterator[_HeadServer]:
    server = _HeadServer()
    try:
        yield server
    finally:
        server.close()


def _raw(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    hello = b""
    while len(hello) < P.SERVER_HELLO_SIZE:
        part = sock.recv(P.SERVER_HELLO_SIZE - len(hello))
        assert part, "the server closed before its hello"
        hello += part
    return sock


def _closed(sock: socket.socket, timeout: float = 10.0) -> bool:
    """True when the peer closed ``sock`` within ``timeout`` (reads until EOF)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def _handshake(port: int) -> socket.socket:
    """A connection that passed the handshake with the right secret."""
    sock = _raw_hello(port)
    sock, hello = sock
    nonce_c = os.urandom(P.NONCE_SIZE)
    sock.sendall(P.client_proof(SECRET, hello, nonce_c))
    answer = b""
    while len(answer) < P.DIGEST_SIZE:
        answer += sock.recv(P.DIGEST_SIZE - len(answer))
    P.check_server_proof(SECRET, nonce_c, answer)
    return sock


def _raw_hello(port: int) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    hello = b""
    while len(hello) < P.SERVER_HELLO_SIZE:
        part = sock.recv(P.SERVER_HELLO_SIZE - len(hello))
        assert part, "the server closed before its hello"
        hello += part
    return sock, hello


def test_a_live_servers_handshake_fed_random_bytes(chaos) -> None:
    """Random bytes, and a right proof followed by random frames, sent to a live head over
    TCP: it never runs a handler for the unauthenticated ones, never dies, and still serves a
    proper client afterwards."""
    server = _HeadServer()
    count = max(20, FUZZ // 20)
    sent = [0]
    try:
        @settings(max_examples=count, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(st.binary(max_size=300), st.booleans())
        def feed(data: bytes, authenticated: bool) -> None:
            sock = _handshake(server.port) if authenticated else _raw(server.port)
            try:
                sock.sendall(data)
                sent[0] += 1
            except OSError:
                pass      # closed on us already: refused, as it should be
            finally:
                sock.close()
        feed()
        sock = _handshake(server.port)
        try:
            sock.sendall(b"".join(bytes(p) for p in P.encode(P.ListNodes(5))))
            sock.settimeout(10)
            assert sock.recv(4), "the head stopped answering after the fuzzing"
        finally:
            sock.close()
    finally:
        server.close()
    chaos.record(connections=sent[0])


def _evil_frame(path: str) -> bytes:
    payload = pickle.dumps(_Evil(path))
    return struct.pack("!I", len(payload)) + payload


@pytest.mark.parametrize("proof", ["none", "wrong secret"])
def test_malicious_pickles_without_the_secret_never_run(head_server, tmp_path, proof):
    target = tmp_path / "pwned"
    sock = _raw(head_server.port)
    try:
        if proof == "wrong secret":
            nonce = os.urandom(P.NONCE_SIZE)
            sock.sendall(hmac.new(b"w" * 32, b"client" + nonce, hashlib.sha256).digest() + nonce)
        sock.sendall(_evil_frame(str(target)) * 4)
        assert _closed(sock), "the server kept a connection that failed the handshake"
    finally:
        sock.close()
    assert not target.exists()


def test_a_stalled_frame_after_the_handshake_is_closed(head_server, monkeypatch):
    monkeypatch.setattr(S, "FRAME_STALL_TIMEOUT", 0.5)
    sock = socket.create_connection(("127.0.0.1", head_server.port), timeout=10)
    try:
        hello = b""
        while len(hello) < P.SERVER_HELLO_SIZE:
            hello += sock.recv(P.SERVER_HELLO_SIZE - len(hello))
        nonce_c = os.urandom(P.NONCE_SIZE)
        sock.sendall(P.client_proof(SECRET, hello, nonce_c))
        answer = b""
        while len(answer) < P.DIGEST_SIZE:
            answer += sock.recv(P.DIGEST_SIZE - len(answer))
        P.check_server_proof(SECRET, nonce_c, answer)
        sock.sendall(b"\0\0")   # half of a length prefix, then nothing
        assert _closed(sock, timeout=20), "a stalled frame kept its connection open"
    finally:
        sock.close()


def test_closed_connections_are_logged_at_a_bounded_rate(head_server, caplog, chaos,
                                                         monkeypatch):
    monkeypatch.setattr(S, "_closed_log", S._RateLimited(S.LOG_WINDOW, S.LOG_BURST))
    caplog.set_level(logging.WARNING, logger="unipar.native")
    bad = 200
    for _ in range(bad):
        sock = _raw(head_server.port)
        sock.sendall(b"x" * P.CLIENT_PROOF_SIZE)
        _closed(sock)
        sock.close()
    lines = [r for r in caplog.records if "closing connection" in r.getMessage()]
    chaos.record(bad_connections=bad, log_lines=len(lines))
    assert 0 < len(lines) <= S.LOG_BURST


# -- a flood against a real cluster while a driver works ---------------------------------------

WORKER = """
    import unipar
    unipar.init()
    @unipar.remote
    def inc(x):
        return x + 1
    total = 0
    for _ in range(20):
        total += sum(unipar.get([inc.remote(i) for i in range(50)], timeout=120))
    print("TOTAL", total)
"""


def test_bad_and_silent_connections_while_a_driver_works(tmp_path, chaos):
    malformed, silent = chaos.scaled(300), chaos.scaled(100)
    state = str(tmp_path / "state")
    cluster = Cluster(state, base_env(state))
    held: list[socket.socket] = []
    try:
        cluster.start(["--num-cpus", "2"], [])
        node = next(r["address"] for r in cluster.state()["procs"] if r["role"] == "node")
        ports = [int(cluster.head.rpartition(":")[2]), int(node.rpartition(":")[2])]
        for i in range(silent):   # held open, saying nothing: closed by the handshake timer
            held.append(socket.create_connection(("127.0.0.1", ports[i % 2]), timeout=10))
        rng = chaos.rng
        for i in range(malformed):
            sock = socket.create_connection(("127.0.0.1", ports[i % 2]), timeout=10)
            sock.sendall(rng.randbytes(rng.randrange(1, 300)))
            sock.close()
        out = ok(cluster.driver(WORKER))
        assert f"TOTAL {20 * sum(range(1, 51))}" in out
        closed = sum(_closed(s, timeout=20) for s in held)
        chaos.record(malformed=malformed, silent=silent, silent_closed=closed)
        assert closed == silent
        logs = "".join(p.read_text(errors="replace") for p in Path(state, "logs").glob("*.log"))
        chaos.record(closed_log_lines=logs.count("closing connection"))
        assert logs.count("closing connection") <= 4 * S.LOG_BURST
    finally:
        for sock in held:
            sock.close()
        cluster.stop()
    assert not cluster.processes()
