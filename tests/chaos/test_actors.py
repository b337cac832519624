"""R3: an actor killed again and again during many calls.

With ``max_restarts=-1, max_task_retries=-1`` every call is answered and calls run again at
most once per kill for each call in flight; with the defaults a call to the killed actor raises
ActorDiedError (how long it took is reported, not asserted).
"""

from __future__ import annotations

import pytest

from faults import run_driver

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]

RESTARTED = """
import unipar
n, kills, seed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
unipar.init(num_cpus=2)

@unipar.remote(max_restarts=-1, max_task_retries=-1)
class Echo:
    def __init__(self):
        self.runs = 0
    def pid(self):
        return os.getpid()
    def echo(self, i):
        self.runs += 1
        time.sleep(0.001)
        return i, os.getpid()

actor = Echo.remote()
in_flight = 20
refs, answers, pids_seen, kills_done = [], {}, set(), 0
kill_at = sorted(rng.sample(range(in_flight, n), kills))
began = time.monotonic()
for i in range(n):
    refs.append((i, actor.echo.remote(i)))
    if kill_at and i == kill_at[0]:
        kill_at.pop(0)
        pid = unipar.get(actor.pid.remote(), timeout=120)
        os.kill(pid, signal.SIGKILL)
        kills_done += 1
    if len(refs) >= in_flight:
        j, ref = refs.pop(0)
        answers[j] = unipar.get(ref, timeout=120)
for j, ref in refs:
    answers[j] = unipar.get(ref, timeout=120)
wrong = sum(1 for j, (k, _pid) in answers.items() if j != k)
pids_seen = {pid for _k, pid in answers.values()}
session = session_dir()
unipar.shutdown()
print(json.dumps({"calls": n, "answered": len(answers), "wrong": wrong, "kills": kills_done,
                  "actor_processes": len(pids_seen), "in_flight": in_flight,
                  "seconds": round(time.monotonic() - began, 2), "session_dir": session}))
"""

DEFAULTS = """
import unipar
from unipar.exceptions import ActorDiedError
unipar.init(num_cpus=2)

@unipar.remote
class Echo:
    def pid(self):
        return os.getpid()
    def slow(self):
        time.sleep(30)

actor = Echo.remote()
pid = unipar.get(actor.pid.remote(), timeout=120)
pending = actor.slow.remote()
os.kill(pid, signal.SIGKILL)
began = time.monotonic()
outcome = "answered"
try:
    unipar.get(pending, timeout=60)
except ActorDiedError:
    outcome = "ActorDiedError"
waited = time.monotonic() - began
try:
    unipar.get(actor.pid.remote(), timeout=60)
    later = "answered"
except ActorDiedError:
    later = "ActorDiedError"
session = session_dir()
unipar.shutdown()
print(json.dumps({"outcome": outcome, "later_call": later, "died_after_s": round(waited, 3),
                  "session_dir": session}))
"""


def test_an_actor_restarted_without_limit_answers_every_call(chaos):
    n, kills = chaos.scaled(2000), 20
    figures = run_driver(RESTARTED, str(n), str(kills), str(chaos.seed))
    chaos.record(**{k: v for k, v in figures.items() if k != "session_dir"})
    assert figures["kills"] == kills
    assert figures["answered"] == n and figures["wrong"] == 0
    assert figures["actor_processes"] <= kills + 1


def test_an_actor_with_defaults_dies_with_actor_died_error(chaos):
    figures = run_driver(DEFAULTS)
    chaos.record(**{k: v for k, v in figures.items() if k != "session_dir"})
    assert figures["outcome"] == "ActorDiedError"
    assert figures["later_call"] == "ActorDiedError"
