"""The web dashboard of ``unipar start --head``: JSON API, HTML page, binding, off switches.

A cluster is started with the ``unipar`` command in a private state directory (the harness of
test_native_multinode.py); every fixture runs ``unipar stop`` and kills what is left, even when
a test failed. Drivers are subprocesses.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from typing import Any, Iterator

import psutil
import pytest

from multinode import Cluster, base_env, unipar
from unipar.hostip import machine_ip as node_ip
from unipar.native.dashboard.api import log_page, pick
from unipar.native.node import machine
from unipar.testing import free_port, terminate, wait_for

pytest.importorskip("aiohttp", reason="pip install 'unipar[dashboard]'")
pytestmark = pytest.mark.timeout(180)

URL_LINE = re.compile(r"View the dashboard \(read-only\) at (http://\S+)")


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    """(status, content type, body) of a GET."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def fetch_json(url: str) -> Any:
    status, kind, body = fetch(url)
    assert status == 200 and kind.startswith("application/json"), (status, kind, body[:500])
    return json.loads(body)


def port_open(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=5).close()
        return True
    except OSError:
        return False


# Fake nvidia-smi scripts: what the real one prints for machine.SMI_QUERY ("index, utilization
# %, memory used MiB, memory total MiB" per GPU), and the ways it goes wrong.
FAKE_SMI = {
    "two_gpus": 'echo "0, 37, 1024, 81559"; echo "1, 83, 40960, 81559"',
    "garbage": 'echo "NVIDIA-SMI has failed because it could not communicate with the driver";'
               ' echo "0, [N/A], 12, 80"; echo "1, 2"; echo "x, y, z, w"',
    "hangs": "sleep 6007 & wait",   # its child holds the output pipe open too
    "fails": "echo 0, 1, 2, 3; exit 9",
}


def fake_smi(where: Any, kind: str) -> str:
    """A directory holding a fake ``nvidia-smi`` (``FAKE_SMI[kind]``), to put first on PATH."""
    folder = os.path.join(str(where), f"fake-smi-{kind}")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "nvidia-smi")
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + FAKE_SMI[kind] + "\n")
    os.chmod(path, 0o755)
    return folder


def started(tmp_path: Any, *head_args: str, path_first: str = "") -> Cluster:
    """A cluster of one head and its node (``path_first`` put first on their PATH); the caller
    stops it."""
    state = str(tmp_path / "state")
    env = base_env(state)
    if path_first:
        env["PATH"] = path_first + os.pathsep + env.get("PATH", "")
    cluster = Cluster(state, env)
    try:
        cluster.start(["--num-cpus", "2", *head_args], [])
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    where = tmp_path_factory.mktemp("dash")   # its node sees two (fake) GPUs
    c = started(where, "--dashboard-port", "0", path_first=fake_smi(where, "two_gpus"))
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def url(cluster: Cluster) -> str:
    found = URL_LINE.search(cluster.start_output)
    assert found, cluster.start_output
    assert cluster.state()["dashboard"] == found.group(1)
    return found.group(1)


ACTOR_DRIVER = """
    import sys, unipar
    unipar.init()

    @unipar.remote(num_cpus=1)
    class Counter:
        def __init__(self):
            self.n = 0
        def incr(self):
            self.n += 1
            return self.n

    c = Counter.options(name="dash-counter").remote()
    assert unipar.get(c.incr.remote()) == 1
    print("ready", flush=True)
    sys.stdin.read()   # keep the actor alive until the test is done looking
"""


@pytest.fixture
def actor_driver(cluster: Cluster) -> Iterator[subprocess.Popen]:
    env = dict(cluster.env, UNIPAR_ADDRESS="auto")
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(ACTOR_DRIVER)], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 90)
        assert ready and proc.stdout.readline().strip() == "ready", "the driver did not start"
        yield proc
    finally:
        terminate([psutil.Process(proc.pid)] if proc.poll() is None else [])
        proc.wait(timeout=30)


def test_api_shows_the_node_its_cpus_and_a_running_actor(cluster: Cluster, url: str,
                                                          actor_driver: subprocess.Popen):
    snap = fetch_json(url + "/api/cluster")
    assert snap["head"] == cluster.head
    [node] = snap["nodes"]
    assert node["alive"] and node["error"] is None
    assert node["resources"]["CPU"] == {"total": 2.0, "in_use": 1.0}   # the actor holds one
    assert node["drivers"] == 1 and node["store"]["limit"] > 0
    [actor] = [a for a in snap["actors"] if a["name"] == "dash-counter"]
    assert actor["class_name"] == "Counter" and actor["state"] == "alive"
    assert actor["node_id"] == node["node_id"]
    assert snap["totals"]["nodes_alive"] == 1 and snap["totals"]["actors"] >= 1
    assert [n["node_id"] for n in fetch_json(url + "/api/nodes")] == [node["node_id"]]
    assert "dash-counter" in {a["name"] for a in fetch_json(url + "/api/actors")}


def test_page_is_html_naming_the_node_and_actor(url: str, actor_driver: subprocess.Popen):
    node_id = fetch_json(url + "/api/nodes")[0]["node_id"]
    status, kind, page = fetch(url + "/")
    assert status == 200 and kind.startswith("text/html")
    assert page.startswith("<!doctype html>") and "<title>unipar dashboard</title>" in page
    assert node_id[:12] in page and "dash-counter" in page and "Counter" in page
    assert "http://" not in page.replace(url, "") and "https://" not in page   # no CDN
    status, kind, body = fetch(url + "/_body")
    assert status == 200 and node_id[:12] in body


def test_it_listens_on_loopback_only_by_default(cluster: Cluster, url: str):
    port = int(url.rpartition(":")[2])
    head = next(r["pid"] for r in cluster.records if r["role"] == "head")
    listening = [c.laddr for c in psutil.net_connections("tcp") if c.pid == head
                 and c.status == psutil.CONN_LISTEN and c.laddr.port == port]
    assert [a.ip for a in listening] == ["127.0.0.1"]
    if node_ip() != "127.0.0.1":
        assert not port_open(node_ip(), port)


def test_it_is_read_only_and_refuses_foreign_host_names(url: str):
    request = urllib.request.Request(url + "/api/cluster", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=30)
    assert err.value.code == 405
    # A page whose DNS name was rebound to 127.0.0.1 still sends its own name.
    assert fetch(url + "/api/cluster", {"Host": "attacker.example"})[0] == 421
    assert fetch(url + "/", {"Host": f"localhost:{url.rpartition(':')[2]}"})[0] == 200


def test_status_prints_the_dashboard_url(cluster: Cluster, url: str):
    out = unipar(cluster.env, "status")
    assert out.returncode == 0, out.stderr
    assert f"Dashboard: {url}" in out.stdout and "Cluster resources in use: CPU" in out.stdout


def test_stop_closes_the_dashboard_port(tmp_path):
    c = started(tmp_path, "--dashboard-port", "0")
    try:
        port = int(URL_LINE.search(c.start_output).group(1).rpartition(":")[2])
        assert fetch(f"http://127.0.0.1:{port}/api/nodes")[0] == 200
    finally:
        stopped = c.stop()
    assert stopped is not None and stopped.returncode == 0
    assert not port_open("127.0.0.1", port)


def test_a_port_in_use_leaves_the_cluster_running_without_dashboard(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", free_port()))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        c = started(tmp_path, "--dashboard-port", str(port))
        try:
            assert (f"Dashboard: off: cannot listen on 127.0.0.1:{port} (Address already in use)"
                    in c.start_output)
            assert unipar(c.env, "status").returncode == 0
        finally:
            c.stop()
    finally:
        taken.close()


def test_include_dashboard_false_turns_it_off(tmp_path):
    c = started(tmp_path, "--include-dashboard", "false")
    try:
        assert "Dashboard: off (--include-dashboard false)." in c.start_output
        assert not c.state()["dashboard"] and not URL_LINE.search(c.start_output)
    finally:
        c.stop()


HIDE_AIOHTTP = """
import runpy, sys
sys.modules["aiohttp"] = None   # as if it were not installed
sys.argv = ["unipar", *sys.argv[1:]]
runpy.run_module("unipar.cli", run_name="__main__")
"""


def test_without_aiohttp_the_cluster_starts_and_says_how_to_get_it(tmp_path):
    c = Cluster(str(tmp_path / "state"), base_env(str(tmp_path / "state")))
    try:
        out = subprocess.run([sys.executable, "-c", HIDE_AIOHTTP, "start", "--head", "--port",
                              "0", "--num-cpus", "1"], env=c.env, capture_output=True,
                             text=True, timeout=120)
        c.records = c.state().get("procs", [])
        assert out.returncode == 0, out.stdout + out.stderr
        assert ("Dashboard: off: aiohttp is not installed; pip install 'unipar[dashboard]' "
                "turns it on." in out.stdout)
        assert unipar(c.env, "status").returncode == 0
    finally:
        c.stop()


INIT_DRIVER = """
    import io, json, sys, urllib.request, psutil, unipar

    def tcp_listeners():
        ours = {p.pid for p in psutil.Process().children(recursive=True)}
        return [c for c in psutil.net_connections("tcp")
                if c.pid in ours and c.status == psutil.CONN_LISTEN]

    unipar.init(num_cpus=1)
    # The head's port and the node's, nothing more: no dashboard.
    assert len(tcp_listeners()) == 2, tcp_listeners()
    unipar.shutdown()

    captured = io.StringIO()
    real, sys.stderr = sys.stderr, captured
    try:
        unipar.init(num_cpus=1, backend_options={"dashboard_port": 0})
    finally:
        sys.stderr = real
    [line] = [l for l in captured.getvalue().splitlines() if l.startswith("unipar dashboard: ")]
    url = line.split(": ", 1)[1]
    with urllib.request.urlopen(url + "/api/nodes", timeout=30) as r:
        nodes = json.load(r)
    print(json.dumps({"url": url, "cpus": nodes[0]["resources"]["CPU"]["total"]}))
    unipar.shutdown()
"""


def test_init_serves_a_dashboard_only_when_asked(tmp_path):
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(INIT_DRIVER)],
                         env=base_env(str(tmp_path / "state")), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["url"].startswith("http://127.0.0.1:") and found["cpus"] == 1.0
    assert not port_open("127.0.0.1", int(found["url"].rpartition(":")[2]))


# -- the pages' endpoints and bad input (issue #17 points 1 and 10) -----------------------------
def test_every_page_is_a_shell_with_its_own_static_script_and_no_inline_code(url: str):
    for path, script in (("/machines", "machines.js"), ("/work", "work.js"),
                         ("/actors", "actors.js"), ("/logs", "logs.js"), ("/", "overview.js")):
        status, kind, page = fetch(url + path)
        assert status == 200 and kind.startswith("text/html"), (path, status)
        assert f'<script src="/static/{script}"></script>' in page
        assert "<script>" not in page and "style=" not in page and "<style" not in page
        assert "http://" not in page.replace(url, "") and "https://" not in page   # no CDN
    status, kind, js = fetch(url + "/static/uPlot.iife.min.js")
    assert status == 200 and "javascript" in kind and "uPlot" in js
    request = urllib.request.Request(url + "/work")
    with urllib.request.urlopen(request, timeout=30) as response:
        csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "style-src 'self';" in csp and "unsafe" not in csp


def test_machines_history_covers_the_last_seconds_of_every_node(url: str):
    def history() -> Any:
        [node] = fetch_json(url + "/api/machines")["nodes"]
        h = node["history"]
        return h and len(h["time"]) >= 2 and (node, h)
    node, h = wait_for(history, timeout=30, message="two machine samples")
    assert node["node_id"] == fetch_json(url + "/api/nodes")[0]["node_id"]
    n = len(h["time"])
    assert h["time"] == sorted(h["time"]) and len(h["cores"]) == n
    assert all(len(row) == node["machine"]["cpu_count"] for row in h["cores"])
    assert all(0 <= c <= 100 for c in h["cpu"]) and len(h["memory"]) == len(h["sent"]) == n
    assert "history" not in fetch_json(url + "/api/cluster")   # the snapshot stays lean


def test_machines_show_both_gpus_of_a_fake_nvidia_smi(url: str):
    def sampled() -> Any:
        [node] = fetch_json(url + "/api/machines")["nodes"]
        return node["history"] and node["history"]["gpus"] and node
    node = wait_for(sampled, timeout=30, message="a machine sample with GPUs")
    assert node["machine"]["gpus"] == [
        {"index": 0, "utilization": 37.0, "memory_used": 1024 << 20, "memory_total": 81559 << 20},
        {"index": 1, "utilization": 83.0, "memory_used": 40960 << 20,
         "memory_total": 81559 << 20}]
    assert node["history"]["gpus"][-1] == [37, 83]
    assert node["history"]["gpu_memory"][-1] == [1024 << 20, 40960 << 20]


@pytest.mark.parametrize("kind", ["two_gpus", "garbage", "hangs", "fails", "absent"])
def test_the_gpu_sampler_survives_any_nvidia_smi(tmp_path, monkeypatch, kind: str):
    folder = str(tmp_path) if kind == "absent" else fake_smi(tmp_path, kind)
    monkeypatch.setenv("PATH", folder + os.pathsep + "/usr/bin:/bin")
    monkeypatch.setattr(machine, "_nvml_reader", lambda: None)   # nvidia-smi's figures only
    sampler = machine.MachineSampler({"session": str(tmp_path)})
    began = time.monotonic()
    gpus = sampler.sample()["gpus"]
    assert time.monotonic() - began < machine.SMI_TIMEOUT + 10
    want = {"two_gpus": [37.0, 83.0], "garbage": [None]}.get(kind, [])
    assert [g["utilization"] for g in gpus] == want
    if kind == "garbage":
        assert gpus[0]["memory_used"] == 12 << 20
    if kind == "hangs":   # killed, its child too; and not run again at the next sample
        assert not [p for p in psutil.process_iter(["cmdline"])
                    if p.info["cmdline"] == ["sleep", "6007"]]
        began = time.monotonic()
        assert sampler.sample()["gpus"] == []
        assert time.monotonic() - began < machine.SMI_TIMEOUT
    assert sampler.columns()["gpus"] == []   # nothing kept: sample() was called directly


JOB = "print('hello from the job', flush=True); raise SystemExit(3)"


def submit_job(env: dict[str, str]) -> str:
    """Run a job that prints a line and exits with code 3 (``unipar job submit`` waits for it);
    returns its id."""
    done = unipar(env, "job", "submit", "--", sys.executable, "-c", JOB, timeout=120)
    found = re.search(r"job_[0-9a-f]+", done.stdout + done.stderr)
    assert found, done.stdout[-2000:] + done.stderr[-2000:]
    return found.group(0)


def test_jobs_are_listed_with_status_times_exit_code_and_log(cluster: Cluster, url: str):
    job_id = submit_job(cluster.env)
    [job] = [j for j in fetch_json(url + "/api/jobs")["jobs"] if j["job_id"] == job_id]
    assert job["status"] == "FAILED" and job["exit_code"] == 3, job
    assert job["entrypoint"] == [sys.executable, "-c", JOB] and "exit code 3" in job["message"]
    assert job["submitted_at"] <= job["start_time"] <= job["end_time"]
    assert job["duration"] == pytest.approx(job["end_time"] - job["start_time"])
    assert "pid" not in job   # the head's process bookkeeping stays inside
    assert fetch_json(url + "/api/jobs/" + job_id[:10]) == job   # a unique prefix will do
    log = fetch_json(f"{url}/api/jobs/{job_id}/log")
    assert "hello from the job" in log["text"] and log["status"] == "FAILED"
    assert log["offset"] == 0 and log["next"] == log["size"] > 0
    tail = fetch_json(f"{url}/api/jobs/{job_id}/log?offset=-6&length=3")
    assert tail["offset"] == log["size"] - 6 and len(tail["text"]) == 3
    status, _, body = fetch(url + "/api/jobs/job_feedface/log")
    assert status == 404 and "no job 'job_feedface'" in json.loads(body)["error"]
    status, kind, page = fetch(url + "/jobs")
    assert status == 200 and kind.startswith("text/html") and "/static/jobs.js" in page


def test_an_id_names_one_node_actor_or_task(url: str, cluster: Cluster,
                                            actor_driver: subprocess.Popen):
    node_id = fetch_json(url + "/api/nodes")[0]["node_id"]
    assert fetch_json(f"{url}/api/nodes/{node_id[:8]}")["node_id"] == node_id
    # By name (the previous test's actor of that name shows dead once its driver is gone).
    wait_for(lambda: fetch(url + "/api/actors/dash-counter")[0] == 200, timeout=30,
             message="one live actor named dash-counter")
    actor = fetch_json(url + "/api/actors/dash-counter")
    assert fetch_json(f"{url}/api/actors/{actor['actor_id']}")["name"] == "dash-counter"
    task = wait_for(lambda: fetch_json(url + "/api/tasks?state=finished&name=incr")["tasks"],
                    timeout=30, message="the actor call listed")[0]   # reported ~0.1 s late
    assert fetch_json(f"{url}/api/tasks/{task['task_id']}")["name"] == task["name"]


@pytest.mark.parametrize("path", ["/api/nodes/ffff0000nope", "/api/actors/no-such-actor",
                                  "/api/tasks/ffff0000nope", "/api/logs/ffff0000nope/node.log",
                                  "/api/no-such-endpoint"])
def test_unknown_ids_and_paths_answer_a_404_that_says_what_exists(url: str, path: str):
    status, kind, body = fetch(url + path)
    assert status == 404 and kind.startswith("application/json"), (status, kind, body)
    error = json.loads(body)["error"]
    assert "nope" in error or "no-such" in error


def test_an_unknown_log_file_is_a_404(url: str):
    node_id = fetch_json(url + "/api/nodes")[0]["node_id"]
    status, _, body = fetch(f"{url}/api/logs/{node_id}/not-a-log.log")
    assert status == 404 and "no log file 'not-a-log.log'" in json.loads(body)["error"]
    assert fetch(f"{url}/api/logs/{node_id}/..%2Fsecret")[0] == 404   # only listed files


def test_a_huge_log_is_served_a_page_at_a_time(url: str):
    node = fetch_json(url + "/api/nodes")[0]
    path = os.path.join(node["log_dir"], "huge.log")
    with open(path, "wb") as f:   # 4 GiB, sparse: no disk used, and never read whole
        f.truncate(4 << 30)
        f.seek((4 << 30) - 8)
        f.write(b"the end\n")
    try:
        page = fetch_json(f"{url}/api/logs/{node['node_id']}/huge.log?offset=0&length=999999999")
        assert page["size"] == 4 << 30 and page["offset"] == 0
        assert page["next"] == 256 * 1024 == len(page["text"])   # one page, at most 256 KiB
        tail = fetch_json(f"{url}/api/logs/{node['node_id']}/huge.log?offset=-8")
        assert tail["text"] == "the end\n" and tail["next"] == tail["size"] == 4 << 30
    finally:
        os.remove(path)


def test_a_log_page_never_splits_a_character():
    text = "añb€c"   # 1-, 2-, 1-, 3- and 1-byte characters
    data = text.encode()
    for cut in range(len(data) + 1):
        page = log_page(data[:cut], 100, 1000)
        assert text.encode().startswith(page["text"].encode())
        assert page["next"] == 100 + len(page["text"].encode())
        assert cut - page["next"] + 100 < 3   # at most the bytes of one cut character held back


def test_pick_takes_a_unique_prefix_and_names_what_exists():
    items = [{"id": "abc1"}, {"id": "abd2"}, {"id": "x", "name": "counter"}]
    assert pick(items, "id", "abc", "node") == {"id": "abc1"}
    assert pick(items, "id", "counter", "actor", also="name") == items[2]
    assert "2 nodes match 'ab'" in pick(items, "id", "ab", "node")
    named = [{"id": "a", "name": "n", "state": "dead"}, {"id": "b", "name": "n", "state": "alive"}]
    assert pick(named, "id", "n", "actor", also="name")["id"] == "b"   # the live one
    assert pick(items, "id", "zz", "node") == "no node 'zz' (known: abc1, abd2, x)"
    assert "no node ''" in pick(items, "id", "", "node")


def test_init_with_a_dashboard_port_in_use_says_so_and_runs(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    code = ("import unipar\n"
            f"unipar.init(num_cpus=1, backend_options={{'dashboard_port': {port}}})\n"
            "print(unipar.get(unipar.put(42)), unipar.dashboard_url())\n"
            "unipar.shutdown()\n")
    try:
        out = subprocess.run([sys.executable, "-c", code], env=base_env(str(tmp_path / "s")),
                             capture_output=True, text=True, timeout=120, check=False)
    finally:
        taken.close()
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split() == ["42", "None"]
    assert (f"unipar dashboard: off: cannot listen on 127.0.0.1:{port} (Address already in use)"
            in out.stderr)
