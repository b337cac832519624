"""The tutorial in docs/examples runs on every backend (smaller lists, to keep CI quick)."""

from __future__ import annotations

import sys
from pathlib import Path

import cloudpickle
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "docs" / "examples"))
import tutorial  # noqa: E402

cloudpickle.register_pickle_by_value(tutorial)  # workers need not import docs/examples


def test_tutorial_remote_functions(unipar_backend, capsys):
    tutorial.remote_functions(lists=6, length=300)
    assert "results agree" in capsys.readouterr().out


def test_tutorial_dependent_tasks(unipar_backend):
    tutorial.dependent_tasks(lists=6, length=300)


def test_tutorial_actors(unipar_backend):
    tutorial.actors(rounds=8, length=200, spread=3)


@pytest.mark.timeout(300)   # the tree's own timeouts (90 s inside, 120 s outside) come first
def test_tutorial_actor_tree(unipar_backend):
    assert tutorial.actor_tree() == ["done", "done", "done"]
    # The tree gave its 4 CPUs back: a task that needs all of them can run.
    @tutorial.unipar.remote(num_cpus=4)
    def needs_all():
        return "ran"
    assert tutorial.unipar.get(needs_all.remote(), timeout=120) == "ran"

