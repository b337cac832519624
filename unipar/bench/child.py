"""One backend's share of a benchmark repeat, in its own fresh process.

``python -m unipar.bench.child --backend B --workloads a,b --scale S --out FILE`` starts the
engine, runs the chosen workloads once each and stops it, appending one JSON object per line to
FILE as it goes (the parent reads the file for its progress bar; stdout is left to the engine
and its workers, whose output is not ours to parse):

    {"name": "cold_start", "value": 1.9}        seconds (or MB for idle_memory)
    {"name": "actor_batch", "na": true}         the engine has no counterpart
    {"name": "put_get_array", "error": "..."}   the workload raised
    {"fatal": "..."}                            the engine did not start; nothing else follows
    {"done": true}                              after shutdown
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from typing import IO, Any

from ..proctree import tree_rss
from .workloads import PREPARE, Sizes, make_unipar_suite

IDLE_SETTLE_S = 0.5   # let pools finish spawning before the idle-memory sample
FATAL_EXIT = 3        # exit status when the engine did not start (after a {"fatal"} line)


def make_suite(backend: str) -> Any:
    """The suite for a unipar backend name or a "<engine>-plain" pseudo-backend."""
    if backend.endswith("-plain"):
        from .baselines import PLAIN_SUITES
        return PLAIN_SUITES[backend][0]()
    return make_unipar_suite(backend)


def _emit(out: IO[str], **record: Any) -> None:
    out.write(json.dumps(record) + "\n")
    out.flush()


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()[:500]


def run(backend: str, names: list[str], sizes: Sizes, out: IO[str]) -> int:
    """Measure ``names`` on ``backend``; returns the exit status (FATAL_EXIT: no engine)."""
    suite = make_suite(backend)
    start = time.perf_counter()
    try:
        suite.start()
        suite.first_result()
    except BaseException as exc:
        traceback.print_exc()
        _emit(out, fatal=_error_text(exc))
        try:
            suite.shutdown()
        except BaseException:
            pass
        return FATAL_EXIT
    _emit(out, name="cold_start", value=time.perf_counter() - start)
    time.sleep(IDLE_SETTLE_S)
    _emit(out, name="idle_memory", value=tree_rss(os.getpid(), proportional=True) / 2**20)
    for name in names:
        _run_one(suite, name, sizes, out)
    start = time.perf_counter()
    suite.shutdown()
    _emit(out, name="shutdown", value=time.perf_counter() - start)
    _emit(out, done=True)
    return 0


def _run_one(suite: Any, name: str, sizes: Sizes, out: IO[str]) -> None:
    workload = getattr(suite, f"w_{name}", None)
    if workload is None:
        _emit(out, name=name, na=True)
        return
    try:
        prepare = getattr(suite, f"prepare_{name}", None) or PREPARE.get(name)
        extra = (prepare(sizes),) if prepare else ()
    except Exception as exc:
        traceback.print_exc()
        _emit(out, name=name, error=_error_text(exc))
        return
    cleanup = getattr(suite, f"cleanup_{name}", None)
    try:
        start = time.perf_counter()
        workload(sizes, *extra)
        _emit(out, name=name, value=time.perf_counter() - start)
    except Exception as exc:
        traceback.print_exc()
        _emit(out, name=name, error=_error_text(exc))
    finally:
        # Even after a failure: what prepare started (a second node) must not outlive it.
        if cleanup:
            try:
                cleanup(*extra)
            except Exception:
                traceback.print_exc()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unipar.bench.child")
    parser.add_argument("--backend", required=True)
    parser.add_argument("--workloads", default="")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    names = [n for n in args.workloads.split(",") if n]
    with open(args.out, "a", encoding="utf-8") as out:
        return run(args.backend, names, Sizes(args.scale), out)


if __name__ == "__main__":
    sys.exit(main())
