"""An actor on a Spark executor: the long-running Spark task that hosts one unipar actor.

:func:`actor_partition` is what Spark runs for the actor's one task (sent by reference in the
job's closure: keep it at this module path). It connects back to the driver with
``("actor_hello", ...)``, builds the instance and serves ``("call", ...)`` messages over that one
connection, in order (or on a thread pool / event loop when ``max_concurrency`` or ``async def``
say so), until the driver closes it. Tasks and the shared types are in executor.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from typing import Any, Callable, Iterable

import cloudpickle

from ...exceptions import capture_remote
from ...options import split_returns
from ..._yielding import bound_method
from . import envs
from .channel import recv, send
from .generators import STREAM, StreamRunner
from .executor import (ActorPayload, ThreadContext, current_context, ensure_worker,
                       resolve_args, thread_state)

__all__ = ["actor_partition"]


class _ActorServer:
    """Serves one actor's calls over its connection until the driver closes it."""

    def __init__(self, conn: Any, payload: ActorPayload) -> None:
        self._conn = conn
        self._payload = payload
        self._send_lock = threading.Lock()
        self._instance: Any = None
        self._where = f"{payload.name} (spark executor, pid={os.getpid()})"

    def _send(self, message: tuple) -> None:
        with self._send_lock:
            send(self._conn, message)

    def _enter(self) -> ThreadContext:
        ctx = thread_state.context = ThreadContext(self._payload.name,
                                      lambda stream, text: self._send(("log", stream, text)), None)
        return ctx

    def run(self) -> None:
        ctx = self._enter()
        try:
            with envs.applied(self._payload.runtime_env):
                args, kwargs = resolve_args(self._payload.args_blob, self._payload.dep_values)
                self._instance = cloudpickle.loads(self._payload.cls_bytes)(*args, **kwargs)
        except Exception as exc:
            ctx.flush()
            self._send(("failed", capture_remote(exc, f"{self._where} __init__")))
            return
        ctx.flush()
        self._send(("ready",))
        runner, stop = self._runner()
        try:
            while True:
                try:
                    message = recv(self._conn)
                except (EOFError, OSError):
                    return
                if message[0] == "stop":
                    return
                runner(message)
        finally:
            stop()
            thread_state.context = None

    def _runner(self) -> tuple[Callable[[tuple], Any], Callable[[], None]]:
        """How calls run: (run one message, stop everything) for this actor's concurrency."""
        payload = self._payload
        if payload.is_async:
            loop = asyncio.new_event_loop()
            threading.Thread(target=self._loop_main, args=(loop,), name="unipar-actor-loop",
                             daemon=True).start()
            sem = asyncio.Semaphore(payload.concurrency)

            async def guarded(message: tuple) -> None:
                async with sem:
                    await self._serve_async(message)
            return (lambda message: asyncio.run_coroutine_threadsafe(guarded(message), loop),
                    lambda: loop.call_soon_threadsafe(loop.stop))
        if payload.concurrency > 1:
            pool = concurrent.futures.ThreadPoolExecutor(payload.concurrency,
                                                         thread_name_prefix="unipar-actor",
                                                         initializer=self._enter)
            return (lambda message: pool.submit(self._serve, message),
                    lambda: pool.shutdown(wait=False, cancel_futures=True))
        return self._serve, lambda: None

    def _loop_main(self, loop: asyncio.AbstractEventLoop) -> None:
        self._enter()
        asyncio.set_event_loop(loop)
        loop.run_forever()

    def _prepare(self, message: tuple) -> tuple[int, Callable[..., Any], tuple, dict, int, str]:
        _, call_id, method, args_blob, dep_values, num_returns = message
        args, kwargs = resolve_args(args_blob, dep_values)
        if method.startswith(STREAM):   # a streaming generator method (generators.py)
            fn: Callable[..., Any] = StreamRunner(getattr(self._instance, method[len(STREAM):]))
        else:
            fn = bound_method(self._instance, method)
        return call_id, fn, args, kwargs, num_returns, method

    def _reply(self, call_id: int, method: str, num_returns: int, result: Any) -> None:
        outputs = split_returns(result, num_returns, f"{self._payload.name}.{method}")
        self._send(("result", call_id, ("ok", [cloudpickle.dumps(v) for v in outputs])))

    def _fail(self, call_id: int, method: str, exc: BaseException) -> None:
        error = capture_remote(exc, f"{self._payload.name}.{method} "
                                    f"(spark executor, pid={os.getpid()})")
        self._send(("result", call_id, ("err", error)))

    def _serve(self, message: tuple) -> None:
        call_id, method = message[1], message[2]
        try:
            with envs.applied(self._payload.runtime_env):
                call_id, fn, args, kwargs, num_returns, method = self._prepare(message)
                result = fn(*args, **kwargs)
                if asyncio.iscoroutine(result):
                    result = asyncio.run(result)
            current_context().flush()
            self._reply(call_id, method, num_returns, result)
        except Exception as exc:
            current_context().flush()
            self._fail(call_id, method, exc)

    async def _serve_async(self, message: tuple) -> None:
        call_id, method = message[1], message[2]
        try:
            call_id, fn, args, kwargs, num_returns, method = self._prepare(message)
            result = fn(*args, **kwargs)
            if asyncio.iscoroutine(result):
                result = await result
            current_context().flush()
            self._reply(call_id, method, num_returns, result)
        except Exception as exc:
            current_context().flush()
            self._fail(call_id, method, exc)


def actor_partition(payload: ActorPayload, rows: Iterable[Any]) -> list:
    """The function Spark runs for an actor's one (long-running) task."""
    for _ in rows:
        pass
    ensure_worker(payload.session)
    from multiprocessing.connection import Client
    conn = Client(payload.session.address, authkey=payload.session.authkey)
    try:
        send(conn, ("actor_hello", payload.actor_number, payload.attempt))
        _ActorServer(conn, payload).run()
    finally:
        conn.close()
    return []
