"""The base of every message: an immutable record class with a unique ``op``, and the registry.

A message class is declared in the module of its area (``wire/messages/*.py``) and registered with
:func:`message`; :mod:`..protocol` imports every such module, so :data:`MESSAGES` (``op -> class``,
what a frame is decoded with) holds all of them as soon as ``protocol`` is imported. This module
imports no other part of unipar, so message modules and ``protocol`` can both import it.
"""

from __future__ import annotations

import operator
from typing import Any, ClassVar

MESSAGES: dict[str, type["Message"]] = {}


class Message:
    """Base of every message: an immutable record with a unique ``op``.

    Subclasses list their fields as annotations (like a dataclass) and are registered with
    :func:`message`. A hand-rolled record instead of ``@dataclass(frozen=True, slots=True)``:
    same shape, but defining ~30 of them costs no ``exec`` at import time (worker start-up) and
    construction is cheaper on the hot path.
    """

    __slots__ = ()
    op: ClassVar[str]
    _names: ClassVar[tuple[str, ...]] = ()
    _values: ClassVar[Any] = staticmethod(lambda msg: ())   # all field values, in order
    _defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        names = self._names
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes {len(names)} fields, got {len(args)}")
        setter = object.__setattr__
        for name, value in zip(names, args):
            setter(self, name, value)
        for name in names[len(args):]:
            if name in kwargs:
                setter(self, name, kwargs.pop(name))
            elif name in self._defaults:
                setter(self, name, self._defaults[name])
            else:
                raise TypeError(f"{type(self).__name__} is missing field {name!r}")
        if kwargs:
            raise TypeError(f"{type(self).__name__} has no field(s) {sorted(kwargs)}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} messages are immutable")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            getattr(self, n) == getattr(other, n) for n in self._names)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r:.60}" for n in self._names)
        return f"{type(self).__name__}({fields})"


def message(cls: type) -> type:
    """Register a message class (decorator): slotted, immutable, unique ``op``."""
    annotations = cls.__dict__.get("__annotations__", {})
    names = tuple(n for n, t in annotations.items() if "ClassVar" not in str(t))
    defaults = {n: cls.__dict__[n] for n in names if n in cls.__dict__}
    namespace = {k: v for k, v in cls.__dict__.items()
                 if k not in names and k not in ("__dict__", "__weakref__")}
    namespace.update(__slots__=names, _names=names, _defaults=defaults)
    if len(names) == 1:
        one = operator.attrgetter(names[0])
        namespace["_values"] = staticmethod(lambda msg: (one(msg),))
    elif names:
        namespace["_values"] = staticmethod(operator.attrgetter(*names))
    if names:
        params = ", ".join(f"{n}=_defaults[{n!r}]" if n in defaults else n for n in names)
        body = "".join(f"    _set(self, {n!r}, {n})\n" for n in names)
        scope: dict[str, Any] = {"_set": object.__setattr__, "_defaults": defaults}
        exec(f"def __init__(self, {params}):\n{body}", scope)   # one small function per message
        namespace["__init__"] = scope["__init__"]
    record = type(cls.__name__, cls.__bases__, namespace)
    if record.op in MESSAGES:
        raise ValueError(f"duplicate op {record.op!r}")
    MESSAGES[record.op] = record
    return record
