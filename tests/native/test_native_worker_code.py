"""A worker keeps a function's code from the one push that carried it, even when that task
never runs: the direct path sends the code only with a function's first push to a worker, so a
first push cancelled (or taken back) before it started must not leave the worker without it.
A long ``make fuzz`` run found the bug: a later task failed with ``TypeError: a bytes-like object
is required, not 'NoneType'`` raised where the worker loads the function."""

from __future__ import annotations

import types
from typing import Any

import cloudpickle
import pytest

from unipar.native.wire import protocol as P
from unipar.native.wire import serialization as S
from unipar.native.worker.process import Runtime


class Reply:
    """Stands for a client's direct connection: what the worker answers on it."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, msg: Any) -> None:
        self.sent.append(msg)

    post = send

    def flush(self) -> None:
        pass


def double(x: int) -> int:
    return 2 * x


def push(task_id: bytes, x: int, with_code: bool) -> P.RunTask:
    code = P.blob(cloudpickle.dumps(double)) if with_code else None
    args = P.blob(S.pack(*S.dumps(((x,), {}, False))[:2]))
    return P.RunTask(task_id, "double-key", code, "double", args, [], [task_id + b"-r"], [])


@pytest.fixture
def worker() -> Runtime:
    rt = Runtime("task")
    rt.client = types.SimpleNamespace(inline_max=1 << 20, promote=lambda oids: None)  # type: ignore[assignment]
    return rt


def outcome(reply: Reply) -> tuple[str, Any]:
    done = reply.sent[-1]
    oid, kind, payload = done.results[0][:3]
    return done.status, S.load_packed(payload)


def test_code_of_a_first_push_cancelled_before_it_ran_is_kept(worker: Runtime) -> None:
    worker._cancel(b"t1")                 # arrives before the task's turn: never started
    reply = Reply()
    worker.run_task(push(b"t1", 1, with_code=True), reply)
    assert outcome(reply)[0] == "error"   # cancelled
    worker.run_task(push(b"t2", 21, with_code=False), reply)
    assert outcome(reply) == ("ok", 42)


def test_code_of_a_first_push_taken_back_is_kept(worker: Runtime) -> None:
    reply = Reply()
    worker.waiting.add(b"t1")
    worker.taken.add(b"t1")               # its client took it back while it waited here
    worker._run_pushed(push(b"t1", 1, with_code=True), reply)
    worker.run_task(push(b"t2", 5, with_code=False), reply)
    assert outcome(reply) == ("ok", 10)
