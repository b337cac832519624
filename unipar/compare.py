"""``unipar run`` and ``unipar compare``: run a script on a chosen backend, or on several.

``unipar run --backend dask script.py a b`` is exactly ``UNIPAR_BACKEND=dask python script.py a b``:
it sets the environment and replaces itself with the same interpreter, so the exit status,
signals and terminal are the script's own.

``unipar compare`` runs the script once per backend (``--repeat`` times each), every run in a
fresh process, and checks that every run exits 0 and prints the same stdout as the first
backend. It prints a table (exit status, median wall time, peak memory of every process the run
started) and exits 1 when a run failed or outputs disagree, so it can gate CI.

Before comparing, each stdout line is normalised: lines matching an ``--ignore`` regex are
dropped; the worker prefix ``(name pid=123) `` that remote ``print`` output carries is removed
(backends differ in whether they add one; ``--keep-prefix`` keeps it); with ``--unordered`` the
lines are sorted, for scripts whose workers print concurrently.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

__all__ = ["configure_run", "configure_compare", "normalise_output", "BackendRuns"]

# Ray-style prefix of worker output: "(task_name pid=1234) text" or "(Actor pid=1, ip=...) text".
WORKER_PREFIX = re.compile(r"^\([^()\n]*\bpid=\d+[^()\n]*\) ?")
DIFF_LINES = 30   # a short diff: enough to see what differs, not a wall of text


# -- unipar run ----------------------------------------------------------------------------------

def backend_env(backend: str | None, address: str | None,
                base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a script sees under ``unipar run --backend B --address A``."""
    env = dict(os.environ if base is None else base)   # the script inherits ours, plus:
    if backend:
        env["UNIPAR_BACKEND"] = backend
    if address:
        env["UNIPAR_ADDRESS"] = address
    return env


def _check_backend(name: str | None) -> str | None:
    """An error message when ``name`` is not a backend unipar knows, else None."""
    from .backends import available_backends
    if name is None or name in available_backends():
        return None
    return f"unknown backend {name!r}; choose one of: {', '.join(available_backends())}"


def configure_run(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Run a Python script with a backend selected: the same as "
                          "UNIPAR_BACKEND=NAME [UNIPAR_ADDRESS=ADDR] python script.py [args...].")
    parser.add_argument("--backend", metavar="NAME", help="backend to use (default: "
                        "$UNIPAR_BACKEND, else native)")
    parser.add_argument("--address", metavar="ADDR", help="cluster address (sets UNIPAR_ADDRESS)")
    parser.add_argument("script", help="the Python script to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script")
    parser.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    problem = _check_backend(args.backend)
    if problem:
        print(f"unipar run: {problem}", file=sys.stderr)
        return 2
    env = backend_env(args.backend, args.address)
    sys.stdout.flush()
    sys.stderr.flush()
    # exec, not a child: exit status, signals and the terminal belong to the script.
    os.execve(sys.executable, [sys.executable, args.script, *args.args], env)
    return 127  # not reached


# -- unipar compare ------------------------------------------------------------------------------

def normalise_output(text: str, ignore: Sequence[re.Pattern[str]] = (), keep_prefix: bool = False,
                     unordered: bool = False) -> list[str]:
    """The stdout lines that are compared between backends (see the module docstring)."""
    lines = []
    for line in text.splitlines():
        if not keep_prefix:
            line = WORKER_PREFIX.sub("", line, count=1)
        if any(p.search(line) for p in ignore):
            continue
        lines.append(line.rstrip())
    return sorted(lines) if unordered else lines


@dataclass
class BackendRuns:
    """Every run of the script on one backend, and how its output compared."""

    backend: str
    exit_codes: list[int] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)
    peak_rss: list[int] = field(default_factory=list)
    left_behind: int = 0
    matched: bool | None = None         # None: this is the reference, or it did not run
    diff: list[str] = field(default_factory=list)
    stderr_tail: str = ""
    lines: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.exit_codes) and all(code == 0 for code in self.exit_codes)

    @property
    def median_wall(self) -> float | None:
        return statistics.median(self.wall_s) if self.wall_s else None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("lines")
        data.update(ok=self.ok, median_wall_s=self.median_wall,
                    peak_rss_max=max(self.peak_rss, default=None))
        return data


def configure_compare(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run a script on several backends (each run in a fresh process) and check that every "
        "run exits 0 and prints the same stdout. Script arguments: put them after the script, "
        "or after '--' when they start with '-' (unipar compare --backends a,b -- s.py --flag).")
    parser.add_argument("script", help="the Python script to run")
    parser.add_argument("args", nargs="*", help="arguments passed to the script")
    parser.add_argument("--backends", metavar="A,B,...", help="backends to compare, the first is "
                        "the reference (default: every installed backend)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="runs per backend; wall time is the median (default 1)")
    parser.add_argument("--ignore", action="append", default=[], metavar="REGEX",
                        help="drop stdout lines matching REGEX before comparing (timings, pids, "
                        "addresses); repeatable")
    parser.add_argument("--unordered", action="store_true",
                        help="compare the lines as sorted sets (for concurrent prints)")
    parser.add_argument("--keep-prefix", action="store_true",
                        help="keep the '(name pid=N) ' prefix of worker output when comparing")
    parser.add_argument("--timeout", type=float, default=600.0, metavar="S",
                        help="seconds one run may take before it is killed (default 600)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.set_defaults(func=_cmd_compare)


def default_backends() -> list[str]:
    """Installed backends, the default one first."""
    from .backends import available_backends, is_installed
    from .config import DEFAULT_BACKEND
    names = [n for n in available_backends() if is_installed(n)]
    return sorted(names, key=lambda n: (n != DEFAULT_BACKEND, n))


def parse_backends(text: str | None) -> list[str]:
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    return list(dict.fromkeys(names)) or default_backends()


def _cmd_compare(args: argparse.Namespace) -> int:
    backends = parse_backends(args.backends)
    for name in backends:
        if problem := _check_backend(name):
            print(f"unipar compare: {problem}", file=sys.stderr)
            return 2
    if args.repeat < 1:
        print("unipar compare: --repeat must be at least 1", file=sys.stderr)
        return 2
    if not Path(args.script).is_file():
        print(f"unipar compare: no such script: {args.script}", file=sys.stderr)
        return 2
    try:
        ignore = [re.compile(p) for p in args.ignore]
    except re.error as exc:
        print(f"unipar compare: bad --ignore regex: {exc}", file=sys.stderr)
        return 2
    from .proctree import exit_on_sigterm
    exit_on_sigterm()
    runs = run_all(args, backends, ignore)
    reference = judge(runs)
    _print_report(runs, reference, args.repeat)
    ok = all(r.ok and r.matched is not False for r in runs) and reference is not None
    if args.json:
        payload = {"script": args.script, "args": args.args, "repeat": args.repeat,
                   "ignore": args.ignore, "unordered": args.unordered, "reference": reference,
                   "ok": ok, "backends": [r.to_json() for r in runs]}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0 if ok else 1


def run_all(args: argparse.Namespace, backends: list[str],
            ignore: list[re.Pattern[str]]) -> list[BackendRuns]:
    """Run the script ``args.repeat`` times on each backend, alternating backends."""
    from ._progress import terminal_bar
    from .proctree import run_measured
    runs = {name: BackendRuns(name) for name in backends}
    argv = [sys.executable, args.script, *args.args]
    bar = terminal_bar(args.repeat * len(backends), "unipar compare")   # None: not a terminal
    for rep in range(args.repeat):
        for name in backends:
            doing = f"unipar compare: {name} (run {rep + 1}/{args.repeat})"
            if bar is None:
                print(doing, file=sys.stderr)
            else:
                bar.describe(doing)
            result = run_measured(argv, backend_env(name, None), timeout=args.timeout)
            if bar is not None:
                bar.update(rep * len(backends) + backends.index(name) + 1)
            r = runs[name]
            r.exit_codes.append(result.returncode)
            r.wall_s.append(result.wall_s)
            r.peak_rss.append(result.peak_rss)
            r.left_behind += result.left_behind
            if rep == 0:
                r.lines = normalise_output(result.stdout, ignore, args.keep_prefix, args.unordered)
            if not result.ok and not r.stderr_tail:
                tail = result.stderr.strip().splitlines()[-15:]
                r.stderr_tail = "\n".join(tail) or ("timed out" if result.timed_out else "")
    if bar is not None:
        bar.close()
    return list(runs.values())


def judge(runs: list[BackendRuns]) -> str | None:
    """Compare every successful run's output with the first successful backend's.

    Sets ``matched`` and ``diff`` on each; returns the reference backend (None if none ran).
    """
    reference = next((r for r in runs if r.ok), None)
    if reference is None:
        return None
    for r in runs:
        if r is reference or not r.ok:
            continue
        r.matched = r.lines == reference.lines
        if not r.matched:
            diff = list(difflib.unified_diff(reference.lines, r.lines, reference.backend,
                                             r.backend, lineterm="", n=1))
            r.diff = diff[:DIFF_LINES] + ([f"... ({len(diff) - DIFF_LINES} more diff lines)"]
                                          if len(diff) > DIFF_LINES else [])
    return reference.backend


def _print_report(runs: list[BackendRuns], reference: str | None, repeat: int) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(width=max(100, Console().width))
    table = Table(title=f"unipar compare ({repeat} run{'s' if repeat > 1 else ''} per backend)")
    table.add_column("backend")
    table.add_column("exit")
    table.add_column("wall time" + (" (median)" if repeat > 1 else ""), justify="right")
    table.add_column("peak memory", justify="right")
    table.add_column("output")
    for r in runs:
        codes = sorted(set(r.exit_codes))
        exit_text = Text(",".join(map(str, codes)), style="green" if r.ok else "bold red")
        wall = f"{r.median_wall:.2f} s" if r.median_wall is not None else "-"
        if repeat > 1 and r.wall_s:
            wall += f" ({min(r.wall_s):.2f}-{max(r.wall_s):.2f})"
        memory = f"{max(r.peak_rss) / 2**20:,.0f} MB" if r.peak_rss else "-"
        if r.backend == reference:
            output = Text("reference")
        elif r.matched is None:
            output = Text("not compared (run failed)", style="yellow")
        else:
            output = Text("same" if r.matched else "DIFFERENT",
                          style="green" if r.matched else "bold red")
        table.add_row(r.backend, exit_text, wall, memory, output)
    console.print(table)
    for r in runs:
        if r.diff:
            console.print(f"[bold]output of {r.backend} differs from {reference}:[/bold]")
            console.print(Text("\n".join(r.diff)))
        if not r.ok:
            console.print(f"[bold red]{r.backend} failed[/bold red] (exit {r.exit_codes}):")
            console.print(Text(r.stderr_tail or "(no stderr)"))
        if r.left_behind:
            console.print(f"[yellow]{r.backend} left {r.left_behind} process(es) running after "
                          "the script exited; they were killed[/yellow]")
    if reference is None:
        console.print("[bold red]no backend ran the script successfully[/bold red]")
