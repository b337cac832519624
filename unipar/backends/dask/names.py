"""Named actors on Dask: a registry kept in the scheduler's published datasets.

A name is published as the dataset ``unipar-actor:<name>`` holding the actor host's future
(which also keeps the actor's key alive), its pickled :class:`ActorMeta` and its retry count.
:class:`NameRegistry` owns the names this driver published, to free them at shutdown.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import cloudpickle

from ..base import ActorMeta
from .handles import DaskActorId
from .waiting import slot_released

__all__ = ["NameRegistry"]

_NAME_PREFIX = "unipar-actor:"


class NameRegistry:
    """Publish, look up and free actor names; ``live()`` is the backend's Dask client."""

    def __init__(self, live: Callable[[], Any]) -> None:
        self._live = live
        self._named: dict[str, str] = {}  # name -> actor key, published by this driver

    def lookup(self, name: str) -> tuple[DaskActorId, ActorMeta] | None:
        """The actor published as ``name``, or None."""
        client = self._live()
        with slot_released():
            entry = client.get_dataset(_NAME_PREFIX + name, default=None)
        if entry is None:
            return None
        future, meta_blob, *rest = entry
        return DaskActorId(future, retries=rest[0] if rest else 0), cloudpickle.loads(meta_blob)

    def publish(self, name: str, actor_id: DaskActorId, meta: ActorMeta,
                remember: bool) -> tuple[DaskActorId, ActorMeta] | None:
        """Publish ``actor_id`` as ``name``; None on success, else the actor that has it.

        ``remember``: this driver frees the name at shutdown (not for detached actors, nor
        for names published from inside a worker).
        """
        client = self._live()
        try:
            with slot_released():
                client.publish_dataset(actor_id.future, cloudpickle.dumps(meta),
                                       actor_id.retries, name=_NAME_PREFIX + name)
        except KeyError:
            return self.lookup(name)
        if remember:
            self._named[name] = actor_id.key
        return None

    def unpublish_all(self, client: Any) -> None:
        """Free every name this driver published and remembered (at shutdown)."""
        for name, key in list(self._named.items()):
            self._unpublish(client, name, key)

    def forget_actor(self, client: Any, key: str) -> None:
        """Free every name of the killed actor ``key``, whichever process published it."""
        for name, named_key in list(self._named.items()):
            if named_key == key:
                self._unpublish(client, name, named_key)
        self._unpublish_any(key)

    def _unpublish(self, client: Any, name: str, key: str) -> None:
        self._named.pop(name, None)
        entry = client.get_dataset(_NAME_PREFIX + name, default=None)
        if entry is not None and entry[0].key == key:
            client.unpublish_dataset(_NAME_PREFIX + name)

    def _unpublish_any(self, key: str) -> None:
        client = self._live()
        with contextlib.suppress(Exception), slot_released():
            for name in client.list_datasets():
                if isinstance(name, str) and name.startswith(_NAME_PREFIX):
                    entry = client.get_dataset(name, default=None)
                    if entry is not None and entry[0].key == key:
                        client.unpublish_dataset(name)
