"""The ``unipar`` command: a table of sub-commands, each defined in the module that owns it.

A command module exposes ``configure(parser)``, which adds its arguments and sets
``parser.set_defaults(func=...)``; ``func(args) -> int`` is the exit status. Modules load only
when their command runs, so ``unipar --version`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable

from . import __version__


def _cmd_backends(args: argparse.Namespace) -> int:
    from .backends import backend_table
    from .config import DEFAULT_BACKEND
    rows = backend_table()
    width = max(len(r["name"]) for r in rows) + (len(" (default)"))
    print(f"{'backend':<{width}}  {'installed':<9}  how to install / what it is")
    for row in rows:
        name = str(row["name"]) + (" (default)" if row["name"] == DEFAULT_BACKEND else "")
        hint = row["install"] if not row["installed"] and row["install"] else row["description"]
        print(f"{name:<{width}}  {'yes' if row['installed'] else 'no':<9}  {hint}")
    return 0


def _configure_backends(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(func=_cmd_backends)


def _configure_logs(parser: argparse.ArgumentParser) -> None:
    """The native cluster's ``unipar logs``, plus ``--backend NAME``: where that engine
    keeps its logs (each backend's ``logs_location``)."""
    from .native.cluster.logs import configure
    configure(parser)
    native = parser.get_default("func")
    parser.add_argument("--backend", help="say where this backend keeps its logs instead")

    def run(args: argparse.Namespace) -> int:
        if args.backend in (None, "native"):
            return native(args)
        from .backends import load_backend
        try:
            print(load_backend(args.backend).logs_location)
        except (ValueError, ImportError) as exc:
            print(f"unipar logs: {exc}", file=sys.stderr)
            return 1
        return 0
    parser.set_defaults(func=run)


# name -> (help, "module:configure"); the module is imported only to build that sub-parser.
COMMANDS: dict[str, tuple[str, str]] = {
    "backends": ("list the backends, whether each is installed, and how to install it",
                 "unipar.cli:_configure_backends"),
    "run": ("run a script with a backend selected (like UNIPAR_BACKEND=NAME python script.py)",
            "unipar.compare:configure_run"),
    "compare": ("run a script on several backends; check outputs agree; compare time and memory",
                "unipar.compare:configure_compare"),
    "bench": ("benchmark standard workloads on several backends and against plain Dask/Spark/Ray",
              "unipar.bench.runner:configure"),
    "start": ("start a native cluster's head (--head) or join a node to one (--address=HOST:PORT)",
              "unipar.native.cluster.cli:configure_start"),
    "stop": ("stop every native cluster process `unipar start` started on this machine",
             "unipar.native.cluster.cli:configure_stop"),
    "status": ("show the native cluster's nodes, resources in use, tasks, actors and stores",
               "unipar.native.cluster.cli:configure_status"),
    "logs": ("list the native cluster's log files, print or follow one (--backend: where "
             "another engine keeps its logs)", "unipar.cli:_configure_logs"),
    "job": ("submit a driver to run on the native cluster with a working dir; its status, "
            "logs, stop, list", "unipar.native.cluster.jobs:configure"),
}


def _load(target: str) -> Callable[[argparse.ArgumentParser], None]:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unipar", description="unipar: one API, many engines")
    parser.add_argument("--version", action="version", version=f"unipar {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in (argv or []) if a in COMMANDS), None)
    for name, (help_text, target) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            _load(target)(command_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
