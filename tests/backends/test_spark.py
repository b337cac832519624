"""The spark backend's own promises, beyond the conformance suite.

* A local session with only two Spark task slots still runs nested tasks that outnumber them
  (a blocked task lends its slot), keeps exception types, prefixes prints, ships big values
  once, and says where its UI is.
* Against a real standalone master and worker, started here on loopback and stopped after
  (even on failure), tasks, nested tasks and actors run on the executors, not on the driver.
* Work survives a Python worker (or the executor JVM) killed mid-run: every task finishes and
  every CPU comes back; a task or actor that must wait for slots live actors hold says so.
* ``unipar bench --backends spark-plain`` runs from any folder and shows a failed job's cause.

Spark takes seconds to start, so each session is shared by the tests of one class.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import warnings
import uuid
from pathlib import Path
from typing import Callable, Iterator

import psutil
import pytest

import unipar
from unipar.testing import free_port, wait_for

pyspark = pytest.importorskip("pyspark")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

if not (os.environ.get("JAVA_HOME") or __import__("shutil").which("java")):
    pytest.skip("the spark backend needs Java 17+", allow_module_level=True)

SPARK_HOME = Path(pyspark.__file__).parent


@unipar.remote
def where_am_i():
    return os.getpid()


@unipar.remote
def fib(n):
    if n < 2:
        return n
    return sum(unipar.get([fib.remote(n - 1), fib.remote(n - 2)]))


@unipar.remote
def fail_with_key_error():
    raise KeyError("missing")


@unipar.remote
def total(values):
    return float(values.sum())


@unipar.remote
def shout(text):
    print(text)
    return text


@unipar.remote
class Counter:
    def __init__(self):
        self.count = 0

    def add(self, n):
        self.count += n
        return self.count

    def pid(self):
        return os.getpid()


@unipar.remote(max_retries=0)
def crash():
    os._exit(1)


@unipar.remote(max_restarts=1)
class Fragile:
    def __init__(self):
        self.calls = 0

    def bump(self):
        self.calls += 1
        return self.calls

    def crash(self):
        os._exit(1)


@unipar.remote
def nap_or_hang(i, marker_dir, hang_at):
    """Sleep 0.1 s; task ``hang_at`` first writes its pid to a marker and hangs until killed.

    Its retry finds the marker and naps like the rest, so a test kills a worker exactly while
    that task runs, without depending on timing.
    """
    marker = Path(marker_dir) / str(i)
    if i == hang_at and not marker.exists():
        temp = marker.with_suffix(".tmp")
        temp.write_text(str(os.getpid()))
        os.replace(temp, marker)  # whole, or not there
        time.sleep(600)
    time.sleep(0.1)
    return i


@unipar.remote
def hold_until(path):
    """Hold a slot and a CPU until ``path`` exists."""
    wait_for(lambda: os.path.exists(path), timeout=600, interval=0.05, message=path)
    return "released"


@unipar.remote
def get_first(refs):
    return unipar.get(refs[0])  # no timeout: the driver may lend this slot to refs[0]'s task


def _kill_descendant(pid: int) -> None:
    """SIGKILL ``pid``, which must be one of the processes this test process started."""
    ours = {p.pid for p in psutil.Process().children(recursive=True)}
    assert pid in ours, f"process {pid} is not a descendant of this test process"
    os.kill(pid, signal.SIGKILL)


def _marker_pid(marker: Path) -> int:
    wait_for(marker.exists, timeout=300, interval=0.05, message=f"the marker {marker.name}")
    return int(marker.read_text())


def _all_cpus_free() -> bool:
    return unipar.available_resources().get("CPU") == unipar.cluster_resources()["CPU"]


def _run_100_and_kill(tmp_path: Path, kill: Callable[[int], None]) -> None:
    """100 tasks of 0.1 s; ``kill(pid)`` while task 10 (not the first of its runner) runs."""
    refs = [nap_or_hang.remote(i, str(tmp_path), 10) for i in range(100)]
    kill(_marker_pid(tmp_path / "10"))
    assert unipar.get(refs, timeout=120) == list(range(100))
    # The lost task's CPUs came back (issue #13, check 3).
    wait_for(_all_cpus_free, timeout=30, message="every CPU to be free again")


@unipar.remote
class Maker:
    def make_two(self):
        """Two Counters, the second when no slot is left: returns its warnings and both."""
        first = Counter.remote()
        unipar.get(first.add.remote(1), timeout=60)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            second = Counter.remote()
        busy = [str(w.message) for w in seen if w.category is unipar.ResourcesBusyWarning]
        return busy, [first, second]


@pytest.fixture(scope="class")
def two_slot_session() -> Iterator[None]:
    unipar.shutdown()
    unipar.init(backend="spark", num_cpus=2, backend_options={"task_slots": 2})
    try:
        yield
    finally:
        unipar.shutdown()


@pytest.mark.usefixtures("two_slot_session")
class TestLocalSession:
    def test_tasks_run_outside_the_driver(self):
        assert unipar.get(where_am_i.remote(), timeout=120) != os.getpid()

    def test_nested_tasks_outnumbering_slots_finish(self):
        # fib(6) keeps ~12 tasks blocked in get() at once; there are 2 Spark task slots.
        assert unipar.get(fib.remote(6), timeout=300) == 8

    def test_exception_type_survives(self):
        with pytest.raises(KeyError, match="missing") as info:
            unipar.get(fail_with_key_error.remote(), timeout=120)
        assert isinstance(info.value, unipar.TaskError)
        assert "fail_with_key_error" in info.value.remote_traceback

    def test_big_put_is_used_by_many_tasks(self):
        np = pytest.importorskip("numpy")
        big = unipar.put(np.ones(1_000_000))  # 8 MB: travels as a broadcast
        assert unipar.get([total.remote(big) for _ in range(3)], timeout=120) == [1e6] * 3

    def test_crashed_worker_raises_worker_crashed(self):
        with pytest.raises(unipar.WorkerCrashedError, match="crash"):
            unipar.get(crash.remote(), timeout=120)
        assert unipar.get(where_am_i.remote(), timeout=120) != os.getpid()  # still works

    def test_crashed_actor_restarts_then_dies(self):
        actor = Fragile.remote()
        assert unipar.get(actor.bump.remote(), timeout=120) == 1
        with pytest.raises(unipar.ActorDiedError):
            unipar.get(actor.crash.remote(), timeout=120)
        assert unipar.get(actor.bump.remote(), timeout=120) == 1  # a fresh instance
        with pytest.raises(unipar.ActorDiedError):
            unipar.get(actor.crash.remote(), timeout=120)
        with pytest.raises(unipar.ActorDiedError):  # max_restarts=1 is used up
            unipar.get(actor.bump.remote(), timeout=120)

    def test_print_is_prefixed(self, capfd):
        unipar.get(shout.remote("spark-says-hi"), timeout=120)
        seen: list[str] = []

        def arrived() -> bool:
            seen.append(capfd.readouterr().out)
            return "spark-says-hi" in "".join(seen)
        wait_for(arrived, timeout=30, message="the task's print")
        line = next(l for l in "".join(seen).splitlines() if "spark-says-hi" in l)
        assert line.startswith("(shout pid=")

    def test_task_run_inline_by_a_killed_worker_runs_again(self, tmp_path):
        # The holder takes a slot and a CPU; the parent the other slot. The child needs both
        # CPUs, so it can only run inline, lent the slot of the parent blocked in get().
        release = tmp_path / "release"
        holder = hold_until.remote(str(release))
        child = nap_or_hang.options(num_cpus=2).remote(0, str(tmp_path), 0)
        parent = get_first.remote([child])
        try:
            _kill_descendant(_marker_pid(tmp_path / "0"))  # the parent's worker, inline child
            assert unipar.get(parent, timeout=120) == 0
        finally:
            release.touch()
        assert unipar.get(holder, timeout=120) == "released"
        wait_for(_all_cpus_free, timeout=30, message="every CPU to be free again")

    def test_actor_made_in_an_actor_says_it_waits_for_a_slot(self):
        # The maker holds one of the two slots and its first Counter the other.
        maker = Maker.remote()
        warned, made = unipar.get(maker.make_two.remote(), timeout=120)
        try:
            assert len(warned) == 1 and "waits for a Spark task slot" in warned[0]
            assert "2 live actors" in warned[0]
        finally:
            for actor in [maker, *made]:
                unipar.kill(actor)


def test_killed_python_worker_loses_no_task(tmp_path):
    unipar.shutdown()
    unipar.init(backend="spark", num_cpus=2)
    try:
        _run_100_and_kill(tmp_path, _kill_descendant)
    finally:
        unipar.shutdown()


def test_init_names_the_ui_and_master(capfd):
    unipar.shutdown()
    unipar.init(backend="spark", num_cpus=1)
    try:
        err = capfd.readouterr().err
        assert "Spark UI: http://127.0.0.1:" in err
        assert "local[" in err
        assert "Setting default log level" not in err  # Spark's banner is filtered
    finally:
        unipar.shutdown()


# -- a standalone cluster ------------------------------------------------------------------------

def _spark_class(*args: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_NO_DAEMONIZE": "1"}
    # Its own process group, so stopping it takes the executors it started along.
    return subprocess.Popen([str(SPARK_HOME / "bin" / "spark-class"), *args], env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="class")
def standalone_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A master and one worker with 2 cores, on loopback; stopped after, even on failure."""
    tmp = tmp_path_factory.mktemp("spark-standalone")
    port = free_port()
    procs = []
    try:
        procs.append(_spark_class("org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                  "--port", str(port), "--webui-port", "0", log=tmp / "master.log"))
        wait_for(lambda: _port_open(port) or procs[0].poll() is not None, timeout=120,
                 interval=0.2, message="the Spark master to listen")
        assert procs[0].poll() is None, (tmp / "master.log").read_text()[-2000:]
        procs.append(_spark_class("org.apache.spark.deploy.worker.Worker",
                                  f"spark://127.0.0.1:{port}", "--host", "127.0.0.1",
                                  "--cores", "2", "--memory", "1g", "--webui-port", "0",
                                  "--work-dir", str(tmp / "work"), log=tmp / "worker.log"))
        unipar.shutdown()
        unipar.init(backend="spark", address=f"spark://127.0.0.1:{port}")
        yield f"spark://127.0.0.1:{port}"
    finally:
        unipar.shutdown()
        for proc in reversed(procs):
            _stop(proc)


@pytest.mark.usefixtures("standalone_cluster")
class TestStandaloneCluster:
    def test_resources_are_the_workers_cores(self):
        assert unipar.cluster_resources()["CPU"] == 2
        assert all(n["Alive"] for n in unipar.nodes())

    def test_tasks_and_nested_tasks_run_on_executors(self):
        assert unipar.get(where_am_i.remote(), timeout=120) != os.getpid()
        assert unipar.get(fib.remote(5), timeout=300) == 5

    def test_task_with_more_cpus_runs_under_a_resource_profile(self):
        # num_cpus=2 asks Spark for both of the worker's cores (stage-level scheduling).
        assert unipar.get(where_am_i.options(num_cpus=2).remote(), timeout=120) != os.getpid()

    def test_actor_lives_on_an_executor(self):
        counter = Counter.options(name="spark-counter").remote()
        try:
            assert unipar.get([counter.add.remote(1) for _ in range(3)], timeout=120) == [1, 2, 3]
            assert unipar.get(counter.pid.remote(), timeout=60) != os.getpid()
            same = unipar.get_actor("spark-counter")
            assert unipar.get(same.add.remote(10), timeout=60) == 13
            # One of the two slots is the actor's; tasks still run beside it.
            assert unipar.get(fib.remote(4), timeout=300) == 3
        finally:
            unipar.kill(counter)
        with pytest.raises(unipar.ActorDiedError):
            unipar.get(counter.add.remote(1), timeout=60)

    def test_runtime_env_ships_code_to_executors_that_cannot_see_it(self, tmp_path):
        name = f"spark_travel_{uuid.uuid4().hex[:8]}"   # on no executor's sys.path
        (tmp_path / "proj").mkdir()
        (tmp_path / "proj" / f"{name}.py").write_text("VALUE = 5\n")
        env = {"working_dir": str(tmp_path / "proj"), "env_vars": {"SPARK_TRAVEL": "yes"}}
        with pytest.raises(ModuleNotFoundError, match=name):
            unipar.get(travel_import.remote(name), timeout=120)
        assert unipar.get(travel_import.options(runtime_env=env).remote(name),
                          timeout=120) == [5, "yes"]
        reader = TravelReader.options(runtime_env=env).remote(name)
        assert unipar.get(reader.read.remote(), timeout=120) == [5, "yes"]
        unipar.kill(reader)
        with pytest.raises(unipar.runtime_env.RuntimeEnvNotSupported, match="pip"):
            travel_import.options(runtime_env={"pip": ["requests"]}).remote(name)

    def test_waiting_for_slots_that_actors_hold_is_announced(self):
        # Two actors hold both of the worker's slots: a task or a third actor could only wait.
        holders = [Counter.remote() for _ in range(2)]
        try:
            assert unipar.get([h.add.remote(1) for h in holders], timeout=120) == [1, 1]
            with pytest.warns(unipar.ResourcesBusyWarning, match="slot"):
                task = where_am_i.remote()
            with pytest.warns(unipar.ResourcesBusyWarning, match="slot"):
                third = Counter.remote()
            holders.append(third)
            unipar.kill(holders.pop(0))
            assert unipar.get(task, timeout=120) != os.getpid()
            assert unipar.get(third.add.remote(5), timeout=120) == 5
        finally:
            for holder in holders:
                unipar.kill(holder)

    def test_killed_python_worker_loses_no_task(self, tmp_path):
        _run_100_and_kill(tmp_path, _kill_descendant)

    def test_killed_executor_loses_no_task(self, tmp_path):
        # Last in the class: the worker starts a new executor, which takes a while.
        def kill_executor(worker_pid: int) -> None:
            executor = next(p for p in psutil.Process(worker_pid).parents()
                            if "CoarseGrainedExecutorBackend" in " ".join(p.cmdline()))
            _kill_descendant(executor.pid)
        _run_100_and_kill(tmp_path, kill_executor)


# -- unipar bench's plain Spark ------------------------------------------------------------------

_PLAIN_SCRIPT = textwrap.dedent("""
    from unipar.bench.baselines import SparkPlain
    from unipar.bench.child import _error_text

    def deep(n):
        if n == 0:
            raise LookupError("the-real-cause")
        return deep(n - 1)

    suite = SparkPlain()
    suite.start()
    try:
        suite.first_result()
        print("first result: ok", flush=True)
        try:
            suite._one(deep, 40)  # a long traceback before the cause
        except Exception as exc:
            print("shown:", _error_text(exc).replace("\\n", " "), flush=True)
    finally:
        suite.shutdown()
""")


def test_plain_spark_bench_runs_from_any_folder_and_shows_causes(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYSPARK_PYTHON"}
    done = subprocess.run([sys.executable, "-c", _PLAIN_SCRIPT], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert "first result: ok" in done.stdout, done.stderr[-3000:]
    shown = next(l for l in done.stdout.splitlines() if l.startswith("shown:"))
    assert "LookupError: the-real-cause" in shown


@unipar.remote
def travel_import(name):
    return [__import__(name).VALUE, os.environ.get("SPARK_TRAVEL")]


@unipar.remote
class TravelReader:
    def __init__(self, name):
        self.module = __import__(name)

    def read(self):
        return [self.module.VALUE, os.environ.get("SPARK_TRAVEL")]
