"""Randomized differential testing: generated programs on each backend against ``local``.

Each test draws programs with one more group of features (dt_gen.Features), so a backend's
documented limit (tests/conformance/limits.py) can name the group it cannot do. The budget is
fixed and the seed derandomized, so the normal suite takes minutes and is repeatable;
``make fuzz`` runs :func:`test_fuzz` for as long as ``FUZZ_MINUTES`` says, on fresh seeds.

Environment: ``UNIPAR_FUZZ_SEED`` (default 1), ``UNIPAR_FUZZ_EXAMPLES`` (per test, default
10), ``UNIPAR_FUZZ_MINUTES`` (test_fuzz only; unset: skipped), ``UNIPAR_FUZZ_TIMEOUT`` (every
get in a program, default 15 s).
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings

from dt_gen import Features, programs
from dt_harness import check

SEED = int(os.environ.get("UNIPAR_FUZZ_SEED", "1"))
EXAMPLES = int(os.environ.get("UNIPAR_FUZZ_EXAMPLES", "10"))

pytestmark = pytest.mark.timeout(1800)   # a failure shrinks: many programs, some that hang


def differential(backend: str, init_kwargs: dict[str, Any], features: Features, examples: int,
                 run_seed: int, how: str) -> None:
    """Run ``examples`` programs (drawn with ``run_seed``) on ``backend`` against local; on a
    difference, shrink to a minimal program and fail with it printed."""
    origin = f"seed {run_seed}, backend {backend}; again: {how}"

    @seed(run_seed)
    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              print_blob=False, report_multiple_bugs=False,
              phases=[Phase.explicit, Phase.generate, Phase.shrink],
              suppress_health_check=list(HealthCheck))
    @given(programs(features))
    def same_as_local(program: Any) -> None:
        check(program, backend, origin, init_kwargs)

    same_as_local()


def _again(test: str) -> str:
    return (f"UNIPAR_FUZZ_SEED={SEED} UNIPAR_FUZZ_EXAMPLES={EXAMPLES} .venv/bin/pytest "
            f"'tests/differential/test_differential.py::{test}' --unipar-backends=<backend>")


def test_differential_tasks(unipar_backend: str, unipar_init_kwargs: dict[str, Any]) -> None:
    """Tasks, put, refs at top level and nested, inline tasks, drop, fetch, wait, errors."""
    differential(unipar_backend, unipar_init_kwargs, Features(), EXAMPLES, SEED,
                 _again("test_differential_tasks"))


def test_differential_actors(unipar_backend: str, unipar_init_kwargs: dict[str, Any]) -> None:
    """... and actors: sync, threaded, async, named, handles passed to tasks and actors."""
    differential(unipar_backend, unipar_init_kwargs, Features(actors=True), EXAMPLES, SEED,
                 _again("test_differential_actors"))


def test_differential_cancel(unipar_backend: str, unipar_init_kwargs: dict[str, Any]) -> None:
    """... and cancellations (their targets and dependents compared loosely, see dt_interp)."""
    differential(unipar_backend, unipar_init_kwargs, Features(actors=True, cancel=True),
                 EXAMPLES, SEED, _again("test_differential_cancel"))


@pytest.mark.skipif("UNIPAR_FUZZ_MINUTES" not in os.environ,
                    reason="long fuzzing: make fuzz (UNIPAR_FUZZ_MINUTES)")
@pytest.mark.timeout(0)   # bounded by FUZZ_MINUTES (the module's 1800 s cut 30-minute runs)
def test_fuzz(unipar_backend: str, unipar_init_kwargs: dict[str, Any]) -> None:
    """Batches of bigger programs with every feature, a fresh seed per batch, until the time
    is up (one batch at least; ``UNIPAR_FUZZ_SEED`` fixes the first batch's seed)."""
    minutes = float(os.environ["UNIPAR_FUZZ_MINUTES"])
    batch = int(os.environ.get("UNIPAR_FUZZ_EXAMPLES", "50"))
    features = Features(actors=True, cancel=True, max_steps=20)
    first = os.environ.get("UNIPAR_FUZZ_SEED")
    end = time.monotonic() + minutes * 60
    next_seed = int(first) if first else random.randrange(1 << 32)
    while True:
        how = (f"make fuzz BACKEND={unipar_backend} FUZZ_SEED={next_seed} FUZZ_MINUTES=0 "
               f"FUZZ_EXAMPLES={batch}")
        differential(unipar_backend, unipar_init_kwargs, features, batch, next_seed, how)
        if time.monotonic() >= end:
            return
        next_seed = random.randrange(1 << 32)
