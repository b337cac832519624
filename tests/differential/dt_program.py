"""A generated unipar program as data: a small AST of steps, and its rendering as Python.

A program is a list of steps over named variables (``r3``: a ref, a list of refs from
``num_returns``, a plain value that holds refs, or an actor handle). Arguments are expressions:
literals, variables, items of a multi-return, lists and dicts of expressions, and tasks started
inline (whose ref no variable ever holds: the driver drops it as soon as the call returns).

The interpreter (dt_interp.py) runs the steps against the public API; :func:`render` prints the
same program as a script that runs on its own from the repository root, which is what a failure
report shows. Both read only this module's data, so what runs is what is printed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

# -- expressions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lit:
    value: int


@dataclass(frozen=True)
class Var:
    name: str


@dataclass(frozen=True)
class Item:
    """Element ``index`` of a variable that holds a list of refs (``num_returns`` > 1)."""
    name: str
    index: int


@dataclass(frozen=True)
class ListOf:
    items: tuple["Expr", ...]


@dataclass(frozen=True)
class DictOf:
    items: tuple[tuple[str, "Expr"], ...]


@dataclass(frozen=True)
class Inline:
    """A ``work`` task started inside an argument: only the enclosing container holds its ref."""
    tag: int
    args: tuple["Expr", ...]
    nap: float = 0.0


Expr = Union[Lit, Var, Item, ListOf, DictOf, Inline]

# -- steps ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Put:
    out: str
    value: "Expr"


@dataclass(frozen=True)
class Task:
    """``fn`` is ``work``, ``fail`` or ``echo`` (dt_runtime); ``num_returns`` for ``work``."""
    out: str
    fn: str
    tag: int
    args: tuple["Expr", ...]
    num_returns: int = 1
    nap: float = 0.0


@dataclass(frozen=True)
class NewActor:
    """``kind``: ``sync``, ``threaded`` (max_concurrency=3) or ``async``."""
    out: str
    kind: str
    tag: int
    held: tuple["Expr", ...] = ()
    name: str | None = None
    fail: bool = False


@dataclass(frozen=True)
class Call:
    """``method``: ``add``, ``fail``, ``keep`` or ``forward`` (whose first arg is a handle)."""
    out: str
    actor: str
    method: str
    tag: int
    args: tuple["Expr", ...]
    num_returns: int = 1


@dataclass(frozen=True)
class GetActor:
    out: str
    name: str


@dataclass(frozen=True)
class Get:
    """Observe the value of ``what`` (a ref, or a list of refs: one ``get`` of the list)."""
    what: "Expr"


@dataclass(frozen=True)
class Fetch:
    """``out = get(what)``: the value (which may hold refs, re-created here) becomes a variable."""
    out: str
    what: "Expr"


@dataclass(frozen=True)
class Wait:
    refs: tuple["Expr", ...]
    num_returns: int
    timeout: float


@dataclass(frozen=True)
class Drop:
    name: str


@dataclass(frozen=True)
class Cancel:
    what: "Expr"


Step = Union[Put, Task, NewActor, Call, GetActor, Get, Fetch, Wait, Drop, Cancel]


@dataclass(frozen=True)
class Program:
    steps: tuple[Step, ...]
    error: str = "ValueError"   # the one user exception type this program raises

    def __repr__(self) -> str:   # Hypothesis prints this; the report prints render(program)
        return f"<Program of {len(self.steps)} steps>"


# -- rendering --------------------------------------------------------------------------------

GET_TIMEOUT_NAME = "T"


def expr(e: Expr) -> str:
    """Python source of an expression."""
    if isinstance(e, Lit):
        return repr(e.value)
    if isinstance(e, Var):
        return e.name
    if isinstance(e, Item):
        return f"{e.name}[{e.index}]"
    if isinstance(e, ListOf):
        return "[" + ", ".join(expr(i) for i in e.items) + "]"
    if isinstance(e, DictOf):
        return "{" + ", ".join(f"{k!r}: {expr(v)}" for k, v in e.items) + "}"
    nap = f", nap={e.nap}" if e.nap else ""
    return f"work.remote(LOG, {e.tag}{_args(e.args)}{nap})"


def _args(args: tuple[Expr, ...]) -> str:
    return "".join(", " + expr(a) for a in args)


def task_call(step: Task, error: str) -> str:
    fn = step.fn + (f".options(num_returns={step.num_returns})" if step.num_returns != 1 else "")
    extra = f", {error!r}" if step.fn == "fail" else ""
    kw = (f", n={step.num_returns}" if step.num_returns != 1 else "") + (
        f", nap={step.nap}" if step.nap else "")
    return f"{fn}.remote(LOG, {step.tag}{extra}{_args(step.args)}{kw})"


def actor_new(step: NewActor, error: str) -> str:
    cls = "AsyncActor" if step.kind == "async" else "SyncActor"
    opts = []
    if step.kind == "threaded":
        opts.append("max_concurrency=3")
    if step.name is not None:
        opts.append(f"name=NS + {step.name!r}")
    opt = f".options({', '.join(opts)})" if opts else ""
    kw = f", fail={error!r}" if step.fail else ""
    return f"{cls}{opt}.remote(LOG, {step.tag}{_args(step.held)}{kw})"


def actor_call(step: Call, error: str) -> str:
    method = step.method + (f".options(num_returns={step.num_returns})"
                            if step.num_returns != 1 else "")
    extra = f", {error!r}" if step.method == "fail" else ""
    kw = f", n={step.num_returns}" if step.num_returns != 1 else ""
    return f"{step.actor}.{method}.remote(LOG, {step.tag}{extra}{_args(step.args)}{kw})"


def line(step: Step, error: str) -> str:
    """One step as one line of Python (observations print, so a run shows what it saw)."""
    if isinstance(step, Put):
        return f"{step.out} = unipar.put({expr(step.value)})"
    if isinstance(step, Task):
        return f"{step.out} = {task_call(step, error)}"
    if isinstance(step, NewActor):
        return f"{step.out} = {actor_new(step, error)}"
    if isinstance(step, Call):
        return f"{step.out} = {actor_call(step, error)}"
    if isinstance(step, GetActor):
        return f"{step.out} = unipar.get_actor(NS + {step.name!r})"
    if isinstance(step, Get):
        return f"show(lambda: unipar.get({expr(step.what)}, timeout={GET_TIMEOUT_NAME}))"
    if isinstance(step, Fetch):
        return f"{step.out} = unipar.get({expr(step.what)}, timeout={GET_TIMEOUT_NAME})"
    if isinstance(step, Wait):
        refs = "[" + ", ".join(expr(r) for r in step.refs) + "]"
        return (f"show(lambda: unipar.wait({refs}, num_returns={step.num_returns}, "
                f"timeout={step.timeout}))")
    if isinstance(step, Drop):
        return f"del {step.name}"
    return f"unipar.cancel({expr(step.what)})"


HEADER = '''\
# A program generated by tests/differential ({origin}).
# Run it from the repository root: .venv/bin/python this_file.py
import os, sys, tempfile, uuid
sys.path.insert(0, "tests/differential")
import cloudpickle, unipar
import dt_runtime
cloudpickle.register_pickle_by_value(dt_runtime)   # workers cannot import it
from dt_runtime import work, fail, echo, SyncActor, AsyncActor

T = {timeout}                      # every get has a timeout: a hang shows as GetTimeoutError
LOG = tempfile.mktemp(prefix="unipar-fuzz-")   # each task appends "<who> <tag>" here
NS = uuid.uuid4().hex[:8] + "-"    # actor names unique to this run


def show(thunk):
    try:
        print("->", thunk())
    except Exception as exc:
        print("-> raised", type(exc).__name__, str(exc).splitlines()[0][:200])


unipar.init(backend={backend!r}, num_cpus=4)
'''

FOOTER = '''\
print("log:", sorted(open(LOG).read().split("\\n")[:-1]) if os.path.exists(LOG) else [])
unipar.shutdown()
if os.path.exists(LOG):
    os.unlink(LOG)
'''


def held_at_end(program: Program) -> tuple[list[str], list[str]]:
    """The variables a program still holds after its last step: (values and refs, actors)."""
    held: dict[str, str] = {}
    for step in program.steps:
        if isinstance(step, Drop):
            held.pop(step.name, None)
        elif getattr(step, "out", None) is not None:
            held[step.out] = type(step).__name__
    return ([n for n, kind in held.items() if kind not in ("NewActor", "GetActor")],
            [n for n, kind in held.items() if kind == "NewActor"])


def render(program: Program, backend: str, origin: str, timeout: float) -> str:
    """The program as a standalone script (steps in order; observations printed), ending as
    the tester's runs end: every value still held and every actor's state, printed."""
    body = [line(step, program.error) for step in program.steps]
    values, actors = held_at_end(program)
    fetched = {s.out for s in program.steps if isinstance(s, Fetch)}
    body += [f"show(lambda: {n})" if n in fetched else f"show(lambda: unipar.get({n}, timeout=T))"
             for n in values]
    body += [f"show(lambda: unipar.get({n}.state.remote(LOG), timeout=T))" for n in actors]
    return (HEADER.format(origin=origin, timeout=timeout, backend=backend)
            + "\n".join(body) + "\n" + FOOTER)
