"""R3: an actor killed again and again during many calls.

With ``max_restarts=-1, max_task_retries=-1`` every call is answered and calls run again at
most once per kill for each call in flight (each execution appends its call id to a ledger
file, so re-executions are counted, not inferred); with the defaults a call to the killed actor raises
ActorDiedError (how long it took is reported, not asserted).
"""

from __future__ import annotations

import pytest

from faults import run_driver

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]

RESTARTED = """
import unipar
n, kills, seed, ledger = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rng = random.Random(seed)
unipar.init(num_cpus=2)

@unipar.remote(max_restarts=-1, max_task_retries=-1)
class Echo:
    def __init__(self):
        self.runs = 0
        with open(ledger + ".pid.tmp", "w") as f:    # the driver kills whoever wrote last
            f.write(str(os.getpid()))
        os.replace(ledger + ".pid.tmp", ledger + ".pid")
    def echo(self, i):
        self.runs += 1
        # One line per execution (O_APPEND: lines from a killed and a new process never mix).
        fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, b"%d\\n" % i)
        os.close(fd)
        time.sleep(0.001)
        return i, os.getpid()

actor = Echo.remote()
in_flight = 20
refs, answers, pids_seen, kills_done, last_killed = [], {}, set(), 0, 0
unipar.get(actor.echo.remote(-1), timeout=120)       # constructed: the pid file is there
kill_at = sorted(rng.sample(range(in_flight, n), kills))
began = time.monotonic()
for i in range(n):
    refs.append((i, actor.echo.remote(i)))
    if kill_at and i == kill_at[0]:
        kill_at.pop(0)
        # Kill the live process while calls are in flight (asking it for its pid would wait
        # behind them): the one that wrote the pid file, once it is not the one killed last.
        deadline = time.monotonic() + 120
        while True:
            with open(ledger + ".pid") as f:
                pid = int(f.read())
            if pid != last_killed or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        os.kill(pid, signal.SIGKILL)
        last_killed = pid
        kills_done += 1
    if len(refs) >= in_flight:
        j, ref = refs.pop(0)
        answers[j] = unipar.get(ref, timeout=120)
for j, ref in refs:
    answers[j] = unipar.get(ref, timeout=120)
wrong = sum(1 for j, (k, _pid) in answers.items() if j != k)
pids_seen = {pid for _k, pid in answers.values()}
with open(ledger) as f:
    runs = [int(x) for x in f.read().split() if int(x) >= 0]
session = session_dir()
unipar.shutdown()
print(json.dumps({"calls": n, "answered": len(answers), "wrong": wrong, "kills": kills_done,
                  "actor_processes": len(pids_seen), "in_flight": in_flight,
                  "executions": len(runs), "re_executions": len(runs) - len(set(runs)),
                  "never_ran": n - len(set(runs)),
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


def test_an_actor_restarted_without_limit_answers_every_call(chaos, tmp_path):
    n, kills = chaos.scaled(2000), 20
    ledger = str(tmp_path / "executions")
    figures = run_driver(RESTARTED, str(n), str(kills), str(chaos.seed), ledger)
    chaos.record(**{k: v for k, v in figures.items() if k != "session_dir"})
    assert figures["kills"] == kills
    assert figures["answered"] == n and figures["wrong"] == 0
    assert figures["actor_processes"] <= kills + 1
    # Each kill re-runs at most the calls in flight then (the driver keeps 20 outstanding).
    assert figures["never_ran"] == 0
    assert figures["re_executions"] <= kills * figures["in_flight"]


def test_an_actor_with_defaults_dies_with_actor_died_error(chaos):
    figures = run_driver(DEFAULTS)
    chaos.record(**{k: v for k, v in figures.items() if k != "session_dir"})
    assert figures["outcome"] == "ActorDiedError"
    assert figures["later_call"] == "ActorDiedError"
