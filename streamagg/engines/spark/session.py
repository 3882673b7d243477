"""The Spark session: finding pyspark and Java, starting a quiet JVM, one-line failures."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import shutil
import sys
import time
import traceback
import warnings
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ...config import DEFAULT_SPARK_MASTER
from ...errors import StreamaggError, UsageError
from ...memory import process_peak_memory
from ...pandas_guard import let_pandas_in
from .jvm import launch_logged_jvm
from .shipping import (
    environment_to_ship,
    executor_python,
    is_local_master,
    s3_settings_for_executors,
    ship_package,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("streamagg")

INSTALL_HINT = "install the spark extra (in streamagg's clone: pip install -e '.[spark]')"

# Spark's own logging: warnings and errors only, and not the two start-up warnings every local
# run prints (no native Hadoop library; the host name resolving to a loopback address). No time
# stamp: the lines reach streamagg's log (`jvm.launch_logged_jvm`), which stamps them.
_LOG4J2 = """\
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = stderr
appender.stderr.type = Console
appender.stderr.name = stderr
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = %p %c{1}: %m%n%ex
logger.native.name = org.apache.hadoop.util.NativeCodeLoader
logger.native.level = error
logger.utils.name = org.apache.spark.util.Utils
logger.utils.level = error
"""
# Errors the JVM logged, kept in the work folder: when the JVM dies (an OutOfMemoryError), py4j
# only sees a closed connection, and this file says why.
JVM_ERRORS = "spark-errors.log"
MEMORY_HINT = ("raise spark.driver.memory (local mode; e.g. SPARK_DRIVER_MEMORY=8g) or "
               "spark.executor.memory (a cluster), or run fewer tasks at once")



def require_spark() -> None:
    """Fail with one clear line, before anything is read, when pyspark or Java is missing."""
    try:
        import pyspark  # noqa: F401
    except ImportError as err:
        raise UsageError(f"--engine spark needs pyspark, which is not installed: {INSTALL_HINT}"
                         ) from err
    let_pandas_in()
    try:
        # pyspark's Arrow functions (mapInArrow) check pandas' version on the driver.
        importlib.import_module("pandas")
    except ImportError as err:
        raise UsageError(f"--engine spark needs pandas on the driver, which is not installed: "
                         f"{INSTALL_HINT}") from err
    if running_session() is None and not java_found():
        raise UsageError("--engine spark needs Java 17 or later: no java on PATH or in JAVA_HOME "
                         "(pip does not bring it; docs/SPARK.md says how to install it)")


def java_found() -> bool:
    """Whether pyspark can launch a JVM: it runs ``$JAVA_HOME/bin/java``, else ``java``."""
    home = os.environ.get("JAVA_HOME")
    if home:
        return os.access(os.path.join(home, "bin", "java"), os.X_OK)
    return shutil.which("java") is not None


def running_session() -> SparkSession | None:
    """A session already running in this process: spark-submit's, a notebook's, the caller's."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    # The active session is per thread; pyspark's own record of a context is not.
    if session is None and SparkContext._active_spark_context is not None:
        session = SparkSession.builder.getOrCreate()
    return session


@contextlib.contextmanager
def spark_session(master: str | None, work: str, spark_env: str = "none"
                  ) -> Iterator[SparkSession]:
    """The running session when there is one, left as it is; otherwise a new one on ``master``
    (None: `DEFAULT_SPARK_MASTER`), quiet, stopped afterwards.

    Cluster executors get this streamagg as a zip either way, and with ``spark_env`` (auto or an
    archive's path) a Python environment to run it in (see `shipping`).
    """
    from pyspark.sql import SparkSession

    running = running_session()
    if running is not None:
        if master is not None:  # given, yet spark-submit (or the caller) chose already
            log.info("using the running Spark session; --spark-master %s does not apply", master)
        ship_package_to(running, work)
        yield running
        return
    master = DEFAULT_SPARK_MASTER if master is None else master
    if not master.strip():
        raise UsageError("--spark-master is empty: expected e.g. local[*] or yarn")
    log_config = os.path.join(work, "log4j2.properties")
    with open(log_config, "w", encoding="utf-8") as out:
        out.write(log4j_config(os.path.join(work, JVM_ERRORS)))
    settings: dict[str, Any] = {"spark.master": master, "spark.app.name": "streamagg",
                "spark.ui.showConsoleProgress": "false",
                "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{log_config}"}
    memory = default_driver_memory(master, driver_memory_set(os.environ, spark_defaults()),
                                   physical_memory())
    if memory is not None:
        log.debug("spark.driver.memory=%s (local mode: the tasks share the driver's heap)", memory)
        settings["spark.driver.memory"] = memory
    settings.update(s3_settings_for_executors(os.environ))
    archive = environment_to_ship(spark_env, master, os.environ)
    began = time.monotonic()
    # The JVM takes seconds to start (20 on a small machine): the progress bar says so.
    log.info("starting Spark on %s", master, extra={"stage": "starting Spark"})
    try:
        with quiet_pyspark_warnings(), local_python(master), executor_python(archive) as conf:
            for name, value in conf.items():
                log.debug("%s=%s", name, value)
            settings.update(conf)
            launch_logged_jvm(settings)
            session = SparkSession.builder.config(map=settings).getOrCreate()
    except Exception as err:  # noqa: BLE001 - any failure to start is one line, exit 1
        raise StreamaggError(f"cannot start Spark on {master}: {failure_summary(err)}") from err
    log.info("Spark started in %.1f s", time.monotonic() - began,
             extra={"stage": "reading on Spark"})
    session.sparkContext.setLogLevel("WARN")
    ship_package_to(session, work)
    with quiet_dead_jvm(session):
        try:
            yield session
        except BaseException:
            with contextlib.suppress(Exception):  # a dead JVM cannot stop: report the first error
                session.stop()
            raise
        session.stop()


def jvm_peak_memory(session: SparkSession) -> int | None:
    """The driver JVM's peak memory: its peak resident set (VmHWM; pyspark starts it on this
    host, or spark-submit runs this Python under it), else the JVM's own peak use of its memory
    pools (heap and non-heap, as its MemoryMXBean's pools count it); None if the JVM is gone."""
    try:
        jvm: Any = session.sparkContext._jvm  # None once the context stopped: an error below
        peak = process_peak_memory(int(jvm.java.lang.ProcessHandle.current().pid()))
        if peak is not None:
            return peak
        pools = jvm.java.lang.management.ManagementFactory.getMemoryPoolMXBeans()
        return sum(int(pool.getPeakUsage().getUsed()) for pool in pools)
    except Exception:  # noqa: BLE001 - a figure for the manifest must not fail the run
        log.debug("cannot read the driver JVM's peak memory", exc_info=True)
        return None


def ship_package_to(session: SparkSession, work: str) -> None:
    """streamagg for a cluster's executors; a local master's run this process's own import."""
    master = session.sparkContext.master or ""
    if not is_local_master(master):
        ship_package(session.sparkContext, work)


def log4j_config(errors_path: str) -> str:
    """Spark's log settings: warnings on stderr, and errors also in ``errors_path``."""
    return _LOG4J2 + f"""\
rootLogger.appenderRef.errors.ref = errors
rootLogger.appenderRef.errors.level = error
appender.errors.type = File
appender.errors.name = errors
appender.errors.fileName = {errors_path}
appender.errors.layout.type = PatternLayout
appender.errors.layout.pattern = %p %c{{1}}: %m%n%ex{{3}}
"""


_LOCAL_MASTER = re.compile(r"local(\[[^\]]*\])?")


def default_driver_memory(master: str, already_set: bool, physical_bytes: int | None
                          ) -> str | None:
    """``spark.driver.memory`` for a session this engine starts, or None to leave Spark's.

    In local mode the tasks run in the driver's JVM, so Spark's 1g default heap is shared by
    every core's task; give it what the JVM itself would take (a quarter of the memory). Only
    for plain local masters (a cluster sizes its own driver) and only when nobody chose.
    """
    if already_set or not _LOCAL_MASTER.fullmatch(master.strip()):
        return None
    gib = (physical_bytes or 0) // 4 // 2**30
    return f"{gib}g" if gib > 1 else None


def driver_memory_set(environ: Mapping[str, str], defaults: str) -> bool:
    """Whether the driver's memory is chosen already: spark-submit's arguments for pyspark,
    SPARK_DRIVER_MEMORY, or spark-defaults.conf (whose text is ``defaults``)."""
    submit_args = environ.get("PYSPARK_SUBMIT_ARGS", "")
    return (bool(environ.get("SPARK_DRIVER_MEMORY"))
            or re.search(r"--driver-memory\b|spark\.driver\.memory[\s=]", submit_args) is not None
            or re.search(r"^\s*spark\.driver\.memory[\s=:]", defaults, re.MULTILINE) is not None)


def spark_defaults() -> str:
    """The spark-defaults.conf spark-submit will read: $SPARK_CONF_DIR, else $SPARK_HOME/conf
    (pyspark's own folder when SPARK_HOME is unset); empty when there is none."""
    folder = os.environ.get("SPARK_CONF_DIR")
    if not folder:
        import pyspark

        home = os.environ.get("SPARK_HOME") or os.path.dirname(os.path.abspath(pyspark.__file__))
        folder = os.path.join(home, "conf")
    try:
        with open(os.path.join(folder, "spark-defaults.conf"), encoding="utf-8") as conf:
            return conf.read()
    except OSError:
        return ""


def physical_memory() -> int | None:
    """This machine's memory, or its container's limit when lower (cgroup v2, then v1)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError), open(limit, encoding="ascii") as f:
            total = min(total, int(f.read().strip()))  # "max" (no limit) is a ValueError
    return total


class _Py4JNoise(logging.Filter):
    """py4j logs each failed call to a dead JVM through the root logger, with a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return f"{os.sep}py4j{os.sep}" not in record.pathname


@contextlib.contextmanager
def quiet_dead_jvm(session: SparkSession) -> Iterator[None]:
    """When the JVM dies (out of memory), the error says so in one line: keep the tracebacks
    of py4j's logging and of pyspark's accumulator server (a socket server) off stderr."""
    noise = _Py4JNoise()
    root = logging.getLogger()
    root.addFilter(noise)
    server = getattr(session.sparkContext, "_accumulatorServer", None)
    if server is not None:
        # streamagg uses no accumulators; the server only fails when the JVM hangs up.
        server.handle_error = lambda request, address: log.debug(
            "Spark's accumulator connection failed", exc_info=True)
    try:
        yield
    finally:
        root.removeFilter(noise)


@contextlib.contextmanager
def local_python(master: str) -> Iterator[None]:
    """Local executors run this interpreter (which has streamagg), not whatever python3 is on
    PATH; pyspark reads the choice from PYSPARK_PYTHON when the context starts."""
    if not master.startswith("local") or "PYSPARK_PYTHON" in os.environ:
        yield
        return
    os.environ["PYSPARK_PYTHON"] = sys.executable
    try:
        yield
    finally:
        os.environ.pop("PYSPARK_PYTHON", None)


@contextlib.contextmanager
def quiet_pyspark_warnings() -> Iterator[None]:
    """pyspark warns about pandas versions it has not certified; its Arrow path never uses them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"pyspark\b")
        warnings.filterwarnings("ignore", category=UserWarning, module=r"pyspark\b")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"pyspark\b")
        yield


@contextlib.contextmanager
def spark_errors(jvm_log: str | None = None) -> Iterator[None]:
    """A failed Spark job (a task that kept failing, a lost executor, a JVM out of memory) is
    one line, exit 1; ``jvm_log`` is where the JVM logs its errors, when known."""
    try:
        yield
    except StreamaggError:
        raise
    except Exception as err:
        if not raised_by_spark(err):
            raise
        raise StreamaggError(f"Spark job failed: {failure_summary(err, jvm_log)}") from err


def raised_by_spark(err: BaseException) -> bool:
    """A pyspark or py4j exception, or one raised in their code (a socket error once the JVM is
    gone is a plain ConnectionError)."""
    if type(err).__module__.startswith(("pyspark", "py4j")):
        return True
    frames = traceback.extract_tb(err.__traceback__)
    return any(f"{os.sep}{name}{os.sep}" in frame.filename
               for frame in frames for name in ("pyspark", "py4j"))


def failure_summary(err: BaseException, jvm_log: str | None = None) -> str:
    """The line that says what went wrong: the JVM running out of memory, a Python worker's
    exception, else the first line."""
    unsaid = False
    try:
        text = str(err)
    except Exception:  # noqa: BLE001 - a Py4JJavaError asks the JVM, which may be gone
        text, unsaid = "", True
    found = _OUT_OF_MEMORY.search(text)
    if found is None and (unsaid or jvm_gone(err)):
        found = _OUT_OF_MEMORY.search(read_head(jvm_log)) if jvm_log else None
        if found is None:
            return "the Spark JVM exited unexpectedly (see Spark's log above)"
    if found is not None:
        return f"the JVM ran out of memory ({found.group(0).strip()}); {MEMORY_HINT}"
    text = text.split("JVM stacktrace:")[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    if any(line.startswith("Traceback (most recent call last)") for line in lines):
        return lines[-1]
    return lines[0]


_OUT_OF_MEMORY = re.compile(r"java\.lang\.OutOfMemoryError[^\n]*")


def jvm_gone(err: BaseException) -> bool:
    """Whether the error is the connection to the JVM failing, not an error the JVM reported."""
    seen: BaseException | None = err
    for _ in range(50):  # a chain may loop
        if seen is None:
            break
        if (isinstance(seen, ConnectionError | EOFError)
                or type(seen).__name__ == "Py4JNetworkError"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def read_head(path: str, limit: int = 1 << 20) -> str:
    """The start of a text file, or nothing when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(limit)
    except OSError:
        return ""
