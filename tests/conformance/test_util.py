"""unipar.util on every backend: ActorPool, Queue, multiprocessing Pool, UniparExecutor, joblib.

Calls that must stay unfinished for a while wait on a Queue "gate" that the test opens, never
on a sleep, so nothing here depends on timing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import queue

import pytest

import unipar
from unipar.testing import wait_for
from unipar.util import ActorPool, UniparExecutor
from unipar.util.multiprocessing import Pool
from unipar.util.queue import Queue

GATE_S = 60  # how long a gated call waits at most; the tests open the gate long before


@unipar.remote
class Doubler:
    def double(self, x):
        return 2 * x

    def gated(self, gate, x):
        gate.get(timeout=GATE_S)
        return x


def square(x):
    return x * x


def gated(gate, value):
    gate.get(timeout=GATE_S)
    return value


def take_one(gate):
    return gate.get(timeout=GATE_S)


def fail(x):
    raise ValueError(f"bad {x}")


# -- ActorPool ----------------------------------------------------------------------------------

def test_actor_pool_map_and_map_unordered(unipar_backend):
    pool = ActorPool([Doubler.remote(), Doubler.remote()])
    assert list(pool.map(lambda a, v: a.double.remote(v), range(6))) == [0, 2, 4, 6, 8, 10]
    assert sorted(pool.map_unordered(lambda a, v: a.double.remote(v), range(6))) == [0, 2, 4, 6, 8, 10]


def test_actor_pool_submit_get_next_push_pop(unipar_backend):
    first, second = Doubler.remote(), Doubler.remote()
    pool = ActorPool([first])
    for v in range(3):  # more values than actors: two wait for the actor
        pool.submit(lambda a, v: a.double.remote(v), v)
    assert not pool.has_free()
    assert [pool.get_next(timeout=GATE_S) for _ in range(3)] == [0, 2, 4]
    assert not pool.has_next()
    with pytest.raises(StopIteration):
        pool.get_next()
    pool.push(second)
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(second)
    assert pool.has_free()
    pool.submit(lambda a, v: a.double.remote(v), 10)
    assert pool.get_next_unordered(timeout=GATE_S) == 20
    popped = [pool.pop_idle(), pool.pop_idle()]
    assert sorted(popped, key=repr) == sorted([first, second], key=repr)
    assert pool.pop_idle() is None and not pool.has_free()


def test_actor_pool_errors(unipar_backend):
    with pytest.raises(ValueError):
        ActorPool([])
    pool = ActorPool([Doubler.remote()])
    pool.submit(lambda a, v: a.double.remote(v), "x")
    pool.submit(lambda a, v: a.gated.remote(None, v), 1)  # None has no .get: the call raises
    assert pool.get_next() == "xx"
    with pytest.raises(AttributeError):
        pool.get_next()


def test_actor_pool_get_next_timeout(unipar_backend):
    gate = Queue()
    pool = ActorPool([Doubler.remote()])
    pool.submit(lambda a, v: a.gated.remote(gate, v), "done")
    with pytest.raises(TimeoutError):
        pool.get_next(timeout=0.05)
    with pytest.raises(TimeoutError):
        pool.get_next_unordered(timeout=0.05)
    gate.put("open")
    assert pool.get_next(timeout=GATE_S) == "done"
    gate.shutdown()


# -- Queue --------------------------------------------------------------------------------------

def test_queue_fifo_bounds_and_batches(unipar_backend):
    q = Queue(maxsize=3)
    assert q.empty() and not q.full() and q.qsize() == 0
    for item in ("a", "b", "c"):
        q.put(item)
    assert q.full() and q.qsize() == len(q) == 3
    with pytest.raises(queue.Full):
        q.put_nowait("d")
    with pytest.raises(queue.Full):
        q.put("d", timeout=0.01)
    with pytest.raises(queue.Full):
        q.put_nowait_batch(["d"])
    assert [q.get(), q.get_nowait()] == ["a", "b"]
    q.put_nowait_batch(["d", "e"])
    assert q.get_nowait_batch(3) == ["c", "d", "e"]
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)
    with pytest.raises(queue.Empty):
        q.get_nowait_batch(1)
    with pytest.raises(ValueError):
        q.get(timeout=-1)
    q.shutdown()
    q.shutdown()  # twice is fine
    with pytest.raises(RuntimeError, match="shut down"):
        q.put(1)


@unipar.remote
def produce(q, items):
    for item in items:
        q.put(item, timeout=GATE_S)
    return len(items)


@unipar.remote
class Consumer:
    def take(self, q, n):
        return [q.get(timeout=GATE_S) for _ in range(n)]


def test_queue_shared_by_tasks_and_actors(unipar_backend):
    q = Queue()
    assert unipar.get(produce.remote(q, [1, 2, 3]), timeout=GATE_S) == 3
    assert unipar.get(Consumer.remote().take.remote(q, 2), timeout=GATE_S) == [1, 2]
    assert q.get(timeout=GATE_S) == 3
    q.shutdown()


def test_queue_async_variants(unipar_backend):
    q = Queue(maxsize=1)

    async def scenario():
        await q.put_async("x")
        with pytest.raises(queue.Full):
            await q.put_async("y", block=False)
        assert await q.get_async(timeout=GATE_S) == "x"
        with pytest.raises(queue.Empty):
            await q.get_async(timeout=0.01)
    asyncio.run(scenario())
    q.shutdown()


def test_queue_blocking_get_waits_for_a_later_put(unipar_backend):
    q = Queue(maxsize=1)
    taken = Consumer.remote().take.remote(q, 3)  # blocks in the queue until items come
    for item in ("a", "b", "c"):  # maxsize=1: each put waits for the consumer's get
        q.put(item, timeout=GATE_S)
    assert unipar.get(taken, timeout=GATE_S) == ["a", "b", "c"]
    q.shutdown()


# -- multiprocessing.Pool -----------------------------------------------------------------------

def test_pool_stdlib_examples(unipar_backend):
    # The examples of the standard library's multiprocessing docs ("Using a pool of workers").
    with Pool(processes=4) as pool:
        assert pool.map(square, range(10)) == [x * x for x in range(10)]
        assert sorted(pool.imap_unordered(square, range(10))) == [x * x for x in range(10)]
        assert list(pool.imap(square, range(10), chunksize=3)) == [x * x for x in range(10)]
        assert pool.apply_async(square, (20,)).get(timeout=GATE_S) == 400
        pids = [pool.apply_async(os.getpid, ()) for _ in range(4)]
        assert all(isinstance(r.get(timeout=GATE_S), int) for r in pids)
        assert pool.starmap(pow, [(2, 3), (3, 2)]) == [8, 9]
        assert pool.apply(divmod, (7, 2)) == (3, 1)


def test_pool_async_results_and_callbacks(unipar_backend):
    got, errors = [], []
    with Pool(2) as pool:
        result = pool.map_async(square, [1, 2, 3], callback=got.append)
        assert result.get(timeout=GATE_S) == [1, 4, 9]
        result.wait(timeout=GATE_S)
        assert result.ready() and result.successful()
        failed = pool.apply_async(fail, (1,), error_callback=errors.append)
        failed.wait(timeout=GATE_S)
        assert not failed.successful()
        with pytest.raises(ValueError, match="bad 1"):
            failed.get(timeout=GATE_S)
        star = pool.starmap_async(pow, [(2, 2)], callback=got.append)
        assert star.get(timeout=GATE_S) == [4]
        wait_for(lambda: len(got) == 2 and len(errors) == 1, timeout=GATE_S, message="callbacks")
    assert got == [[1, 4, 9], [4]] or got == [[4], [1, 4, 9]]
    assert isinstance(errors[0], ValueError)


initialized_with = None


def remember(value):
    global initialized_with
    initialized_with = value


def read_initialized(_):
    return initialized_with


def test_pool_initializer_runs_in_each_worker(unipar_backend):
    with Pool(2, initializer=remember, initargs=("ready",)) as pool:
        assert pool.map(read_initialized, range(4), chunksize=1) == ["ready"] * 4


def test_pool_errors_and_lifecycle(unipar_backend):
    with pytest.raises(ValueError):
        Pool(0)
    with pytest.raises(TypeError):
        Pool(1, initializer=3)
    pool = Pool(1, maxtasksperchild=2)
    with pytest.raises(ValueError, match="bad"):
        pool.map(fail, [1, 2])
    with pytest.raises(ValueError, match="Chunksize"):
        pool.imap(square, [1], chunksize=0)
    assert pool.map(square, range(4), chunksize=1) == [0, 1, 4, 9]  # the worker was replaced
    with pytest.raises(ValueError, match="still running"):
        pool.join()
    pending = pool.map_async(square, [5])
    pool.close()
    with pytest.raises(ValueError, match="Pool not running"):
        pool.map(square, [1])
    with pytest.raises(ValueError, match="Pool not running"):
        pool.apply_async(square, (1,))
    pool.join(timeout=GATE_S)
    assert pending.get(timeout=GATE_S) == [25]
    pool.terminate()  # after join: harmless


def test_pool_get_timeout(unipar_backend):
    gate = Queue()
    with Pool(2) as pool:
        blocked = pool.apply_async(gated, (gate, "late"))
        with pytest.raises(multiprocessing.TimeoutError):
            blocked.get(timeout=0.05)
        assert not blocked.ready()
        with pytest.raises(ValueError, match="not ready"):
            blocked.successful()
        items = pool.imap(take_one, [gate], chunksize=1)
        with pytest.raises(multiprocessing.TimeoutError):
            items.next(timeout=0.05)
        gate.put_nowait_batch(["open", "open"])
        assert blocked.get(timeout=GATE_S) == "late"
        assert items.next(timeout=GATE_S) == "open"
    gate.shutdown()


# -- UniparExecutor -----------------------------------------------------------------------------

def test_executor_futures_work_with_as_completed_and_wait(unipar_backend):
    with UniparExecutor() as executor:
        futures = [executor.submit(square, i) for i in range(5)]
        done = concurrent.futures.as_completed(futures, timeout=GATE_S)
        assert sorted(f.result() for f in done) == [0, 1, 4, 9, 16]
        failing = executor.submit(fail, 2)
        done, not_done = concurrent.futures.wait([failing], timeout=GATE_S)
        assert failing in done and not not_done
        assert isinstance(failing.exception(), ValueError)
        assert list(executor.map(square, range(4), timeout=GATE_S)) == [0, 1, 4, 9]
        assert executor.submit(lambda x, y=1: x + y, 1, y=2).result(timeout=GATE_S) == 3
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(square, 1)
    executor.shutdown()  # twice is fine


def test_executor_max_workers_bounds_and_queues(unipar_backend):
    with pytest.raises(ValueError):
        UniparExecutor(max_workers=0)
    with UniparExecutor(max_workers=2) as executor:
        assert list(executor.map(square, range(8), timeout=GATE_S)) == [x * x for x in range(8)]


def test_executor_timeout_and_cancel(unipar_backend):
    gate = Queue()
    executor = UniparExecutor(max_workers=1)
    blocked = executor.submit(gated, gate, "first")
    queued = executor.submit(square, 3)  # waits behind the blocked one (max_workers=1)
    with pytest.raises(TimeoutError):
        list(executor.map(square, [1], timeout=0.05))
    with pytest.raises(concurrent.futures.TimeoutError):
        blocked.result(timeout=0.05)
    assert queued.cancel() and queued.cancelled()
    assert queued in concurrent.futures.wait([queued], timeout=GATE_S).done
    assert queued.cancel()  # twice is fine
    gate.put("open")
    assert blocked.result(timeout=GATE_S) == "first"
    stuck = executor.submit(gated, gate, "never")
    executor.shutdown(wait=True, cancel_futures=True)
    assert stuck.cancelled()
    gate.shutdown()


# -- joblib -------------------------------------------------------------------------------------

@pytest.fixture
def unipar_joblib(unipar_backend):
    pytest.importorskip("joblib")
    from unipar.util.joblib import register_unipar
    register_unipar()
    return unipar_backend


def test_joblib_parallel_delayed(unipar_joblib):
    from math import sqrt

    import joblib
    with joblib.parallel_backend("unipar"):
        assert joblib.Parallel(n_jobs=2)(joblib.delayed(sqrt)(i ** 2) for i in range(10)) == \
            [float(i) for i in range(10)]
    with joblib.parallel_config(backend="unipar", n_jobs=2):
        assert joblib.Parallel()(joblib.delayed(square)(i) for i in range(20)) == \
            [i * i for i in range(20)]
        with pytest.raises(ValueError, match="bad"):
            joblib.Parallel()(joblib.delayed(fail)(i) for i in range(4))


def test_joblib_scikit_learn_cross_val_score(unipar_joblib):
    datasets = pytest.importorskip("sklearn.datasets")
    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    X, y = datasets.make_classification(n_samples=80, n_features=6, random_state=0)
    model = LogisticRegression(max_iter=200)
    expected = cross_val_score(model, X, y, cv=4, n_jobs=1)
    with joblib.parallel_backend("unipar"):
        scores = cross_val_score(model, X, y, cv=4, n_jobs=2)
    assert list(scores) == list(expected)
