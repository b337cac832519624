"""Code that travels (issue #16): runtime_env on the native engine.

The cluster tests start a real cluster (``unipar start``) whose daemons run in a mount
namespace where the driver's project folder is covered by an empty tmpfs: the node's
filesystem cannot see the driver's code, so whatever the workers import came through
runtime_env. A driver without runtime_env fails there exactly as the issue describes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile

import pytest

from unipar.native.head.packages import PackageTable
from unipar.native.node import packages as packages_module
from unipar.native.node.packages import Packages
from unipar.native.node.records import Obj
from unipar.native.node.scheduler import ENV_TAG, Dispatch, RetireWorker, Scheduler, StartWorkers
from unipar.native.wire import protocol as P
from unipar.runtime_env import cached_names, install_package, note_use, noted_use, remove_cached

from unipar.testing import wait_for

from multinode import Cluster, base_env, unipar as unipar_cli

TAG = ENV_TAG + "ab12"


# -- the scheduler: workers dedicated to one env (no I/O) --------------------------------------

def test_env_tasks_run_only_on_workers_started_for_their_env():
    s = Scheduler({"CPU": 2.0}, keep_idle=1, idle_timeout=5.0)
    s.workers_requested(1)
    s.worker_registered("w1", 0.0)
    s.add_task("t1", {"CPU": 1.0, TAG: 0.0}, 0.0)
    actions = s.schedule(0.0)
    assert StartWorkers(1, TAG) in actions                       # not the idle plain w1
    assert not any(isinstance(a, Dispatch) for a in actions)
    s.workers_requested(1, TAG)
    s.worker_registered("w2", 0.0, TAG)
    assert Dispatch("t1", "w2", ()) in s.schedule(0.0)
    s.add_task("t2", {"CPU": 1.0}, 0.0)
    assert Dispatch("t2", "w1", ()) in s.schedule(0.0)           # plain work: a plain worker
    s.task_finished("w2", 1.0)
    s.add_task("t3", {"CPU": 1.0}, 1.0)                         # w1 busy, w2 idle but env's
    actions = s.schedule(1.0)
    assert not any(isinstance(a, Dispatch) for a in actions)
    assert TAG not in s.available()                              # a tag is not a resource


def test_idle_env_workers_retire_but_plain_ones_are_kept():
    s = Scheduler({"CPU": 2.0}, keep_idle=1, idle_timeout=5.0)
    s.workers_requested(1)
    s.worker_registered("w1", 0.0)
    s.workers_requested(1, TAG)
    s.worker_registered("w2", 0.0, TAG)
    assert s.schedule(10.0) == [RetireWorker("w2")]


# -- the node's package cache: what stays, what goes (no I/O but the cache folder) -------------

class _Objects:
    """The part of the node's object directory that Packages uses."""

    def __init__(self) -> None:
        self.objects: dict[bytes, Obj] = {}

    def get(self, oid: bytes) -> Obj | None:
        return self.objects.get(oid)

    def pin(self, oid: bytes) -> None:
        self.objects[oid].pins += 1

    def unpin(self, oid: bytes) -> None:
        obj = self.objects[oid]
        obj.pins -= 1
        if not obj.pins and not obj.holders:
            del self.objects[oid]


def test_the_node_removes_packages_nothing_used_for_the_grace_period(tmp_path):
    cache = str(tmp_path)
    for name in ("sha256-used", "sha256-held", "sha256-unused", "pip-unused"):
        install_package(cache, name, _zip_of({"m.py": "X = 1\n"}))
    live = {ENV_TAG + "aa"}
    note_use(cache, "aa", ["sha256-used"])             # a live worker's env
    note_use(cache, "bb", ["sha256-held"])             # an env whose spec a driver holds
    note_use(cache, "cc", ["sha256-unused"])           # an env gone from this node
    objects = _Objects()
    objects.objects[bytes.fromhex("bb")] = Obj()
    packages = Packages(objects, cache, lambda: live, grace=10.0)   # type: ignore[arg-type]
    upload = objects.objects[b"up"] = Obj()
    upload.kind, upload.size = "shm", 5
    _reply(packages.on_keep_packages, P.KeepPackages(1, {"sha256-up": b"up"}))
    assert _reply(packages.on_find_packages, P.FindPackages(2, ["sha256-up", "x"])) == {
        "sha256-up": b"up"}
    packages.sweep(0.0)
    assert len(cached_names(cache)) == 4                    # nothing is removed at once
    packages.sweep(9.0)
    assert len(cached_names(cache)) == 4 and objects.get(b"up") is not None
    packages.sweep(20.0)
    assert sorted(cached_names(cache)) == ["sha256-held", "sha256-used"]
    assert objects.get(b"up") is None                       # the kept upload is let go
    assert packages.report()["kept"] == 0 and packages.report()["uploaded_bytes"] == 5
    assert noted_use(cache, "cc") is None                    # its note went with its env


def test_a_package_being_installed_is_not_removed(tmp_path):
    cache = str(tmp_path)
    install_package(cache, "sha256-busy", _zip_of({"m.py": ""}))
    import fcntl
    fd = os.open(os.path.join(cache, "sha256-busy.lock"), os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)                # a worker holds its install lock
    try:
        assert remove_cached(cache, "sha256-busy") is None
    finally:
        os.close(fd)
    trash = remove_cached(cache, "sha256-busy")
    assert trash is not None and cached_names(cache) == []


def _zip_of(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()


def _reply(handler, msg):
    """Call a node handler with a fake connection; the value it replied."""
    sent = []
    handler(type("Conn", (), {"send": staticmethod(sent.append)})(), msg)
    [reply] = sent
    return reply.value


class _Head:
    """The node's head link as Packages sees it: questions wait until the test answers."""

    def __init__(self) -> None:
        self.asked: list = []
        self.told: list = []

    def ask(self, make, callback) -> bool:
        self.asked.append((make(1), callback))
        return True

    def tell(self, msg) -> None:
        self.told.append(msg)


def test_a_node_pulls_a_package_another_node_keeps_and_falls_back_when_it_cannot():
    objects, head, replies = _Objects(), _Head(), []
    conn = type("Conn", (), {"send": staticmethod(replies.append)})()

    def fetch(oid: bytes) -> bool:             # a pull from a peer begins: pending here
        objects.objects[oid] = Obj()
        return True

    packages = Packages(objects, "/nonexistent", set, grace=10.0,  # type: ignore[arg-type]
                        node_id="b", head=head, fetch=fetch)

    async def scenario() -> None:
        packages.on_find_packages(conn, P.FindPackages(1, ["sha256-far", "sha256-lost"]))
        [(question, answer)] = head.asked
        assert question.digests == ["sha256-far", "sha256-lost"] and question.node_id == "b"
        answer({"sha256-far": ["a", b"far"], "sha256-lost": ["a", b"lost"]})
        assert replies == []                            # it waits for the copies
        far, lost = objects.objects[b"far"], objects.objects[b"lost"]
        far.kind, far.size = "shm", 7
        for sub in far.subscribers:
            sub.send(None)
        lost.kind = "error"                             # the peer lost it: upload it again
        for sub in lost.subscribers:
            sub.send(None)

    asyncio.run(scenario())
    assert [r.value for r in replies] == [{"sha256-far": b"far"}]
    assert b"lost" not in objects.objects and objects.objects[b"far"].pins == 1
    assert packages.report()["pulled"] == 1 and packages.report()["uploaded"] == 0
    assert [(m.kept, m.dropped) for m in head.told] == [({"sha256-far": b"far"}, [])]


def test_a_find_the_head_does_not_answer_is_answered_after_the_wait(monkeypatch):
    monkeypatch.setattr(packages_module, "FIND_WAIT", 0.0)
    replies: list = []
    conn = type("Conn", (), {"send": staticmethod(replies.append)})()
    packages = Packages(_Objects(), "/nonexistent", set, grace=10.0,  # type: ignore[arg-type]
                        node_id="b", head=_Head(), fetch=lambda oid: True)

    async def scenario() -> None:
        packages.on_find_packages(conn, P.FindPackages(1, ["sha256-x"]))
        while not replies:              # the head never answers: the wait ends it
            await asyncio.sleep(0.01)

    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert [r.value for r in replies] == [{}]     # the driver uploads it


def test_the_head_locates_packages_of_live_nodes_only():
    alive = {"a", "b"}
    table = PackageTable(lambda nid: nid in alive)
    kept = P.PackagesKept("a", {"d1": b"x", "d2": b"y"}, [])
    table.on_packages_kept(None, kept)                              # type: ignore[arg-type]
    table.on_packages_kept(None, P.PackagesKept("a", {}, ["d2"]))  # type: ignore[arg-type]
    assert _reply(table.on_locate_packages, P.LocatePackages(1, "b", ["d1", "d2"])) == {
        "d1": ["a", b"x"]}
    assert _reply(table.on_locate_packages, P.LocatePackages(2, "a", ["d1"])) == {}
    alive.discard("a")
    table.node_dead("a")
    assert table.where == {}


# -- a cluster that cannot see the driver's folder ----------------------------------------------

def _wheel(dest: str) -> str:
    """A tiny pure-Python wheel, built here: pip needs no network for it."""
    name, dist = "tinywheel-0.1-py3-none-any.whl", "tinywheel-0.1.dist-info"
    files = {"tinywheel/__init__.py": "ANSWER = 42\n",
             f"{dist}/METADATA": "Metadata-Version: 2.1\nName: tinywheel\nVersion: 0.1\n",
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n"}
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join(record + [f"{dist}/RECORD,,"]) + "\n"
    path = os.path.join(dest, name)
    with zipfile.ZipFile(path, "w") as zf:
        for arc, text in files.items():
            zf.writestr(arc, text)
    return path


def _projects(hidden: str) -> dict[str, str]:
    """Two projects and a library, inside ``hidden`` (which the cluster cannot see)."""
    a, b, lib = (os.path.join(hidden, n) for n in ("proj_a", "proj_b", "libs"))
    for d in (a, b, os.path.join(lib, "mylib"), os.path.join(a, "wheels")):
        os.makedirs(d)
    with open(os.path.join(a, "helper.py"), "w") as f:
        f.write("VALUE = 7\n\ndef compute(x):\n    return x * VALUE\n")
    with open(os.path.join(b, "only_b.py"), "w") as f:
        f.write("NAME = 'b'\n")
    with open(os.path.join(lib, "mylib", "__init__.py"), "w") as f:
        f.write("NAME = 'mylib'\n")
    _wheel(os.path.join(a, "wheels"))
    return {"a": a, "b": b, "lib": os.path.join(lib, "mylib")}


@pytest.fixture(scope="module")
def hidden_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A cluster whose daemons cannot see ``hidden`` (an empty tmpfs covers it for them)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare (a mount namespace hides the project folder)")
    hidden = str(tmp_path_factory.mktemp("hidden"))
    state = str(tmp_path_factory.mktemp("state"))
    c = Cluster(state, base_env(state))
    start = (f"mount -t tmpfs tmpfs {hidden} && exec {sys.executable} -m unipar.cli start "
             "--head --port 0 --include-dashboard false --num-cpus 2")
    out = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", start],
                         env=c.env, capture_output=True, text=True, timeout=120)
    try:
        assert out.returncode == 0, out.stdout + out.stderr
        c.head = c.state()["head"]
        c.records = c.state()["procs"]
        yield c, _projects(hidden)
    finally:
        c.stop()


def _drive(cluster: Cluster, cwd: str, body: str) -> dict:
    """Run ``body`` as a driver in ``cwd`` (the project); it prints ``RESULT <json>``."""
    code = "import json, os, unipar\n" + textwrap.dedent(body)
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                         timeout=300, env=dict(cluster.env, UNIPAR_ADDRESS="auto"))
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert out.returncode == 0 and lines, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_without_runtime_env_the_driver_module_is_missing_on_the_node(hidden_cluster):
    cluster, dirs = hidden_cluster
    got = _drive(cluster, dirs["a"], """
        import helper
        unipar.init()
        try:
            unipar.get(unipar.remote(helper.compute).remote(2), timeout=120)
            print("RESULT", json.dumps("ran"))
        except Exception as exc:
            print("RESULT", json.dumps(f"{type(exc).__name__}: {exc}"))
    """)
    assert "No module named 'helper'" in got


def test_working_dir_py_modules_and_env_vars_reach_tasks_and_actors(hidden_cluster):
    cluster, dirs = hidden_cluster
    got = _drive(cluster, dirs["a"], f"""
        import helper
        unipar.init(runtime_env={{"working_dir": ".", "py_modules": [{dirs["lib"]!r}],
                                  "env_vars": {{"GREETING": "hello"}}}})

        @unipar.remote
        def look():
            import mylib
            return [mylib.NAME, os.environ.get("GREETING"), os.path.exists("helper.py"),
                    os.path.exists({dirs["a"]!r} + "/helper.py")]

        @unipar.remote
        class Keeper:
            def value(self):
                import helper
                return [helper.VALUE, os.environ.get("GREETING")]

        print("RESULT", json.dumps({{
            "by_reference": unipar.get(unipar.remote(helper.compute).remote(3), timeout=120),
            "task": unipar.get(look.remote(), timeout=120),
            "override": unipar.get(look.options(runtime_env={{"env_vars": {{"GREETING": "hi"}}}})
                                   .remote(), timeout=120)[1],
            "actor": unipar.get(Keeper.remote().value.remote(), timeout=120)}}))
    """)
    assert got["by_reference"] == 21
    # The worker runs in the shipped copy; the driver's own folder does not exist there.
    assert got["task"] == ["mylib", "hello", True, False]
    assert got["override"] == "hi"
    assert got["actor"] == [7, "hello"]


def test_two_envs_on_one_cluster_do_not_see_each_others_modules(hidden_cluster):
    cluster, dirs = hidden_cluster
    got = _drive(cluster, dirs["b"], f"""
        unipar.init()

        @unipar.remote
        def can_import(name):
            try:
                __import__(name)
                return True
            except ImportError:
                return False

        env_a = {{"working_dir": {dirs["a"]!r}}}
        env_b = {{"working_dir": {dirs["b"]!r}}}
        print("RESULT", json.dumps([
            unipar.get(can_import.options(runtime_env=env_a).remote(n), timeout=120)
            for n in ("helper", "only_b")] + [
            unipar.get(can_import.options(runtime_env=env_b).remote(n), timeout=120)
            for n in ("helper", "only_b")]))
    """)
    assert got == [True, False, False, True]


def test_pip_installs_a_wheel_and_a_bad_requirement_fails_only_its_tasks(hidden_cluster):
    cluster, dirs = hidden_cluster
    got = _drive(cluster, dirs["a"], """
        unipar.init(runtime_env={"working_dir": "."})

        @unipar.remote
        def answer():
            import tinywheel
            return tinywheel.ANSWER

        good = {"pip": ["./wheels/tinywheel-0.1-py3-none-any.whl"]}
        bad = {"pip": ["./wheels/missing-0.1-py3-none-any.whl"]}
        try:
            unipar.get(answer.options(runtime_env=bad).remote(), timeout=240)
            failed = "ran"
        except Exception as exc:
            failed = f"{type(exc).__name__}: {exc}"
        print("RESULT", json.dumps({
            "good": unipar.get(answer.options(runtime_env=good).remote(), timeout=240),
            "bad": failed,
            "after": unipar.get(unipar.remote(lambda: 1).remote(), timeout=120)}))
    """)
    assert got["good"] == 42
    assert "could not be installed" in got["bad"] and "missing-0.1" in got["bad"]
    assert got["after"] == 1


def test_a_nested_tasks_own_env_is_merged_over_its_parents(hidden_cluster):
    cluster, dirs = hidden_cluster
    got = _drive(cluster, dirs["a"], """
        unipar.init(runtime_env={"working_dir": ".",
                                 "env_vars": {"KEPT": "parent", "OVERRIDDEN": "parent"}})

        @unipar.remote
        def child():
            import helper                       # the parent's working_dir, inherited
            return [helper.VALUE, os.environ.get("KEPT"), os.environ.get("OVERRIDDEN")]

        @unipar.remote
        def parent():
            own = {"env_vars": {"OVERRIDDEN": "child"}}
            return [unipar.get(child.options(runtime_env=own).remote(), timeout=120),
                    unipar.get(child.remote(), timeout=120)]

        print("RESULT", json.dumps(unipar.get(parent.remote(), timeout=240)))
    """)
    assert got == [[7, "parent", "child"], [7, "parent", "parent"]]


def _report(cluster: Cluster, cwd: str, env: str) -> dict:
    """Run a task under ``env`` (a Python expression) in a new driver; the node's runtime env
    report after it, and what the task imported."""
    return _drive(cluster, cwd, f"""
        from unipar.backends.base import current_backend
        unipar.init(runtime_env={env})

        @unipar.remote
        def use():
            import helper, mylib
            return [helper.VALUE, mylib.NAME]

        ran = unipar.get(use.remote(), timeout=120)
        print("RESULT", json.dumps({{"ran": ran,
                                    **current_backend().client.node_info()["runtime_envs"]}}))
    """)


def test_a_second_driver_reuses_the_packages_the_cluster_holds(hidden_cluster, tmp_path):
    cluster, dirs = hidden_cluster
    project = os.path.join(os.path.dirname(dirs["a"]), "proj_shared")
    shutil.copytree(dirs["a"], project)
    with open(os.path.join(project, "big.bin"), "wb") as f:
        f.write(os.urandom(2 * 2**20))            # over one chunk: a real upload to skip
    env = f'{{"working_dir": ".", "py_modules": [{dirs["lib"]!r}]}}'
    first = _report(cluster, project, env)
    second = _report(cluster, project, env)
    assert first["ran"] == second["ran"] == [7, "mylib"]
    assert second["uploaded"] == first["uploaded"]          # no package was sent again
    assert second["reused"] == first["reused"] + 2           # working_dir and py_module
    assert second["uploaded_bytes"] == first["uploaded_bytes"]


def test_packages_nothing_uses_are_removed_after_the_grace_period(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "late.py").write_text("X = 1\n")
    state = str(tmp_path / "state")
    cluster = Cluster(state, dict(base_env(state), UNIPAR_RUNTIME_ENV_GRACE="1"))
    try:
        cluster.start(["--num-cpus", "1"], [])
        got = _drive(cluster, str(project), """
            from unipar.backends.base import current_backend
            from unipar.testing import wait_for
            unipar.init(runtime_env={"working_dir": "."})

            @unipar.remote
            class Holder:
                def where(self):
                    return os.getcwd()

                def late_import(self):
                    import late                  # first imported now, after the grace
                    return late.X

            holder = Holder.remote()
            where = unipar.get(holder.where.remote(), timeout=120)
            report = lambda: current_backend().client.node_info()["runtime_envs"]
            first = report()
            wait_for(lambda: report()["sweeps"] >= first["sweeps"] + 4, timeout=60)
            print("RESULT", json.dumps({"where": where, "kept": report()["kept"],
                                        "late": unipar.get(holder.late_import.remote(),
                                                           timeout=60)}))
        """)
        assert got["late"] == 1 and got["kept"] == 1     # in use: kept past the grace
        # The driver is gone, its actor with it: the folder and the upload go.
        wait_for(lambda: not os.path.exists(got["where"]), timeout=60,
                 message="the unused package folder to be removed")
        after = _drive(cluster, str(project), """
            from unipar.backends.base import current_backend
            from unipar.testing import wait_for
            unipar.init()
            report = lambda: current_backend().client.node_info()["runtime_envs"]
            print("RESULT", json.dumps(wait_for(lambda: report()["kept"] == 0 and report(),
                                                timeout=60)))
        """)
        assert after["removed"] >= 1
    finally:
        cluster.stop()


def test_a_kept_package_reaches_workers_on_another_node(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "farhelper.py").write_text("VALUE = 11\n")
    state = str(tmp_path / "state")
    cluster = Cluster(state, base_env(state))
    body = """
        from unipar.backends.base import current_backend
        unipar.init(runtime_env={"working_dir": "."})

        @unipar.remote(num_cpus=1)
        def where():
            import farhelper
            return [farhelper.VALUE, unipar.get_runtime_context().get_node_id()]

        print("RESULT", json.dumps({"ran": unipar.get(where.remote(), timeout=120),
                                    "me": unipar.get_runtime_context().get_node_id(),
                                    **current_backend().client.node_info()["runtime_envs"]}))
    """
    try:
        # The driver's node has no CPU: its tasks run on the other node, which pulls the
        # package the driver's node keeps (after the first driver has gone, too).
        cluster.start(["--num-cpus", "0"], [["--num-cpus", "1"]])
        first = _drive(cluster, str(project), body)
        second = _drive(cluster, str(project), body)
        for got in (first, second):
            assert got["ran"][0] == 11 and got["ran"][1] != got["me"]
        assert second["uploaded"] == first["uploaded"] == 1 and second["reused"] == 1
    finally:
        cluster.stop()


def test_a_driver_on_another_node_uploads_nothing_the_cluster_keeps(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "onceper.py").write_text("VALUE = 13\n")
    state = str(tmp_path / "state")
    cluster = Cluster(state, base_env(state))
    # Node B joins with a state dir of its own: "auto" there means node B's own socket.
    other = Cluster(str(tmp_path / "state_b"), dict(
        base_env(str(tmp_path / "state_b")), UNIPAR_CLUSTER_SECRET_FILE=cluster.secret_file))
    body = """
        from unipar.backends.base import current_backend
        unipar.init(runtime_env={"working_dir": "."})

        @unipar.remote(num_cpus=1)
        def where():
            import onceper
            return [onceper.VALUE, unipar.get_runtime_context().get_node_id()]

        nodes = [n["NodeID"] for n in unipar.nodes() if n["Alive"]]
        ran = unipar.get([where.options(resources={f"node:{n}": 0.01}).remote()
                          for n in nodes], timeout=120)
        print("RESULT", json.dumps({"ran": ran, "nodes": nodes,
                                    "me": unipar.get_runtime_context().get_node_id(),
                                    **current_backend().client.node_info()["runtime_envs"]}))
    """
    report = """
        from unipar.backends.base import current_backend
        unipar.init()
        print("RESULT", json.dumps(current_backend().client.node_info()["runtime_envs"]))
    """
    try:
        cluster.start(["--num-cpus", "1"], [])
        joined = unipar_cli(other.env, "start", "--address", cluster.head.removeprefix("tcp://"),
                        "--num-cpus", "1")
        assert joined.returncode == 0, joined.stdout + joined.stderr
        other.records = other.state()["procs"]
        first = _drive(cluster, str(project), body)
        second = _drive(other, str(project), body)
        after = _drive(cluster, str(project), report)
        assert first["me"] != second["me"] and len(second["nodes"]) == 2
        for got in (first, second):   # the module imports on every node
            assert sorted(r[1] for r in got["ran"]) == sorted(got["nodes"])
            assert all(r[0] == 13 for r in got["ran"])
        assert first["uploaded"] == 1 and first["uploaded_bytes"] > 0
        # Node B sent nothing anew: it pulled node A's copy; node A's counters did not grow.
        assert second["uploaded"] == 0 and second["uploaded_bytes"] == 0
        assert second["pulled"] == 1 and second["reused"] == 1
        assert after["uploaded_bytes"] == first["uploaded_bytes"]
    finally:
        other.stop()
        cluster.stop()
