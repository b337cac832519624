"""``unipar bench``: standard workloads measured on every backend and on plain Dask, PySpark and
Ray, each backend in its own fresh process.

    workloads.py   the workloads, written against unipar (and the shared pure functions)
    baselines.py   the same workloads written directly against Dask, PySpark and Ray
    child.py       one backend's run, in a child process; results as JSON lines
    runner.py      the command: repeats, rotation, progress bar, error rows
    report.py      the table, the JSON and the PNG
    proctree.py    process-tree memory sampling and measured subprocess runs (also used by
                   ``unipar compare``)
"""
