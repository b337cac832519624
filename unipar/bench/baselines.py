"""The workloads of :mod:`unipar.bench.workloads`, written directly against each engine.

These are the "dask-plain", "spark-plain" and "ray-plain" pseudo-backends of ``unipar bench``:
what a competent user of that engine would write without unipar, on a local cluster sized like
unipar's (one worker slot per core). The ratio unipar-on-X / plain-X is the facade's overhead.

Where an engine has no direct counterpart the method is missing and the cell reads "n/a":
Spark has no actors, no object store to ``put`` into and no futures to ``wait`` on. Spark runs
one job per task for the one-at-a-time workloads and one job over a partitioned collection for
the batch ones, which is how Spark is meant to be used.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from .workloads import (Counter, Sizes, SortActor, bubble_sort, check_sorted, make_array, nbytes,
                        noop, put_back, random_list, sort_new, warm_up_transfer)

__all__ = ["DaskPlain", "SparkPlain", "SparkJobError", "RayPlain", "PLAIN_SUITES"]


RAY_STORE_BYTES = 2 * 1024**3   # each raylet's object store, as unipar's ray backend sets it


def _cpus() -> int:
    return os.cpu_count() or 1


class SparkJobError(RuntimeError):
    """A plain Spark job failed; the message leads with the Python exception that ended it."""


def _unipar_root() -> str:
    """The folder the running ``unipar`` package was imported from (its parent directory)."""
    return str(Path(__file__).resolve().parents[2])


def _python_cause(exc: BaseException) -> str:
    """The final line of the last Python traceback inside a Spark error, e.g.
    ``ModuleNotFoundError: No module named 'unipar'``.

    PySpark's errors put the JVM's message and stack trace first and the Python worker's
    traceback last, so a message cut to a few hundred characters would lose exactly that line.
    Falls back to the error's first line when it holds no Python traceback.
    """
    text = str(exc)
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if "Traceback (most recent call last)" in line]
    if starts:
        # Frames are indented; the exception line that ends the traceback is not.
        for line in lines[starts[-1] + 1:]:
            if line.strip() and not line[0].isspace():
                return line.strip()
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first}"[:300]


class DaskPlain:
    """``distributed.Client`` on a process-based ``LocalCluster``, one single-threaded worker
    per core."""

    def start(self) -> None:
        from distributed import Client, LocalCluster
        self.cluster = LocalCluster(n_workers=_cpus(), threads_per_worker=1, processes=True,
                                    host="127.0.0.1", dashboard_address=None)
        self.client = Client(self.cluster)

    def first_result(self) -> None:
        assert self.client.submit(noop, 1, pure=False).result(timeout=600) == 1

    def shutdown(self) -> None:
        self.client.close()
        self.cluster.close()

    def w_tutorial_serial(self, s: Sizes) -> None:
        check_sorted([sort_new(s.sort_length, i) for i in range(s.sorts)], s.sorts, s.sort_length)

    def w_tutorial_tasks(self, s: Sizes) -> None:
        futures = [self.client.submit(sort_new, s.sort_length, i, pure=False)
                   for i in range(s.sorts)]
        check_sorted(self.client.gather(futures), s.sorts, s.sort_length)

    def w_tutorial_dependent(self, s: Sizes) -> None:
        lists = [self.client.submit(random_list, s.sort_length, i, pure=False)
                 for i in range(s.sorts)]
        sorts = [self.client.submit(bubble_sort, f, pure=False) for f in lists]
        check_sorted(self.client.gather(sorts), s.sorts, s.sort_length)

    def _actor(self, cls: type, *args: Any) -> Any:
        return self.client.submit(cls, *args, actor=True, pure=False).result()

    def w_tutorial_one_actor(self, s: Sizes) -> None:
        actor = self._actor(SortActor, s.sort_length, 0)
        check_sorted([actor.shuffle_sort().result() for _ in range(s.sorts)], s.sorts,
                     s.sort_length)

    def w_tutorial_actors(self, s: Sizes) -> None:
        actors = [self._actor(SortActor, s.sort_length, i) for i in range(s.actors)]
        futures = [a.shuffle_sort() for _ in range(s.sorts // s.actors) for a in actors]
        check_sorted([f.result() for f in futures], len(futures), s.sort_length)

    def w_tasks_sequential(self, s: Sizes) -> None:
        for i in range(s.count(1000)):
            assert self.client.submit(noop, i, pure=False).result() == i

    def w_tasks_batch(self, s: Sizes) -> None:
        n = s.count(10000)
        futures = [self.client.submit(noop, i, pure=False) for i in range(n)]
        assert self.client.gather(futures) == list(range(n))

    def prepare_actor_sequential(self, s: Sizes) -> Any:
        counter = self._actor(Counter)
        assert counter.incr().result() == 1
        return counter

    def w_actor_sequential(self, s: Sizes, counter: Any) -> None:
        for i in range(s.count(1000)):
            assert counter.incr().result() == i + 2

    prepare_actor_batch = prepare_actor_sequential

    def w_actor_batch(self, s: Sizes, counter: Any) -> None:
        n = s.count(10000)
        futures = [counter.incr() for _ in range(n)]
        assert [f.result() for f in futures][-1] == n + 1

    def w_put_get_small(self, s: Sizes) -> None:
        for i in range(s.count(1000)):
            assert self.client.scatter(i).result() == i

    def w_put_get_array(self, s: Sizes, array: Any) -> None:
        assert self.client.scatter(array).result().nbytes == array.nbytes

    def w_array_to_task(self, s: Sizes, array: Any) -> None:
        assert self.client.submit(nbytes, array, pure=False).result() == array.nbytes

    def prepare_wait_refs(self, s: Sizes) -> Any:
        futures = [self.client.submit(noop, i, pure=False) for i in range(s.count(1000))]
        self.client.gather(futures)
        return futures

    def w_wait_refs(self, s: Sizes, futures: Any) -> None:
        from distributed import wait
        for _ in range(10):
            assert not wait(futures, timeout=600).not_done


class RayPlain:
    """``ray.init`` of a local cluster with one CPU per core, no dashboard."""

    def start(self) -> None:
        # As unipar's ray backend configures it: loopback only, no usage stats, 2 GiB store,
        # a private temp dir (removed at shutdown). Ray's own variables, set for Ray to read.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        # Ray would otherwise write a token to ~/.ray/auth_token; keep it in the environment.
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))
        import ray
        self.ray = ray
        self.temp_dir = tempfile.mkdtemp(prefix="unipar-bench-ray-")
        self._init()
        self.r_noop = ray.remote(noop)
        self.r_sort = ray.remote(bubble_sort)
        self.r_sort_new = ray.remote(sort_new)
        self.r_list = ray.remote(random_list)
        self.r_nbytes = ray.remote(nbytes)
        self.r_put_back = ray.remote(put_back)
        self.a_sort = ray.remote(SortActor)
        self.a_counter = ray.remote(Counter)

    def _init(self) -> None:
        self.ray.init(num_cpus=_cpus(), include_dashboard=False, _node_ip_address="127.0.0.1",
                      object_store_memory=RAY_STORE_BYTES, _temp_dir=self.temp_dir)

    def first_result(self) -> None:
        assert self.ray.get(self.r_noop.remote(1), timeout=600) == 1

    def shutdown(self) -> None:
        self.ray.shutdown()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def w_tutorial_serial(self, s: Sizes) -> None:
        check_sorted([sort_new(s.sort_length, i) for i in range(s.sorts)], s.sorts, s.sort_length)

    def w_tutorial_tasks(self, s: Sizes) -> None:
        refs = [self.r_sort_new.remote(s.sort_length, i) for i in range(s.sorts)]
        check_sorted(self.ray.get(refs), s.sorts, s.sort_length)

    def w_tutorial_dependent(self, s: Sizes) -> None:
        lists = [self.r_list.remote(s.sort_length, i) for i in range(s.sorts)]
        check_sorted(self.ray.get([self.r_sort.remote(r) for r in lists]), s.sorts, s.sort_length)

    def w_tutorial_one_actor(self, s: Sizes) -> None:
        actor = self.a_sort.remote(s.sort_length, 0)
        check_sorted([self.ray.get(actor.shuffle_sort.remote()) for _ in range(s.sorts)],
                     s.sorts, s.sort_length)
        self.ray.kill(actor)

    def w_tutorial_actors(self, s: Sizes) -> None:
        actors = [self.a_sort.remote(s.sort_length, i) for i in range(s.actors)]
        refs = [a.shuffle_sort.remote() for _ in range(s.sorts // s.actors) for a in actors]
        check_sorted(self.ray.get(refs), len(refs), s.sort_length)
        for actor in actors:
            self.ray.kill(actor)

    def w_tasks_sequential(self, s: Sizes) -> None:
        for i in range(s.count(1000)):
            assert self.ray.get(self.r_noop.remote(i)) == i

    def w_tasks_batch(self, s: Sizes) -> None:
        n = s.count(10000)
        assert self.ray.get([self.r_noop.remote(i) for i in range(n)]) == list(range(n))

    def prepare_actor_sequential(self, s: Sizes) -> Any:
        counter = self.a_counter.remote()
        assert self.ray.get(counter.incr.remote(), timeout=600) == 1
        return counter

    def w_actor_sequential(self, s: Sizes, counter: Any) -> None:
        for i in range(s.count(1000)):
            assert self.ray.get(counter.incr.remote()) == i + 2

    def cleanup_actor_sequential(self, counter: Any) -> None:
        self.ray.kill(counter)

    prepare_actor_batch = prepare_actor_sequential
    cleanup_actor_batch = cleanup_actor_sequential

    def w_actor_batch(self, s: Sizes, counter: Any) -> None:
        n = s.count(10000)
        assert self.ray.get([counter.incr.remote() for _ in range(n)])[-1] == n + 1

    def w_put_get_small(self, s: Sizes) -> None:
        for i in range(s.count(1000)):
            assert self.ray.get(self.ray.put(i)) == i

    def w_put_get_array(self, s: Sizes, array: Any) -> None:
        assert self.ray.get(self.ray.put(array)).nbytes == array.nbytes

    def w_array_to_task(self, s: Sizes, array: Any) -> None:
        assert self.ray.get(self.r_nbytes.remote(array)) == array.nbytes

    def prepare_wait_refs(self, s: Sizes) -> Any:
        refs = [self.r_noop.remote(i) for i in range(s.count(1000))]
        self.ray.get(refs)
        return refs

    def w_wait_refs(self, s: Sizes, refs: Any) -> None:
        for _ in range(10):
            ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=600)
            assert len(ready) == len(refs)

    def w_put_large(self, s: Sizes, array: Any) -> None:
        for _ in range(3):
            ref = self.ray.put(array)
            assert self.ray.wait([ref], timeout=600)[0] == [ref]
            del ref

    def prepare_put_concurrent(self, s: Sizes) -> Any:
        return self.ray.put(make_array(s.big_bytes // 10))

    def w_put_concurrent(self, s: Sizes, ref: Any) -> None:
        for _ in range(2):
            refs = [self.r_put_back.remote(ref, self.ray.put) for _ in range(10)]
            inner = [r for rs in self.ray.get(refs, timeout=600) for r in rs]
            assert len(self.ray.wait(inner, num_returns=10, timeout=600)[0]) == 10
            del refs, inner

    def prepare_get_large(self, s: Sizes) -> Any:
        return self.ray.put(make_array(s.big_bytes))

    def w_get_large(self, s: Sizes, ref: Any) -> None:
        assert self.ray.get(ref, timeout=600).nbytes == s.big_bytes

    # Ray cannot add a raylet to the cluster ray.init() started: off the clock, the driver
    # moves to a two-raylet cluster (ray.cluster_utils) and back to a fresh one-node cluster
    # after, so the workloads after this one and the shutdown figure see what they always do.
    def prepare_transfer_cross_node(self, s: Sizes, warm: bool = False) -> Any:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from .two_nodes import RayTwoNodes
        self.ray.shutdown()
        try:
            nodes = RayTwoNodes(self.ray, _cpus(), RAY_STORE_BYTES, self.temp_dir)
        except BaseException:
            self._init()
            raise
        pinned = self.r_nbytes.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            nodes.node_id, soft=False))
        try:
            assert self.ray.get(pinned.remote(make_array(8)), timeout=600) == 8
            if warm:
                warm_up_transfer(self.ray, pinned, s.xfer_bytes)
            return nodes, pinned, self.ray.put(make_array(s.xfer_bytes))
        except BaseException:
            self.cleanup_transfer_cross_node((nodes, None, None))
            raise

    def w_transfer_cross_node(self, s: Sizes, prepared: Any) -> None:
        _nodes, pinned, ref = prepared
        assert self.ray.get(pinned.remote(ref), timeout=600) == s.xfer_bytes

    def cleanup_transfer_cross_node(self, prepared: Any) -> None:
        prepared[0].stop()
        self._init()

    def prepare_transfer_warm_node(self, s: Sizes) -> Any:
        return self.prepare_transfer_cross_node(s, warm=True)

    w_transfer_warm_node = w_transfer_cross_node
    cleanup_transfer_warm_node = cleanup_transfer_cross_node


class SparkPlain:
    """A ``local[N]`` SparkSession (N = cores), UI off. No actors, ``put`` or ``wait``."""

    def start(self) -> None:
        from pyspark.sql import SparkSession
        self.spark = (SparkSession.builder.master(f"local[{_cpus()}]")
                      .appName("unipar-bench-plain").config("spark.ui.enabled", "false")
                      .config("spark.driver.host", "127.0.0.1")
                      .config("spark.driver.bindAddress", "127.0.0.1")
                      .config("spark.driver.memory", "2g")
                      # The workloads are functions of unipar.bench.workloads, pickled by
                      # name: Spark's workers must import that module from any folder, so
                      # they run this interpreter (PySpark's default is "python3" from PATH)
                      # and see the folder unipar was imported from.
                      .config("spark.pyspark.python",
                              os.environ.get("PYSPARK_PYTHON") or sys.executable)
                      .config("spark.executorEnv.PYTHONPATH", _unipar_root())
                      .getOrCreate())
        self.sc = self.spark.sparkContext
        self.sc.setLogLevel("ERROR")

    def _collect(self, rdd: Any) -> list[Any]:
        """``rdd.collect()``; a failed job raises :class:`SparkJobError` naming its cause."""
        try:
            return rdd.collect()
        except Exception as exc:
            raise SparkJobError(f"a Spark job failed: {_python_cause(exc)}") from exc

    def _one(self, fn: Any, value: Any) -> Any:
        return self._collect(self.sc.parallelize([value], 1).map(fn))[0]

    def first_result(self) -> None:
        assert self._one(noop, 1) == 1

    def shutdown(self) -> None:
        self.spark.stop()

    def w_tutorial_serial(self, s: Sizes) -> None:
        check_sorted([sort_new(s.sort_length, i) for i in range(s.sorts)], s.sorts, s.sort_length)

    def w_tutorial_tasks(self, s: Sizes) -> None:
        rdd = self.sc.parallelize(range(s.sorts), s.sorts)
        check_sorted(self._collect(rdd.map(functools.partial(sort_new, s.sort_length))), s.sorts,
                     s.sort_length)

    def w_tutorial_dependent(self, s: Sizes) -> None:
        rdd = self.sc.parallelize(range(s.sorts), s.sorts)
        lists = rdd.map(lambda seed, n=s.sort_length: random_list(n, seed))
        check_sorted(self._collect(lists.map(bubble_sort)), s.sorts, s.sort_length)

    def w_tasks_sequential(self, s: Sizes) -> None:
        for i in range(s.count(1000)):
            assert self._one(noop, i) == i

    def w_tasks_batch(self, s: Sizes) -> None:
        n = s.count(10000)
        assert self._collect(self.sc.parallelize(range(n)).map(noop)) == list(range(n))

    def w_array_to_task(self, s: Sizes, array: Any) -> None:
        shared = self.sc.broadcast(array)
        assert self._one(lambda _: shared.value.nbytes, 0) == array.nbytes
        shared.destroy()


PLAIN_SUITES: dict[str, tuple[type, str]] = {
    # name -> (suite, the module that must import for it to run)
    "dask-plain": (DaskPlain, "distributed"),
    "ray-plain": (RayPlain, "ray"),
    "spark-plain": (SparkPlain, "pyspark"),
}
