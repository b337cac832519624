"""Refs held by pending work, results that are not withheld, no task queued behind a busy one.

Each test runs a driver script in a subprocess (its own one-machine cluster). None depends on
timing: what must happen first is forced by a marker file the driver creates only after it saw
the result that has to come first; a regression shows as a get() that times out.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def _run(code: str, timeout: float = 150) -> str:
    env = {**os.environ, "UNIPAR_BACKEND": "native"}
    env.pop("UNIPAR_ADDRESS", None)
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


# Blocks until the marker file exists (bounded, so nothing outlives a failed test for long).
_WAIT_FOR_MARKER = """
import os, time
def wait_marker(path, limit=120.0):
    deadline = time.monotonic() + limit
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.005)
"""


def test_refs_nested_in_a_pending_tasks_arguments_live_until_it_ran():
    out = _run("""
        import unipar
        unipar.init(num_cpus=2)

        @unipar.remote
        def one():
            return 1

        @unipar.remote
        def total(x):
            if isinstance(x, dict):
                x = list(x.values())
            elif isinstance(x, Box):
                x = x.refs
            return sum(unipar.get(list(x), timeout=30))

        class Box:
            def __init__(self, refs):
                self.refs = refs

        @unipar.remote
        class Summer:
            def total(self, refs):
                return sum(unipar.get(list(refs), timeout=30))

        # The driver keeps no handle of its own to the inner refs: only the pending task does.
        print("list", unipar.get(total.remote([one.remote() for _ in range(3)]), timeout=60))
        print("tuple", unipar.get(total.remote(tuple(one.remote() for _ in range(3))), timeout=60))
        print("dict", unipar.get(total.remote({i: one.remote() for i in range(3)}), timeout=60))
        print("object", unipar.get(total.remote(Box([one.remote() for _ in range(3)])), timeout=60))
        s = Summer.remote()
        print("actor", unipar.get(s.total.remote([one.remote() for _ in range(3)]), timeout=60))
        unipar.shutdown()
    """)
    for label in ("list", "tuple", "dict", "object", "actor"):
        assert f"{label} 3" in out, out


def test_a_finished_actor_call_is_not_held_back_by_the_calls_queued_behind_it(tmp_path):
    marker = str(tmp_path / "go")
    out = _run(_WAIT_FOR_MARKER + f"""
import unipar
unipar.init(num_cpus=2)

@unipar.remote
class Worker:
    def call(self, i, marker):
        if i > 0:
            wait_marker(marker)
        return i

@unipar.remote
def task(i, marker):
    if i > 0:
        wait_marker(marker)
    return i

w = Worker.remote()
refs = [w.call.remote(i, {marker!r}) for i in range(20)]
print("first call", unipar.get(refs[0], timeout=30))   # while 19 calls wait behind it
open({marker!r}, "w").close()
print("all calls", unipar.get(refs, timeout=60) == list(range(20)))
unipar.shutdown()
""")
    assert "first call 0" in out and "all calls True" in out


def test_a_killed_actor_reruns_only_the_call_it_was_running(tmp_path):
    counts = tmp_path / "runs"
    counts.mkdir()
    kills = 5
    out = _run(f"""
import os, time, unipar
unipar.init(num_cpus=2)

@unipar.remote(max_restarts=-1, max_task_retries=-1)
class Counter:
    def pid(self):
        return os.getpid()

    def call(self, i):
        with open(os.path.join({str(counts)!r}, str(i)), "a") as f:
            f.write("x")
        time.sleep(0.005)
        return i

a = Counter.remote()
n = 0
for k in range({kills}):
    pid = unipar.get(a.pid.remote(), timeout=60)
    refs = [a.call.remote(n + j) for j in range(40)]
    # Kill it once some calls ran (their files exist) while more are queued at the actor.
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join({str(counts)!r}, str(n + 10))):
        assert time.monotonic() < deadline, "the calls did not start"
        time.sleep(0.001)
    n += 40
    os.kill(pid, 9)
    assert unipar.get(refs, timeout=120) == list(range(n - 40, n))
print("calls", n)
unipar.shutdown()
""", timeout=280)
    assert "calls 200" in out
    runs = {name: len(open(counts / name).read()) for name in os.listdir(counts)}
    assert len(runs) == 5 * 40
    reruns = sum(r - 1 for r in runs.values())
    # One call runs at a time on this actor: a kill interrupts at most that one.
    assert reruns <= kills * 1, reruns


def test_short_tasks_never_wait_behind_a_blocked_one(tmp_path):
    marker = str(tmp_path / "go")
    out = _run(_WAIT_FOR_MARKER + f"""
import unipar
unipar.init(num_cpus=2)

@unipar.remote
def work(i, block, marker):
    if block:
        wait_marker(marker)
    return i

@unipar.remote
def blocker(marker):
    wait_marker(marker)
    return "released"

# The same function, short so far: the direct path pipelines it; then one call blocks.
assert unipar.get([work.remote(i, False, "") for i in range(200)], timeout=60) == list(range(200))
slow = work.remote(-1, True, {marker!r})
short = [work.remote(i, False, "") for i in range(200)]
print("short done", unipar.get(short, timeout=60) == list(range(200)))
open({marker!r}, "w").close()
print("slow", unipar.get(slow, timeout=60))
# A function never seen before, blocking from its first call.
slow2 = blocker.remote({marker!r} + "2")
more = [work.remote(i, False, "") for i in range(200)]
print("more done", unipar.get(more, timeout=60) == list(range(200)))
open({marker!r} + "2", "w").close()
print("slow2", unipar.get(slow2, timeout=60))
unipar.shutdown()
""")
    assert "short done True" in out and "slow -1" in out
    assert "more done True" in out and "slow2 released" in out


def test_calls_to_one_actor_never_wait_behind_another_actors_busy_call(tmp_path):
    marker = str(tmp_path / "go")
    out = _run(_WAIT_FOR_MARKER + f"""
import unipar
unipar.init(num_cpus=2)

@unipar.remote(num_cpus=0)
class Worker:
    def call(self, i, block, marker):
        if block:
            wait_marker(marker)
        return i

a, b = Worker.remote(), Worker.remote()
slow = a.call.remote(-1, True, {marker!r})
print("b done", unipar.get([b.call.remote(i, False, "") for i in range(100)], timeout=60)
      == list(range(100)))
open({marker!r}, "w").close()
print("a", unipar.get(slow, timeout=60))
unipar.shutdown()
""")
    assert "b done True" in out and "a -1" in out


def test_a_finished_task_is_not_held_back_by_the_tasks_queued_behind_it(tmp_path):
    marker = str(tmp_path / "go")
    out = _run(_WAIT_FOR_MARKER + f"""
import unipar
unipar.init(num_cpus=1)   # one worker: tasks of a short function are pipelined onto it

@unipar.remote
def work(i, marker):
    if i > 0:
        wait_marker(marker)
    return i

assert unipar.get([work.remote(0, "") for _ in range(200)], timeout=60) == [0] * 200
refs = [work.remote(i, {marker!r}) for i in range(20)]
print("first", unipar.get(refs[0], timeout=30))   # while 19 tasks wait behind it
open({marker!r}, "w").close()
print("all", unipar.get(refs, timeout=60) == list(range(20)))
unipar.shutdown()
""")
    assert "first 0" in out and "all True" in out
