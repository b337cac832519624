"""Real processes: a driver script starts a cluster; failures, output, cleanup.

Each test runs its own driver in a subprocess (so it never disturbs a cluster another test
file started in this process) with a marker in its environment: every process the engine starts
inherits it, so survivors are found by their environment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid

import psutil

from unipar.testing import wait_for


def _marked(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("UNIPAR_TEST_MARKER") == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _unipar_shm() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith("unipar-")} if os.path.isdir("/dev/shm") else set()


def _env(marker: str) -> dict[str, str]:
    env = {**os.environ, "UNIPAR_TEST_MARKER": marker, "UNIPAR_BACKEND": "native"}
    env.pop("UNIPAR_ADDRESS", None)
    return env


def _run(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    marker = uuid.uuid4().hex
    try:
        result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=_env(marker),
                                capture_output=True, text=True, timeout=timeout)
    finally:
        wait_for(lambda: not _marked(marker), timeout=30, message="the cluster's processes to exit")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def test_driver_sigkill_leaves_no_processes_or_shared_memory():
    marker = uuid.uuid4().hex
    shm_before = _unipar_shm()
    code = textwrap.dedent("""
        import time, numpy as np, unipar
        unipar.init(num_cpus=2)
        @unipar.remote
        def one():
            return 1
        kept = unipar.put(np.ones(1_000_000))           # a file in the shared-memory store
        assert unipar.get(one.remote()) == 1
        print("ready", flush=True)
        time.sleep(300)
    """)
    driver = subprocess.Popen([sys.executable, "-c", code], env=_env(marker),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout is not None
        assert driver.stdout.readline().strip() == "ready"
        assert len(_marked(marker)) >= 4                    # driver, head, node, workers
        assert _unipar_shm() - shm_before                   # the session's store exists
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
        wait_for(lambda: not _marked(marker), timeout=30,
                 message="the daemons and workers to notice the driver died and exit")
        wait_for(lambda: not (_unipar_shm() - shm_before), timeout=30,
                 message="the session's shared memory to be removed")
    finally:
        driver.kill()
        for proc in _marked(marker):
            proc.kill()


def test_a_cluster_leaves_nothing_in_the_temp_folder(tmp_path):
    # The node's fork server makes a temp directory (multiprocessing's pymp-*) and the node
    # exits with os._exit, which skips multiprocessing's own clean-up: nothing may be left.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    marker = uuid.uuid4().hex
    code = textwrap.dedent("""
        import unipar
        unipar.init(num_cpus=2)
        @unipar.remote
        def one():
            return 1
        assert unipar.get(one.remote(), timeout=60) == 1
        unipar.shutdown()
    """)
    try:
        result = subprocess.run([sys.executable, "-c", code], env={**_env(marker), "TMPDIR": str(tmp)},
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        wait_for(lambda: not _marked(marker), timeout=30, message="the cluster's processes to exit")
        assert sorted(os.listdir(tmp)) == []
    finally:
        for proc in _marked(marker):
            proc.kill()


def test_failures_surface_as_defined_errors():
    result = _run("""
        import os, unipar
        unipar.init(num_cpus=2)

        @unipar.remote(max_retries=2)
        def crash(path):
            with open(path, "a") as f:
                f.write("x")
            os._exit(7)
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "unipar-crash-" + os.urandom(4).hex())
        try:
            unipar.get(crash.remote(path), timeout=60)
            raise SystemExit("no error")
        except unipar.WorkerCrashedError as exc:
            assert "retries" in str(exc)
        assert open(path).read() == "xxx"                  # 1 run + 2 retries
        os.unlink(path)

        @unipar.remote(max_retries=0, retry_exceptions=[KeyError])
        def flaky():
            raise KeyError("k")
        try:
            unipar.get(flaky.remote(), timeout=60)
        except KeyError:
            pass

        import threading
        class Unpicklable(Exception):
            def __init__(self):
                super().__init__("holds a lock")
                self.lock = threading.Lock()
        @unipar.remote
        def raise_unpicklable():
            raise Unpicklable()
        try:
            unipar.get(raise_unpicklable.remote(), timeout=60)
            raise SystemExit("no error")
        except unipar.TaskError as exc:              # its repr and traceback survive
            assert "holds a lock" in str(exc) and "raise_unpicklable" in str(exc)

        @unipar.remote
        class Mortal:
            def __init__(self):
                self.calls = 0
            def die(self):
                os._exit(1)
            def count(self):
                self.calls += 1
                return self.calls

        doomed = Mortal.remote()
        doomed.die.remote()
        try:
            unipar.get(doomed.count.remote(), timeout=60)
            raise SystemExit("no error")
        except unipar.ActorDiedError as exc:
            assert "exited unexpectedly" in str(exc)

        phoenix = Mortal.options(max_restarts=1).remote()
        assert unipar.get(phoenix.count.remote(), timeout=60) == 1
        try:
            unipar.get(phoenix.die.remote(), timeout=60)       # in flight when it died: fails
        except unipar.ActorDiedError:
            pass
        assert unipar.get(phoenix.count.remote(), timeout=60) == 1   # a fresh instance
        unipar.shutdown()
        print("all good")
    """)
    assert "all good" in result.stdout


def test_output_is_prefixed_and_stuck_tasks_warn():
    result = _run("""
        import logging, unipar
        unipar.init(num_cpus=1, backend_options={"stuck_warning_after": 0.5})

        @unipar.remote
        def talk():
            print("hello from a task")
            logging.getLogger("user").warning("a logged warning")
            return 1

        @unipar.remote(num_cpus=1)
        class Hog:
            def ping(self):
                print("actor speaking")
                return "pong"

        assert unipar.get(talk.remote(), timeout=60) == 1
        hog = Hog.remote()
        assert unipar.get(hog.ping.remote(), timeout=60) == "pong"
        waiting = talk.remote()                       # the actor holds the only CPU
        ready, _ = unipar.wait([waiting], timeout=3)
        assert not ready
        unipar.kill(hog)
        assert unipar.get(waiting, timeout=60) == 1
        unipar.shutdown()
    """)
    lines = result.stdout.splitlines()
    assert any(l.startswith("(talk pid=") and l.endswith("hello from a task") for l in lines), lines
    assert any(l.startswith("(Hog pid=") and "actor speaking" in l for l in lines), lines
    assert "a logged warning" in result.stderr
    assert "task " in result.stderr and "has waited" in result.stderr and "CPU" in result.stderr


def test_objects_are_freed_when_the_last_ref_goes():
    result = _run("""
        import gc, os, time, numpy as np, unipar
        unipar.init(num_cpus=1)
        objects = os.path.join(unipar._state.current().client.session_dir, "objects")

        def files():
            return len(os.listdir(objects))

        @unipar.remote
        def make():
            return np.ones(2_000_000)

        @unipar.remote
        def wrap(x):
            return [x]

        big = unipar.put(np.ones(2_000_000))
        made = make.remote()
        unipar.get(made)
        box = wrap.remote(big)                 # holds big only by value, not by ref
        holder = unipar.put([made])            # a ref inside a stored object keeps it alive
        unipar.wait([box], timeout=60)
        assert files() == 3, files()
        del big, made
        gc.collect()
        deadline = time.monotonic() + 30
        while files() > 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert files() == 2, files()           # box's copy, and made (held by holder)
        inner = unipar.get(holder)[0]
        assert unipar.get(inner).sum() == 2_000_000
        del holder, inner, box
        gc.collect()
        deadline = time.monotonic() + 30
        while files() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert files() == 0, files()
        unipar.shutdown()
        print("freed")
    """)
    assert "freed" in result.stdout


def test_store_full_is_an_error_not_a_hang():
    result = _run("""
        import numpy as np, unipar
        unipar.init(num_cpus=1, object_store_memory=64 * 2**20,
                    backend_options={"spill_limit": 64 * 2**20})
        keep = [unipar.put(np.ones(3 * 2**20)) for _ in range(3)]      # 3 x 24 MiB: one spills
        assert all(unipar.get(r).sum() == 3 * 2**20 for r in keep)
        try:
            unipar.put(np.ones(8 * 2**20))                             # 64 MiB: no room left
            raise SystemExit("no error")
        except unipar.ObjectStoreFullError as exc:
            assert "object store full" in str(exc)
        @unipar.remote
        def huge():
            return np.ones(8 * 2**20)
        try:
            unipar.get(huge.remote(), timeout=60)
            raise SystemExit("no error")
        except unipar.ObjectStoreFullError:
            pass
        unipar.shutdown()
        print("full ok")
    """)
    assert "full ok" in result.stdout


def test_cancel_interrupts_and_recurses_and_gpus_are_assigned():
    result = _run("""
        import os, time, unipar
        unipar.init(num_cpus=2, num_gpus=2)

        @unipar.remote(max_retries=0)
        def spin(path):
            open(path + ".started", "w").close()
            try:
                while True:
                    time.sleep(0.02)
            except KeyboardInterrupt:
                open(path, "w").write("interrupted")
                raise

        @unipar.remote(num_cpus=0)
        def parent(path):
            child = spin.remote(path)
            unipar.get(child)

        base = os.path.join(os.environ.get("TMPDIR", "/tmp"), "unipar-cancel-" + os.urandom(4).hex())
        ref = spin.remote(base + "-a")
        deadline = time.monotonic() + 60
        while not os.path.exists(base + "-a.started") and time.monotonic() < deadline:
            time.sleep(0.02)
        unipar.cancel(ref)                                  # not forced: KeyboardInterrupt
        try:
            unipar.get(ref, timeout=60)
            raise SystemExit("no error")
        except unipar.TaskCancelledError:
            pass
        def interrupted():
            # The file exists as soon as the task opens it, before it writes: read the text.
            return os.path.exists(base + "-a") and open(base + "-a").read() == "interrupted"
        deadline = time.monotonic() + 30
        while not interrupted() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert interrupted()

        top = parent.remote(base + "-b")
        deadline = time.monotonic() + 30
        while unipar.available_resources()["CPU"] > 1 and time.monotonic() < deadline:
            time.sleep(0.02)                                # the child is running
        unipar.cancel(top, force=True)                      # recursive by default
        deadline = time.monotonic() + 30
        while unipar.available_resources()["CPU"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert unipar.available_resources()["CPU"] == 2     # the child was cancelled too

        @unipar.remote(num_gpus=1)
        def visible():
            time.sleep(0.3)
            return os.environ.get("CUDA_VISIBLE_DEVICES")
        seen = unipar.get([visible.remote() for _ in range(2)], timeout=60)
        assert sorted(seen) == ["0", "1"], seen
        for suffix in ("-a", "-b", "-a.started", "-b.started"):
            if os.path.exists(base + suffix):
                os.unlink(base + suffix)
        unipar.shutdown()
        print("cancel ok")
    """)
    assert "cancel ok" in result.stdout


def test_workers_unmap_big_arguments_once_they_are_freed():
    result = _run("""
        import gc, os, time, numpy as np, unipar
        unipar.init(num_cpus=1)
        objects = os.path.join(unipar._state.current().client.session_dir, "objects")

        @unipar.remote
        def where(array):
            return os.getpid(), float(array.sum())

        def mapped(pid):
            with open(f"/proc/{pid}/maps") as maps:
                return sum(1 for line in maps if objects in line)

        big = unipar.put(np.ones(2_000_000))
        pid, total = unipar.get(where.remote(big))
        again, _ = unipar.get(where.remote(big))
        assert total == 2_000_000 and mapped(pid) == 1     # kept mapped, mapped once
        del big
        gc.collect()
        deadline = time.monotonic() + 30
        while mapped(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mapped(pid) == 0                              # freed: the worker let go
        unipar.shutdown()
        print("unmapped")
    """)
    assert "unmapped" in result.stdout
