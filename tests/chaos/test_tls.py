"""TLS for native cluster traffic: ``unipar start --tls-cert/--tls-key`` on every daemon, drivers
with ``UNIPAR_TLS_CA``. The test makes its own self-signed certificate (``cryptography`` when
installed, else ``openssl req``).

Checks: a remote driver with the CA runs tasks on both nodes (head -> node and node -> node
traffic in TLS); the TCP listener offers no plaintext handshake (a plain client hears nothing,
and what a TLS client hears inside is the secret handshake's hello); a client that trusts
another CA is refused by certificate; Unix sockets stay plain (drivers on a node use them).
"""

from __future__ import annotations

import datetime
import json
import shutil
import socket
import ssl
import subprocess

import pytest

from multinode import Cluster, base_env, ok, unipar
from unipar.native.wire import protocol as P
from unipar.native.wire.transport import Connection, parse_address

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]


def make_certificate(directory, name: str = "cluster") -> tuple[str, str]:
    """A self-signed certificate and its key for 127.0.0.1, as PEM files."""
    cert, key = str(directory / f"{name}.pem"), str(directory / f"{name}.key")
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("needs the cryptography package or the openssl command")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                        f"/CN=unipar-{name}", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", key, "-out", cert], check=True, capture_output=True,
                       timeout=60)
        return cert, key
    private = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"unipar-{name}")])
    now = datetime.datetime.now(datetime.timezone.utc)
    made = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(private.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(private, hashes.SHA256()))
    with open(cert, "wb") as f:
        f.write(made.public_bytes(serialization.Encoding.PEM))
    with open(key, "wb") as f:
        f.write(private.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return cert, key


REMOTE_DRIVER = """
    import json, os, unipar
    unipar.init()
    @unipar.remote(resources={"far": 1})
    def where(x):
        return os.environ["UNIPAR_NODE_ADDRESS"], x * 2
    @unipar.remote
    def near(x):
        return unipar.get(where.remote(x), timeout=60)   # from one node to the other
    got = unipar.get([near.remote(i) for i in range(20)], timeout=120)
    print(json.dumps({"right": all(v == 2 * i for i, (_, v) in enumerate(got)),
                      "nodes": len({w for w, _ in got})}))
"""


def test_cluster_traffic_in_tls(tmp_path, chaos):
    cert, key = make_certificate(tmp_path)
    other, _ = make_certificate(tmp_path, "other")
    tls = ["--tls-cert", cert, "--tls-key", key]
    state = str(tmp_path / "state")
    cluster = Cluster(state, base_env(state))
    try:
        cluster.start(["--num-cpus", "2"] + tls,
                      [["--num-cpus", "1", "--resources", '{"far": 1}'] + tls])
        with open(cluster.secret_file) as f:
            secret_hex = f.read().strip()
        remote = dict(cluster.env, UNIPAR_CLUSTER_SECRET=secret_hex, UNIPAR_TLS_CA=cert)
        out = json.loads(ok(cluster.driver(REMOTE_DRIVER, address=cluster.head,
                                           env=remote)).splitlines()[-1])
        assert out == {"right": True, "nodes": 1}, out
        assert "Nodes: 2" in ok(unipar(cluster.env, "status"))   # finds the CA by itself
        _, (host, port) = parse_address(cluster.head)

        plain = socket.create_connection((host, port), timeout=10)
        plain.settimeout(1.5)
        try:
            with pytest.raises(socket.timeout):
                plain.recv(64)      # a TLS server waits for a ClientHello: no plain hello
        finally:
            plain.close()

        context = ssl.create_default_context(cafile=cert)
        context.check_hostname = False
        with context.wrap_socket(socket.create_connection((host, port), timeout=10)) as inner:
            hello = inner.recv(P.SERVER_HELLO_SIZE)
            assert hello.startswith(P.MAGIC), hello      # the secret handshake, inside TLS
            version = inner.version()

        wrong = ssl.create_default_context(cafile=other)
        wrong.check_hostname = False
        with pytest.raises(ssl.SSLCertVerificationError):
            wrong.wrap_socket(socket.create_connection((host, port), timeout=10))
        chaos.record(tls_version=version, remote_driver_right=out["right"])
    finally:
        stopped = cluster.stop()
    assert stopped is not None and stopped.returncode == 0
    assert not cluster.processes()


def test_a_client_trusting_another_ca_is_refused(tmp_path, monkeypatch):
    """In-process: Connection with UNIPAR_TLS_CA naming the wrong CA fails by certificate."""
    cert, key = make_certificate(tmp_path)
    other, _ = make_certificate(tmp_path, "other")
    state = str(tmp_path / "state")
    cluster = Cluster(state, base_env(state))
    try:
        cluster.start(["--num-cpus", "1", "--tls-cert", cert, "--tls-key", key], [])
        monkeypatch.setenv("UNIPAR_TLS_CA", other)
        with pytest.raises(ssl.SSLError):
            Connection(cluster.head, b"x" * 32, timeout=10)
        monkeypatch.setenv("UNIPAR_TLS_CA", cert)
        # Right CA, wrong secret: TLS passes, then the daemon closes on the wrong proof.
        with pytest.raises((ConnectionError, P.ProtocolError)):
            Connection(cluster.head, b"x" * 32, timeout=10)
    finally:
        cluster.stop()
