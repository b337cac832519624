"""Memory of a whole process tree: a driver and every process it (or its children) started.

Engines start helpers (Dask workers, the Spark JVM, Ray's raylet, unipar's node and workers)
as descendants of the driver. :class:`TreeSampler` sums RSS over every live process of that tree
every ``interval`` seconds (50 ms) in a background thread and keeps the maximum; it walks the
process table for new members every :data:`TREE_EVERY` samples. A process seen once stays
tracked even if it is re-parented (daemonised) later.

RSS counts shared pages (shared memory, copy-on-write pages of forked workers) once per
process, so the sum over-states what the tree costs the machine; it is the figure ``ps`` and
``top`` show, and it is measured the same way for every backend.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Callable

import psutil

TREE_EVERY = 4   # samples between two walks of the process table

__all__ = ["Measured", "TreeSampler", "exit_on_sigterm", "kill_tree", "run_measured", "tree_rss"]


def _descendants(root: psutil.Process) -> list[psutil.Process]:
    try:
        return root.children(recursive=True)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return []


def tree_rss(pid: int, proportional: bool = False) -> int:
    """Memory in bytes of ``pid`` and all its live descendants (0 when it is gone): summed
    RSS, or with ``proportional`` summed PSS where the system reports it (each shared page
    counted once over the processes sharing it — the tree's real footprint, fair to engines
    whose processes are forked or map one store)."""
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in [root, *_descendants(root)]:
        try:
            info = proc.memory_full_info() if proportional else proc.memory_info()
            total += getattr(info, "pss", info.rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return total


class TreeSampler:
    """Samples the summed RSS of a process tree in a thread; ``stop()`` returns the peak.

    Use as a context manager or call ``start()``/``stop()``; ``stop()`` is idempotent.
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self._pid = pid
        self._interval = interval
        self._known: dict[int, psutil.Process] = {}
        self._peak = 0
        self._samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tree-sampler-{pid}", daemon=True)

    @property
    def peak_rss(self) -> int:
        """The largest summed RSS (bytes) seen so far."""
        return self._peak

    def start(self) -> "TreeSampler":
        try:
            self._known[self._pid] = psutil.Process(self._pid)
        except psutil.NoSuchProcess:
            pass
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> int:
        """Stop sampling and return the peak summed RSS in bytes."""
        if not self._stop.is_set():
            self._stop.set()
            if self._thread.is_alive():
                self._thread.join(timeout=5)
        return self._peak

    def seen(self) -> list[psutil.Process]:
        """Every process of the tree seen so far, other than the root."""
        return [p for pid, p in self._known.items() if pid != self._pid]

    def __enter__(self) -> "TreeSampler":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def _refresh_tree(self) -> None:
        """Add every descendant of every known process (one scan of the process table)."""
        ppid_map = getattr(psutil, "_ppid_map", None)   # one /proc scan; fallback: psutil API
        if ppid_map is None:
            for proc in list(self._known.values()):
                for child in _descendants(proc):
                    self._known.setdefault(child.pid, child)
            return
        children: dict[int, list[int]] = {}
        for pid, ppid in ppid_map().items():
            children.setdefault(ppid, []).append(pid)
        todo = list(self._known)
        while todo:
            for pid in children.get(todo.pop(), []):
                if pid not in self._known:
                    try:
                        self._known[pid] = psutil.Process(pid)
                    except psutil.NoSuchProcess:
                        continue
                    todo.append(pid)

    def _sample(self) -> None:
        # Walking the process table costs far more than reading RSS, so membership is refreshed
        # every TREE_EVERY samples; a process living less than that may be missed.
        if self._samples % TREE_EVERY == 0:
            self._refresh_tree()
        self._samples += 1
        total = 0
        for pid, proc in list(self._known.items()):
            try:
                total += proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                del self._known[pid]
        self._peak = max(self._peak, total)


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return alive


def kill_tree(procs: list[psutil.Process], settle: float = 0.0, grace: float = 3.0) -> int:
    """Wait up to ``settle`` seconds for ``procs`` to exit by themselves, then terminate the
    rest, and kill what is still alive ``grace`` seconds later.

    Returns how many were still alive after ``settle`` (left behind by whoever started them).
    """
    alive = _alive(procs)
    if alive and settle > 0:
        psutil.wait_procs(alive, timeout=settle)
        alive = _alive(alive)
    for proc in alive:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, still = psutil.wait_procs(alive, timeout=grace)
    for proc in still:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(still, timeout=grace)
    return len(alive)


@dataclass
class Measured:
    """One measured run of a command: what ``run_measured`` returns."""

    returncode: int            # -N: killed by signal N; 124: timed out (as timeout(1) says)
    wall_s: float              # start of the process to its exit
    peak_rss: int              # bytes, summed over the whole tree, sampled every ~50 ms
    stdout: str
    stderr: str
    timed_out: bool = False
    left_behind: int = 0       # processes of the tree still alive after the root exited

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def _root(pid: int) -> list[psutil.Process]:
    try:
        return [psutil.Process(pid)]
    except psutil.NoSuchProcess:
        return []


def _wait(proc: subprocess.Popen[bytes], deadline: float,
          poll: Callable[[], None] | None) -> None:
    """``proc.wait()`` until ``deadline`` (raises TimeoutExpired), calling ``poll`` about five
    times a second meanwhile."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise subprocess.TimeoutExpired(proc.args, 0)
        try:
            proc.wait(timeout=min(left, 0.2) if poll else left)
            return
        except subprocess.TimeoutExpired:
            if poll:
                poll()


def run_measured(argv: list[str], env: dict[str, str], timeout: float, settle: float = 5.0,
                 poll: Callable[[], None] | None = None) -> Measured:
    """Run ``argv`` to completion, timing it and sampling its process tree's memory.

    On timeout the whole tree is killed and ``returncode`` is 124. Processes of the tree that
    outlive the root by more than ``settle`` seconds are killed and counted in ``left_behind``,
    so one run's leftovers never weigh on the next. ``poll`` (progress display) is called about
    five times a second while the command runs.
    """
    # Output goes to files, not pipes: a process left behind would hold a pipe open, and
    # reading to its end would wait for that process instead of the command.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        sampler = TreeSampler(proc.pid).start()
        timed_out = False
        try:
            _wait(proc, time.monotonic() + timeout, poll)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            if proc.poll() is None:   # timed out, or KeyboardInterrupt: never leave it running
                kill_tree([*sampler.seen(), *_root(proc.pid)], grace=2.0)
                proc.wait(timeout=10)
        wall = time.perf_counter() - start
        peak = sampler.stop()
        left = kill_tree(sampler.seen(), settle=0 if timed_out else settle)
        texts = []
        for f in (out, err):
            f.seek(0)
            texts.append(f.read().decode("utf-8", errors="replace"))
    return Measured(124 if timed_out else proc.returncode, wall, peak, texts[0], texts[1],
                    timed_out, left)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit in this (main) thread, so ``finally`` blocks run: the
    command being measured is killed with its tree and temp files are removed."""
    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, _exit)
