"""Every connection's basics: the hello exchange, replies to requests, pings and
shutdown.
"""

from __future__ import annotations

from typing import Any

from .base import Message, message


@message
class Hello(Message):
    op = "hello"
    role: str                 # "driver", "worker" or "actor"
    worker_id: str
    pid: int


@message
class HelloOk(Message):
    op = "hello_ok"
    client_id: int
    node_id: str
    session_dir: str
    inline_max: int
    head_address: str


@message
class Reply(Message):
    """The answer to any request that carries a ``req_id``; ``error`` is a message or ""."""
    op = "reply"
    req_id: int
    value: Any
    error: str = ""
    error_kind: str = ""


@message
class Ping(Message):
    """A request answered with an empty Reply once everything sent before it was handled."""
    op = "ping"
    req_id: int


@message
class Shutdown(Message):
    op = "shutdown"
