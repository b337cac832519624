"""Hypothesis strategies that build random, valid unipar programs (dt_program.py).

A program is drawn one step at a time from what is live so far, so every prefix of it is a
valid program and Hypothesis' shrinking (fewer steps, earlier choices, smaller numbers) keeps it
valid. ``Features`` turns groups of steps on; each test of test_differential.py enables one
group more, so a backend limit (tests/conformance/limits.py) can name the group it hits.

What the generator never builds, and why (these are the programs whose result depends on
timing, not bugs to hide):

* two different user exception types in one program: when two inputs of a call fail, which
  error wins depends on which one a real engine saw first;
* an actor waiting (in its arguments, held state or ``forward``) for a value that may wait
  for the same or a later actor (``_Live.involves``): a sync actor waiting on itself
  deadlocks on every backend, Ray included;
* a dropped actor handle (an actor may die with its last handle) or a killed actor: actors
  live until the program ends;
* ``state()`` before the end: calls from different callers may run in any order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from dt_interp import LONG_WAIT, names
from dt_program import (Call, Cancel, DictOf, Drop, Expr, Fetch, Get, GetActor, Inline, Item,
                        ListOf, Lit, NewActor, Program, Put, Step, Task, Var, Wait)
from dt_runtime import ERRORS

MAX_ACTORS = 3
# How long a task sleeps first: long enough that the driver moves on (drops refs, cancels)
# while it is queued or running, which is where lifetimes and cancellation go wrong.
NAPS = st.sampled_from([0.0, 0.0, 0.05, 0.2])


@dataclass(frozen=True)
class Features:
    actors: bool = False
    cancel: bool = False
    max_steps: int = 12


@dataclass
class _Live:
    """What a program being drawn holds so far.

    ``rank`` orders actors by creation; ``involves`` gives, for every variable, the highest
    rank of an actor whose call its value may wait for (-1: none). An actor of rank ``k`` only
    ever waits for values that involve ranks below ``k``, so no wait cycle can form.
    """
    refs: list[str] = field(default_factory=list)        # one ref each
    task_refs: set[str] = field(default_factory=set)     # refs that name a task's result
    multis: dict[str, int] = field(default_factory=dict)  # list of refs, and its length
    values: list[str] = field(default_factory=list)      # fetched values (may hold refs)
    actors: dict[str, int] = field(default_factory=dict)  # handle variable -> actor's rank
    names: dict[str, int] = field(default_factory=dict)   # actor name -> rank
    involves: dict[str, int] = field(default_factory=dict)
    tag: int = 0
    var: int = 0

    def new_tag(self) -> int:
        self.tag += 1
        return self.tag

    def new_var(self, prefix: str = "r") -> str:
        self.var += 1
        return f"{prefix}{self.var}"

    def ok(self, name: str, below: int | None) -> bool:
        return below is None or self.involves.get(name, -1) < below


def involves(live: _Live, exprs: tuple[Expr, ...]) -> int:
    """The highest actor rank any of ``exprs`` may wait for."""
    return max((live.involves.get(n, -1) for e in exprs for n in names(e)), default=-1)


def _ref_exprs(live: _Live, below: int | None = None) -> list[Expr]:
    return [Var(n) for n in live.refs if live.ok(n, below)] + [
        Item(n, i) for n, k in live.multis.items() if live.ok(n, below) for i in range(k)]


def _arg(draw: Any, live: _Live, depth: int, below: int | None) -> Expr:
    """One argument: a literal, a ref (top level or nested), a container, an inline task, a
    fetched value or an actor handle; with ``below``, only what involves actors of lower rank."""
    kinds = ["lit"]
    refs = _ref_exprs(live, below)
    if refs:
        kinds += ["ref", "ref"]
    if depth < 2:
        kinds += ["list", "dict", "inline"]
    values = [n for n in live.values if live.ok(n, below)]
    if values:
        kinds.append("value")
    handles = [n for n in live.actors if live.ok(n, below)]
    if handles:
        kinds.append("handle")
    kind = draw(st.sampled_from(kinds))
    if kind == "lit":
        return Lit(draw(st.integers(0, 9)))
    if kind == "ref":
        return draw(st.sampled_from(refs))
    if kind == "value":
        return Var(draw(st.sampled_from(values)))
    if kind == "handle":
        return Var(draw(st.sampled_from(handles)))
    if kind == "inline":
        return Inline(live.new_tag(), _args(draw, live, depth + 1, below, 2), draw(NAPS))
    items = _args(draw, live, depth + 1, below, 3)
    if kind == "list":
        return ListOf(items)
    return DictOf(tuple((f"k{i}", e) for i, e in enumerate(items)))


def _args(draw: Any, live: _Live, depth: int, below: int | None,
          most: int) -> tuple[Expr, ...]:
    n = draw(st.integers(0, most))
    return tuple(_arg(draw, live, depth, below) for _ in range(n))


def _task(draw: Any, live: _Live, features: Features) -> Step:
    fn = draw(st.sampled_from(["work", "work", "echo", "fail"]))
    num_returns = draw(st.integers(1, 3)) if fn == "work" else 1
    nap = draw(NAPS) if fn == "work" else 0.0
    step = Task(live.new_var(), fn, live.new_tag(), _args(draw, live, 0, None, 3),
                num_returns, nap)
    _bind(live, step.out, num_returns, involves(live, step.args), task=True)
    return step


def _bind(live: _Live, out: str, num_returns: int, rank: int, task: bool) -> None:
    live.involves[out] = rank
    if num_returns == 1:
        live.refs.append(out)
        if task:
            live.task_refs.add(out)
    else:
        live.multis[out] = num_returns


def _new_actor(draw: Any, live: _Live) -> Step:
    rank = len(set(live.actors.values()))
    kind = draw(st.sampled_from(["sync", "threaded", "async"]))
    name = f"n{rank}" if draw(st.booleans()) else None
    fail = draw(st.integers(0, 5)) == 0
    step = NewActor(live.new_var("a"), kind, live.new_tag(),
                    _args(draw, live, 1, rank, 2), name, fail)
    live.actors[step.out] = live.involves[step.out] = rank
    if name is not None:
        live.names[name] = rank
    return step


def _call(draw: Any, live: _Live) -> Step:
    actor = draw(st.sampled_from(sorted(live.actors)))
    rank = live.actors[actor]
    peers = [n for n, r in live.actors.items() if r < rank]
    methods = ["add", "add", "fail", "keep"] + (["forward"] if peers else [])
    method = draw(st.sampled_from(methods))
    num_returns = draw(st.integers(1, 2)) if method == "add" else 1
    below = rank
    if method == "forward":
        peer = draw(st.sampled_from(peers))
        below = live.actors[peer]   # the peer waits for the arguments
    args = _args(draw, live, 1 if method == "keep" else 0, below, 2)
    if method == "forward":
        args = (Var(peer),) + args
    step = Call(live.new_var(), actor, method, live.new_tag(), args, num_returns)
    _bind(live, step.out, num_returns, max(rank, involves(live, args)), task=False)
    return step


def _observe(draw: Any, live: _Live, kind: str) -> Step:
    refs = _ref_exprs(live)
    if kind == "wait":
        chosen = tuple(draw(st.lists(st.sampled_from(refs), min_size=1, max_size=4)))
        distinct = len(set(chosen))
        return Wait(chosen, draw(st.integers(0, distinct)),
                    draw(st.sampled_from([LONG_WAIT, 0.0, 0.05])))
    if kind == "get_list":
        return Get(ListOf(tuple(draw(st.lists(st.sampled_from(refs), min_size=1, max_size=3)))))
    what = draw(st.sampled_from(refs))
    if kind == "fetch":
        out = live.new_var("v")
        live.values.append(out)
        live.involves[out] = involves(live, (what,))
        return Fetch(out, what)
    return Get(what)


def _drop(draw: Any, live: _Live) -> Step:
    held = live.refs + list(live.multis) + live.values
    name = draw(st.sampled_from(held))
    for pool in (live.refs, live.values):
        if name in pool:
            pool.remove(name)
    live.multis.pop(name, None)
    live.task_refs.discard(name)
    return Drop(name)


def _kinds(live: _Live, features: Features) -> list[str]:
    kinds = ["task", "task", "task", "put"]
    if live.refs or live.multis:
        kinds += ["get", "get_list", "fetch", "wait", "drop", "drop"]
    if live.values:
        kinds.append("drop")
    if features.cancel and live.task_refs:
        kinds += ["cancel", "cancel"]
    if features.actors:
        if len(set(live.actors.values())) < MAX_ACTORS:
            kinds.append("actor")
        if live.actors:
            kinds += ["call", "call", "call"]
        if live.names:
            kinds.append("get_actor")
    return kinds


def _step(draw: Any, live: _Live, features: Features) -> Step:
    kind = draw(st.sampled_from(_kinds(live, features)))
    if kind == "task":
        return _task(draw, live, features)
    if kind == "put":
        # A container or a literal: put() of a bare ref is a TypeError (an API check, not
        # worth a step of every program).
        items = _args(draw, live, 1, None, 3)
        value = DictOf(tuple((f"k{i}", e) for i, e in enumerate(items))) if draw(
            st.booleans()) else ListOf(items)
        step = Put(live.new_var(), value)
        _bind(live, step.out, 1, involves(live, (step.value,)), task=False)
        return step
    if kind in ("get", "get_list", "fetch", "wait"):
        return _observe(draw, live, kind)
    if kind == "drop":
        return _drop(draw, live)
    if kind == "cancel":
        return Cancel(Var(draw(st.sampled_from(sorted(live.task_refs)))))
    if kind == "actor":
        return _new_actor(draw, live)
    if kind == "call":
        return _call(draw, live)
    name = draw(st.sampled_from(sorted(live.names)))
    out = live.new_var("a")
    live.actors[out] = live.involves[out] = live.names[name]
    return GetActor(out, name)


@st.composite
def programs(draw: Any, features: Features = Features()) -> Program:
    """A random program using the features given (see the module doc for what it avoids)."""
    live = _Live()
    error = draw(st.sampled_from(sorted(ERRORS)))
    count = draw(st.integers(1, features.max_steps))
    steps = tuple(_step(draw, live, features) for _ in range(count))
    return Program(steps, error)
