"""``unipar run``, ``unipar compare`` and ``unipar bench``, as a user runs them.

Everything runs on the ``local`` backend at tiny sizes so the file stays fast; numbers are never
checked, only that each command works and that its table, JSON and PNG have the right shape.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from unipar.proctree import run_measured
from unipar.bench.report import BackendResult, Report
from unipar.bench.workloads import LIFECYCLE, WORKLOADS, Sizes
from unipar.compare import normalise_output

ALL_WORKLOADS = [w.name for w in WORKLOADS + LIFECYCLE]


def unipar_cli(*args: str, env: dict[str, str] | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``unipar ARGS`` in a fresh interpreter, as from a shell."""
    base = {k: v for k, v in os.environ.items() if k not in ("UNIPAR_BACKEND", "UNIPAR_ADDRESS")}
    return subprocess.run([sys.executable, "-m", "unipar.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env={**base, **(env or {})})


def script(tmp_path: Path, body: str, name: str = "script.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


SQUARES = """
    import unipar

    @unipar.remote
    def square(x):
        return x * x

    print("squares:", unipar.get([square.remote(i) for i in range(5)]))
    """

PRINTS_BACKEND = """
    import os
    print("hello")
    print("running on", os.environ.get("UNIPAR_BACKEND"))
    """


# -- unipar run ----------------------------------------------------------------------------------

def test_run_selects_backend_passes_args_and_exit_status(tmp_path):
    path = script(tmp_path, """
        import sys, unipar
        unipar.init()
        print("backend", unipar.backend_name(), "args", sys.argv[1:])
        sys.exit(int(sys.argv[1]))
        """)
    done = unipar_cli("run", "--backend", "local", path, "3", "--flag")
    assert done.returncode == 3, done.stderr
    assert done.stdout.strip() == "backend local args ['3', '--flag']"


def test_run_sets_address(tmp_path):
    path = script(tmp_path, "import os; print(os.environ['UNIPAR_ADDRESS'])")
    done = unipar_cli("run", "--address", "127.0.0.1:6390", path)
    assert (done.returncode, done.stdout.strip()) == (0, "127.0.0.1:6390")


def test_run_rejects_unknown_backend(tmp_path):
    done = unipar_cli("run", "--backend", "nosuch", script(tmp_path, "print(1)"))
    assert done.returncode == 2
    assert "unknown backend 'nosuch'" in done.stderr


# -- unipar compare ------------------------------------------------------------------------------

def test_compare_agreeing_runs_exit_zero_and_write_json(tmp_path):
    out = tmp_path / "compare.json"
    done = unipar_cli("compare", script(tmp_path, SQUARES), "--backends", "local",
                      "--repeat", "2", "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "local" in done.stdout and "reference" in done.stdout
    data = json.loads(out.read_text())
    assert data["ok"] is True and data["reference"] == "local" and data["repeat"] == 2
    (run,) = data["backends"]
    assert run["backend"] == "local" and run["exit_codes"] == [0, 0]
    assert len(run["wall_s"]) == 2 and run["median_wall_s"] > 0
    assert run["peak_rss_max"] > 0


def test_compare_catches_output_that_differs_between_backends(tmp_path):
    # The script never initialises unipar, so any known backend name will do.
    out = tmp_path / "compare.json"
    done = unipar_cli("compare", script(tmp_path, PRINTS_BACKEND), "--backends", "local,dask",
                      "--json", str(out))
    assert done.returncode == 1
    assert "DIFFERENT" in done.stdout
    assert "-running on local" in done.stdout and "+running on dask" in done.stdout
    data = json.loads(out.read_text())
    assert data["ok"] is False
    assert [b["matched"] for b in data["backends"]] == [None, False]


def test_compare_ignore_excludes_varying_lines(tmp_path):
    done = unipar_cli("compare", script(tmp_path, PRINTS_BACKEND), "--backends", "local,dask",
                      "--ignore", "^running on ")
    assert done.returncode == 0, done.stdout
    assert "same" in done.stdout


def test_compare_reports_a_failing_run(tmp_path):
    path = script(tmp_path, "import sys; print('partial'); sys.exit('boom: gave up')")
    done = unipar_cli("compare", path, "--backends", "local")
    assert done.returncode == 1
    assert "local failed" in done.stdout and "boom: gave up" in done.stdout


def test_compare_passes_script_arguments_after_double_dash(tmp_path):
    path = script(tmp_path, "import sys; print(sys.argv[1:])")
    out = tmp_path / "c.json"
    done = unipar_cli("compare", "--backends", "local", "--json", str(out), "--", path, "--x", "1")
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["args"] == ["--x", "1"]


def test_compare_shows_a_progress_bar_in_a_terminal_only(tmp_path):
    import pty
    path = script(tmp_path, """
        import unipar
        print(unipar.get(unipar.put(41)) + 1)
    """)
    argv = [sys.executable, "-m", "unipar.cli", "compare", path, "--backends", "local"]
    piped = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and "%" not in piped.stderr   # a pipe gets plain lines
    assert "unipar compare: local (run 1/1)" in piped.stderr
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower)
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:   # the terminal closed: the command is done
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(timeout=120) == 0
    finally:
        os.close(leader)
    assert b"100%" in seen, seen[-2000:]


def test_normalise_output_strips_worker_prefix_and_ignored_lines():
    text = "(square pid=123) computing 3\nresult 9\nelapsed 0.31 s\n(Actor pid=9, ip=1.2.3.4) hi\n"
    lines = normalise_output(text, [re.compile(r"^elapsed ")])
    assert lines == ["computing 3", "result 9", "hi"]
    assert normalise_output(text, keep_prefix=True)[0] == "(square pid=123) computing 3"
    assert normalise_output("b\na\n", unordered=True) == ["a", "b"]


# -- unipar bench --------------------------------------------------------------------------------

def test_bench_writes_table_json_and_png(tmp_path):
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    done = unipar_cli("bench", "--backends", "local", "--scale", "0.01", "--repeat", "2",
                      "--json", str(out), "--plot", str(png), timeout=180)
    assert done.returncode == 0, done.stderr
    for workload in ("tutorial: 20 sorts as tasks", "no-op tasks at once", "cold start",
                     "idle memory"):
        assert workload in done.stdout
    data = json.loads(out.read_text())
    assert data["baseline"] == "local" and data["meta"]["repeat"] == 2
    local = data["backends"]["local"]
    assert local["error"] is None
    assert set(local["workloads"]) == set(ALL_WORKLOADS)
    # local runs every workload but those that need two nodes (test_bench_cross_node.py)
    two_nodes = {"transfer_cross_node", "transfer_warm_node"}
    assert all(local["workloads"][name].get("na") is True for name in two_nodes)
    for name, entry in local["workloads"].items():
        if name in two_nodes:
            continue
        assert len(entry["samples"]) == 2, name
        assert entry["min"] <= entry["median"] <= entry["max"], name
    assert data["ratio_to_baseline"]["local"]["tasks_batch"] == pytest.approx(1.0)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_bench_selected_workloads_only(tmp_path):
    out = tmp_path / "bench.json"
    done = unipar_cli("bench", "--backends", "local", "--workloads", "tasks_batch,put_get_small",
                      "--scale", "0.01", "--repeat", "1", "--json", str(out))
    assert done.returncode == 0, done.stderr
    names = set(json.loads(out.read_text())["backends"]["local"]["workloads"])
    assert names == {"tasks_batch", "put_get_small", *(w.name for w in LIFECYCLE)}


def test_bench_backend_that_cannot_start_is_an_error_row(tmp_path):
    # The local backend refuses an address, so it fails at init like an unreachable cluster.
    out = tmp_path / "bench.json"
    done = unipar_cli("bench", "--backends", "local", "--workloads", "tasks_batch",
                      "--scale", "0.01", "--repeat", "2", "--json", str(out),
                      env={"UNIPAR_ADDRESS": "127.0.0.1:1"})
    assert done.returncode == 1
    assert "local (error)" in done.stdout and "did not run" in done.stdout
    assert "takes no address" in json.loads(out.read_text())["backends"]["local"]["error"]


def test_bench_rejects_unknown_names():
    assert unipar_cli("bench", "--backends", "nosuch").returncode == 2
    assert unipar_cli("bench", "--backends", "local", "--workloads", "nosuch").returncode == 2


def test_report_shows_facade_overhead_and_plots_failures(tmp_path):
    # Made-up numbers: checks the shape of the facade table and that a plot with errors, n/a
    # cells and wide ranges still renders.
    sizes = Sizes(0.01)
    dask = BackendResult("dask", samples={"tasks_batch": [2.0, 3.0], "cold_start": [4.0]})
    plain = BackendResult("dask-plain", samples={"tasks_batch": [1.0], "cold_start": [0.001]},
                          na={"actor_batch"})
    broken = BackendResult("spark", error="java not found")
    names = ["tasks_batch", "actor_batch", "cold_start"]
    report = Report([dask, plain, broken], names, "dask", sizes, {"repeat": 2, "cpus": 2})
    assert report.to_json()["facade_overhead"]["dask/dask-plain"]["tasks_batch"] == 2.5
    from rich.console import Console
    console = Console(record=True, width=160)
    for renderable in report.tables():
        console.print(renderable)
    text = console.export_text()
    assert "dask ÷ dask-plain" in text and "2.50" in text and "spark: did not run" in text
    report.plot(str(tmp_path / "r.png"))
    assert (tmp_path / "r.png").stat().st_size > 10_000


# -- process-tree measurement --------------------------------------------------------------------

def test_peak_memory_counts_grandchildren_and_leftovers_are_killed(tmp_path):
    pid_file = tmp_path / "orphan.pid"
    path = script(tmp_path, f"""
        import subprocess, sys
        hold = "import time; b = bytearray(150 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(2)"
        subprocess.run([sys.executable, "-c", hold], check=True)      # a child holding 150 MB
        orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pid_file)!r}, "w").write(str(orphan.pid))           # left running on exit
        subprocess.run([sys.executable, "-c", "import time; time.sleep(1)"])  # seen by then
        """)
    measured = run_measured([sys.executable, path], dict(os.environ), timeout=60, settle=0.5)
    assert measured.ok, measured.stderr
    assert measured.peak_rss > 150 * 2**20
    assert measured.left_behind == 1
    assert not psutil.pid_exists(int(pid_file.read_text())) or \
        psutil.Process(int(pid_file.read_text())).status() == psutil.STATUS_ZOMBIE


def test_backend_failing_in_a_later_repeat_keeps_its_figures():
    from unipar.bench.runner import _failed_start
    ran = BackendResult("ray", samples={"tasks_batch": [1.0]})
    _failed_start(ran, "node timed out")
    assert ran.error is None and ran.notes == ["did not start in one repeat: node timed out"]
    never = BackendResult("spark")
    _failed_start(never, "java not found")
    assert never.error == "java not found"
