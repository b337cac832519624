"""Per-actor and per-worker tables stay bounded however many actors and workers come and go
(R8, the chaos soak: tests/chaos/test_soak.py, docs/reliability.md):

* the node's actor table: a dead actor keeps only its death (the error later calls raise), in
  a table of the last :data:`~unipar.native.node.actors.DEATHS_KEPT` deaths; its creation
  message, constructor task and call queue are freed;
* the node's log writers: an ended worker's record moves to a bounded table (its file stays);
* the client's actor routes: a dead actor's route is dropped, keeping its death (bounded);
* the head's actor locations and owners: a dead actor keeps a bounded "" entry, its owner is
  dropped and told (the owner node then frees what it kept to re-create the actor).
"""

from __future__ import annotations

import textwrap
from types import SimpleNamespace
from typing import Iterator

import pytest

import unipar
from multinode import Cluster, base_env, ok
from unipar import _state
from unipar.exceptions import ActorDiedError
from unipar.native.dashboard.server import query_node
from unipar.native.head.actor_table import ActorTable
from unipar.native.node.actors import Actors, DeadActor, Deaths
from unipar.native.node.logfiles import LogFiles
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


@pytest.mark.filterwarnings("ignore::unipar.exceptions.ResourcesBusyWarning")
def test_dead_actors_leave_no_route_in_the_caller_and_still_raise_their_death(native) -> None:
    router = _state.current()._client.actor_calls   # type: ignore[union-attr]
    blocker = Counter.options(num_cpus=2).remote()
    assert unipar.get(blocker.add.remote(), timeout=T) == 1
    refs = []
    for _ in range(2000):   # each waits for a CPU (no process), is called, then killed
        actor = Counter.options(num_cpus=1).remote()
        refs.append(actor.add.remote())
        unipar.kill(actor)
    for ref in refs:
        with pytest.raises(ActorDiedError, match="killed with unipar.kill"):
            unipar.get(ref, timeout=T)
    unipar.kill(blocker)
    with pytest.raises(ActorDiedError, match="killed with unipar.kill"):
        unipar.get(blocker.add.remote(), timeout=T)   # its death is kept, not its route
    assert len(router.routes) <= 1, len(router.routes)
    assert 2000 <= len(router.dead) <= router.dead_kept


def test_node_forgets_ended_workers_log_writers_beyond_a_bound(tmp_path) -> None:
    logs = LogFiles(str(tmp_path), ended_kept=100)
    for i in range(2000):
        wid = f"w{i}"
        logs.note(wid, role="actor", pid=1000 + i)
        logs.note(wid, actor_id="ab" * 8, class_name="Counter", actor_name="")
        (tmp_path / f"worker-{wid}-{1000 + i}.log").write_text("hello\n")
        logs.gone(wid)
    assert logs.table_size() == {"writers": 0, "ended": 100, "ended_kept": 100}
    files = {f["name"]: f for f in logs.listing()["files"]}
    assert len(files) == 2000   # the files stay, for `unipar logs`
    assert files["worker-w1999-2999.log"]["class_name"] == "Counter"   # recent: who wrote it
    assert files["worker-w0-1000.log"]["role"] == "worker"              # old: still listed
    assert logs.read("worker-w0-1000.log", 0, 100)["data"] == b"hello\n"


def test_node_log_writers_follow_live_workers(native) -> None:
    for _ in range(3):
        actor = Counter.remote()
        assert unipar.get(actor.add.remote(), timeout=T) == 1
        unipar.kill(actor)
    cluster = _state.current()._cluster   # type: ignore[union-attr]

    def settled() -> dict | None:
        info = query_node(cluster.node_unix_address, cluster.secret, 10)
        writers = info["log_writers"]
        return info if writers["ended"] >= 3 and writers["writers"] <= info["workers"] else None
    wait_for(settled, timeout=T, message="ended actors' log writers to be dropped")


def test_head_keeps_a_bounded_record_of_dead_actors_and_tells_their_owner() -> None:
    table = ActorTable(dead_kept=100)
    for i in range(2000):
        aid = i.to_bytes(4, "big")
        assert table.located(aid, "B") == (True, None)
        assert table.owned(aid, "A")
        assert table.located(aid, "") == (True, "A")   # dead: its owner is to be told
        assert not table.owned(aid, "A")                 # a late owner report: it stays dead
    assert table.size() == {"nodes": 100, "dead": 100, "owners": 0, "dead_kept": 100}
    assert table.nodes[(1999).to_bytes(4, "big")] == ""   # recent: lookups say dead
    assert (0).to_bytes(4, "big") not in table.nodes       # old: forgotten
    table.located(b"x", "B")
    assert table.located(b"x", "") == (True, None)   # no owner recorded: nobody to tell
    assert table.located(b"x", "C") == (True, None)  # re-created: no longer dead
    assert table.nodes[b"x"] == "C" and len(table.nodes) == 100   # 99 dead, x alive


BROKEN_ON_PEER = """
    import unipar
    from unipar.exceptions import ActorDiedError
    unipar.init()

    @unipar.remote(resources={"slot": 1})
    class Broken:
        def __init__(self):
            raise ValueError("constructor failed on purpose")
        def f(self):
            return 1

    for _ in range(20):
        try:
            unipar.get(Broken.remote().f.remote(), timeout=60)
        except ActorDiedError as exc:
            assert "constructor failed on purpose" in str(exc), exc
        else:
            raise AssertionError("a call to a broken actor returned")
    print("DONE")
"""


@pytest.mark.timeout(300)
def test_owner_node_frees_actors_that_died_on_a_peer(tmp_path) -> None:
    """Actors created from the head's node on a peer (only it has ``slot``) die there, their
    constructors failing: the owner frees its records of them (the head tells it)."""
    state = str(tmp_path / "state")
    cluster = Cluster(state, base_env(state))
    try:
        cluster.start(["--num-cpus", "1"], [["--num-cpus", "1", "--resources", '{"slot": 1}']])
        assert "DONE" in ok(cluster.driver(textwrap.dedent(BROKEN_ON_PEER), timeout=240))
        with open(cluster.secret_file) as f:
            secret = bytes.fromhex(f.read().strip())
        node = cluster.state()["node"]

        def freed() -> dict | None:
            table = query_node(node, secret, 10)["actor_table"]
            return table if table["remote_owned"] == 0 and table["remote_hosted"] == 0 else None
        table = wait_for(freed, timeout=T, message="the owner to free its dead actors' records")
        assert table["remote_deaths"] == 20 and table["remote_queues"] == 0, table
    finally:
        cluster.stop()


class _Peers:
    """The part of :class:`~unipar.native.node.ports.Elsewhere` ``_note_owner`` asks."""

    def __init__(self) -> None:
        self.live: set[bytes] = set()

    def tracks(self, aid: bytes) -> bool:
        return aid in self.live


def test_a_drivers_owned_actor_list_drops_actors_dead_here_or_on_a_peer() -> None:
    """What a driver's connection lists as its actors (killed when it leaves) stays bounded
    when its actors die, whether they lived on its node or on a peer."""
    actors = Actors("node", None, None, None, None, {}, None, lambda: None)  # type: ignore[arg-type]
    peers = actors.elsewhere = _Peers()   # type: ignore[assignment]
    conn = SimpleNamespace(info={})
    kept = [b"kept-here", b"kept-there"]
    actors.actors[kept[0]] = None   # type: ignore[assignment]
    peers.live.add(kept[1])
    for aid in kept:
        actors._note_owner(conn, aid)   # type: ignore[arg-type]
    for i in range(20_000):   # each dies (here: dropped from ``actors``; there: untracked)
        actors._note_owner(conn, i.to_bytes(4, "big"))   # type: ignore[arg-type]
    owned = conn.info["actors"]
    assert len(owned) <= 2048, len(owned)
    assert kept[0] in owned and kept[1] in owned
