"""A head and two node daemons started with ``unipar start``; drivers connect with ``address=``.

The cluster is shared by the module (starting one costs seconds); each driver is a subprocess.
The fixture's finalizer runs ``unipar stop`` and kills anything left, even when a test failed.
"""

from __future__ import annotations

import os
import signal
import stat
import textwrap

import pytest

from multinode import Cluster, base_env, ok as _ok, unipar
from unipar.testing import wait_for

pytestmark = pytest.mark.timeout(300)

HEAD = ["--num-cpus", "2", "--resources", '{"res_head": 1}']
NODE_B = ["--num-cpus", "1", "--resources", '{"res_b": 1}']
NODE_C = ["--num-cpus", "1", "--resources", '{"res_c": 1}']


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    state = str(tmp_path_factory.mktemp("unipar-state"))
    c = Cluster(state, base_env(state))
    try:
        c.start(HEAD, [NODE_B, NODE_C])
        yield c
    finally:
        c.stop()


def test_start_prints_how_to_join_connect_and_stop(cluster: Cluster):
    out = cluster.start_output
    hostport = cluster.head.removeprefix("tcp://")
    assert "Local node IP: 127.0.0.1" in out
    assert f"unipar start --address='{hostport}'" in out
    assert "--secret-file" in out and "UNIPAR_CLUSTER_SECRET" in out
    assert 'unipar.init(address="auto")' in out
    assert f'unipar.init(address="unipar://{hostport}")' in out
    assert "unipar stop" in out


def test_state_directory_and_secret_are_private(cluster: Cluster):
    assert stat.S_IMODE(os.stat(cluster.state_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(cluster.secret_file).st_mode) == 0o600
    with open(cluster.secret_file) as f:
        assert len(bytes.fromhex(f.read().strip())) == 32
    roles = sorted(r["role"] for r in cluster.records)
    assert roles == ["head", "node", "node", "node"][:len(roles)] and len(roles) == 4


def test_status_shows_every_node_and_resources(cluster: Cluster):
    out = _ok(unipar(cluster.env, "status"))
    assert "Nodes: 3 alive, 0 dead" in out
    assert out.count(" alive  tcp://") == 3
    assert "res_b 0/1" in out and "res_c 0/1" in out and "res_head 0/1" in out
    assert "Cluster resources in use: CPU 0/4" in out
    assert "object store:" in out and "tasks:" in out and "actors:" in out


DRIVER = """
    import numpy as np, unipar
    unipar.init()
    assert unipar.cluster_resources()["CPU"] == 4.0, unipar.cluster_resources()
    assert len([n for n in unipar.nodes() if n["Alive"]]) == 3

    @unipar.remote
    def square(x):
        print("squaring", x)
        return x * x

    @unipar.remote
    def total(a):
        return float(a.sum())

    @unipar.remote
    def fails():
        raise ValueError("boom")

    @unipar.remote
    class Counter:
        def __init__(self):
            self.n = 0
        def add(self, k):
            self.n += k
            return self.n

    assert unipar.get([square.remote(i) for i in range(20)]) == [i * i for i in range(20)]
    big = np.arange(2_000_000, dtype=np.int64)          # 16 MB: through the store
    ref = unipar.put(big)
    assert unipar.get(total.remote(ref)) == float(big.sum())
    assert (unipar.get(ref) == big).all()
    assert unipar.get(square.remote(np.ones(3)))[0] == 1.0
    try:
        unipar.get(fails.remote())
        raise SystemExit("no error")
    except ValueError as exc:
        assert "boom" in str(exc)
    counter = Counter.options(name="shared_counter").remote()
    assert unipar.get([counter.add.remote(1) for _ in range(5)]) == [1, 2, 3, 4, 5]
    again = unipar.get_actor("shared_counter")
    assert unipar.get(again.add.remote(10)) == 15
    ready, rest = unipar.wait([square.remote(3)], num_returns=1, timeout=60)
    assert len(ready) == 1 and not rest
    unipar.kill(counter)
    unipar.shutdown()
    print("DRIVER OK")
"""


def test_driver_on_a_cluster_node_uses_address_auto(cluster: Cluster):
    result = cluster.driver(DRIVER, address="auto")
    out = _ok(result)
    assert "DRIVER OK" in out
    assert "(square pid=" in out   # worker output reaches this driver, prefixed


def test_driver_outside_the_cluster_connects_with_the_secret_in_env(cluster: Cluster, tmp_path):
    # No state directory (as on another machine): only the address and the secret.
    env = base_env(str(tmp_path / "elsewhere"))
    with open(cluster.secret_file) as f:
        env["UNIPAR_CLUSTER_SECRET"] = f.read().strip()
    hostport = cluster.head.removeprefix("tcp://")
    out = _ok(cluster.driver(DRIVER, address=f"unipar://{hostport}", env=env))
    assert "DRIVER OK" in out


def test_driver_shutdown_leaves_the_cluster_running(cluster: Cluster):
    _ok(cluster.driver("import unipar; unipar.init(); unipar.shutdown(); unipar.shutdown()"))
    out = _ok(unipar(cluster.env, "status"))
    assert "Nodes: 3 alive, 0 dead" in out
    assert len([p for p in cluster.processes() if p.pid in {r["pid"] for r in cluster.records}]) == 4


def test_wrong_secret_is_refused_with_a_clear_message(cluster: Cluster, tmp_path):
    env = base_env(str(tmp_path / "elsewhere"))
    env["UNIPAR_CLUSTER_SECRET"] = "ab" * 32
    hostport = cluster.head.removeprefix("tcp://")
    code = """
        import unipar
        try:
            unipar.init()
        except Exception as exc:
            print(type(exc).__name__, exc)
    """
    out = _ok(cluster.driver(code, address=f"unipar://{hostport}", env=env))
    assert "BackendUnavailableError" in out
    assert "refused the connection" in out and "wrong or missing cluster secret" in out
    env.pop("UNIPAR_CLUSTER_SECRET")
    out = _ok(cluster.driver(code, address=f"unipar://{hostport}", env=env))
    assert "no cluster secret" in out and "UNIPAR_CLUSTER_SECRET" in out
    # The daemons still serve everyone else.
    assert "Nodes: 3 alive" in _ok(unipar(cluster.env, "status"))


def test_auto_without_a_cluster_says_how_to_start_one(tmp_path):
    env = base_env(str(tmp_path / "empty"))
    code = textwrap.dedent("""
        import unipar
        try:
            unipar.init(address="auto")
        except Exception as exc:
            print(type(exc).__name__, exc)
    """)
    out = _ok(Cluster(str(tmp_path), env).driver(code, address="auto", env=env))
    assert "found no cluster" in out and "unipar start --head" in out


def test_stop_stops_every_process_it_started(tmp_path):
    state = str(tmp_path / "state")
    c = Cluster(state, base_env(state))
    try:
        c.start(["--num-cpus", "1"], [["--num-cpus", "1"]])
        running = c.processes()
        assert len(running) >= 3          # head, 2 nodes (plus their workers)
        out = c.stop()
        assert out is not None and out.returncode == 0, out
        assert "Stopped 3 unipar process(es)" in out.stdout
        assert not [p for p in running if p.is_running() and p.status() != "zombie"]
        for record in c.records:
            if record.get("session_dir"):
                assert not os.path.exists(record["session_dir"])
        assert not os.path.exists(os.path.join(state, "cluster.json"))
        again = unipar(c.env, "stop")
        assert "Stopped 0 unipar process(es)" in again.stdout
    finally:
        c.stop()


SCHEDULING = """
    import os, time, numpy as np, unipar
    unipar.init()

    def node():   # the node a worker belongs to: its daemon's socket
        return os.environ["UNIPAR_NODE_ADDRESS"]

    @unipar.remote
    def where(delay=0.0):
        time.sleep(delay)
        return node()

    nodes = {name: unipar.get(where.options(resources={name: 1}).remote())
             for name in ("res_head", "res_b", "res_c")}
    assert len(set(nodes.values())) == 3, nodes
    # a resource only one node has: always there
    for _ in range(3):
        assert unipar.get(where.options(resources={"res_b": 1}).remote()) == nodes["res_b"]

    # a wide map uses the CPUs of every node
    seen = set(unipar.get([where.remote(0.5) for _ in range(16)]))
    assert seen == set(nodes.values()), seen

    # nested tasks started on node c may run on other nodes
    @unipar.remote
    def fan_out(n):
        return node(), set(unipar.get([where.remote(0.5) for _ in range(n)]))
    parent, children = unipar.get(fan_out.options(resources={"res_c": 1}).remote(8))
    assert parent == nodes["res_c"] and children - {nodes["res_c"]}, children

    # objects: a big array to a task on b, a ref made on c used on b and here
    @unipar.remote
    def total(a):
        return float(a.sum()), node()
    big = np.arange(3_000_000, dtype=np.float64)
    ref = unipar.put(big)
    assert unipar.get(total.options(resources={"res_b": 1}).remote(ref)) == (float(big.sum()), nodes["res_b"])

    @unipar.remote
    def make():
        return [unipar.put(np.ones(500_000))]
    inner = unipar.get(make.options(resources={"res_c": 1}).remote())[0]
    assert unipar.get(total.options(resources={"res_b": 1}).remote(inner)) == (500_000.0, nodes["res_b"])
    assert unipar.get(inner).sum() == 500_000.0

    # actors: placed where their resource is; handles and names work from every node
    @unipar.remote
    class Acc:
        def __init__(self):
            self.n = 0
        def add(self, k):
            self.n += k
            return self.n, node()
    acc = Acc.options(name="acc", resources={"res_b": 1}).remote()
    assert unipar.get([acc.add.remote(1) for _ in range(3)]) == [(i, nodes["res_b"]) for i in (1, 2, 3)]

    @unipar.remote
    def call(handle, k):
        return unipar.get(handle.add.remote(k))
    assert unipar.get(call.options(resources={"res_c": 1}).remote(acc, 10))[0] == 13

    @unipar.remote
    def by_name(k):
        return unipar.get(unipar.get_actor("acc").add.remote(k))
    assert unipar.get(by_name.options(resources={"res_head": 1}).remote(100))[0] == 113
    unipar.kill(acc)
    try:
        unipar.get(acc.add.remote(1), timeout=60)
        raise SystemExit("a killed actor answered")
    except unipar.exceptions.ActorDiedError:
        pass
    del ref, inner, big
    unipar.shutdown()
    print("SCHEDULING OK")
"""


def test_tasks_actors_and_objects_spread_over_the_nodes(cluster: Cluster):
    out = _ok(cluster.driver(SCHEDULING, timeout=240))
    assert "SCHEDULING OK" in out


def test_objects_are_freed_on_every_node_when_no_ref_remains(cluster: Cluster):
    code = """
        import numpy as np, unipar
        unipar.init()
        @unipar.remote
        def make(n):
            return np.ones(n)
        refs = [make.options(resources={r: 1}).remote(400_000) for r in ("res_b", "res_c")]
        refs.append(unipar.put(np.ones(400_000)))
        assert sum(float(unipar.get(r).sum()) for r in refs) == 1_200_000.0
        del refs
        unipar.shutdown()
    """
    _ok(cluster.driver(code))

    def stores_empty() -> bool:
        out = _ok(unipar(cluster.env, "status"))
        return out.count(" 0 objects") == 3
    wait_for(stores_empty, timeout=60, interval=0.5, message="every node's store to be empty")


def test_actors_die_with_the_driver_that_made_them(cluster: Cluster):
    code = """
        import unipar
        unipar.init()
        @unipar.remote
        class Holder:
            def ping(self):
                return "pong"
        h = Holder.options(resources={"res_c": 1}).remote()
        assert unipar.get(h.ping.remote()) == "pong"
    """
    _ok(cluster.driver(code))    # exits without killing it

    def freed() -> bool:
        return "res_c 0/1" in _ok(unipar(cluster.env, "status"))
    wait_for(freed, timeout=60, interval=0.5, message="the actor's resources to be freed")


def test_a_detached_actor_outlives_its_driver(cluster: Cluster):
    make = """
        import unipar
        unipar.init()
        @unipar.remote
        class Counter:
            def __init__(self):
                self.n = 0
            def add(self):
                self.n += 1
                return self.n
        c = Counter.options(name="kept", lifetime="detached").remote()
        assert unipar.get(c.add.remote()) == 1
    """
    _ok(cluster.driver(make))   # exits; the actor must live on
    use = """
        import unipar
        unipar.init()
        c = unipar.get_actor("kept")
        print("count", unipar.get(c.add.remote()))
        unipar.kill(c)
    """
    assert "count 2" in _ok(cluster.driver(use))


@pytest.mark.parametrize("failure", ["killed", "frozen"])
def test_a_dead_nodes_task_is_retried_on_another_node(tmp_path, failure):
    """A node killed (its connections close) or frozen (SIGSTOP: connected but silent, so
    only the missed heartbeats tell) is declared dead; its task runs again elsewhere."""
    state = str(tmp_path / "state")
    c = Cluster(state, base_env(state))
    marks = tmp_path / "marks"
    marks.mkdir()
    try:
        c.start(["--num-cpus", "1", "--node-timeout", "8"],
                [["--num-cpus", "1", "--resources", '{"x": 1}'],
                                      ["--num-cpus", "1", "--resources", '{"x": 1}']])
        code = f"""
            import os, time, unipar
            unipar.init()
            @unipar.remote(resources={{"x": 1}}, max_retries=2)
            def slow():
                mark = os.path.join({str(marks)!r}, str(os.getpid()))
                first = not os.listdir({str(marks)!r})
                with open(mark, "w") as f:
                    f.write(os.environ["UNIPAR_NODE_ADDRESS"])
                if first:
                    time.sleep(600)   # the test kills this node meanwhile
                return os.environ["UNIPAR_NODE_ADDRESS"]
            print("RESULT", unipar.get(slow.remote(), timeout=240))
        """
        import subprocess, sys, textwrap
        driver = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                                  env=dict(c.env, UNIPAR_ADDRESS="auto"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            first = wait_for(lambda: os.listdir(marks), timeout=120, interval=0.2,
                             message="the task to start")
            where = (marks / first[0]).read_text()
            victim = next(r for r in c.records
                          if r.get("session_dir") and r["session_dir"] in where)
            os.kill(victim["pid"], signal.SIGKILL if failure == "killed" else signal.SIGSTOP)
            out, err = driver.communicate(timeout=240)
        finally:
            if failure == "frozen":
                os.kill(victim["pid"], signal.SIGCONT)   # it comes back: too late to matter
            if driver.poll() is None:
                driver.kill()
                driver.communicate()
        assert driver.returncode == 0, out + err
        result = out.split("RESULT", 1)[1].strip()
        assert result != where and "unix://" in result
        assert out.count("RESULT") == 1
        status = _ok(unipar(c.env, "status"))
        assert "Nodes: 2 alive, 1 dead" in status
    finally:
        c.stop()


def test_work_queued_before_a_node_joins_spreads_over_it(tmp_path):
    """Issue #13, point 4: a map submitted while the cluster had one node, still queued when a
    second node joins, must use the new node too. Each task waits (up to a safety bound)
    until tasks on two different nodes have started, so with one node only the first task
    would wait out the bound and the map would report a single node."""
    state = str(tmp_path / "state")
    c = Cluster(state, base_env(state))
    marks = tmp_path / "marks"
    marks.mkdir()
    try:
        c.start(["--num-cpus", "1"], [])
        code = f"""
            import os, time, unipar
            unipar.init()
            marks = {str(marks)!r}

            @unipar.remote
            def where(i):
                me = os.environ["UNIPAR_NODE_ADDRESS"]
                with open(os.path.join(marks, f"{{i}}.tmp"), "w") as f:
                    f.write(me)
                os.replace(os.path.join(marks, f"{{i}}.tmp"), os.path.join(marks, f"{{i}}"))
                # Wait until tasks ran on two nodes. The bound only keeps a failing run short:
                # the first task to reach it tells the others (gave_up) not to wait too.
                deadline = time.monotonic() + 60
                while not os.path.exists(os.path.join(marks, "gave_up")):
                    seen = set()
                    for name in os.listdir(marks):
                        if name[0].isdigit() and not name.endswith(".tmp"):
                            with open(os.path.join(marks, name)) as f:
                                seen.add(f.read())
                    if len(seen) >= 2:
                        break
                    if time.monotonic() > deadline:
                        open(os.path.join(marks, "gave_up"), "w").close()
                    time.sleep(0.05)
                return me

            refs = [where.remote(i) for i in range(20)]
            print("NODES", len(set(unipar.get(refs, timeout=240))))
        """
        import subprocess, sys, textwrap
        driver = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                                  env=dict(c.env, UNIPAR_ADDRESS="auto"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: os.listdir(marks), timeout=120, interval=0.2,
                     message="the first task to start")
            _ok(unipar(c.env, "start", "--address", c.head.removeprefix("tcp://"),
                       "--num-cpus", "1"))
            c.records = c.state()["procs"]
            out, err = driver.communicate(timeout=240)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.communicate()
        assert driver.returncode == 0, out + err
        assert "NODES 2" in out, out + err
    finally:
        c.stop()
