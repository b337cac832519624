"""Code and arguments in the form they travel in: registered code keys, packed arguments.

A function or class is pickled once per process and registered with the node under its
content key; arguments are pickled with their top-level refs replaced by slots (dependencies,
resolved to values before the call) while refs nested deeper stay refs (``contained``).
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable


from ... import codepickle
from ..wire import protocol as P
from ..wire import serialization as S
from .refs import NativeRef

# (args payload, dependency ids, contained ids, refs to keep until the work is done)
Packed = tuple[Any, list[bytes], list[bytes], list[NativeRef]]


class Packer:
    """Packs code and arguments for one client.

    Args:
        post: queues a message to the node (code registration).
        inline_max: the largest argument payload sent inline.
        put_large: stores a big payload at the node as an object of its own; its ref.
    """

    def __init__(self, post: Callable[[P.Message], None], inline_max: int,
                 put_large: Callable[[bytes, list[Any], list[bytes]], NativeRef]) -> None:
        self.post = post
        self.inline_max = inline_max
        self.put_large = put_large
        self.fn_keys: dict[str, str] = {}
        self.fn_blobs: dict[str, bytes] = {}
        self.no_args: dict[Any, Any] = {}   # packed "no arguments", per retry filter

    def code_key(self, code_id: str, code: Any) -> str:
        """Register pickled code with the node once per process; returns its content key.

        Raises:
            TypeError: the code cannot be pickled.
        """
        key = self.fn_keys.get(code_id)
        if key is None:
            try:
                data = codepickle.dumps(code)
            except Exception as exc:
                raise TypeError(f"could not serialize {code!r}: {exc}") from exc
            key = hashlib.blake2b(data, digest_size=16).hexdigest()
            self.post(P.RegisterFunction(key, P.blob(data)))
            self.fn_keys[code_id] = key
            self.fn_blobs[key] = data
        return key

    def code_blob(self, key: str) -> bytes:
        return self.fn_blobs[key]

    def pack_args(self, args: tuple, kwargs: dict, extra: Any = None) -> Packed:
        """``(args payload, dependency ids, contained ids, refs to keep)``.

        Top-level refs become dependencies (resolved to values before the call); refs nested
        deeper stay refs and are recorded as contained. Big arguments travel as an object of
        their own, named as the last dependency (payload None).
        """
        if not args and not kwargs:   # no arguments: the same bytes every time
            try:
                return self.no_args[extra], [], [], []
            except (KeyError, TypeError):
                pass
        deps: list[bytes] = []

        def slot(value: Any) -> Any:
            if type(value) is NativeRef:
                deps.append(value.oid)
                return S.DepSlot(len(deps) - 1)
            return value
        args2 = tuple(slot(a) for a in args)
        kwargs2 = {k: slot(v) for k, v in kwargs.items()}
        data, buffers, contained = S.dumps((args2, kwargs2, extra))
        if S.payload_size(data, buffers) <= self.inline_max:
            packed = P.blob(S.pack(data, buffers))
            if not args and not kwargs and not contained:
                try:
                    self.no_args[extra] = packed
                except TypeError:   # an unhashable retry filter: not cached
                    pass
            return packed, deps, contained, []
        ref = self.put_large(data, buffers, contained)
        return None, deps + [ref.oid], [], [ref]
