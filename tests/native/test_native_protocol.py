"""The wire: message round trips, out-of-band buffers, frame limits and the handshake."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from unipar.native.wire import protocol as P
from unipar.native.wire.transport import Connection


def _frame(msg: P.Message) -> memoryview:
    return memoryview(b"".join(bytes(memoryview(p)) for p in P.encode(msg)))


def _roundtrip(msg: P.Message) -> P.Message:
    frame = _frame(msg)
    n = P.frame_length(frame[:4], P.DEFAULT_MAX_FRAME)
    assert n == len(frame) - 4
    return P.decode(frame[4:])


def test_every_message_has_one_op_and_round_trips():
    assert len(P.MESSAGES) == len({cls.op for cls in P.MESSAGES.values()})
    for op, cls in P.MESSAGES.items():
        values = [f"{name}-value" for name in cls._names]
        msg = cls(*values)
        assert _roundtrip(msg) == msg, op


def test_every_message_is_reexported_by_protocol():
    # messages live in wire/messages/<area>.py; callers only ever import protocol
    for cls in P.MESSAGES.values():
        assert getattr(P, cls.__name__) is cls and cls.__name__ in P.__all__, cls.__name__


def test_messages_are_immutable_and_check_their_fields():
    msg = P.Reply(1, "x")
    assert msg.error == ""                      # defaults apply
    with pytest.raises(AttributeError):
        msg.req_id = 2                          # type: ignore[misc]
    with pytest.raises(TypeError):
        P.Reply()                               # type: ignore[call-arg]


def test_blob_travels_out_of_band_uncopied():
    payload = bytes(range(256)) * 64
    msg = P.PutObject(b"o" * 16, "inline", P.blob(payload), "", len(payload), [])
    parts = P.encode(msg)
    assert parts[1] is payload                  # the sender hands the buffer itself to the socket
    frame = _frame(msg)
    back = P.decode(frame[4:])
    assert isinstance(back.payload, memoryview) and bytes(back.payload) == payload
    assert back.payload.obj is frame.obj        # a view into the received frame, not a copy


def test_small_blobs_ride_in_the_header():
    msg = P.PutObject(b"o" * 16, "inline", P.blob(b"tiny"), "", 4, [])
    assert len(P.encode(msg)) == 1
    assert _roundtrip(msg).payload == b"tiny"


def test_frame_length_is_checked_before_reading_the_body():
    with pytest.raises(P.ProtocolError, match="exceeds"):
        P.frame_length(struct.pack("!I", 2**31), max_frame=1024)


def test_malformed_frames_are_protocol_errors():
    for body in (b"\x00\x00garbage", b"\x00\x05", b"\x00\x00" + b"\x92\xa3nop\x01"):
        with pytest.raises(P.ProtocolError):
            P.decode(memoryview(body))


def test_handshake_accepts_the_secret_and_serves(loop_server):
    conn = Connection(loop_server.address, loop_server.secret)
    replies: list[P.Message] = []
    reader = threading.Thread(target=conn.serve_forever, args=(replies.append,), daemon=True)
    reader.start()
    conn.send(P.LookupName(7, "nobody"))
    deadline = time.monotonic() + 10
    while not replies and time.monotonic() < deadline:
        time.sleep(0.01)
    assert replies == [P.Reply(7, None)]
    conn.close()
    reader.join(timeout=5)


def test_wrong_secret_is_refused_and_server_keeps_serving(loop_server):
    with pytest.raises((P.AuthenticationError, ConnectionError, OSError)):
        Connection(loop_server.address, b"x" * 32, timeout=5)
    good = Connection(loop_server.address, loop_server.secret)   # still serving others
    good.close()


def test_server_never_answers_a_client_that_does_not_know_the_secret(loop_server):
    host, port = loop_server.address[len("tcp://"):].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        hello = sock.recv(P.SERVER_HELLO_SIZE)
        assert hello.startswith(P.MAGIC)
        sock.sendall(b"\0" * P.CLIENT_PROOF_SIZE)         # a wrong proof
        sock.settimeout(5)
        assert sock.recv(100) == b""                       # closed, nothing sent back


def _raw_authenticated(address: str, secret: bytes) -> socket.socket:
    import os
    host, port = address[len("tcp://"):].rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    hello = sock.recv(P.SERVER_HELLO_SIZE)
    nonce = os.urandom(P.NONCE_SIZE)
    sock.sendall(P.client_proof(secret, hello, nonce))
    P.check_server_proof(secret, nonce, sock.recv(P.DIGEST_SIZE))
    return sock


@pytest.mark.parametrize("junk", [struct.pack("!I", 2**31) + b"xx",          # oversized length
                                  struct.pack("!I", 6) + b"\0\0garb",        # garbage body
                                  struct.pack("!I", 8) + b"\0\0" + b"\x92\xa7unknown\x01"])
def test_bad_frames_close_only_that_connection(loop_server, junk):
    with _raw_authenticated(loop_server.address, loop_server.secret) as sock:
        sock.sendall(junk)
        assert sock.recv(100) == b""                       # the daemon hung up on it
    good = Connection(loop_server.address, loop_server.secret)
    good.close()
