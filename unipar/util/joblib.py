"""A joblib backend that runs ``Parallel`` batches as unipar tasks, so scikit-learn's
``n_jobs`` and any joblib code use the cluster::

    from unipar.util.joblib import register_unipar
    register_unipar()
    with joblib.parallel_backend("unipar"):
        cross_val_score(model, X, y, cv=5, n_jobs=4)

Each batch joblib dispatches becomes one task (through :class:`~unipar.util.UniparExecutor`,
bounded to ``n_jobs`` at once); joblib's auto-batching sizes the batches. Needs ``joblib``
(``pip install joblib``).
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Callable

import joblib
from joblib._parallel_backends import (AutoBatchingMixin, FallbackToBackend,
                                       ParallelBackendBase, SequentialBackend)

import unipar

from .executor import UniparExecutor

__all__ = ["register_unipar", "UniparBackend"]


class UniparBackend(AutoBatchingMixin, ParallelBackendBase):
    """joblib's ``ParallelBackendBase`` over unipar tasks.

    Args:
        task_options: options for every task (``num_cpus``, ``max_retries``, ...).

    ``n_jobs=-1`` means all the cluster's CPUs; ``n_jobs=1`` runs in this process, as joblib's
    own process backends do.
    """

    supports_retrieve_callback = True
    supports_sharedmem = False
    uses_threads = False

    def __init__(self, nesting_level: int | None = None, inner_max_num_threads: int | None = None,
                 task_options: dict[str, Any] | None = None, **backend_kwargs: Any) -> None:
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads,
                         **backend_kwargs)
        self._task_options = dict(task_options or {})
        self._executor: UniparExecutor | None = None

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """The number of batches run at once: ``n_jobs``, counting negatives from the CPUs."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            cpus = int(unipar.cluster_resources().get("CPU", 1))
            return max(cpus + 1 + n_jobs, 1)
        return n_jobs

    def configure(self, n_jobs: int | None = 1, parallel: Any = None, prefer: str | None = None,
                  require: str | None = None, **backend_kwargs: Any) -> int:
        """Start an executor for one ``Parallel`` call; returns the number of jobs."""
        n_jobs = self.effective_n_jobs(n_jobs)
        if n_jobs == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        self.parallel = parallel
        # max_workers: joblib's callbacks submit the next batch from the thread that finished
        # the last one; with a bound, submit() only queues, so no task starts on that thread.
        self._executor = UniparExecutor(max_workers=n_jobs, **self._task_options)
        return n_jobs

    def submit(self, func: Callable[[], Any],
               callback: Callable[[Any], Any] | None = None) -> concurrent.futures.Future:
        """Run one batch as a task; ``callback(future)`` runs when it is done."""
        if self._executor is None:
            raise RuntimeError("the unipar joblib backend was used before configure()")
        future = self._executor.submit(func)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, future: concurrent.futures.Future) -> Any:
        return future.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Cancel the batches still running (a batch raised); restart if asked to."""
        self._stop(cancel=True)
        if ensure_ready:
            self.configure(n_jobs=self.parallel.n_jobs, parallel=self.parallel,
                           **self.parallel._backend_kwargs)

    def terminate(self) -> None:
        """The end of one ``Parallel`` call: every batch is fetched, so nothing is waited for."""
        self._stop(cancel=False)
        self.reset_batch_stats()

    def _stop(self, cancel: bool) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=cancel)


def register_unipar() -> None:
    """Make ``"unipar"`` a joblib backend name (``joblib.parallel_backend("unipar")``).

    Safe to call more than once.
    """
    joblib.register_parallel_backend("unipar", UniparBackend)
