"""R1: many tasks while workers are SIGKILLed at random.

With retries every result is right and none is lost; with ``max_retries=0`` exactly the tasks
whose worker was killed fail, with WorkerCrashedError. Nothing the driver started outlives it.
"""

from __future__ import annotations

import pytest

from faults import run_driver

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]

WITH_RETRIES = """
import unipar
n, kills, seed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
pids_dir = sys.argv[4]
unipar.init(num_cpus=2)

@unipar.remote(max_retries=-1)
def task(i):
    open(os.path.join(pids_dir, str(os.getpid())), "w").close()
    time.sleep(0.002)
    return i * i

done = threading.Event()
killed = []
def killer():
    while len(killed) < kills and not done.is_set():
        time.sleep(rng.uniform(0.01, 0.08))
        pids = sorted(int(p) for p in os.listdir(pids_dir))
        live = [p for p in pids if psutil.pid_exists(p) and p not in killed]
        if live:
            victim = rng.choice(live)
            try:
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)
            except ProcessLookupError:
                pass
began = time.monotonic()
thread = threading.Thread(target=killer)
thread.start()
rounds, results = 0, []
while len(killed) < kills or rounds == 0:   # keep work flowing until every kill landed
    results += unipar.get([task.remote(i) for i in range(n)], timeout=300)
    rounds += 1
done.set()
thread.join()
wrong = sum(1 for k, v in enumerate(results) if v != (k % n) ** 2)
session = session_dir()
unipar.shutdown()
print(json.dumps({"tasks": len(results), "kills": len(killed), "wrong": wrong,
                  "lost": rounds * n - len(results), "seconds": round(time.monotonic() - began, 2),
                  "session_dir": session}))
"""

NO_RETRIES = """
import unipar
from unipar.exceptions import WorkerCrashedError
n, kills, seed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
marks = sys.argv[4]
unipar.init(num_cpus=2)

@unipar.remote(max_retries=0)
def task(i):
    open(os.path.join(marks, f"{i}-{os.getpid()}"), "w").close()
    time.sleep(0.05)
    return i

victims = set(rng.sample(range(n), kills))
refs = [task.remote(i) for i in range(n)]
killed = set()
deadline = time.monotonic() + 300
while len(killed) < len(victims) and time.monotonic() < deadline:
    for name in os.listdir(marks):
        i, pid = map(int, name.split("-"))
        if i in victims and i not in killed:
            os.kill(pid, signal.SIGKILL)   # while it sleeps in task i
            killed.add(i)
    time.sleep(0.005)
failed, wrong = set(), 0
for i, ref in enumerate(refs):
    try:
        wrong += unipar.get(ref, timeout=300) != i
    except WorkerCrashedError:
        failed.add(i)
session = session_dir()
unipar.shutdown()
print(json.dumps({"tasks": n, "kills": len(killed), "failed": sorted(failed),
                  "killed": sorted(killed), "wrong": wrong, "session_dir": session}))
"""


def test_worker_kills_lose_nothing_with_retries(chaos, tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    n, kills = chaos.scaled(2000), max(30, chaos.scaled(30))
    figures = run_driver(WITH_RETRIES, str(n), str(kills), str(chaos.seed), str(pids))
    chaos.record(**{k: v for k, v in figures.items() if k != "session_dir"})
    assert figures["kills"] >= 30
    assert figures["wrong"] == 0 and figures["lost"] == 0


def test_without_retries_exactly_the_killed_tasks_fail(chaos, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    n, kills = chaos.scaled(200), chaos.scaled(30)
    figures = run_driver(NO_RETRIES, str(n), str(kills), str(chaos.seed), str(marks))
    chaos.record(tasks=figures["tasks"], kills=figures["kills"], wrong=figures["wrong"],
                 failed=len(figures["failed"]))
    assert figures["kills"] == kills
    assert figures["failed"] == figures["killed"]
    assert figures["wrong"] == 0
