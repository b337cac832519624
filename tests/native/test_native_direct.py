"""The direct path: tasks pushed to leased workers, actor calls pushed to the actor's process,
small objects that stay with their owner until a ref to them leaves the process.

Each test runs a driver script in a subprocess (its own one-machine cluster), as
test_native_cluster.py does, and checks what a user would: values, errors, order, resources.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def _run(code: str, timeout: float = 90) -> str:
    env = {**os.environ, "UNIPAR_BACKEND": "native"}
    env.pop("UNIPAR_ADDRESS", None)
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_refs_leaving_the_process_are_handed_to_the_node_first():
    out = _run("""
        import numpy as np, unipar
        unipar.init(num_cpus=2)

        @unipar.remote
        def one():
            return 1

        @unipar.remote
        def total(refs):            # refs nested in the argument: fetched from the node
            return sum(unipar.get(refs))

        @unipar.remote
        def size(array, small):     # a big argument: the task goes through the node
            return int(array.size) + small

        @unipar.remote
        class Summer:
            def add(self, refs):
                return sum(unipar.get(refs))

        small = unipar.put(2)                         # stays in this process for now
        direct = one.remote()                         # its result too
        print("nested", unipar.get(total.remote([small, direct]), timeout=60))
        print("big", unipar.get(size.remote(np.zeros(300_000), direct), timeout=60))
        holder = unipar.put({"inner": [small, direct]})  # refs inside a put value
        print("inside put", unipar.get(total.remote(unipar.get(holder)["inner"]), timeout=60))
        s = Summer.remote()                           # called before it is even placed
        print("actor", unipar.get(s.add.remote([one.remote(), small]), timeout=60))
        unipar.shutdown()
    """)
    assert "nested 3" in out and "big 300001" in out and "inside put 3" in out
    assert "actor 3" in out


def test_each_callers_actor_calls_keep_their_order_and_failed_args_fail_the_call():
    out = _run("""
        import unipar
        unipar.init(num_cpus=2)

        @unipar.remote
        class Log:
            def __init__(self):
                self.seen = []
            def add(self, x):
                self.seen.append(x)
                return len(self.seen)
            def seen_all(self):
                return self.seen

        @unipar.remote
        def slow(x):
            import time
            time.sleep(0.3)
            return x

        @unipar.remote
        def boom():
            raise ValueError("bad argument")

        log = Log.remote()
        refs = [log.add.remote(slow.remote(0))] + [log.add.remote(i) for i in range(1, 200)]
        unipar.get(refs, timeout=60)
        print("order", unipar.get(log.seen_all.remote(), timeout=60) == list(range(200)))
        try:
            unipar.get(log.add.remote(boom.remote()), timeout=60)
        except ValueError as exc:
            print("failed arg", exc)
        print("after", unipar.get(log.add.remote(7), timeout=60))
        unipar.shutdown()
    """)
    assert "order True" in out and "after 201" in out
    assert "failed arg ValueError: bad argument" in out


def test_a_crash_or_forced_cancel_on_a_lease_loses_no_other_task(tmp_path):
    out = _run("""
        import os, unipar
        unipar.init(num_cpus=2)

        @unipar.remote(max_retries=2)
        def square(x):
            return x * x

        @unipar.remote(max_retries=1)
        def crash_once(marker):
            if not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)
            return "second try"

        @unipar.remote
        def forever():
            import time
            time.sleep(1000)

        refs = [square.remote(i) for i in range(2000)]     # many ride each lease
        print("all", unipar.get(refs, timeout=60) == [i * i for i in range(2000)])
        marker = MARKER
        print("retried", unipar.get(crash_once.remote(marker), timeout=60))
        stuck = forever.remote()
        unipar.wait([stuck], timeout=0.5)
        more = [square.remote(i) for i in range(50)]
        unipar.cancel(stuck, force=True)
        try:
            unipar.get(stuck, timeout=60)
        except unipar.TaskCancelledError:
            print("cancelled")
        print("others", unipar.get(more, timeout=60) == [i * i for i in range(50)])
        unipar.shutdown()
    """.replace("MARKER", repr(str(tmp_path / "crashed"))))
    assert "all True" in out and "retried second try" in out
    assert "cancelled" in out and "others True" in out


def test_leases_go_back_so_resources_show_free_and_actors_fit():
    out = _run("""
        import time, unipar
        unipar.init(num_cpus=2)

        @unipar.remote
        def noop():
            return None

        @unipar.remote(num_cpus=2)
        class Big:
            def ping(self):
                return "pong"

        unipar.get([noop.remote() for _ in range(500)], timeout=60)
        print("free", unipar.available_resources().get("CPU"))
        print("actor", unipar.get(Big.remote().ping.remote(), timeout=60))
        unipar.shutdown()
    """)
    assert "free 2.0" in out and "actor pong" in out
