"""The Spark side of the spark backend: start (or adopt) a SparkContext, run jobs, stop it all.

Everything that talks to the JVM lives here, so the scheduler in ``_spark.py`` stays plain Python.

* With no address: ``local[slots]`` on loopback (``spark.driver.host``/``bindAddress`` =
  127.0.0.1), the UI on a free port, Spark's own task retries off (unipar retries), quiet logs.
* With ``spark://host:port``: that standalone master; it waits for executors to register.
* If this process already has an active SparkContext, it is adopted and left running at shutdown.

The JVM's stderr goes through a filter thread that drops Spark's start-up banner lines and
passes everything else on, so errors still reach the terminal.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

from ...exceptions import BackendUnavailableError
from ...options import InitOptions

# Lines of the JVM's start-up banner that say nothing actionable to a unipar user.
_NOISE = re.compile(
    r"Using incubator modules|Using Spark's default log4j profile|Setting default log level"
    r"|To adjust logging level use|NativeCodeLoader|resolves to a loopback address"
    r"|Set SPARK_LOCAL_IP if you need|WARN Utils: Service 'SparkUI' could not bind")

# WARN, except the scheduler's per-task warnings: unipar cancels jobs on purpose (kill, cancel)
# and reports lost tasks itself (WorkerCrashedError, ActorDiedError).
_LOG4J = """\
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
logger.native.name = org.apache.hadoop.util.NativeCodeLoader
logger.native.level = error
logger.shutdown.name = org.apache.spark.util.ShutdownHookManager
logger.shutdown.level = error
logger.dag.name = org.apache.spark.scheduler.DAGScheduler
logger.dag.level = error
logger.tsm.name = org.apache.spark.scheduler.TaskSetManager
logger.tsm.level = error
"""

_EXECUTOR_WAIT_S = 60.0


def _local_slots(num_cpus: int) -> int:
    """Spark task slots of a local session.

    Logical CPUs (unipar's accounting) decide what runs; slots only bound how many Spark tasks
    exist at once: running tasks, tasks blocked in get() (which give their CPUs back), and one
    per live actor. Slots cost nothing until used (a Python worker forks per running task).
    """
    return max(64, 8 * num_cpus)


def _forward_stderr(pipe: Any) -> None:
    out = sys.__stderr__
    for raw in iter(pipe.readline, b""):
        line = raw.decode("utf-8", "replace")
        if _NOISE.search(line) or out is None:
            continue
        try:
            out.write(line)
            out.flush()
        except (OSError, ValueError):  # the terminal is gone
            pass
    pipe.close()


class SparkSessionHandle:
    """A SparkContext plus what unipar needs of it; ``close()`` leaves no JVM behind."""

    def __init__(self, sc: Any, master: str, owned: bool, slots: int, cores: int) -> None:
        from pyspark import SparkContext
        self.sc = sc
        self.master = master
        self.owned = owned
        self.slots = slots
        self.cores = cores
        self.is_local = master.startswith("local")
        self.driver_host = sc.getConf().get("spark.driver.host", "127.0.0.1")
        self.ui_url = sc.uiWebUrl
        self._base = sc.parallelize([0], 1)  # every job maps its one partition
        self._profiles: dict[int, Any] = {}  # task resource profiles by cores
        self._gateway = SparkContext._gateway if owned else None
        self._closed = False

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def open(cls, options: InitOptions) -> "SparkSessionHandle":
        try:
            from pyspark import SparkConf, SparkContext
        except ImportError as exc:
            raise BackendUnavailableError(
                "the spark backend needs pyspark: pip install 'unipar[spark]' (and Java 17+)") from exc
        active = SparkContext._active_spark_context
        if active is not None:
            master = active.master
            slots = active.defaultParallelism
            return cls(active, master, owned=False, slots=slots, cores=slots)
        if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
            raise BackendUnavailableError("the spark backend needs Java 17+ on PATH (or JAVA_HOME); "
                                          "install a JRE, e.g. apt-get install openjdk-17-jre-headless")
        address = options.address
        local = address in (None, "local") or str(address).startswith("local")
        cores = options.num_cpus or os.cpu_count() or 1
        if address is not None and not local and not str(address).startswith("spark://"):
            raise ValueError(f"the spark backend takes a spark://host:port master address or none "
                             f"(got {address!r})")
        slots = int(options.backend_options.get("task_slots") or _local_slots(cores))
        master = f"local[{slots}]" if local else str(address)
        conf = cls._conf(SparkConf(), master, options, loopback=local or _is_loopback(master))
        sc = cls._start_context(conf, SparkContext)
        try:
            if not local:
                cores = _wait_for_executors(sc, master)
                slots = cores
            return cls(sc, master, owned=True, slots=slots, cores=cores)
        except BaseException:
            _stop_context(sc)
            raise

    @staticmethod
    def _conf(conf: Any, master: str, options: InitOptions, loopback: bool) -> Any:
        extra = dict(options.backend_options.get("conf", {}))
        conf.setMaster(master).setAppName(options.backend_options.get("app_name", "unipar"))
        settings = {
            "spark.ui.port": "0",                       # a free port: several sessions may run
            "spark.ui.showConsoleProgress": "false",
            "spark.task.maxFailures": "1",              # unipar retries per max_retries itself
            "spark.python.worker.reuse": "true",
            "spark.python.task.killTimeout": "1s",
        }
        if loopback:
            settings.update({"spark.driver.host": "127.0.0.1",
                             "spark.driver.bindAddress": "127.0.0.1"})
        for key, value in {**settings, **{k: str(v) for k, v in extra.items()}}.items():
            conf.set(key, value)
        return conf

    @staticmethod
    def _start_context(conf: Any, spark_context: Any) -> Any:
        from pyspark.java_gateway import launch_gateway
        log_dir = tempfile.mkdtemp(prefix="unipar-spark-log4j-")
        try:
            path = os.path.join(log_dir, "log4j2.properties")
            with open(path, "w") as fh:
                fh.write(_LOG4J)
            java_opts = conf.get("spark.driver.extraJavaOptions", "")
            conf.set("spark.driver.extraJavaOptions",
                     f"{java_opts} -Dlog4j2.configurationFile=file:{path}".strip())
            # The UI binds to $SPARK_LOCAL_IP, else to every interface: give the JVM the
            # driver's bind address (127.0.0.1 on loopback) unless the user set it.
            bind = conf.get("spark.driver.bindAddress", None)
            local_ip = bind if bind and "SPARK_LOCAL_IP" not in os.environ else None
            if local_ip:
                os.environ["SPARK_LOCAL_IP"] = local_ip   # launch_gateway copies os.environ
            try:
                gateway = launch_gateway(conf, popen_kwargs={"stderr": subprocess.PIPE})
            except Exception as exc:
                raise BackendUnavailableError(f"could not start Spark's JVM: {exc} "
                                              "(is Java 17+ installed?)") from exc
            finally:
                if local_ip:
                    os.environ.pop("SPARK_LOCAL_IP", None)
            threading.Thread(target=_forward_stderr, args=(gateway.proc.stderr,),
                             name="unipar-spark-stderr", daemon=True).start()
            try:
                sc = spark_context(conf=conf, gateway=gateway)
                # PySpark runs executors with $PYSPARK_PYTHON or "python3" from PATH; without
                # the former, use this interpreter so unipar and the user's packages import.
                sc.pythonExec = os.environ.get("PYSPARK_PYTHON") or conf.get(
                    "spark.pyspark.python", sys.executable)
                return sc
            except BaseException:
                _stop_gateway(gateway)
                spark_context._gateway = None
                spark_context._jvm = None
                raise
        finally:
            shutil.rmtree(log_dir, ignore_errors=True)  # the JVM read it at start-up

    # -- jobs --------------------------------------------------------------------------------
    def run_job(self, group: str, description: str, fn: Callable[..., Any], cores: int = 1) -> list:
        """Run ``fn`` over one partition as a job in ``group``; blocks until the job ends.

        ``cores`` > 1 runs it under a stage-level task resource profile asking that many cores
        (not in local mode, where Spark does not support task resource profiles).
        """
        self.sc.setJobGroup(group, description, interruptOnCancel=True)
        rdd = self._base.mapPartitions(fn)
        if cores > 1 and not self.is_local:
            rdd = rdd.withResources(self._profile(cores))
        return rdd.collect()

    def _profile(self, cores: int) -> Any:
        profile = self._profiles.get(cores)
        if profile is None:
            from pyspark.resource import ResourceProfileBuilder, TaskResourceRequests
            profile = ResourceProfileBuilder().require(TaskResourceRequests().cpus(cores)).build
            self._profiles[cores] = profile
        return profile

    def cancel_group(self, group: str) -> None:
        try:
            self.sc.cancelJobGroup(group)
        except Exception:  # the context is stopping: the job ends with it
            pass

    def broadcast(self, data: bytes) -> Any:
        return self.sc.broadcast(data)

    def executor_hosts(self) -> list[str]:
        if self.is_local:
            return [self.driver_host]
        infos = self.sc._jsc.sc().statusTracker().getExecutorInfos()
        hosts = [f"{i.host()}:{i.port()}" for i in infos]
        return hosts[1:] or hosts  # the first entry is the driver

    # -- closing -----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the context and the JVM this handle started. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self.owned:
            return
        try:
            self.sc.cancelAllJobs()
        except Exception:
            pass
        _stop_context(self.sc)


def _stop_context(sc: Any) -> None:
    from pyspark import SparkContext
    gateway = SparkContext._gateway
    try:
        sc.stop()
    finally:
        if gateway is not None:
            _stop_gateway(gateway)
        SparkContext._gateway = None
        SparkContext._jvm = None


def _stop_gateway(gateway: Any) -> None:
    proc = getattr(gateway, "proc", None)
    try:
        gateway.shutdown()
    except Exception:
        pass
    if proc is None:
        return
    try:
        proc.stdin.close()  # the JVM exits when its stdin closes (PythonGatewayServer)
    except OSError:
        pass
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def _is_loopback(master: str) -> bool:
    host = master.split("://", 1)[-1].split(":", 1)[0]
    return host in ("127.0.0.1", "localhost")


def _wait_for_executors(sc: Any, master: str) -> int:
    """Block until an executor registered; return the cluster's total executor cores."""
    deadline = time.monotonic() + _EXECUTOR_WAIT_S
    tracker = sc._jsc.sc().statusTracker()
    while time.monotonic() < deadline:
        if len(tracker.getExecutorInfos()) > 1:  # the driver is always listed
            return _total_cores(sc)
        time.sleep(0.2)
    raise BackendUnavailableError(f"no Spark executor registered with {master} within "
                                  f"{_EXECUTOR_WAIT_S:.0f} s; is a worker running and does it "
                                  "have free cores and memory?")


def _total_cores(sc: Any) -> int:
    try:
        return int(sc._jsc.sc().schedulerBackend().totalCoreCount().get())
    except Exception:  # a scheduler backend without that counter
        return int(sc.defaultParallelism)


def crash_reason(exc: BaseException) -> str:
    """The line of a Spark job's error that says why its worker or job went away."""
    text = str(exc)
    for pattern in (r"(Python worker exited unexpectedly[^\n]*)", r"(ExecutorLostFailure[^\n]*)",
                    r"(Job \d+ cancelled[^\n]*)", r"(SparkContext was shut down[^\n]*)"):
        found = re.search(pattern, text)
        if found:
            return found.group(1)
    return text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__
