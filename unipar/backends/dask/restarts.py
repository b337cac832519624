"""The creating process's side of actor restarts in the ``dask`` backend.

Only the process that created an actor can start it again (it holds the recipe: the host's
arguments and the futures of its constructor's arguments)::

    host future errs (its worker died)   --watcher thread, every 0.1 s--+
    a call finds the host future erred   --host()------------------------+--> restart(key, lost)
                                                                            once per lost host:
        max_restarts left: submit ActorHost(..., resume={caller: next seq}) as <key>-r<n>,
                           publish {"host": <key>-r<n>} under [HOST_META, key]
        used up:           publish {"dead": reason}
    (calls being retried on the worker side wait for that entry: see hosts.run_retrying_call)

A restart is eager (when the host's worker dies) as in Ray, so calls in flight can be retried
on the new host before anyone makes another call. The watcher polls the futures' status (a
local read): a done-callback would not do, since an actor's future is done once it is built,
and Dask calls callbacks only then, not when it errs later.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable

from . import hosts

__all__ = ["DEMAND", "Recipe", "Restarts"]

log = logging.getLogger("unipar.dask")

DEMAND = "unipar_demand"   # annotation on an actor's host task: what it holds for life
_RESUME_ARG = 5            # index of ``resume`` in ActorHost's arguments
WATCH_INTERVAL_S = 0.1     # how often the watcher looks for lost hosts


@dataclass
class Recipe:
    """How the creating process starts an actor's host again after its worker died."""

    args: tuple                      # ActorHost's arguments (``resume`` None)
    resources: dict[str, float] | None
    demand: dict[str, float]
    max_restarts: int
    restarts: int = 0


class Restarts:
    """Hosts of the actors this process created with ``max_restarts != 0``.

    Args:
        client: returns this process's live Dask client (raises once it is shut down).
        caller: this process's id as a caller of actor calls.
        next_seq: the number this process will give its next call on an actor (by key),
            without using it up: a new host starts this caller's calls from there.
    """

    def __init__(self, client: Callable[[], Any], caller: str,
                 next_seq: Callable[[str], int]) -> None:
        self._client = client
        self._caller = caller
        self._next_seq = next_seq
        self._lock = threading.Lock()
        self._recipes: dict[str, Recipe] = {}
        self._hosts: dict[str, Any] = {}   # actor key -> future of its current host
        self._watcher: threading.Thread | None = None   # runs while there are recipes
        self._closed = threading.Event()

    def add(self, actor_key: str, host: Any, recipe: Recipe) -> None:
        """Record a new actor's first host, and watch it from now on."""
        with self._lock:
            self._recipes[actor_key] = recipe
            self._hosts[actor_key] = host
            if self._watcher is None and not self._closed.is_set():
                self._watcher = threading.Thread(target=self._watch, daemon=True,
                                                 name="unipar-dask-restarts")
                self._watcher.start()

    def current(self, actor_key: str, default: Any) -> Any:
        """The future of the actor's current host (``default``: the one its id names)."""
        return self._hosts.get(actor_key, default)

    def host(self, actor_key: str, default: Any) -> Any:
        """The current host, restarting it first if its worker died and none was started yet."""
        future = self.current(actor_key, default)
        if actor_key in self._recipes and future.status == "error":
            return self.restart(actor_key, future)
        return future

    def forget(self, actor_key: str) -> None:
        """The actor was killed for good: never restart it (its dead host stays current)."""
        with self._lock:
            self._recipes.pop(actor_key, None)

    def clear(self) -> None:
        """Forget every actor (the client is closing): nothing is restarted any more."""
        self._closed.set()
        with self._lock:
            self._recipes.clear()
            self._hosts.clear()

    def _watch(self) -> None:
        """The watcher thread: restart lost hosts; exit once no actor may be restarted."""
        while not self._closed.wait(WATCH_INTERVAL_S):
            with self._lock:
                if not self._recipes:
                    self._watcher = None   # add() starts another
                    return
                lost = [(key, self._hosts[key]) for key in self._recipes
                        if self._hosts[key].status == "error"]
            for key, future in lost:
                try:
                    self.restart(key, future)
                except Exception:   # the client is closing: nothing to restart for
                    log.debug("no restart of actor %s", key, exc_info=True)

    def restart(self, actor_key: str, lost: Any) -> Any:
        """Start a host in place of ``lost`` (once, whoever asks first) if ``max_restarts``
        allows, and publish it for calls being retried. Returns the current host's future."""
        import dask
        client = self._client()
        with self._lock:
            current = self._hosts.get(actor_key)
            recipe = self._recipes.get(actor_key)
            if recipe is None or current is None or current.key != lost.key:
                return current if current is not None else lost   # done already, or killed
            if recipe.max_restarts != -1 and recipe.restarts >= recipe.max_restarts:
                entry = hosts.dead_entry(f"the Dask worker holding it died and its "
                                         f"max_restarts={recipe.max_restarts} restarts are used up")
                future = lost
                del self._recipes[actor_key]   # said once; later calls see the erred host
            else:
                recipe.restarts += 1
                args = list(recipe.args)
                args[_RESUME_ARG] = {self._caller: self._next_seq(actor_key)}
                with dask.annotate(**{DEMAND: recipe.demand}):
                    future = client.submit(
                        hosts.ActorHost, *args, key=f"{actor_key}-r{recipe.restarts}",
                        actor=True, pure=False, resources=recipe.resources)
                self._hosts[actor_key] = future
                entry = hosts.host_entry(future.key)
        with contextlib.suppress(Exception):   # calls being retried wait for this entry
            client.set_metadata([hosts.HOST_META, actor_key], entry)
        return future
