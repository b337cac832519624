"""Helpers for the native engine's tests: a daemon server running on a loop thread."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Iterator

import pytest

from unipar.native.head.daemon import Head
from unipar.native.wire.server import serve


class LoopServer:
    """A Head (the simplest daemon) listening on 127.0.0.1, served from a background loop."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.head: Head = self.call(lambda: Head(secret))
        servers = asyncio.run_coroutine_threadsafe(serve(self.head, secret), self.loop).result(10)
        self.servers = servers
        self.address = f"tcp://127.0.0.1:{servers[0].sockets[0].getsockname()[1]}"

    def call(self, fn: Any) -> Any:
        async def run() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def close(self) -> None:
        for server in self.servers:
            self.loop.call_soon_threadsafe(server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def loop_server() -> Iterator[LoopServer]:
    server = LoopServer(b"s" * 32)
    try:
        yield server
    finally:
        server.close()
