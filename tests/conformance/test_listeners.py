"""Every listener unipar starts binds to loopback unless the user asks otherwise (issue #15).

After a task and an actor call have run (so workers exist), every listening TCP socket of this
process and of every process below it is checked. Every backend starts its helpers as
descendants of the driver (Dask's scheduler, nannies and workers; the Spark JVM and its Python
workers; Ray's GCS, raylet, agents and workers; unipar's head, node and workers), and a process
seen once stays checked even if it is re-parented later.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import psutil
import pytest

import unipar


@unipar.remote
def square(x):
    return x * x


@unipar.remote
class Echo:
    def echo(self, value):
        return value


def _tree(seen: dict[int, psutil.Process]) -> dict[int, psutil.Process]:
    """``seen`` plus this process and its descendants as they are now."""
    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        seen.setdefault(proc.pid, proc)
    return seen


def _exposed(procs: dict[int, psutil.Process]) -> list[str]:
    """'pid name ip:port' for each listening TCP socket of ``procs`` not bound to loopback."""
    found = []
    for proc in procs.values():
        try:
            name = proc.name()
            sockets = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue   # gone: it listens on nothing
        for sock in sockets:
            if sock.status != psutil.CONN_LISTEN:
                continue
            ip = ipaddress.ip_address(sock.laddr.ip)
            mapped = getattr(ip, "ipv4_mapped", None)   # ::ffff:127.0.0.1 from a Java socket
            if not (ip.is_loopback or (mapped is not None and mapped.is_loopback)):
                found.append(f"{proc.pid} {name} {sock.laddr.ip}:{sock.laddr.port}")
    return sorted(found)


def _exercise() -> None:
    """Run a task and an actor call, so that worker processes (and their servers) exist."""
    echo = Echo.remote()
    assert unipar.get([square.remote(3), echo.echo.remote("hi")], timeout=120) == [9, "hi"]
    unipar.kill(echo)


def test_every_listener_is_on_loopback(unipar_backend):
    seen = _tree({})
    _exercise()
    assert _exposed(_tree(seen)) == [], "listening on an address other than 127.0.0.1/::1"


def test_native_dashboard_is_on_loopback(unipar_backend, unipar_init_kwargs: dict[str, Any]):
    if unipar_backend != "native":
        pytest.skip("only the native backend has a dashboard of unipar's own")
    unipar.shutdown()   # the fixture starts the next test's backend again
    try:
        unipar.init(backend="native", **unipar_init_kwargs, backend_options={"dashboard_port": 0})
        seen = _tree({})
        _exercise()
        assert _exposed(_tree(seen)) == [], "listening on an address other than 127.0.0.1/::1"
    finally:
        unipar.shutdown()
