"""The conformance suite, run against a 3-node cluster started with ``unipar start``.

A head with 4 CPUs (the suite's tutorial needs a task of 4 CPUs on one node) and two joined
nodes of 1 CPU each; the suite runs in a pytest subprocess whose driver connects through
``UNIPAR_ADDRESS=unipar://...`` (a remote driver: objects travel over TCP) — the same suite,
unchanged. By default the key files run; ``UNIPAR_CLUSTER_CONFORMANCE=full`` runs all of it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from multinode import Cluster, base_env

KEY_FILES = ["test_tasks.py", "test_objects.py", "test_actors.py", "test_cluster.py",
             "test_errors.py", "test_generators.py",
             # issue #18's "done when": scikit-learn's n_jobs through joblib on a native cluster
             "test_util.py::test_joblib_scikit_learn_cross_val_score"]
SUITE_TIMEOUT = 1500

pytestmark = pytest.mark.timeout(SUITE_TIMEOUT + 200)

HERE = os.path.dirname(os.path.abspath(__file__))
CONFORMANCE = os.path.join(os.path.dirname(HERE), "conformance")


def test_conformance_suite_passes_on_a_three_node_cluster(tmp_path):
    state = str(tmp_path / "state")
    cluster = Cluster(state, base_env(state))
    try:
        cluster.start(["--num-cpus", "4"], [["--num-cpus", "1"], ["--num-cpus", "1"]])
        env = dict(cluster.env, UNIPAR_TEST_BACKENDS="native",
                   UNIPAR_ADDRESS="unipar://" + cluster.head.removeprefix("tcp://"))
        with open(cluster.secret_file) as f:
            env["UNIPAR_CLUSTER_SECRET"] = f.read().strip()
        env.pop("UNIPAR_STATE_DIR")   # a driver outside the cluster: address and secret only
        full = os.environ.get("UNIPAR_CLUSTER_CONFORMANCE") == "full"
        targets = [CONFORMANCE] if full else [os.path.join(CONFORMANCE, f) for f in KEY_FILES]
        result = subprocess.run(
            [sys.executable, "-m", "pytest", *targets, "-q", "--timeout", "120",
             "-p", "no:cacheprovider"],
            env=env, capture_output=True, text=True, timeout=SUITE_TIMEOUT,
            cwd=os.path.dirname(os.path.dirname(HERE)))
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        summary = result.stdout.strip().splitlines()[-1]
        print(summary)
        assert " passed" in summary and "skipped" not in summary, result.stdout[-3000:]
    finally:
        cluster.stop()
