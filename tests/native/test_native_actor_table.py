"""The node's actor table stays bounded: a dead actor keeps only its death (the error later
calls raise), in a table of the last :data:`~unipar.native.node.actors.DEATHS_KEPT` deaths;
its creation message, constructor task and call queue are freed (the chaos soak's growth,
docs/reliability.md)."""

from __future__ import annotations

from typing import Iterator

import pytest

import unipar
from unipar import _state
from unipar.exceptions import ActorDiedError
from unipar.native.dashboard.server import query_node
from unipar.native.node.actors import DeadActor, Deaths
from unipar.testing import wait_for

T = 60.0


@pytest.fixture(scope="module")
def native() -> Iterator[None]:
    unipar.init(backend="native", num_cpus=2)
    yield
    unipar.shutdown()


def actor_table() -> dict:
    """The node's own count of its actor records (``node_info``, as the dashboard reads it)."""
    cluster = _state.current()._cluster   # type: ignore[union-attr]
    return query_node(cluster.node_unix_address, cluster.secret, 10)["actor_table"]


@unipar.remote
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def add(self) -> int:
        self.n += 1
        return self.n


@pytest.mark.filterwarnings("ignore::unipar.exceptions.ResourcesBusyWarning")
def test_dead_actors_free_their_records_and_still_raise_their_death(native) -> None:
    first = Counter.remote()
    assert unipar.get(first.add.remote(), timeout=T) == 1
    unipar.kill(first)
    # Many more that never start (the blocker holds every CPU, so no process is spawned for
    # them): each is killed while it waits.
    blocker = Counter.options(num_cpus=2).remote()
    assert unipar.get(blocker.add.remote(), timeout=T) == 1
    for _ in range(2000):
        unipar.kill(Counter.options(num_cpus=1).remote())
    unipar.kill(blocker)
    # Deaths are recorded as the kills are answered; the full records are gone.
    table = wait_for(lambda: (t := actor_table())["deaths"] >= 2002 and t, timeout=T,
                     message="the node to record 2002 deaths")
    assert table["hosted"] == 0, table
    assert table["deaths"] <= table["deaths_kept"], table
    with pytest.raises(ActorDiedError, match="killed with unipar.kill"):
        unipar.get(first.add.remote(), timeout=T)
    live = Counter.remote()   # the node still hosts new actors
    assert unipar.get(live.add.remote(), timeout=T) == 1
    assert actor_table()["hosted"] == 1
    unipar.kill(live)


def _record(cause: str) -> DeadActor:
    return DeadActor("Counter", "", 0, "", cause.encode())


def test_deaths_keep_the_last_n_and_forget_older_ones() -> None:
    deaths = Deaths(limit=3)
    for i in range(5):
        deaths.add(bytes([i]), _record(f"death {i}"))
    assert len(deaths) == 3
    assert deaths.get(bytes([0])) is None and deaths.get(bytes([1])) is None
    assert [deaths.get(bytes([i])).death for i in (2, 3, 4)] == [   # type: ignore[union-attr]
        b"death 2", b"death 3", b"death 4"]
    deaths.discard(bytes([3]))   # re-created here: no longer dead
    assert deaths.get(bytes([3])) is None and len(deaths) == 2
    assert [aid for aid, _ in deaths.newest(1)] == [bytes([4])]
