"""Run a generated program on whatever backend unipar is initialised with; compare two runs.

What a run observes (and so what two runs are compared on):

* every ``Get``: the value, with refs nested in it resolved in turn, or the exception's type
  (the user's own type for a task's error: ``ValueError``, not ``TaskError``); a ``get`` of a
  list that raised: each element's outcome (which failing element it raises is timing, on Ray
  too);
* every ``Fetch``, ``Put``, ``.remote()``, ``cancel``, ``get_actor``: whether it raised, and what;
* every ``Wait``: that ``ready`` and ``not_ready`` split the input in order, that ``ready`` has
  at most ``num_returns`` distinct refs, and — for the long timeout only — exactly that many;
* at the end: the value of every variable still held, and each actor's ``state()`` (the sum
  of what it returned and of the refs it holds: independent of call order);
* the side effects: the set of ``<who> <tag>`` lines the program's calls wrote to its log.

What it leaves out, on purpose: timing, the order of side effects (compared as sets, never as
sequences, so calls on different actors or tasks in parallel may interleave freely), which refs
a short ``wait`` finds ready, and whether a cancelled call ran. A cancel makes its target and
everything that depends on it *tainted* (:func:`taint`): their observations may be the oracle's
or a ``TaskCancelledError`` (anything, once a cancel took effect in the run: a value computed
from a cancelled input) (or, for a tainted actor's calls and state, an ``ActorDiedError``:
an actor whose constructor argument was cancelled dies, as on Ray); a tainted actor's end
state is not compared (a call on it may not have run), nor are their side effects.
"""

from __future__ import annotations

import gc
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator

import unipar
from unipar.exceptions import GetTimeoutError, TaskError

import dt_runtime as rt
from dt_program import (Call, Cancel, DictOf, Expr, Fetch, Get, GetActor, Inline, Item, ListOf,
                        Lit, NewActor, Program, Put, Step, Task, Var, Wait)

LONG_WAIT = 30.0   # a Wait with this timeout must find num_returns refs ready


@dataclass
class Run:
    """What one run of a program observed (``log``: as read at the end of the run; a call
    whose ref the program dropped unawaited may write later, see ``compared_log``)."""
    observations: dict[str, tuple[frozenset[str], Any]] = field(default_factory=dict)
    log: set[tuple[str, int]] = field(default_factory=set)
    counts: Counter[tuple[str, int]] = field(default_factory=Counter)   # log lines, with repeats
    hung: bool = False   # a GetTimeoutError was seen: the backend may hold stuck work
    cancelled: bool = False   # a TaskCancelledError was seen: a cancel took effect


def classify(exc: BaseException) -> str:
    """The exception type a user would catch: the cause's type for a task's error."""
    if isinstance(exc, TaskError) and exc.cause is not None:
        return classify(exc.cause)
    return type(exc).__name__


# -- the names an expression or step touches --------------------------------------------------

def names(e: Expr) -> Iterator[str]:
    """Variables read by an expression."""
    if isinstance(e, (Var, Item)):
        yield e.name
    elif isinstance(e, ListOf):
        for item in e.items:
            yield from names(item)
    elif isinstance(e, DictOf):
        for _, item in e.items:
            yield from names(item)
    elif isinstance(e, Inline):
        for item in e.args:
            yield from names(item)


def inline_tags(e: Expr) -> Iterator[int]:
    if isinstance(e, Inline):
        yield e.tag
        for a in e.args:
            yield from inline_tags(a)
    elif isinstance(e, ListOf):
        for a in e.items:
            yield from inline_tags(a)
    elif isinstance(e, DictOf):
        for _, a in e.items:
            yield from inline_tags(a)


def step_inputs(step: Step) -> list[Expr]:
    if isinstance(step, (Task, Call)):
        return list(step.args)
    if isinstance(step, NewActor):
        return list(step.held)
    if isinstance(step, (Put,)):
        return [step.value]
    if isinstance(step, (Get, Fetch, Cancel)):
        return [step.what]
    if isinstance(step, Wait):
        return list(step.refs)
    return []


CANCELLED = "<its fetch raised TaskCancelledError>"   # what such a variable holds


@dataclass
class Taint:
    """What a cancel makes uncertain: variables, call tags and actors (by their variable)."""
    names: set[str] = field(default_factory=set)
    tags: set[int] = field(default_factory=set)
    actors: set[str] = field(default_factory=set)


def taint(program: Program) -> Taint:
    """The fixed point of "depends on a cancelled call", over the whole program (a call
    submitted before the cancel may still be waiting for its target)."""
    out = Taint()
    alias = {s.out: s.out for s in program.steps if isinstance(s, NewActor)}
    names_of = {s.out: next((a.out for a in program.steps if isinstance(a, NewActor)
                             and a.name == s.name), s.out)
                for s in program.steps if isinstance(s, GetActor)}
    alias.update(names_of)
    # What a variable's value may hold: anything its step was given (a put list holding a
    # handle, a task echoing one), so a tainted task reaches the actors inside its arguments.
    holds = {s.out: {n for e in step_inputs(s) for n in names(e)} for s in program.steps
             if getattr(s, "out", None) is not None and not isinstance(s, NewActor)}
    for step in program.steps:
        if isinstance(step, Cancel):
            out.names.update(names(step.what))
    changed = True
    while changed:
        before = (len(out.names), len(out.tags), len(out.actors))
        for step in program.steps:
            _taint_step(step, out, alias, holds)
        changed = before != (len(out.names), len(out.tags), len(out.actors))
    return out


def _reachable(read: set[str], holds: dict[str, set[str]]) -> set[str]:
    """``read`` and every variable their values may hold, transitively."""
    seen, todo = set(read), list(read)
    while todo:
        for n in holds.get(todo.pop(), ()):
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


def _taint_step(step: Step, out: Taint, alias: dict[str, str],
                holds: dict[str, set[str]]) -> None:
    inputs = step_inputs(step)
    read = {n for e in inputs for n in names(e)}
    own = getattr(step, "out", None)
    on_tainted_actor = isinstance(step, Call) and alias.get(step.actor, step.actor) in out.actors
    reads_tainted_actor = any(alias.get(n, n) in out.actors for n in read)   # a handle passed on
    if not (read & out.names or (own is not None and own in out.names) or on_tainted_actor
            or reads_tainted_actor):
        return
    if own is not None and not isinstance(step, NewActor):
        out.names.add(own)
    tag = getattr(step, "tag", None)
    if tag is not None:
        out.tags.add(tag)
    out.tags.update(t for e in inputs for t in inline_tags(e))
    out.actors.update(alias[n] for n in _reachable(read, holds) if n in alias)
    if isinstance(step, Call):
        out.actors.add(alias.get(step.actor, step.actor))
    if isinstance(step, NewActor):
        out.actors.add(step.out)


# -- running ------------------------------------------------------------------------------------

class Interpreter:
    """Runs one program's steps against the public API and records what it observes."""

    def __init__(self, program: Program, log: str, ns: str, timeout: float,
                 expect: Counter[tuple[str, int]] | None = None, settle: float = 0.0) -> None:
        self.program = program
        self.log = log
        self.ns = ns
        self.timeout = timeout
        self.expect = expect    # the oracle's compared side effects, if known
        self.settle = settle    # seconds to wait for them before reading actors' states
        self.env: dict[str, Any] = {}
        self.actors: dict[str, Any] = {}   # variable -> handle, for state() and kill()
        self.run = Run()

    def value(self, e: Expr) -> Any:
        if isinstance(e, Lit):
            return e.value
        if isinstance(e, Var):
            return self.env[e.name]
        if isinstance(e, Item):
            return self.env[e.name][e.index]
        if isinstance(e, ListOf):
            return [self.value(i) for i in e.items]
        if isinstance(e, DictOf):
            return {k: self.value(v) for k, v in e.items}
        kwargs = {"nap": e.nap} if e.nap else {}
        return rt.work.remote(self.log, e.tag, *[self.value(a) for a in e.args], **kwargs)

    def canon(self, value: Any) -> Any:
        """A comparable form of a value: refs in it resolved (with the timeout)."""
        if isinstance(value, unipar.ObjectRef):
            try:
                return ("ref", self.canon(unipar.get(value, timeout=self.timeout)))
            except Exception as exc:
                return ("ref-raised", self.failed(exc))
        if isinstance(value, (list, tuple)):
            return type(value).__name__, [self.canon(v) for v in value]
        if isinstance(value, dict):
            return "dict", sorted((k, self.canon(v)) for k, v in value.items())
        if isinstance(value, unipar.ActorHandle):
            return "actor"
        return value

    def list_raised(self, what: Any, exc: Exception) -> Any:
        """What a ``get`` that raised is compared on. For a list of two or more refs, the
        outcome of each (in order): which failing element's error a list's ``get`` raises is
        whichever failed first (as on Ray, whose get returns early on an error), so only
        that it raised and what each element gives are compared. Anything else: ``exc``."""
        if not (isinstance(what, list) and len(what) > 1):
            raise exc
        return ("list-raised", [self.canon(ref) for ref in what])

    def failed(self, exc: BaseException) -> str:
        if isinstance(exc, GetTimeoutError):
            self.run.hung = True
        kind = classify(exc)
        if kind == "TaskCancelledError":
            self.run.cancelled = True
        return kind

    def observe(self, key: str, reads: set[str], outcome: Any) -> None:
        self.run.observations[key] = (frozenset(reads), outcome)

    def execute(self) -> Run:
        """Run every step, then the end phase; never raises for what the program does."""
        try:
            for i, step in enumerate(self.program.steps):
                reads = {n for e in step_inputs(step) for n in names(e)}
                own = getattr(step, "out", None)
                try:
                    outcome = self.step(step)
                except Exception as exc:
                    outcome = ("raised", self.failed(exc))
                    if own is not None:
                        self.env.setdefault(own, None)
                self.observe(f"step {i} ({type(step).__name__})", reads | {own} - {None}, outcome)
            self.finish()
        finally:
            self.cleanup()
        return self.run

    def step(self, step: Step) -> Any:
        if isinstance(step, Put):
            self.env[step.out] = unipar.put(self.value(step.value))
        elif isinstance(step, Task):
            self.env[step.out] = self.task(step)
        elif isinstance(step, NewActor):
            self.env[step.out] = self.actors[step.out] = self.new_actor(step)
        elif isinstance(step, Call):
            self.env[step.out] = self.call(step)
        elif isinstance(step, GetActor):
            self.env[step.out] = unipar.get_actor(self.ns + step.name)
        elif isinstance(step, Get):
            what = self.value(step.what)
            try:
                return self.canon(unipar.get(what, timeout=self.timeout))
            except Exception as exc:
                return self.list_raised(what, exc)
        elif isinstance(step, Fetch):
            what = self.value(step.what)
            try:
                self.env[step.out] = unipar.get(what, timeout=self.timeout)
            except Exception as exc:
                # A cancelled input: later steps may pass the variable on; what they make of it
                # says so, and is not compared (the cancel may not have taken effect on local).
                cancelled = self.failed(exc) == "TaskCancelledError"
                self.env[step.out] = CANCELLED if cancelled else None
                return self.list_raised(what, exc)
        elif isinstance(step, Wait):
            return self.wait(step)
        elif isinstance(step, Cancel):
            unipar.cancel(self.value(step.what))
        else:
            del self.env[step.name]
        return "ok"

    def task(self, step: Task) -> Any:
        fn = getattr(rt, step.fn)
        if step.num_returns != 1:
            fn = fn.options(num_returns=step.num_returns)
        extra = (self.program.error,) if step.fn == "fail" else ()
        kwargs: dict[str, Any] = {}
        if step.num_returns != 1:
            kwargs["n"] = step.num_returns
        if step.nap:
            kwargs["nap"] = step.nap
        return fn.remote(self.log, step.tag, *extra, *[self.value(a) for a in step.args], **kwargs)

    def new_actor(self, step: NewActor) -> Any:
        cls = rt.AsyncActor if step.kind == "async" else rt.SyncActor
        opts: dict[str, Any] = {}
        if step.kind == "threaded":
            opts["max_concurrency"] = 3
        if step.name is not None:
            opts["name"] = self.ns + step.name
        if opts:
            cls = cls.options(**opts)
        kwargs = {"fail": self.program.error} if step.fail else {}
        return cls.remote(self.log, step.tag, *[self.value(a) for a in step.held], **kwargs)

    def call(self, step: Call) -> Any:
        method = getattr(self.env[step.actor], step.method)
        kwargs: dict[str, Any] = {}
        if step.num_returns != 1:
            method = method.options(num_returns=step.num_returns)
            kwargs["n"] = step.num_returns
        extra = (self.program.error,) if step.method == "fail" else ()
        return method.remote(self.log, step.tag, *extra, *[self.value(a) for a in step.args],
                             **kwargs)

    def wait(self, step: Wait) -> Any:
        refs = [self.value(r) for r in step.refs]
        ready, not_ready = unipar.wait(refs, num_returns=step.num_returns, timeout=step.timeout)
        split = (sorted(map(id, ready + not_ready)) == sorted(map(id, refs))
                 and _ordered(ready, refs) and _ordered(not_ready, refs)
                 and len(set(ready)) <= step.num_returns)
        if step.timeout >= LONG_WAIT:
            if len(set(ready)) < step.num_returns:
                self.run.hung = True
            return ("split in order", split, "ready", len(set(ready)))
        return ("split in order", split)

    def finish(self) -> None:
        """Observe every variable still held and every actor's state; read the log."""
        for name, value in list(self.env.items()):
            if value is None or isinstance(value, unipar.ActorHandle):
                continue
            self.observe(f"end value of {name}", {name}, self.canon(value))
        self.await_side_effects()
        for name, handle in self.actors.items():
            try:
                state = self.canon(unipar.get(handle.state.remote(self.log), timeout=self.timeout))
            except Exception as exc:
                state = ("raised", self.failed(exc))
            self.observe(f"end state of actor {name}", {name}, state)
        self.run.log = read_log(self.log)
        self.run.counts = read_log_counts(self.log)

    def await_side_effects(self) -> None:
        """Wait (at most ``settle`` s) for the oracle's side effects: a call nobody waited for
        (a dropped task calling an actor) may still be on its way to an actor whose state the
        end phase reads, and would find it killed after."""
        deadline = time.monotonic() + self.settle
        while (self.expect is not None and time.monotonic() < deadline
               and not self.expect <= compared_counts(self.program, read_log_counts(self.log))):
            time.sleep(0.05)

    def cleanup(self) -> None:
        """Kill the program's actors and drop every ref it holds."""
        for handle in self.actors.values():
            try:
                unipar.kill(handle)
            except Exception:   # noqa: BLE001 - a dead actor is already what we want
                pass
        self.env.clear()
        self.actors.clear()
        gc.collect()


def read_log(path: str) -> set[tuple[str, int]]:
    """The ``(who, tag)`` entries a program's calls wrote so far."""
    return set(read_log_counts(path))


def read_log_counts(path: str) -> Counter[tuple[str, int]]:
    """The same, with how many times each was written (a task calling one actor twice writes
    the same entry twice: waiting for the set alone would read the actor's state between)."""
    if not os.path.exists(path):
        return Counter()
    with open(path) as f:
        return Counter((who, int(tag)) for who, tag in (e.split() for e in f.read().splitlines()))


def compared_counts(program: Program, counts: Counter[tuple[str, int]]
                    ) -> Counter[tuple[str, int]]:
    """:func:`compared_log`'s entries, with their counts."""
    keep = compared_log(program, set(counts))
    return Counter({entry: n for entry, n in counts.items() if entry in keep})


def _ordered(part: list[Any], whole: list[Any]) -> bool:
    """``part`` is a subsequence of ``whole`` (by identity)."""
    it = iter(map(id, whole))
    return all(any(x == y for y in it) for x in map(id, part))


def run(program: Program, log: str, ns: str, timeout: float,
        expect: Counter[tuple[str, int]] | None = None, settle: float = 0.0) -> Run:
    """Run ``program`` on the backend unipar is initialised with; before the end phase, wait
    up to ``settle`` s for the side effects in ``expect``."""
    return Interpreter(program, log, ns, timeout, expect, settle).execute()


# -- comparing ----------------------------------------------------------------------------------

def compare(program: Program, oracle: Run, other: Run) -> list[str]:
    """The differences between two runs that the compared semantics forbid (module doc)."""
    t = taint(program)
    diffs = []
    for key in sorted(oracle.observations.keys() | other.observations.keys(), key=_step_order):
        reads, want = oracle.observations.get(key, (frozenset(), "<not observed>"))
        other_reads, got = other.observations.get(key, (frozenset(), "<not observed>"))
        reads = reads | other_reads   # a key one run did not observe reads what the other's did
        if got == want:
            continue
        uncertain = bool(reads & (t.names | t.actors))
        if uncertain and ("TaskCancelledError" in repr(got) or other.cancelled):
            continue   # once a cancel took effect, what depends on it may be anything
        if uncertain and key.startswith("end value") and got == "<not observed>":
            continue   # its Fetch raised TaskCancelledError: the variable was never bound
        if uncertain and ("ActorDiedError" in repr(got) or key.startswith("end state of actor")):
            continue   # an actor built from a cancelled ref dies: its calls raise that
        diffs.append(f"{key}: local gave {want!r}, this backend {got!r}")

    want_log = compared_log(program, oracle.log)
    got_log = compared_log(program, other.log)
    if want_log != got_log:
        diffs.append(f"side effects: only on local {sorted(want_log - got_log)}, "
                     f"only on this backend {sorted(got_log - want_log)}")
    return diffs


def compared_log(program: Program, log: set[tuple[str, int]]) -> set[tuple[str, int]]:
    """The side effects that must match: not those of tainted calls and actors, nor those of
    the end phase's ``state()`` calls (tag -1)."""
    t = taint(program)
    actor_tags = {f"a{s.tag}": s.out for s in program.steps if isinstance(s, NewActor)}
    return {(who, tag) for who, tag in log
            if tag not in t.tags and actor_tags.get(who) not in t.actors and tag >= 0}


def _step_order(key: str) -> tuple[int, str]:
    parts = key.split()
    return (int(parts[1]), key) if parts[0] == "step" else (1 << 30, key)
