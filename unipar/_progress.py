"""The progress bar of ``unipar.progress(refs)`` and ``get(refs, progress=True)``.

::

    api.progress ── track(refs, wait_some, timeout) ── loop: wait_some(pending, STEP_S)
                                                         └▶ bar.update(done, total)
                 ── then api.get(refs): the values (or the first error), as get gives them

The bar is drawn on stderr only when stderr is a terminal (with rich when it is installed,
else one plain line redrawn with ``\\r``); otherwise nothing is printed at all, so logs and
pipes stay clean. It only waits: it never changes what ``get`` returns or raises.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from typing import Any, Callable, Sequence

STEP_S = 0.2         # how long one wait may last before the bar is redrawn
WIDTH = 30           # characters of the plain bar


class _PlainBar:
    def __init__(self, total: int, description: str) -> None:
        self.total, self.description = total, description or "unipar"

    def describe(self, description: str) -> None:
        self.description = description

    def update(self, done: int) -> None:
        filled = WIDTH * done // max(self.total, 1)
        sys.stderr.write(f"\r{self.description} [{'#' * filled}{' ' * (WIDTH - filled)}] "
                         f"{done}/{self.total}")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()


class _RichBar:
    def __init__(self, total: int, description: str) -> None:
        from rich.progress import Progress
        self.progress = Progress(transient=False)
        self.progress.start()
        self.task = self.progress.add_task(description or "unipar", total=total)

    def describe(self, description: str) -> None:
        self.progress.update(self.task, description=description)

    def update(self, done: int) -> None:
        self.progress.update(self.task, completed=done)

    def close(self) -> None:
        self.progress.stop()


def terminal_bar(total: int, description: str) -> Any:
    """A bar on stderr (``describe(text)``, ``update(done)``, ``close()``), or None when
    stderr is not a terminal. ``unipar compare`` shows its runs with it too."""
    if not sys.stderr.isatty():
        return None
    if importlib.util.find_spec("rich") is not None:
        return _RichBar(total, description)
    return _PlainBar(total, description)


def track(refs: Sequence[Any], wait_some: Callable[[list[Any], float], list[Any]],
          timeout: float | None, description: str = "") -> None:
    """Wait until every ref in ``refs`` is done (or ``timeout`` passes), showing how many are.

    ``wait_some(pending, seconds)`` returns the refs of ``pending`` that are done, waiting at
    most ``seconds`` for all of them. Returns at the deadline without raising: the ``get``
    that follows raises the timeout, as it would without a bar."""
    pending = list(dict.fromkeys(refs))
    total = len(pending)
    bar = terminal_bar(total, description) if total else None
    if bar is None:   # nothing to show: the get that follows does the waiting
        return
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while pending:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            step = STEP_S if left is None else min(STEP_S, left)
            done = set(wait_some(pending, step))
            pending = [r for r in pending if r not in done]
            bar.update(total - len(pending))
    finally:
        bar.close()
