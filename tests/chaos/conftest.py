"""Faults as tests: seeded fault plans, figures reported per test.

Every test here is marked ``chaos`` (it runs by default, and alone with ``pytest -m chaos``);
long runs are marked ``soak`` instead (excluded by default: ``pytest -m soak``). Each test draws
its faults from ``random.Random(seed)``; the seed is printed, and ``UNIPAR_CHAOS_SEED=N``
replays it. ``UNIPAR_CHAOS_SCALE=5`` multiplies the amounts of work (CI runs scale 1).

Figures (kills, lost, duplicated, seconds) are printed and appended as one JSON line per test
to ``chaos.jsonl`` under pytest's base temp dir.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import pytest

# The multi-node cluster helpers live with the native tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "native"))


class Chaos:
    """One test's fault plan and figures."""

    def __init__(self, name: str, out: Path) -> None:
        self.name = name
        self.out = out
        given = os.environ.get("UNIPAR_CHAOS_SEED")
        self.seed = int(given) if given else random.SystemRandom().randrange(1 << 32)
        self.rng = random.Random(self.seed)
        self.scale = float(os.environ.get("UNIPAR_CHAOS_SCALE", "1"))
        self.began = time.monotonic()
        self.figures: dict[str, Any] = {}
        print(f"[chaos] {name}: seed {self.seed} (replay: UNIPAR_CHAOS_SEED={self.seed})")

    def scaled(self, n: int) -> int:
        return max(1, int(n * self.scale))

    def record(self, **figures: Any) -> None:
        self.figures.update(figures)

    def report(self) -> dict[str, Any]:
        line = {"test": self.name, "seed": self.seed, "scale": self.scale,
                "seconds": round(time.monotonic() - self.began, 2), **self.figures}
        print(f"[chaos] figures: {json.dumps(line)}")
        with open(self.out, "a") as f:
            f.write(json.dumps(line) + "\n")
        return line


@pytest.fixture
def chaos(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    plan = Chaos(request.node.name, tmp_path_factory.getbasetemp() / "chaos.jsonl")
    try:
        yield plan
    finally:
        plan.report()
