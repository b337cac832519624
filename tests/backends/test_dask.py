"""The dask backend's own promises, beyond the conformance suite.

Most tests join a real cluster started here as separate programs (``dask scheduler`` and
``dask worker`` on free 127.0.0.1 ports), as a user's existing cluster would be, and stop it
after, even on failure: every process they start carries an environment marker, and the
finalizer kills exactly those.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Iterator

import psutil
import pytest

pytest.importorskip("distributed")

import unipar  # noqa: E402
from unipar.backends.dask.cluster import split, worker_groups  # noqa: E402
from unipar.options import InitOptions  # noqa: E402
from unipar.testing import free_port, terminate, wait_for  # noqa: E402

MARKER = "UNIPAR_DASK_TEST_MARKER"


# -- helpers -------------------------------------------------------------------------------------

def _marked(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get(MARKER) == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _kill_marked(marker: str) -> None:
    terminate(_marked(marker))


class ExternalCluster:
    """``dask scheduler`` + ``dask worker`` started as separate programs, like a user's cluster."""

    def __init__(self, directory: Path, workers: int, resources: str | None) -> None:
        self.marker = uuid.uuid4().hex
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.workers = workers
        self.directory = directory
        env = {**os.environ, MARKER: self.marker}
        env.pop("UNIPAR_ADDRESS", None)
        self._start("scheduler", [sys.executable, "-m", "distributed.cli.dask_scheduler",
                                  "--host", "127.0.0.1", "--port", str(self.port),
                                  "--no-dashboard"], env)
        worker = [sys.executable, "-m", "distributed.cli.dask_worker", self.address,
                  "--nthreads", "1", "--nworkers", str(workers), "--host", "127.0.0.1",
                  "--no-dashboard", "--local-directory", str(directory), "--death-timeout", "60"]
        if resources:
            worker += ["--resources", resources]
        self._start("workers", worker, env)

    def _start(self, name: str, command: list[str], env: dict[str, str]) -> None:
        with open(self.directory / f"{name}.log", "wb") as log:
            subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-2000:] for p in self.directory.glob("*.log"))

    def stop(self) -> None:
        _kill_marked(self.marker)


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExternalCluster]:
    """A 2-worker cluster whose workers declare ``CPU=1``; unipar joins it by address."""
    unipar.shutdown()
    cluster = ExternalCluster(tmp_path_factory.mktemp("dask-external"), 2, "CPU=1")
    try:
        unipar.init(cluster.address, backend="dask", backend_options={"wait_for_workers": 2})
        yield cluster
    except Exception:
        print(cluster.logs())
        raise
    finally:
        unipar.shutdown()
        cluster.stop()
    assert not _marked(cluster.marker)


@pytest.fixture
def joined(external: ExternalCluster) -> ExternalCluster:
    """The external cluster, with unipar (re)joined to it if another test switched away."""
    if unipar.backend_name() != "dask":
        unipar.shutdown()
        unipar.init(external.address, backend="dask", backend_options={"wait_for_workers": 2})
    return external


# -- remote functions used below -----------------------------------------------------------------

@unipar.remote
def double(x):
    return 2 * x


@unipar.remote
def kinds(value):
    return [type(v).__name__ for v in value]


@unipar.remote
def fib(n):
    if n < 2:
        return n
    return sum(unipar.get([fib.remote(n - 1), fib.remote(n - 2)]))


@unipar.remote(max_retries=0)
def crash():
    os._exit(1)


@unipar.remote
def shout(text):
    print(text)
    return os.getpid()


@unipar.remote
def find_and_call(name):
    return unipar.get(unipar.get_actor(name).incr.remote())


@unipar.remote
class Counter:
    def __init__(self):
        self.value = 0

    def incr(self):
        self.value += 1
        return self.value

    def die(self):
        os._exit(1)


# -- joining an existing scheduler ---------------------------------------------------------------

@pytest.mark.slow
def test_joins_the_scheduler_and_uses_its_workers(joined):
    assert unipar.backend_name() == "dask"
    assert unipar.cluster_resources()["CPU"] == 2
    assert len(unipar.nodes()) == 1   # two worker processes on one machine
    assert unipar.get([double.remote(i) for i in range(6)], timeout=60) == [0, 2, 4, 6, 8, 10]


@pytest.mark.slow
def test_nodes_are_machines_not_worker_processes(joined):
    # Two 1-thread workers on one machine are one node, as Ray lists one raylet per machine.
    nodes = unipar.nodes()
    assert [(n["NodeManagerAddress"], n["Alive"], n["Resources"]) for n in nodes] == [
        ("127.0.0.1", True, {"CPU": 2.0, "GPU": 0.0})], nodes
    assert isinstance(nodes[0]["NodeID"], str) and nodes[0]["NodeID"]
    assert unipar.cluster_resources() == nodes[0]["Resources"]


@pytest.mark.slow
def test_put_is_one_ref_and_nested_refs_stay_refs(joined):
    ref = unipar.put([1, 2, 3])
    assert unipar.get(ref) == [1, 2, 3]
    assert unipar.get(kinds.remote([ref, double.remote(1)]), timeout=60) == ["ObjectRef", "ObjectRef"]


@pytest.mark.slow
def test_nesting_deeper_than_the_cluster_finishes(joined):
    # fib(6) keeps many more tasks blocked in get() than the 2 worker threads.
    assert unipar.get(fib.remote(6), timeout=120) == 8


@pytest.mark.slow
def test_named_actor_found_from_a_task(joined):
    name = f"counter-{uuid.uuid4().hex[:8]}"
    counter = Counter.options(name=name).remote()
    assert unipar.get(counter.incr.remote(), timeout=60) == 1
    assert unipar.get(find_and_call.remote(name), timeout=60) == 2
    unipar.kill(counter)
    with pytest.raises(ValueError, match=name):
        unipar.get_actor(name)


@pytest.mark.slow
def test_worker_print_reaches_the_driver_prefixed(joined, capfd):
    marker = f"hi-{uuid.uuid4().hex}"
    pid = unipar.get(shout.remote(marker), timeout=60)
    seen: list[str] = []

    def arrived() -> bool:
        seen.append(capfd.readouterr().out)
        return marker in "".join(seen)
    wait_for(arrived, timeout=30, message="the print to reach the driver")
    assert f"(shout pid={pid}) {marker}" in "".join(seen)


@pytest.mark.slow
def test_killed_worker_is_worker_crashed_error(joined):
    with pytest.raises(unipar.WorkerCrashedError):
        unipar.get(crash.remote(), timeout=120)
    # The worker's nanny starts a new one; the cluster goes on working.
    assert unipar.get(double.remote(4), timeout=120) == 8


@pytest.mark.slow
def test_actor_on_a_dead_worker_raises_actor_died(joined):
    counter = Counter.remote()
    assert unipar.get(counter.incr.remote(), timeout=60) == 1
    with pytest.raises(unipar.ActorDiedError):
        unipar.get(counter.die.remote(), timeout=120)
    with pytest.raises(unipar.ActorDiedError):
        unipar.get(counter.incr.remote(), timeout=120)


@pytest.mark.slow
def test_actor_restarts_after_its_worker_died(joined):
    counter = Counter.options(max_restarts=1).remote()
    assert unipar.get([counter.incr.remote(), counter.incr.remote()], timeout=60) == [1, 2]
    with pytest.raises(unipar.ActorDiedError):
        unipar.get(counter.die.remote(), timeout=120)
    assert unipar.get(counter.incr.remote(), timeout=120) == 1   # a fresh instance
    with pytest.raises(unipar.ActorDiedError):
        unipar.get(counter.die.remote(), timeout=120)
    with pytest.raises(unipar.ActorDiedError):                     # restarts used up
        unipar.get(counter.incr.remote(), timeout=120)


@unipar.remote(max_restarts=2, max_task_retries=-1)
class Phoenix:
    """Its process exits during the first call of each ``exit_once`` marker file."""

    def __init__(self):
        self.value = 0

    def incr(self):
        self.value += 1
        return self.value

    def exit_once(self, marker):
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return self.value, os.getpid()


@pytest.mark.slow
def test_actor_call_in_flight_is_retried_on_the_restarted_actor(joined, tmp_path):
    phoenix = Phoenix.remote()
    assert unipar.get([phoenix.incr.remote(), phoenix.incr.remote()], timeout=60) == [1, 2]
    first = unipar.get(phoenix.exit_once.remote(str(tmp_path / "a")), timeout=120)
    assert first[0] == 0, "the call ran again on a fresh instance (its constructor re-run)"
    assert unipar.get(phoenix.incr.remote(), timeout=120) == 1
    second = unipar.get(phoenix.exit_once.remote(str(tmp_path / "b")), timeout=120)
    assert second[0] == 0 and second[1] != first[1]   # the second of max_restarts=2
    # Both restarts are used up: the next exit is the end of it, and the call fails.
    with pytest.raises(unipar.ActorDiedError, match="restarts"):
        unipar.get(phoenix.exit_once.remote(str(tmp_path / "c")), timeout=120)
    with pytest.raises(unipar.ActorDiedError):
        unipar.get(phoenix.incr.remote(), timeout=120)


@pytest.mark.slow
def test_function_workers_cannot_unpickle_names_the_worker_and_cause(joined, tmp_path,
                                                                      monkeypatch):
    name = f"driver_only_{uuid.uuid4().hex[:8]}"   # importable here, on no worker
    (tmp_path / f"{name}.py").write_text(
        # The decorated function and class pickle by value; the helper they use, by reference.
        "import unipar\n\ndef helper():\n    return 'hi'\n\n"
        "@unipar.remote\ndef hello():\n    return helper()\n\n"
        "@unipar.remote\nclass Greeter:\n    def __init__(self):\n        self.greet = helper\n"
        "    def hello(self):\n        return self.greet()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__(name)
    try:
        with pytest.raises(ModuleNotFoundError, match=name) as info:
            unipar.get(module.hello.remote(), timeout=60)
        assert isinstance(info.value, unipar.TaskError)
        assert "scheduler" not in str(info.value), info.value
        assert "unpickling the function" in str(info.value), info.value
        assert "worker tcp://127.0.0.1:" in str(info.value), info.value
        # An actor whose class cannot be unpickled is dead, and says why and where.
        greeter = module.Greeter.remote()
        with pytest.raises(unipar.ActorDiedError, match=f"ModuleNotFoundError.*{name}") as died:
            unipar.get(greeter.hello.remote(), timeout=60)
        assert "worker tcp://127.0.0.1:" in str(died.value), died.value
    finally:
        sys.modules.pop(name, None)


@pytest.mark.slow
def test_unreachable_scheduler_is_backend_unavailable():
    unipar.shutdown()
    with pytest.raises(unipar.BackendUnavailableError, match="scheduler"):
        unipar.init(f"tcp://127.0.0.1:{free_port()}", backend="dask",
                    backend_options={"connect_timeout": 2})
    assert not unipar.is_initialized()


# -- a cluster whose workers declare no resources ------------------------------------------------

@pytest.mark.slow
def test_workers_without_resources(tmp_path):
    """Without declared resources, CPU is the thread count and no CPU restriction is sent."""
    unipar.shutdown()
    cluster = ExternalCluster(tmp_path, 1, None)
    try:
        unipar.init(cluster.address, backend="dask")
        assert unipar.cluster_resources()["CPU"] == 1
        assert unipar.get(double.options(num_cpus=1).remote(3), timeout=60) == 6
        # A scheduler started elsewhere may get workers that have it: the task waits (as in
        # Ray) and says so, instead of failing.
        with pytest.warns(unipar.InfeasibleWarning, match="accelerator"):
            waiting = double.options(resources={"accelerator": 1}).remote(1)
        assert unipar.wait([waiting], timeout=1) == ([], [waiting])
        unipar.cancel(waiting)
    finally:
        unipar.shutdown()
        cluster.stop()
    assert not _marked(cluster.marker)


# -- the private local cluster -------------------------------------------------------------------

SCRIPT = textwrap.dedent("""
    # No `if __name__ == "__main__":` guard on purpose: the workers must not re-run this file.
    import unipar

    @unipar.remote
    def square(x):
        return x * x

    unipar.init(backend="dask", num_cpus=2, resources={"disk": 2})
    print("resources", unipar.cluster_resources())
    print("squares", unipar.get([square.options(resources={"disk": 1}).remote(i) for i in range(4)]))
    unipar.shutdown()
""")


@pytest.mark.slow
def test_local_cluster_runs_an_unguarded_script_and_cleans_up(tmp_path):
    marker = uuid.uuid4().hex
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, MARKER: marker, "TMPDIR": str(temp)}
    env.pop("UNIPAR_ADDRESS", None)
    try:
        result = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=110)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "squares [0, 1, 4, 9]" in result.stdout
        assert "'disk': 2.0" in result.stdout and "'CPU': 2.0" in result.stdout
        assert result.stdout.count("resources") == 1   # the script ran once, not per worker
        wait_for(lambda: not _marked(marker), timeout=30, message="the cluster's processes to exit")
    finally:
        _kill_marked(marker)
    assert not list(temp.iterdir()), "the cluster's temp directory was left behind"


HANGING_DRIVER = textwrap.dedent("""
    import time
    import unipar

    unipar.init(backend="dask", num_cpus=2)
    print("up", flush=True)
    time.sleep(600)
""")


@pytest.mark.slow
def test_local_cluster_goes_away_when_the_driver_is_killed(tmp_path):
    marker = uuid.uuid4().hex
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, MARKER: marker, "TMPDIR": str(temp)}
    env.pop("UNIPAR_ADDRESS", None)
    driver = subprocess.Popen([sys.executable, "-c", HANGING_DRIVER], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout is not None and driver.stdout.readline().strip() == "up"
        assert len(_marked(marker)) > 1          # the driver and its cluster
        driver.kill()                            # no shutdown(), no atexit
        driver.wait(timeout=10)
        wait_for(lambda: not _marked(marker), timeout=30, message="the orphaned cluster to exit")
        wait_for(lambda: not list(temp.iterdir()), timeout=10, message="its directory to go")
    finally:
        driver.kill()
        _kill_marked(marker)


# -- pure helpers -----------------------------------------------------------------------------------

def test_split_gives_whole_units_round_robin():
    assert split(1, 4) == [1.0, 0.0, 0.0, 0.0]
    assert split(8, 4) == [2.0, 2.0, 2.0, 2.0]
    assert split(2.5, 4) == [1.5, 1.0, 0.0, 0.0]
    assert sum(split(7.25, 3)) == 7.25


def test_worker_groups_declare_every_resource():
    groups = worker_groups(InitOptions(num_cpus=4, num_gpus=1, resources={"disk": 2}))
    assert sum(count for count, _, _ in groups) == 4
    totals: dict[str, float] = {}
    for count, resources, _ in groups:
        for name, amount in resources.items():
            totals[name] = totals.get(name, 0.0) + count * amount
    assert totals == {"CPU": 4.0, "GPU": 1.0, "disk": 2.0}
    assert [visible for _, _, visible in groups if visible] == ["0"]


# -- runtime_env: code the workers cannot see travels with the task -------------------------------

def _travelling_project(root: Path) -> tuple[str, dict]:
    """A project and a library in ``root``: on no worker's sys.path, not their cwd."""
    name = f"dask_travel_{uuid.uuid4().hex[:8]}"
    (root / "proj").mkdir()
    (root / "proj" / f"{name}.py").write_text("VALUE = 5\n")
    (root / "lib" / f"{name}_lib").mkdir(parents=True)
    (root / "lib" / f"{name}_lib" / "__init__.py").write_text("NAME = 'lib'\n")
    return name, {"working_dir": str(root / "proj"),
                  "py_modules": [str(root / "lib" / f"{name}_lib")]}


@unipar.remote
def imported(name):
    module, lib = __import__(name), __import__(name + "_lib")
    return [module.VALUE, lib.NAME, os.environ.get("DASK_TRAVEL"), os.getcwd()]


@unipar.remote
class Importer:
    def __init__(self, name):
        self.module = __import__(name)

    def read(self, name):
        return [self.module.VALUE, __import__(name + "_lib").NAME, os.environ.get("DASK_TRAVEL")]


def test_runtime_env_ships_code_to_workers_that_cannot_see_it(joined, tmp_path):
    name, env = _travelling_project(tmp_path)
    with pytest.raises(ModuleNotFoundError, match=name):
        unipar.get(imported.remote(name), timeout=60)
    env["env_vars"] = {"DASK_TRAVEL": "yes"}
    value, lib, var, cwd = unipar.get(imported.options(runtime_env=env).remote(name), timeout=60)
    assert [value, lib, var] == [5, "lib", "yes"]
    assert not cwd.startswith(str(tmp_path))   # a shared worker keeps its own cwd
    reader = Importer.options(runtime_env=env).remote(name)
    assert unipar.get(reader.read.remote(name), timeout=60) == [5, "lib", "yes"]
    # Env vars are set around the call only: a plain task no longer sees them.
    assert unipar.get(imported.options(runtime_env=env).remote(name), timeout=60)[2] == "yes"
    assert unipar.get(_env_var.remote("DASK_TRAVEL"), timeout=60) is None


@unipar.remote
def _env_var(name):
    return os.environ.get(name)


def test_runtime_env_pip_is_refused_and_a_job_env_applies_to_every_task(joined, tmp_path):
    with pytest.raises(unipar.runtime_env.RuntimeEnvNotSupported, match="pip"):
        imported.options(runtime_env={"pip": ["requests"]}).remote("x")
    name, env = _travelling_project(tmp_path)
    unipar.shutdown()
    try:
        unipar.init(joined.address, backend="dask", runtime_env=env,
                    backend_options={"wait_for_workers": 2})
        assert unipar.get(imported.remote(name), timeout=60)[:2] == [5, "lib"]
    finally:
        unipar.shutdown()
