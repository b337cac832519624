"""``unipar job``: drivers the head runs, with the working dir the submitter uploaded (issue #16).

One ``unipar start`` cluster (its own state directory) serves every test. The projects live
in a temporary folder that is on no one's ``sys.path``: what the job imports came with
``--working-dir``. The submitter is the ``unipar`` command, run as a user would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

from unipar.testing import wait_for

from multinode import Cluster, base_env, ok, unipar

WAIT = 120.0   # seconds: jobs start a Python driver that connects to the cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    state = str(tmp_path_factory.mktemp("state"))
    c = Cluster(state, base_env(state))
    try:
        c.start(["--num-cpus", "2"], [])
        yield c
    finally:
        c.stop()


def _project(root, files: dict[str, str]) -> str:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text))
    return str(root)


def _job(cluster: Cluster, *args: str, timeout: float = WAIT) -> subprocess.CompletedProcess:
    return unipar(cluster.env, "job", *args, timeout=timeout)


def _status(cluster: Cluster, job_id: str) -> str:
    return ok(_job(cluster, "status", job_id))


def _submitted_id(stdout: str) -> str:
    return stdout.strip().splitlines()[-1]


def test_a_job_imports_from_its_working_dir_streams_output_and_succeeds(cluster, tmp_path):
    project = _project(tmp_path / "proj", {
        "jobhelper.py": "def double(x):\n    return 2 * x\n",
        "script.py": """
            import unipar, jobhelper

            @unipar.remote
            def on_a_worker(x):
                import jobhelper               # from the job's working dir, shipped to workers
                return jobhelper.double(x)

            unipar.init()                      # address auto: the cluster that runs the job
            print("local", jobhelper.double(2))
            print("remote", unipar.get(on_a_worker.remote(5), timeout=60))
        """})
    submitted = subprocess.run(
        [sys.executable, "-m", "unipar.cli", "job", "submit", "--working-dir", project,
         "--", "python", "script.py"], cwd=str(tmp_path), env=cluster.env,
        capture_output=True, text=True, timeout=WAIT)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert "local 4\nremote 10\n" in submitted.stdout           # streamed to the submitter
    assert "SUCCEEDED" in submitted.stderr
    job_id = submitted.stderr.split("Job ", 1)[1].split()[0]
    assert f"Job {job_id}: SUCCEEDED" in _status(cluster, job_id)
    assert "remote 10" in ok(_job(cluster, "logs", job_id))
    listed = ok(_job(cluster, "list"))
    assert job_id in listed and "python script.py" in listed
    assert job_id in ok(unipar(cluster.env, "status"))
    with open(os.path.join(cluster.state_dir, "head.json")) as f:   # the head's snapshot
        assert json.load(f)["jobs"][job_id]["status"] == "SUCCEEDED"


def test_a_failing_command_is_failed_with_its_exit_code(cluster, tmp_path):
    project = _project(tmp_path / "fail", {"fail.py": "print('going'); raise SystemExit(3)\n"})
    result = _job(cluster, "submit", "--working-dir", project, "--", "python", "fail.py")
    assert result.returncode == 3
    assert "going" in result.stdout
    job_id = result.stderr.split("Job ", 1)[1].split()[0]
    status = _status(cluster, job_id)
    assert "FAILED" in status and "exit code 3" in status


def test_a_job_runs_on_after_its_submitter_is_gone(cluster, tmp_path):
    token = tmp_path / "go"
    project = _project(tmp_path / "lasting", {"wait.py": f"""
        import os, time
        print("started", flush=True)
        while not os.path.exists({str(token)!r}):
            time.sleep(0.05)
        print("finished")
    """})
    submitter = subprocess.Popen(
        [sys.executable, "-m", "unipar.cli", "job", "submit", "--working-dir", project, "--",
         "python", "wait.py"], env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        assert submitter.stdout.readline() == "started\n"
    finally:
        submitter.kill()
        _, err = submitter.communicate(timeout=30)
    job_id = err.split("Job ", 1)[1].split()[0]
    assert "RUNNING" in _status(cluster, job_id)
    token.write_text("")
    wait_for(lambda: "SUCCEEDED" in _status(cluster, job_id), timeout=WAIT,
             message="the job to finish without its submitter")
    assert "finished" in ok(_job(cluster, "logs", job_id))


def test_stop_ends_the_driver_and_everything_it_started(cluster, tmp_path):
    pids = tmp_path / "pids"
    project = _project(tmp_path / "long", {"long.py": f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        with open({str(pids)!r} + ".tmp", "w") as f:
            f.write(f"{{os.getpid()}} {{child.pid}}")
        os.rename({str(pids)!r} + ".tmp", {str(pids)!r})
        print("ready", flush=True)
        time.sleep(600)
    """})
    job_id = _submitted_id(ok(_job(cluster, "submit", "--no-wait", "--working-dir", project,
                                   "--", "python", "long.py")))
    wait_for(lambda: "ready" in ok(_job(cluster, "logs", job_id)), timeout=WAIT,
             message="the job to start its child")
    procs = [psutil.Process(int(p)) for p in pids.read_text().split()]
    stopped = ok(_job(cluster, "stop", job_id))
    assert f"Job {job_id}: STOPPED" in stopped
    _, alive = psutil.wait_procs(procs, timeout=30)
    assert not alive, f"still running after stop: {alive}"
    assert "STOPPED" in _status(cluster, job_id)
    assert "STOPPED" in ok(_job(cluster, "list"))


def test_follow_prints_a_running_jobs_output_to_the_end(cluster, tmp_path):
    token = tmp_path / "done"
    project = _project(tmp_path / "follow", {"talk.py": f"""
        import os, time
        print("one", flush=True)
        while not os.path.exists({str(token)!r}):
            time.sleep(0.05)
        print("two")
    """})
    job_id = _submitted_id(ok(_job(cluster, "submit", "--no-wait", "--working-dir", project,
                                   "--", "python talk.py")))   # one string: a shell command
    follower = subprocess.Popen([sys.executable, "-m", "unipar.cli", "job", "logs", "--follow",
                                 job_id], env=cluster.env, stdout=subprocess.PIPE, text=True)
    try:
        assert follower.stdout.readline() == "one\n"
        token.write_text("")
        rest, _ = follower.communicate(timeout=WAIT)
    finally:
        if follower.poll() is None:
            follower.send_signal(signal.SIGKILL)
            follower.wait(timeout=30)
    assert rest == "two\n" and follower.returncode == 0


def test_bad_input_is_refused_with_a_clear_error(cluster, tmp_path):
    missing = _job(cluster, "submit", "--working-dir", str(tmp_path / "nope"), "--", "true")
    assert missing.returncode != 0 and "does not exist" in missing.stderr
    unknown = _job(cluster, "status", "job_000000000000")
    assert unknown.returncode == 1 and "no job 'job_000000000000'" in unknown.stderr
    assert "unipar job list" in unknown.stderr
    for command in (["logs"], ["stop"]):
        result = _job(cluster, *command, "job_000000000000")
        assert result.returncode == 1 and "no job" in result.stderr
    empty = _job(cluster, "submit", "--working-dir", str(tmp_path))
    assert empty.returncode == 2 and "after `--`" in empty.stderr
    not_found = _job(cluster, "submit", "--", "no-such-command-here")
    assert not_found.returncode == 1 and "FAILED" in not_found.stderr
    assert "could not start" in not_found.stderr


def test_without_a_cluster_the_job_command_says_how_to_start_one(tmp_path):
    env = base_env(str(tmp_path))
    result = unipar(env, "job", "list")
    assert result.returncode == 1 and "unipar start --head" in result.stderr
    assert not os.listdir(tmp_path)   # nothing was created


def test_a_runtime_env_json_is_merged_with_the_working_dir(cluster, tmp_path):
    lib = _project(tmp_path / "libs" / "joblib_mod", {"__init__.py": "NAME = 'joblib_mod'\n"})
    project = _project(tmp_path / "proj_env", {
        "script.py": """
            import os, unipar, joblib_mod

            @unipar.remote
            def on_a_worker():
                import joblib_mod              # a py_module of the job's runtime env
                return [joblib_mod.NAME, os.environ.get("GREETING"), os.path.exists("script.py")]

            unipar.init()
            print("driver", joblib_mod.NAME, os.environ.get("GREETING"),
                  joblib_mod.__file__.startswith(%r))
            print("worker", unipar.get(on_a_worker.remote(), timeout=60))
        """ % str(tmp_path)})
    env = {"py_modules": [lib], "env_vars": {"GREETING": "hi"}, "working_dir": "/not/used"}
    result = _job(cluster, "submit", "--working-dir", project,
                  "--runtime-env-json", json.dumps(env), "--", "python", "script.py")
    assert result.returncode == 0, result.stdout + result.stderr
    # The module travelled (the driver imports an uploaded copy), --working-dir won.
    assert "driver joblib_mod hi False\n" in result.stdout
    assert "worker ['joblib_mod', 'hi', True]\n" in result.stdout
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps({"env_vars": {"GREETING": "from file"}, "py_modules": [lib]}))
    from_file = _job(cluster, "submit", "--working-dir", project, "--runtime-env",
                     str(env_file), "--", "python", "script.py")
    assert from_file.returncode == 0, from_file.stdout + from_file.stderr
    assert "worker ['joblib_mod', 'from file', True]\n" in from_file.stdout


def test_a_bad_runtime_env_is_a_clear_cli_error(cluster, tmp_path):
    bad_json = _job(cluster, "submit", "--runtime-env-json", "{'env_vars': 1", "--", "true")
    assert bad_json.returncode == 2
    assert "--runtime-env-json" in bad_json.stderr and "not valid JSON" in bad_json.stderr
    not_a_dict = _job(cluster, "submit", "--runtime-env-json", "[1]", "--", "true")
    assert not_a_dict.returncode == 2 and "a JSON object" in not_a_dict.stderr
    unknown = _job(cluster, "submit", "--runtime-env-json", '{"conda": "x"}', "--", "true")
    assert unknown.returncode == 1 and "unknown runtime_env key(s) conda" in unknown.stderr
    missing = _job(cluster, "submit", "--runtime-env", str(tmp_path / "nope.json"), "--", "true")
    assert missing.returncode == 2 and "nope.json" in missing.stderr
    both = _job(cluster, "submit", "--runtime-env", str(tmp_path / "nope.json"),
                "--runtime-env-json", "{}", "--", "true")      # as `ray job submit`: one
    assert both.returncode == 2 and "only one of" in both.stderr
