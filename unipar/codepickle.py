"""Pickling user code by value so that remote tracebacks still name the user's file and line.

cloudpickle ships functions defined in scripts, ``__main__`` and test modules by value. Since
cloudpickle 3.1 it also renames their code to ``<dynamic-code>`` (for deterministic bytes), so a
traceback from a worker read ``File "<dynamic-code>", line 8`` — no file, no source text. This
module's :func:`dumps` keeps each code object's real file name and, once per file, ships that
file's source lines; unpickling puts them into :mod:`linecache`, so ``traceback`` prints the
user's line of code even on a machine that does not have the file.

Every backend pickles user functions and classes through :func:`dumps`; values go through plain
cloudpickle (their code, if any, is rare and not worth the bytes).
"""

from __future__ import annotations

import io
import linecache
import types
from typing import Any

import cloudpickle

#: A file bigger than this travels without its source text (the traceback keeps file and line).
MAX_SOURCE_BYTES = 512 * 1024

_DYNAMIC = "<dynamic-code>"


def _rebuild_code(args: tuple, filename: str, lines: list[str] | None) -> types.CodeType:
    """Unpickling side: the code object, with its source registered for tracebacks.

    An entry whose mtime is None is never dropped by ``linecache.checkcache`` (the module's own
    convention for source that has no file here), and a real file, where it exists, wins.
    """
    if lines is not None and filename not in linecache.cache:
        linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)
    return types.CodeType(*args)


class _CodePickler(cloudpickle.Pickler):
    """cloudpickle, except that code keeps its file name and carries its file's source once."""

    def __init__(self, file: io.BytesIO, protocol: int | None = None) -> None:
        super().__init__(file, protocol=protocol)
        self._sent_sources: set[str] = set()

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is types.CodeType:
            return self._reduce_code(obj)
        return super().reducer_override(obj)

    def _reduce_code(self, code: types.CodeType) -> Any:
        rebuild, args = cloudpickle.cloudpickle._code_reduce(code)
        args = list(args)
        try:
            at = args.index(_DYNAMIC)
        except ValueError:   # an older cloudpickle that keeps the name itself
            return rebuild, tuple(args)
        args[at] = code.co_filename
        return _rebuild_code, (tuple(args), code.co_filename, self._source(code.co_filename))

    def _source(self, filename: str) -> list[str] | None:
        if filename in self._sent_sources or filename.startswith("<"):
            return None
        self._sent_sources.add(filename)
        lines = linecache.getlines(filename)
        if not lines or sum(map(len, lines)) > MAX_SOURCE_BYTES:
            return None
        return lines


def dumps(obj: Any, protocol: int | None = None) -> bytes:
    """Pickle a user function or class (by value where cloudpickle would) with its code's real
    file names and source text; load it with plain ``pickle.loads`` / ``cloudpickle.loads``."""
    with io.BytesIO() as file:
        _CodePickler(file, protocol=protocol).dump(obj)
        return file.getvalue()
