"""The dashboard's pages as a user sees them: Debian's chromium, headless, driven over the DevTools
protocol (its ``--remote-debugging-port``, through aiohttp's websocket client), against a live
cluster of one node with 2 CPUs running the tutorial's sorts.

::

    test ── CDP (Page.navigate, Runtime.evaluate, Page.captureScreenshot) ──▶ chromium
                                                                              │ GET /work ...
    test ── drivers (subprocesses) ──▶ cluster (unipar start --head) ◀── dashboard (the head)

No timing is relied on: the sorts spin until the test hands out release tokens (one file each,
claimed by one task), so the page's counts step down exactly as the test lets tasks finish, and
every wait has a deadline. Screenshots go to ``$UNIPAR_DASHBOARD_SCREENSHOTS`` (docs/img when
the docs are refreshed), else to a temporary directory. Without chromium the module is skipped,
unless ``UNIPAR_REQUIRE_BROWSER=1`` (CI), where it fails.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from typing import Any, Iterator

import psutil
import pytest

from multinode import Cluster, base_env
from test_dashboard import URL_LINE, fake_smi, fetch_json, started, submit_job
from unipar.testing import terminate, wait_for

aiohttp = pytest.importorskip("aiohttp", reason="pip install 'unipar[dashboard]'")
pytestmark = pytest.mark.timeout(300)

BROWSERS = ("chromium", "chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--remote-allow-origins=*", "--hide-scrollbars",
         "about:blank"]
WIDTH, HEIGHT = 1360, 900
SORTS = 20                      # the tutorial's 20 lists
WAIT = 90.0                     # deadline of every wait on the page (a loaded 2-core machine)
EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "examples")


def browser_path() -> str:
    """Chromium's path; skips the module (fails it when UNIPAR_REQUIRE_BROWSER=1) without one."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    why = "chromium is not installed (apt-get install -y chromium)"
    if os.environ.get("UNIPAR_REQUIRE_BROWSER") == "1":
        pytest.fail(why + "; UNIPAR_REQUIRE_BROWSER=1 requires it", pytrace=False)
    pytest.skip(why)


class Browser:
    """One headless chromium and its first tab, driven over the DevTools protocol.

    Every call waits at most ``timeout`` seconds. ``problems`` collects what the page's console
    reported as errors (uncaught exceptions, Content-Security-Policy refusals, failed loads)."""

    def __init__(self, path: str, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="unipar-chromium-")
        self.proc = subprocess.Popen([path, *FLAGS, f"--user-data-dir={self.profile}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        self.loop = asyncio.new_event_loop()
        self.problems: list[str] = []
        self.next_id = 0
        try:
            port = wait_for(self._port, timeout=timeout, interval=0.1,
                            message="chromium's DevTools port")
            self.session, self.ws = self.loop.run_until_complete(self._connect(port))
            for domain in ("Page", "Runtime", "Log"):
                self.call(f"{domain}.enable")
            self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT,
                      deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.close()
            raise

    def _port(self) -> int | None:
        assert self.proc.poll() is None, f"chromium exited with {self.proc.returncode}"
        try:
            with open(os.path.join(self.profile, "DevToolsActivePort")) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    async def _connect(self, port: int) -> tuple[Any, Any]:
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        async with session.get(f"http://127.0.0.1:{port}/json/list") as r:
            pages = [t for t in await r.json() if t["type"] == "page"]
        ws = await session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
        return session, ws

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events read meanwhile are looked at)."""
        return self.loop.run_until_complete(
            asyncio.wait_for(self._call(method, params), self.timeout))

    async def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            msg = json.loads((await self.ws.receive()).data)
            if msg.get("id") == self.next_id:
                assert "error" not in msg, (method, msg["error"])
                return msg["result"]
            self._event(msg)

    def _event(self, msg: dict[str, Any]) -> None:
        params = msg.get("params", {})
        if msg.get("method") == "Runtime.exceptionThrown":
            self.problems.append(json.dumps(params["exceptionDetails"])[:800])
        elif msg.get("method") == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.problems.append(params["entry"].get("text", "")[:800])
        elif (msg.get("method") == "Runtime.consoleAPICalled"
              and params.get("type") in ("error", "assert")):
            self.problems.append(json.dumps(params.get("args"))[:800])

    def js(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        got = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in got, got["exceptionDetails"]
        return got["result"].get("value")

    def open(self, url: str) -> None:
        """Load ``url`` and wait until its scripts have filled the page once."""
        self.call("Page.navigate", url=url)
        wait_for(lambda: self.js("document.readyState === 'complete' && "
                                 "document.getElementById('status').textContent"
                                 ".indexOf('updated') >= 0"),
                 timeout=WAIT, interval=0.2, message=f"{url} to load")

    def wait(self, expression: str, message: str) -> Any:
        """Poll a JavaScript expression until it is truthy (deadline WAIT); return it."""
        return wait_for(lambda: self.js(expression), timeout=WAIT, interval=0.25,
                        message=message)

    def screenshot(self, path: str) -> None:
        """The whole page, as a PNG."""
        height = int(self.js("document.documentElement.scrollHeight"))
        self.call("Emulation.setDeviceMetricsOverride", width=WIDTH,
                  height=max(HEIGHT, min(height, 4000)), deviceScaleFactor=1, mobile=False)
        self.js("window.dispatchEvent(new Event('resize'))")
        shot = self.call("Page.captureScreenshot", format="png")
        self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT,
                  deviceScaleFactor=1, mobile=False)
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))

    def close(self) -> None:
        """Idempotent: the websocket, chromium (all its processes) and its profile go."""
        if getattr(self, "session", None) is not None:
            self.loop.run_until_complete(self.session.close())
            self.session = None
        if not self.loop.is_closed():
            self.loop.close()
        if self.proc.poll() is None:
            try:
                terminate([psutil.Process(self.proc.pid)], grace=5)
            except psutil.NoSuchProcess:
                pass
        self.proc.wait(timeout=30)
        try:   # helpers that left the tree still belong to its session's process group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        shutil.rmtree(self.profile, ignore_errors=True)


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    b = Browser(browser_path())
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One head and its node (2 CPUs), whose workers import the tutorial from docs/examples."""
    state = str(tmp_path_factory.mktemp("browser") / "state")
    env = base_env(state)
    env["PYTHONPATH"] = os.pathsep.join([os.path.abspath(EXAMPLES), env["PYTHONPATH"]])
    c = Cluster(state, env)
    try:
        c.start(["--num-cpus", "2", "--dashboard-port", "0"], [])
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def url(cluster: Cluster) -> str:
    found = URL_LINE.search(cluster.start_output)
    assert found, cluster.start_output
    return found.group(1)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> str:
    where = os.environ.get("UNIPAR_DASHBOARD_SCREENSHOTS") or str(tmp_path_factory.mktemp("png"))
    os.makedirs(where, exist_ok=True)
    return where


class Driver:
    """A driver subprocess that answers one line per command it reads on stdin."""

    def __init__(self, cluster: Cluster, code: str, *args: str) -> None:
        env = dict(cluster.env, UNIPAR_ADDRESS="auto")
        self.proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args],
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for text in self.proc.stdout:
            self.lines.put(text)
        self.lines.put(None)

    def line(self, timeout: float = WAIT) -> str:
        """Its next answer (the lines its workers printed, "(name pid=N) ...", are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                text = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail("the driver said nothing", pytrace=False)
            assert text is not None, f"the driver ended (status {self.proc.wait(timeout=30)})"
            if not text.startswith("("):
                return text.strip()

    def ask(self, command: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.line()

    def close(self) -> None:
        if self.proc.poll() is None:
            terminate([psutil.Process(self.proc.pid)])
        self.proc.wait(timeout=30)


# The tutorial's sorts (docs/examples/tutorial.py: 20 lists, bubble sort), each kept busy after
# its sort until the test hands it a release token, so the test decides when each one ends.
SORT_DRIVER = """
    import os, sys, unipar
    from tutorial import LISTS, bubble_sort, make_list   # docs/examples is on the path
    unipar.init()
    gates = sys.argv[1]

    @unipar.remote
    def bubble_sort_remote(to_sort):
        bubble_sort(to_sort)
        while True:   # busy (a CPU each) until a release token is ours
            for name in sorted(os.listdir(gates)):
                if name.startswith("release-") and not name.endswith(".taken"):
                    try:
                        os.rename(os.path.join(gates, name), os.path.join(gates, name + ".taken"))
                        return to_sort
                    except OSError:
                        pass   # another task took it
            bubble_sort(to_sort[::-1][:300])

    refs = [bubble_sort_remote.remote(make_list(1000, seed)) for seed in range(LISTS)]
    print("submitted", len(refs), flush=True)
    print("sorted", sum(v == sorted(v) for v in unipar.get(refs, timeout=600)), flush=True)
    sys.stdin.read()   # stay connected until the test is done looking
"""


@pytest.fixture(scope="module")
def sorts(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    gates = str(tmp_path_factory.mktemp("gates"))
    driver = Driver(cluster, SORT_DRIVER, gates)
    try:
        assert driver.line() == f"submitted {SORTS}"
        yield driver, gates
    finally:
        for i in range(SORTS):   # let every sort end, then the driver
            open(os.path.join(gates, f"release-{i:02d}"), "w").close()
        driver.close()


COUNTS_JS = """(function () { var out = {};
    ["running", "queued", "finished", "failed"].forEach(function (k) {
      var e = document.getElementById("count-" + k); out[k] = e ? Number(e.textContent) : -1;
    }); return out; })()"""


def counts_when(browser: Browser, wanted: Any, what: str) -> dict[str, int]:
    """The work page's task counts, once ``wanted(counts)`` holds (deadline WAIT)."""
    deadline = time.monotonic() + WAIT
    while True:
        got = browser.js(COUNTS_JS)
        if wanted(got):
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"the work page never showed {what}; it shows {got}", pytrace=False)
        time.sleep(0.25)


def no_problems(browser: Browser) -> None:
    found, browser.problems[:] = list(browser.problems), []
    assert not found, found


# -- the pages ---------------------------------------------------------------------------------
def test_machines_page_shows_both_cpus_busy_during_the_sort(browser: Browser, url: str,
                                                            sorts: Any, shots: str):
    browser.open(url + "/machines?refresh=0.5")
    # Both sorts spin until released: every core of this 2-core machine is busy.
    cores = browser.wait("""(function () {
        var v = Array.from(document.querySelectorAll("[data-core] .core-value"))
                     .map(function (e) { return parseInt(e.textContent, 10); });
        return v.length === 2 && v.every(function (x) { return x >= 50; }) && v; })()""",
                         "both cores busy on the machines page")
    assert len(cores) == 2
    assert browser.js("document.querySelectorAll('.node canvas').length") >= 3   # cpu, mem, net
    browser.wait("document.querySelector('.cpu-total') && "
                 "parseInt(document.querySelector('.cpu-total').textContent) >= 50",
                 "the total CPU figure")
    browser.wait("Number(document.querySelector('.node').dataset.samples) >= 10",
                 "ten seconds of samples in the charts")
    browser.screenshot(os.path.join(shots, "dashboard-machines.png"))
    no_problems(browser)


GPU_FIGURES_JS = """Array.from(document.querySelectorAll(".figure.gpu")).map(function (f) {
    return [f.dataset.gpu, f.querySelector(".v").textContent, f.querySelector(".small").textContent];
  })"""


def test_machines_page_shows_both_gpus_of_a_fake_nvidia_smi(browser: Browser, shots: str,
                                                            tmp_path_factory: Any):
    where = tmp_path_factory.mktemp("gpus")
    gpu_cluster = started(where, "--dashboard-port", "0", path_first=fake_smi(where, "two_gpus"))
    try:
        found = URL_LINE.search(gpu_cluster.start_output)
        assert found, gpu_cluster.start_output
        browser.open(found.group(1) + "/machines?refresh=0.5")
        figures = browser.wait(f"(function () {{ var f = {GPU_FIGURES_JS}; "
                               "return f.length === 2 && f; })()", "two GPU figures")
        assert figures == [["0", "37%", "1.0 GiB of 79.6 GiB memory"],
                           ["1", "83%", "40.0 GiB of 79.6 GiB memory"]]
        titles = browser.js("Array.from(document.querySelectorAll('.chart .title'))"
                            ".map(function (t) { return t.textContent; })")
        assert "GPU utilisation %" in titles and "GPU memory used" in titles
        browser.wait("Number(document.querySelector('.node').dataset.samples) >= 3",
                     "three samples in the charts")
        browser.screenshot(os.path.join(shots, "dashboard-machines-gpus.png"))
        no_problems(browser)
    finally:
        browser.call("Page.navigate", url="about:blank")   # no refreshes of a stopped cluster
        gpu_cluster.stop()


def test_work_page_counts_step_down_as_the_sorts_finish(browser: Browser, url: str,
                                                        sorts: Any, shots: str):
    driver, gates = sorts
    browser.open(url + "/work?refresh=0.5")
    seen = [counts_when(browser, lambda c: c["running"] == 2
                        and c["running"] + c["queued"] == SORTS, "2 running and 18 queued")]
    base = seen[0]["finished"]
    waiting = browser.wait("""(function () {
        var rows = Array.from(document.querySelectorAll('#queued tr'));
        var n = rows.reduce(function (a, r) { return a + Number(r.cells[2].textContent); }, 0);
        return n === 18 && rows.map(function (r) { return r.cells[1].textContent; }); })()""",
                           "18 waiting, and for what, in the waiting table")
    assert all(why.startswith("for ") for why in waiting), waiting
    for released in range(2, SORTS + 1, 2):
        for i in (released - 2, released - 1):
            open(os.path.join(gates, f"release-{i:02d}"), "w").close()
        seen.append(counts_when(
            browser, lambda c, released=released: c["running"] + c["queued"] == SORTS - released
            and c["finished"] + c["failed"] == base + released,
            f"{SORTS - released} left, {released} done"))
        failed = fetch_json(url + "/api/tasks?state=failed")["tasks"]
        assert not failed, [t['error'] for t in failed]
        if released == SORTS // 2:
            browser.screenshot(os.path.join(shots, "dashboard-work.png"))
    left = [c["running"] + c["queued"] for c in seen]
    assert left == list(range(SORTS, -1, -2)), left
    assert driver.line() == f"sorted {SORTS}"
    # The task stream: 20 sort bars over the 2 workers (one row each).
    legend = browser.wait("""(function () {
        var e = document.querySelector('.legend-item[data-name$="bubble_sort_remote"]');
        return e && e.dataset.count === "20" && e.textContent; })()""", "20 sorts in the legend")
    assert legend.endswith("20 tasks on 2 workers"), legend
    assert browser.js("document.getElementById('timeline-plot').dataset.rows") == "2"
    assert browser.js("document.getElementById('timeline-plot').dataset.bars") == str(SORTS)
    browser.screenshot(os.path.join(shots, "dashboard-work-done.png"))
    no_problems(browser)




# A driver the test steers one line at a time: "task TEXT" prints TEXT in a task and answers its
# worker's pid; "say TEXT" has an actor print it (same process each time); "doom" starts an
# actor named "doomed" and kills it with unipar.kill.
STEERED_DRIVER = """
    import os, sys, unipar
    unipar.init()

    @unipar.remote
    def shout(text):
        print(text, flush=True)
        return os.getpid()

    @unipar.remote
    def explode(text):
        raise ValueError(text)

    @unipar.remote
    class Speaker:
        def say(self, text):
            print(text, flush=True)
            return os.getpid()

    speaker = None
    kept = [unipar.put(bytes(8 << 20)), unipar.put(list(range(100_000)))]   # objects to show
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, text = line.strip().partition(" ")
        if command == "task":
            print(unipar.get(shout.remote(text), timeout=120), flush=True)
        elif command == "say":
            speaker = speaker or Speaker.options(name="speaker").remote()
            print(unipar.get(speaker.say.remote(text), timeout=120), flush=True)
        elif command == "fail":
            try:
                unipar.get(explode.remote(text), timeout=120)
            except ValueError as exc:
                print(type(exc).__name__, flush=True)
        elif command == "doom":
            doomed = Speaker.options(name="doomed").remote()
            pid = unipar.get(doomed.say.remote("about to be killed"), timeout=120)
            unipar.kill(doomed)
            print(pid, flush=True)
"""


@pytest.fixture(scope="module")
def steered(cluster: Cluster) -> Iterator[Driver]:
    driver = Driver(cluster, STEERED_DRIVER)
    try:
        assert driver.line() == "ready"
        yield driver
    finally:
        driver.close()


def test_actors_page_shows_a_killed_actor_dead_with_its_cause(browser: Browser, url: str,
                                                              steered: Driver, shots: str):
    speaker_pid = steered.ask("say hello")   # one actor alive, for contrast
    steered.ask("doom")
    browser.open(url + "/actors?refresh=0.5")
    row = """document.querySelector('tr[data-name="doomed"]')"""
    browser.wait(f"{row} && {row}.querySelector('.badge').textContent === 'dead'",
                 "the killed actor shown dead")
    cause = browser.js(f"{row}.querySelector('.death').textContent")
    assert "killed with unipar.kill()" in cause, cause
    speaker = """document.querySelector('tr[data-name="speaker"]')"""
    assert browser.js(f"{speaker}.querySelector('.badge').textContent") == "alive"
    assert browser.js(f"{speaker}.cells[4].textContent") == speaker_pid
    browser.screenshot(os.path.join(shots, "dashboard-actors.png"))
    no_problems(browser)


def test_logs_page_shows_a_workers_print_and_follows_it(browser: Browser, url: str,
                                                        steered: Driver, shots: str):
    pid = int(steered.ask("task printed-by-a-task-7f3a"))
    [node] = fetch_json(url + "/api/logs")["nodes"]
    [name] = [f["name"] for f in node["files"] if f["pid"] == pid]
    log_text = "document.getElementById('log-text').textContent"
    browser.open(f"{url}/logs?node={node['node_id']}&file={name}&refresh=0.5")
    browser.wait(f"{log_text}.indexOf('printed-by-a-task-7f3a') >= 0", "the task's print")
    # An actor's log, followed: what it prints after the page opened appears too.
    pid = int(steered.ask("say first-line-b21c"))
    [node] = fetch_json(url + "/api/logs")["nodes"]
    [name] = [f["name"] for f in node["files"] if f["pid"] == pid]
    browser.open(f"{url}/logs?node={node['node_id']}&file={name}&refresh=0.5")
    browser.wait(f"{log_text}.indexOf('first-line-b21c') >= 0", "the actor's first print")
    assert browser.js("document.getElementById('log-follow').checked")
    for i in range(3):
        steered.ask(f"say followed-line-{i}-c9d4")
    browser.wait(f"{log_text}.indexOf('followed-line-2-c9d4') >= 0", "lines printed later")
    listed = browser.js("Array.from(document.querySelectorAll('#log-files a'))"
                        ".map(function (a) { return a.dataset.file; })")
    assert "node.log" in listed and name in listed
    browser.screenshot(os.path.join(shots, "dashboard-logs.png"))
    no_problems(browser)


def test_work_page_shows_a_failure_with_its_traceback(browser: Browser, url: str,
                                                     steered: Driver):
    assert "ValueError" in steered.ask("fail boom-5e1f")   # the user's type, as raised
    browser.open(url + "/work?refresh=0.5&state=failed&name=explode")
    row = "document.querySelector('#tasks tr[data-state=\"failed\"]')"
    browser.wait(f"!!({row} && {row}.querySelector('pre'))", "the failed task listed")
    assert browser.js(f"{row}.querySelector('summary').textContent") == "ValueError: boom-5e1f"
    trace = browser.js(f"{row}.querySelector('pre').textContent")
    assert trace.startswith("Traceback") and ", in explode\nValueError: boom-5e1f" in trace
    no_problems(browser)


def test_overview_page_names_the_node_and_links_every_page(browser: Browser, url: str,
                                                           shots: str):
    node_id = fetch_json(url + "/api/nodes")[0]["node_id"]
    browser.open(url + "/?refresh=0.5")
    assert node_id[:12] in browser.js("document.getElementById('main').textContent")
    links = browser.js("Array.from(document.querySelectorAll('nav a'))"
                       ".map(function (a) { return a.getAttribute('href'); })")
    assert links == ["/", "/machines", "/work", "/actors", "/jobs", "/logs"]
    browser.screenshot(os.path.join(shots, "dashboard-overview.png"))
    no_problems(browser)


def test_jobs_page_lists_a_job_and_shows_its_log(browser: Browser, url: str, cluster: Cluster,
                                                 shots: str):
    job_id = submit_job(cluster.env)   # prints a line, exits with code 3
    browser.open(url + "/jobs?refresh=0.5&job=" + job_id)
    row = browser.wait(f"""(function () {{
        var r = document.querySelector('tr[data-job="{job_id}"]');
        return r && Array.from(r.cells).map(function (c) {{ return c.textContent; }}); }})()""",
                       "the job's row")
    assert row[1] == "FAILED" and row[7] == "3" and "exit code 3" in row[8] and row[9] == "log"
    assert "-c" in row[2]
    browser.wait("document.getElementById('job-log').textContent"
                 ".indexOf('hello from the job') >= 0", "the job's log")
    browser.screenshot(os.path.join(shots, "dashboard-jobs.png"))
    no_problems(browser)
