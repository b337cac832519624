"""Machine figures of one node: CPU, memory, disk, network and GPUs, sampled once a second.

::

    thread "unipar-machine" ── every INTERVAL s ──▶ psutil (+ NVML / nvidia-smi when present)
                                                  └▶ ring buffer of the last HISTORY samples
    node_info ──▶ latest(), columns() (the last five minutes, for the dashboard's charts)

One sampler per node, on its own thread, so the node's event loop never waits on ``/proc``.
Every figure is cheap to read (psutil's per-core CPU times are diffed against the previous
sample, which takes no time of its own); GPUs are read through NVML (``pynvml``) when it is
installed, else through ``nvidia-smi`` at most every GPU_EVERY seconds, else not at all.
An ``nvidia-smi`` that hangs is killed (with whatever it started) after SMI_TIMEOUT and not
run again for SMI_RETRY seconds; one that prints garbage gives no figures for that GPU; a
figure it reports as ``[N/A]`` is None.
"""

from __future__ import annotations

import collections
import math
import os
import shutil
import signal
import subprocess
import threading
import time
from typing import Any, Callable

import psutil

INTERVAL = 1.0       # seconds between samples
HISTORY = 300        # samples kept: the last five minutes
GPU_EVERY = 5.0      # seconds between nvidia-smi runs (NVML is read every sample)
SMI_TIMEOUT = 2.0
SMI_RETRY = 60.0     # seconds before nvidia-smi is run again after it failed or hung
SMI_QUERY = ["nvidia-smi", "--query-gpu=index,utilization.gpu,memory.used,memory.total",
             "--format=csv,noheader,nounits"]


def _existing(path: str) -> str:
    """``path`` or its nearest existing parent (a spill directory is made on first use)."""
    while path and not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path or "/"


def _disk(dirs: dict[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for label, path in dirs.items():
        try:
            usage = psutil.disk_usage(_existing(path))
        except OSError:
            continue
        out[label] = {"path": path, "total": usage.total, "used": usage.used,
                      "free": usage.free, "percent": usage.percent}
    return out


def _nvml_reader() -> Callable[[], list[dict[str, Any]]] | None:
    """A reader of every GPU through NVML, or None when NVML (pynvml) is not there."""
    try:
        import pynvml  # type: ignore[import-not-found]
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
    except Exception:   # not installed, no driver, no GPU: no GPU figures
        return None
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]

    def read() -> list[dict[str, Any]]:
        out = []
        for i, h in enumerate(handles):
            util = pynvml.nvmlDeviceGetUtilizationRates(h)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            out.append({"index": i, "utilization": float(util.gpu),
                        "memory_used": int(mem.used), "memory_total": int(mem.total)})
        return out
    return read


def _run_smi() -> str | None:
    """What ``nvidia-smi`` prints for SMI_QUERY; None when it is missing, fails or hangs.

    It runs in a session of its own, so a hang kills it and whatever it started (a wrapper
    script's child would otherwise hold the pipe open, and the read would never end)."""
    try:
        proc = subprocess.Popen(SMI_QUERY, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, errors="replace",
                                start_new_session=True)
    except OSError:
        return None
    try:
        out, _ = proc.communicate(timeout=SMI_TIMEOUT)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        return None
    return out if proc.returncode == 0 else None


def _figure(text: str) -> float | None:
    """One number of nvidia-smi's CSV ("[N/A]", "[Not Supported]": None)."""
    text = text.strip()
    if text.startswith("["):
        return None
    value = float(text)   # ValueError: garbage, the caller skips the line
    if not math.isfinite(value) or value < 0:
        raise ValueError(text)
    return value


def _parse_smi(out: str) -> list[dict[str, Any]]:
    """Every GPU's figures from nvidia-smi's output for SMI_QUERY (lines that are not four
    numbers are skipped; memory comes in MiB)."""
    gpus = []
    for line in out.strip().splitlines()[:64]:
        fields = line.split(",")
        try:
            if len(fields) != 4:
                continue
            index, util, used, total = (_figure(x) for x in fields)
        except ValueError:
            continue
        if index is None:
            continue
        gpus.append({"index": int(index), "utilization": util,
                     "memory_used": None if used is None else int(used) << 20,
                     "memory_total": None if total is None else int(total) << 20})
    return gpus


def _smi() -> list[dict[str, Any]] | None:
    """Every GPU's figures from ``nvidia-smi``; None when it failed or hung."""
    out = _run_smi()
    return None if out is None else _parse_smi(out)


class MachineSampler:
    """Samples this machine every ``interval`` seconds on a thread; keeps ``keep`` samples.

    ``dirs`` names the directories whose disks are reported (label -> path). Thread-safe:
    :meth:`latest` and :meth:`history` may be called from any thread."""

    def __init__(self, dirs: dict[str, str], interval: float = INTERVAL,
                 keep: int = HISTORY) -> None:
        self.dirs = dict(dirs)
        self.interval = interval
        self.samples: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self._stop = threading.Event()
        self._net: tuple[float, int, int] | None = None
        self._nvml = _nvml_reader()
        self._smi = self._nvml is None and shutil.which("nvidia-smi") is not None
        self._gpus: list[dict[str, Any]] = []
        self._smi_next = 0.0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        psutil.cpu_percent(percpu=True)   # the first call only sets the baseline
        self._thread = threading.Thread(target=self._run, name="unipar-machine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling (idempotent); returns at once, the thread ends within one interval."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.samples.append(self.sample())
            except Exception:   # a figure that cannot be read must not end the sampling
                continue

    def sample(self) -> dict[str, Any]:
        """One sample now (CPU figures: since the previous call)."""
        now = time.time()
        cores = psutil.cpu_percent(percpu=True)
        mem = psutil.virtual_memory()
        return {"time": now,
                "cpu_percent": sum(cores) / len(cores) if cores else 0.0,
                "cpu_per_core": cores, "cpu_count": len(cores),
                "memory": {"total": mem.total, "used": mem.total - mem.available,
                           "available": mem.available, "percent": mem.percent},
                "disk": _disk(self.dirs), "network": self._network(now),
                "gpus": self._gpu_figures(now)}

    def _network(self, now: float) -> dict[str, float]:
        io = psutil.net_io_counters()
        if io is None:
            return {"sent_bytes_s": 0.0, "recv_bytes_s": 0.0}
        previous, self._net = self._net, (now, io.bytes_sent, io.bytes_recv)
        if previous is None or now <= previous[0]:
            return {"sent_bytes_s": 0.0, "recv_bytes_s": 0.0}
        span = now - previous[0]
        return {"sent_bytes_s": max(0, io.bytes_sent - previous[1]) / span,
                "recv_bytes_s": max(0, io.bytes_recv - previous[2]) / span}

    def _gpu_figures(self, now: float) -> list[dict[str, Any]]:
        if self._nvml is not None:
            try:
                return self._nvml()
            except Exception:
                return []
        if self._smi and now >= self._smi_next:
            gpus = _smi()
            self._gpus = gpus or []
            self._smi_next = now + (GPU_EVERY if gpus is not None else SMI_RETRY)
        return self._gpus

    def latest(self) -> dict[str, Any]:
        """The newest sample (one taken now if none was yet)."""
        try:
            return self.samples[-1]
        except IndexError:
            return self.sample()

    def history(self, seconds: float) -> list[dict[str, Any]]:
        """Samples of the last ``seconds``, oldest first."""
        since = time.time() - seconds
        return [s for s in list(self.samples) if s["time"] >= since]

    def columns(self, seconds: float = HISTORY * INTERVAL) -> dict[str, list[Any]]:
        """The samples of the last ``seconds`` as compact columns, oldest first, for the
        dashboard's charts: ``time`` (Unix, 0.01 s), ``cpu`` (percent, all cores), ``cores``
        (per-core percents), ``memory`` (bytes used), ``sent``/``recv`` (bytes/s), ``gpus``
        (per-GPU utilisation percents), ``gpu_memory`` (per-GPU bytes used); a figure a GPU
        did not report is None. Percents are whole numbers: a chart needs no more, and
        small ints keep ``node_info`` small (five minutes of a 2-core node: about 10 KB)."""
        rows = self.history(seconds)
        return {"time": [round(s["time"], 2) for s in rows],
                "cpu": [round(s["cpu_percent"]) for s in rows],
                "cores": [[round(c) for c in s["cpu_per_core"]] for s in rows],
                "memory": [s["memory"]["used"] for s in rows],
                "sent": [round(s["network"]["sent_bytes_s"]) for s in rows],
                "recv": [round(s["network"]["recv_bytes_s"]) for s in rows],
                "gpus": [[_rounded(g["utilization"]) for g in s["gpus"]] for s in rows],
                "gpu_memory": [[g["memory_used"] for g in s["gpus"]] for s in rows]}


def _rounded(value: float | None) -> int | None:
    return None if value is None else round(value)
