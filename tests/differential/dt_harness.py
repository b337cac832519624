"""Check one generated program: run it on ``local`` (the oracle) and on the backend under test,
compare, check lifetimes, and fail with the program printed as runnable Python.

::

    program ──► run on local (oracle) ──► Run ─┐
       │                                       ├─► compare ──► differences ─┐
       └──────► run on the backend ──────► Run ─┘                           ├─► AssertionError:
                 │ (native) node object count back to baseline? ──► leak ──┘   diffs + seed +
                 │ (a GetTimeoutError) restart the backend                      rendered program

The oracle runs in this process: a fresh :class:`~unipar.backends.local.LocalBackend` is made
the process's backend for the length of the oracle run and the backend under test is put back
after (nothing of the backend under test runs in between: its previous program was cleaned up).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid
from collections import Counter
from typing import Any, Callable, Iterator

import unipar
from unipar import _state
from unipar.backends.local import LocalBackend
from unipar.options import InitOptions

from dt_interp import Run, compare, compared_counts, read_log, read_log_counts, run
from dt_program import Program, render

# Programs' logs. A call whose ref a program dropped may write after the run is over, so the
# folder, not each file, is what goes: conftest.py removes it when the session ends.
LOG_DIR = tempfile.mkdtemp(prefix="unipar-fuzz-")
GET_TIMEOUT = float(os.environ.get("UNIPAR_FUZZ_TIMEOUT", "15"))
LEAK_WAIT = 5.0    # seconds for frees (and unawaited calls) to reach the node: asynchronous
# Programs checked in this session (shrinking included), for the summary conftest.py prints.
CHECKED = {"programs": 0}


@contextlib.contextmanager
def oracle() -> Iterator[None]:
    """Make a fresh local backend this process's backend, for one program."""
    local = LocalBackend()
    local.start(InitOptions(num_cpus=4))
    previous = _state.current()
    _state.install(local)
    try:
        yield
    finally:
        _state.install(previous)
        local.shutdown()


def native_object_count() -> int | None:
    """Entries in the native node's object table (its own report, as the dashboard reads
    it), or None when the running backend is not a native cluster this driver started."""
    backend = _state.current()
    cluster = getattr(backend, "_cluster", None)
    if backend is None or backend.name != "native" or cluster is None:
        return None
    from unipar.native.dashboard.server import query_node
    return int(query_node(cluster.node_unix_address, cluster.secret, 10)["objects"])


# Per backend: how to count the objects it holds, for the lifetime property. Only native has
# one; a plugin backend can add its own counter here.
OBJECT_COUNTERS: dict[str, Callable[[], int | None]] = {"native": native_object_count}


def _settle(count: Callable[[], int | None], baseline: int, timeout: float) -> int:
    """Wait (bounded) until ``count()`` is back to ``baseline``; returns the last count."""
    deadline = time.monotonic() + timeout
    while True:
        now = count()
        if now is None or now <= baseline or time.monotonic() >= deadline:
            return now if now is not None else baseline
        time.sleep(0.05)


def _run_once(program: Program, ns: str, expect: Counter[tuple[str, int]] | None = None) -> Run:
    """Run the program; with ``expect`` (the oracle's side effects), wait a bounded time for
    the ones still missing: a call whose ref was dropped unawaited may still be running."""
    log = os.path.join(LOG_DIR, f"{uuid.uuid4().hex}.log")
    try:
        result = run(program, log, ns, GET_TIMEOUT, expect, LEAK_WAIT)
        if expect is not None:
            deadline = time.monotonic() + LEAK_WAIT
            while (not expect <= compared_counts(program, result.counts)
                   and time.monotonic() < deadline):
                time.sleep(0.05)
                result.log, result.counts = read_log(log), read_log_counts(log)
        return result
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(log)


def restart(backend: str, init_kwargs: dict[str, Any]) -> None:
    """Start the backend afresh: stuck work from a hung program must not leak into the next."""
    unipar.shutdown()
    unipar.init(backend=backend, **init_kwargs)


def check(program: Program, backend: str, origin: str, init_kwargs: dict[str, Any]) -> None:
    """Raise AssertionError (with the rendered program) if the backend differs from local, or
    (native) if objects outlive the program."""
    ns = uuid.uuid4().hex[:8] + "-"
    CHECKED["programs"] += 1
    with oracle():
        want = _run_once(program, ns)
    counter = OBJECT_COUNTERS.get(backend)
    baseline = counter() if counter else None
    got = _run_once(program, ns, compared_counts(program, want.counts))
    diffs = compare(program, want, got)
    if got.hung:
        restart(backend, init_kwargs)
    elif counter is not None and baseline is not None:
        left = _settle(counter, baseline, LEAK_WAIT)
        if left > baseline:
            diffs.append(f"lifetimes: the node holds {left} objects {LEAK_WAIT:.0f} s after the "
                         f"program dropped every ref and killed its actors (before it: "
                         f"{baseline})")
    if diffs:
        raise AssertionError(report(program, backend, origin, diffs))


def report(program: Program, backend: str, origin: str, diffs: list[str]) -> str:
    return (f"backend {backend!r} differs from the local oracle ({origin}):\n"
            + "".join(f"  - {d}\n" for d in diffs)
            + "\nThe program (runnable from the repository root):\n\n"
            + render(program, backend, origin, GET_TIMEOUT))
