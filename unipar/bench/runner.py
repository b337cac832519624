"""``unipar bench``: the standard workloads on several backends, side by side.

    unipar bench [--backends a,b] [--workloads w1,w2] [--repeat N] [--quick]
                 [--baseline NAME] [--json FILE] [--plot FILE.png]

Each repeat runs every backend once, each in a fresh child process (:mod:`unipar.bench.child`)
so one engine's leftovers never weigh on another, and the order rotates between repeats so no
backend always runs first or last. A backend that fails to start becomes an error row and is not
retried; a workload that fails becomes a "failed" cell. The progress bar goes to stderr; the
table to stdout.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

from .child import FATAL_EXIT
from .report import BackendResult, Report
from .workloads import LIFECYCLE, WORKLOADS, Sizes

__all__ = ["configure", "run_bench"]

QUICK_SCALE = 0.1
PLAIN_MODULES = {"dask-plain": "distributed", "spark-plain": "pyspark", "ray-plain": "ray"}


def configure(parser: argparse.ArgumentParser) -> None:
    names = ", ".join(w.name for w in WORKLOADS)
    parser.add_argument("--backends", metavar="A,B,...", help="backends and plain engines "
                        f"({', '.join(PLAIN_MODULES)}) to measure (default: every installed one)")
    parser.add_argument("--workloads", metavar="W1,W2", help=f"workloads to run (default all: "
                        f"{names}); cold start, idle memory and shutdown are always measured")
    parser.add_argument("--repeat", type=int, metavar="N",
                        help="repeats; each backend runs once per repeat (default 3, --quick 2)")
    parser.add_argument("--quick", action="store_true",
                        help=f"scale counts and sizes down to {QUICK_SCALE:g} (a few minutes)")
    parser.add_argument("--scale", type=float, metavar="F",
                        help="scale counts and sizes by F (overrides --quick; 1 = full)")
    parser.add_argument("--baseline", metavar="NAME",
                        help="backend the ratios are relative to (default: the first)")
    parser.add_argument("--timeout", type=float, metavar="S",
                        help="seconds one backend's run may take (default 1800, --quick 900)")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--plot", metavar="FILE.png", help="write a PNG bar chart")
    parser.add_argument("--markdown", metavar="FILE.md", help="write the tables as Markdown")
    parser.add_argument("--load", metavar="FILE.json", help="run nothing: show the results a "
                        "previous --json wrote (with --plot/--markdown to re-render them)")
    parser.set_defaults(func=_cmd_bench)


def default_backends() -> list[str]:
    from ..compare import default_backends as unipar_backends
    plain = [n for n, mod in PLAIN_MODULES.items() if importlib.util.find_spec(mod) is not None]
    return unipar_backends() + plain


def _parse(args: argparse.Namespace) -> tuple[list[str], list[str], str | None]:
    """(backends, workloads, error message)."""
    from ..backends import available_backends
    backends = [n.strip() for n in (args.backends or "").split(",") if n.strip()]
    backends = list(dict.fromkeys(backends)) or default_backends()
    unknown = [b for b in backends if b not in available_backends() and b not in PLAIN_MODULES]
    if unknown:
        return [], [], (f"unknown backend(s) {', '.join(unknown)}; choose from "
                        f"{', '.join(available_backends() + list(PLAIN_MODULES))}")
    known = [w.name for w in WORKLOADS]
    lifecycle = [w.name for w in LIFECYCLE]
    chosen = [n.strip() for n in (args.workloads or "").split(",") if n.strip()] or known
    bad = [n for n in chosen if n not in known and n not in lifecycle]
    if bad:
        return [], [], f"unknown workload(s) {', '.join(bad)}; choose from {', '.join(known)}"
    return backends, [n for n in known if n in chosen], None


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.load:
        return _output(Report.from_json(json.loads(Path(args.load).read_text())), args)
    backends, names, problem = _parse(args)
    repeat = args.repeat if args.repeat is not None else (2 if args.quick else 3)
    if problem or repeat < 1:
        print(f"unipar bench: {problem or '--repeat must be at least 1'}", file=sys.stderr)
        return 2
    baseline = args.baseline or backends[0]
    if baseline not in backends:
        print(f"unipar bench: --baseline {baseline} is not among --backends", file=sys.stderr)
        return 2
    scale = args.scale if args.scale is not None else (QUICK_SCALE if args.quick else 1.0)
    timeout = args.timeout or (900.0 if args.quick or scale < 1 else 1800.0)
    from ..proctree import exit_on_sigterm
    exit_on_sigterm()
    _warn_uncompiled()
    report = run_bench(backends, names, repeat, Sizes(scale), baseline, timeout)
    return _output(report, args)


def _warn_uncompiled() -> None:
    """Say so when unipar's processes will compile its modules at every start: no bytecode
    cache next to them and none may be written (PYTHONDONTWRITEBYTECODE). Cold start and
    shutdown then include that compiling (~75 ms on a 2-core machine); an installed wheel has
    its caches, a checkout gets them from one run without the variable."""
    here = Path(__file__).resolve().parent.parent
    if sys.dont_write_bytecode and not (here / "__pycache__").is_dir():
        print("unipar bench: note: PYTHONDONTWRITEBYTECODE is set and unipar has no bytecode "
              f"cache ({here}): every process compiles unipar's modules at start, which cold "
              "start includes; run once without the variable to write the caches",
              file=sys.stderr)


def _output(report: Report, args: argparse.Namespace) -> int:
    """Print the tables; write the JSON, Markdown and PNG asked for. Exit 1 if nothing ran."""
    from rich.console import Console
    console = Console(width=max(Console().width, 50 + 20 * len(report.results)))
    for renderable in report.tables():
        console.print(renderable)
    if args.json and not args.load:
        Path(args.json).write_text(json.dumps(report.to_json(), indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(report.to_markdown())
    if args.plot:
        report.plot(args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0 if any(not r.error for r in report.results) else 1


def run_bench(backends: list[str], names: list[str], repeat: int, sizes: Sizes, baseline: str,
              timeout: float) -> Report:
    """Measure ``names`` on every backend ``repeat`` times; never raises for a backend's sake."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    results = {b: BackendResult(b) for b in backends}
    for b, mod in PLAIN_MODULES.items():
        if b in results and importlib.util.find_spec(mod) is None:
            results[b].error = f"{mod} is not installed"
    steps_per_run = len(names) + len(LIFECYCLE)
    progress = Progress(TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                        console=Console(stderr=True), transient=False)
    with progress, tempfile.TemporaryDirectory(prefix="unipar-bench-") as tmp:
        task = progress.add_task("bench", total=repeat * len(backends) * steps_per_run)
        for rep in range(repeat):
            order = backends[rep % len(backends):] + backends[:rep % len(backends)]
            for backend in order:
                result = results[backend]
                if result.error:
                    progress.advance(task, steps_per_run)
                    continue
                out = Path(tmp) / f"{backend}-{rep}.jsonl"
                desc = f"repeat {rep + 1}/{repeat} · {backend}"
                if not progress.console.is_terminal:   # no live bar: one line per run for logs
                    print(f"unipar bench: {desc}", file=sys.stderr, flush=True)
                done = _run_child(backend, names, sizes, timeout, out, result,
                                  lambda n: progress.update(task, advance=n, description=desc))
                progress.advance(task, steps_per_run - done)
    meta = _meta(repeat, sizes, backends)
    return Report(list(results.values()), [*names, *(w.name for w in LIFECYCLE)], baseline,
                  sizes, meta)


def _run_child(backend: str, names: list[str], sizes: Sizes, timeout: float, out: Path,
               result: BackendResult, advance: Callable[[int], None]) -> int:
    """One backend's run in a fresh process; records into ``result``; returns steps seen."""
    from ..proctree import run_measured
    out.touch()
    argv = [sys.executable, "-m", "unipar.bench.child", "--backend", backend,
            "--workloads", ",".join(names), "--scale", repr(sizes.scale), "--out", str(out)]
    seen = 0
    pending = ""
    reader = out.open(encoding="utf-8")

    def poll() -> None:
        nonlocal seen, pending
        pending += reader.read()
        *lines, pending = pending.split("\n")   # a line is complete once its newline is there
        for line in lines:
            if line.strip():
                step = _record(json.loads(line), result)
                seen += step
                advance(step)

    advance(0)
    measured = run_measured(argv, _child_env(), timeout, poll=poll)
    poll()
    reader.close()
    result.peak_rss.append(measured.peak_rss)
    if measured.left_behind:
        result.notes.append(f"left {measured.left_behind} process(es) running after exit "
                            "(killed)")
    if not measured.ok and measured.returncode != FATAL_EXIT:   # FATAL_EXIT: already recorded
        tail = " | ".join(measured.stderr.strip().splitlines()[-3:])
        why = "timed out" if measured.timed_out else f"exit {measured.returncode}"
        if seen == 0:
            _failed_start(result, f"{why}: {tail}"[:400])
        else:
            result.notes.append(f"run ended early ({why}): {tail}"[:400])
    return seen


def _failed_start(result: BackendResult, why: str) -> None:
    """A backend that never started is an error row (and is not retried); one that ran in an
    earlier repeat keeps its figures, with a note."""
    if result.samples:
        result.notes.append(f"did not start in one repeat: {why}")
    else:
        result.error = why


def _record(record: dict[str, Any], result: BackendResult) -> int:
    if "fatal" in record:
        _failed_start(result, record["fatal"])
        return 0
    if "done" in record:
        return 0
    name = record["name"]
    if record.get("na"):
        result.na.add(name)
    elif "error" in record:
        result.failures[name] = record["error"]
    else:
        result.samples.setdefault(name, []).append(float(record["value"]))
    return 1


def _child_env() -> dict[str, str]:
    # The child inherits our environment; only what it must not see is changed here.
    env = dict(os.environ)
    env.pop("UNIPAR_BACKEND", None)   # the child names its backend explicitly
    env.setdefault("RAY_DEDUP_LOGS", "0")
    return env


def _meta(repeat: int, sizes: Sizes, backends: list[str]) -> dict[str, Any]:
    versions = {}
    for package in ("unipar", "dask", "distributed", "pyspark", "ray", "numpy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            pass
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "repeat": repeat, "scale": sizes.scale,
            "backends": backends, "versions": versions,
            "command": "unipar " + " ".join(sys.argv[1:]) if sys.argv else ""}
