"""Seeing what a native cluster does (issue #17): task counts, status --json, /metrics,
/api/tasks, unipar logs, timeline.

One cluster (``unipar start --head`` with a dashboard) serves the module; a driver subprocess
runs six tasks that each block until the test hands out a token file, so the counts step
down one release at a time, with no timing assumptions (every check waits with a deadline).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any, Callable, Iterator

import psutil
import pytest

from multinode import Cluster, base_env, ok, unipar
from unipar.testing import terminate

pytest.importorskip("aiohttp", reason="pip install 'unipar[dashboard]'")
pytestmark = pytest.mark.timeout(240)

DRIVER = """
    import os, sys, time, unipar
    unipar.init()
    tokens = sys.argv[1]

    @unipar.remote
    def hold(i):
        print(f"task {i} is waiting for a token", flush=True)
        while True:   # any running task may take the next token the test hands out
            for name in os.listdir(tokens):
                if name.startswith("go"):
                    try:
                        os.rename(os.path.join(tokens, name), os.path.join(tokens, "used-" + name))
                        return i
                    except FileNotFoundError:
                        pass
            time.sleep(0.01)

    @unipar.remote
    def broken():
        raise KeyError("no such key in the observability test")

    @unipar.remote
    class Keeper:
        def ping(self):
            print("keeper says hi", flush=True)
            return "pong"

    keeper = Keeper.options(name="obs-keeper").remote()
    assert unipar.get(keeper.ping.remote(), timeout=60) == "pong"
    try:
        unipar.get(broken.remote(), timeout=60)
    except KeyError:
        pass
    refs = [hold.remote(i) for i in range(6)]
    print("submitted", flush=True)
    assert sorted(unipar.get(refs, timeout=120)) == list(range(6))
    print("done", flush=True)
    sys.stdin.read()   # keep the actor alive until the test is done looking
"""


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0,
             fail: bool = True) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` and the last
    value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    if fail:
        pytest.fail(f"{what}: not seen within {timeout:g} s (last: {last!r})")
    return last


def read_until(lines: "queue.Queue[str]", word: str, timeout: float = 120.0) -> None:
    """Take the driver's output lines (its workers' prefixed lines too) until ``word``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line.strip() == word:
            return
    pytest.fail(f"the driver did not print {word!r}")


def reader(proc: subprocess.Popen) -> "queue.Queue[str]":
    """The lines of ``proc``'s stdout, read on a thread."""
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stream = proc.stdout
    threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()
    return lines


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    state = str(tmp_path_factory.mktemp("obs") / "state")
    c = Cluster(state, base_env(state))
    try:
        c.start(["--num-cpus", "2", "--dashboard-port", "0", "--log-level", "debug"], [])
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def url(cluster: Cluster) -> str:
    return cluster.state()["dashboard"]


def status(cluster: Cluster) -> dict[str, Any]:
    return json.loads(ok(unipar(cluster.env, "status", "--json")))


def totals(url: str) -> dict[str, Any]:
    import urllib.request
    with urllib.request.urlopen(f"{url}/api/cluster", timeout=30) as response:
        return json.load(response)["totals"]


@pytest.fixture(scope="module")
def driver(cluster: Cluster, url: str, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple["queue.Queue[str]", str, dict[str, Any]]]:
    """The driver, once its six tasks are submitted; yields (its output lines, the token
    dir, {})."""
    tokens = str(tmp_path_factory.mktemp("tokens"))
    env = dict(cluster.env, UNIPAR_ADDRESS="auto")
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(DRIVER), tokens], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        lines = reader(proc)
        read_until(lines, "submitted")
        yield lines, tokens, {}
    finally:
        terminate([psutil.Process(proc.pid)] if proc.poll() is None else [])
        proc.wait(timeout=30)


def test_task_counts_step_down_as_tasks_finish(driver: Any, url: str) -> None:
    lines, tokens, _ = driver
    # The failed task ran before; the keeper's call too. Nothing else runs on this cluster.
    before = wait_for(lambda: (t := totals(url))["tasks_running"] == 2 and t, "2 running")
    finished0 = before["tasks_finished"]
    for released in range(7):
        want = (min(2, 6 - released), max(0, 4 - released), finished0 + released)
        seen: list[Any] = []

        def counts() -> bool:
            t = totals(url)
            seen[:] = [(t["tasks_running"], t["tasks_waiting"], t["tasks_finished"])]
            return seen[0] == want
        if not wait_for(counts, f"running/queued/finished {want}", fail=False):
            pytest.fail(f"running/queued/finished {want} never seen; last {seen}")
        if released < 6:
            open(os.path.join(tokens, f"go{released}"), "w").close()
    read_until(lines, "done")


def test_status_json_has_machine_figures_and_tasks(cluster: Cluster, driver: Any) -> None:
    snap = status(cluster)
    node = snap["nodes"][0]
    machine = node["machine"]
    assert 0.0 <= machine["cpu_percent"] <= 100.0 and len(machine["cpu_per_core"]) >= 1
    assert 0 < machine["memory"]["used"] <= machine["memory"]["total"]
    assert {"session", "spill"} <= set(machine["disk"])
    assert set(node["tasks"]) >= {"running", "queued", "queued_by", "finished", "failed"}
    assert snap["totals"]["tasks_failed"] >= 1      # broken() above
    keeper = [a for a in snap["actors"] if a["name"] == "obs-keeper"]
    assert keeper and keeper[0]["state"] == "alive" and keeper[0]["pid"] > 0


def test_metrics_parse_with_prometheus_client(url: str, driver: Any) -> None:
    import urllib.request
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    assert {"unipar_tasks", "unipar_actors", "unipar_object_store_bytes",
            "unipar_node_cpu_percent", "unipar_node_memory_bytes"} <= set(families)
    actors = [s.value for s in families["unipar_actors"].samples]
    assert actors == [1.0]


def test_task_list_shows_a_failure_with_its_traceback(url: str, driver: Any) -> None:
    import urllib.request
    with urllib.request.urlopen(f"{url}/api/tasks?state=failed&name=broken", timeout=30) as r:
        rows = json.load(r)["tasks"]
    assert rows and rows[0]["name"].endswith("broken") and rows[0]["state"] == "failed"
    assert "KeyError" in rows[0]["error"] and "observability test" in rows[0]["error"]
    assert rows[0]["pid"] > 0 and rows[0]["duration"] >= 0


def test_unipar_logs_lists_prints_and_rejects_bad_ids(cluster: Cluster, url: str,
                                                      driver: Any) -> None:
    import urllib.request
    listing = ok(unipar(cluster.env, "logs"))
    assert "node.log" in listing and "worker-" in listing
    task = wait_for(lambda: json.load(urllib.request.urlopen(
        f"{url}/api/tasks?name=hold", timeout=30))["tasks"], "a hold task listed")[0]
    printed = wait_for(lambda: ok(unipar(cluster.env, "logs", "--task", task["task_id"]))
                       if "is waiting for a token" in ok(unipar(
                           cluster.env, "logs", "--task", task["task_id"])) else "",
                       "the task's print in its worker's log file")
    assert "is waiting for a token" in printed
    assert "keeper says hi" in ok(unipar(cluster.env, "logs", "--actor", "obs-keeper"))
    node_log = ok(unipar(cluster.env, "logs", "node.log"))
    assert " INFO " in node_log or " DEBUG " in node_log   # timestamps and levels
    bad = unipar(cluster.env, "logs", "--task", "feedface")
    assert bad.returncode == 1 and "no task with id 'feedface'" in bad.stderr
    bad = unipar(cluster.env, "logs", "--node", "zzz")
    assert bad.returncode == 1 and "no node with id 'zzz'" in bad.stderr


def test_timeline_is_chrome_trace_with_an_event_per_task(tmp_path: Any) -> None:
    import unipar as up
    up.init(num_cpus=2)
    try:
        @up.remote
        def square(x: int) -> int:
            return x * x

        assert up.progress([square.remote(i) for i in range(5)], timeout=60) == [
            i * i for i in range(5)]   # output is not a terminal: no bar, same values
        assert up.get(square.remote(3), timeout=60, progress=True) == 9
        path = str(tmp_path / "trace.json")

        def traced() -> list[dict[str, Any]]:
            up.timeline(path)
            with open(path) as f:
                return [e for e in json.load(f) if e["ph"] == "X" and e["name"].endswith("square")]
        events = wait_for(lambda: len(traced()) == 6 and traced(), "six task events")
        assert all(e["dur"] >= 0 and e["ts"] > 0 and e["tid"] > 0 for e in events)
        assert up.dashboard_url() is None   # a driver's own cluster runs no dashboard
    finally:
        up.shutdown()



EXITING_DRIVER = """
    import time, unipar
    unipar.init()

    @unipar.remote
    def {name}(x):
        time.sleep(0.02)
        return x * x

    assert unipar.get([{name}.remote(i) for i in range({n})], timeout=60) == [
        i * i for i in range({n})]
"""   # and it exits at once: its leased workers' last events may still be on their way


def test_tasks_of_a_driver_that_exits_at_once_are_listed_finished(cluster: Cluster,
                                                                  url: str) -> None:
    import urllib.request

    def listed(name: str) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{url}/api/tasks?name={name}", timeout=30) as response:
            return [t for t in json.load(response)["tasks"] if t["state"] != "queued"]

    n = 16
    for round_ in range(4):   # the lost events were a race: one round alone may pass
        name = f"quick_square_{round_}"
        code = textwrap.dedent(EXITING_DRIVER.format(name=name, n=n))
        done = subprocess.run([sys.executable, "-c", code], timeout=120, capture_output=True,
                              text=True, env=dict(cluster.env, UNIPAR_ADDRESS="auto"),
                              check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        # Every task ended one way or another (none left "running"), and every one finished.
        wait_for(lambda name=name: len(r := listed(name)) == n
                 and all(t["state"] != "running" for t in r),
                 f"{n} {name} tasks ended", timeout=60)
        rows = listed(name)
        assert [t["state"] for t in rows] == ["finished"] * n, [
            (t["state"], t["error"][:200]) for t in rows]


def test_a_task_whose_worker_was_stopped_is_listed_stopped_not_failed() -> None:
    from unipar.native.node.events import TaskLog
    log = TaskLog("node", lambda: [])
    log.on_events("w1", 11, [["start", b"a", 1.0, "m.f", "task"], ["start", b"b", 1.0, "m.f",
                                                                     "task"]])
    log.on_events("w1", 11, [["end", b"a", 2.0, "stopped", "its worker was stopped"]])
    log.worker_gone("w1", 3.0)   # b: the worker crashed while running it
    states = {row["task_id"]: row["state"] for row in log.listing(10)}
    assert states == {b"a".hex(): "stopped", b"b".hex(): "failed"}
    assert log.summary()["failed"] == 1 and log.summary()["finished"] == 0
