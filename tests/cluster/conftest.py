"""A standalone Spark cluster on 127.0.0.1 (a master, one worker) whose worker has a bare Python."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import TEST_JVM_OPTIONS

START_TIMEOUT = 240  # seconds; a loaded two-core machine starts a JVM slowly
# The cluster's daemons log warnings only, to their own files.
LOG4J2 = """\
rootLogger.level = warn
rootLogger.appenderRef.stdout.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n
"""
SPARK_DEFAULTS = f"""\
spark.executor.memory 512m
spark.sql.shuffle.partitions 4
spark.ui.enabled false
spark.ui.showConsoleProgress false
spark.driver.defaultJavaOptions {TEST_JVM_OPTIONS}
spark.executor.defaultJavaOptions {TEST_JVM_OPTIONS}
"""


@dataclass
class Cluster:
    """A running cluster: where to submit, what its processes left, the environment for drivers."""

    master_url: str
    root: Path
    work_dir: Path  # the worker's: one folder per application, one per executor
    bare_python: Path  # the worker's python3: a venv with nothing installed
    driver_env: dict[str, str]  # for a driver process run against this cluster
    processes: dict[str, subprocess.Popen[bytes]]

    def executor_pids(self) -> list[int]:
        """The executor JVMs the worker started (children of the worker process)."""
        return children_of(self.processes["worker"].pid, b"CoarseGrainedExecutorBackend")


def java_found() -> bool:
    home = os.environ.get("JAVA_HOME")
    if home:
        return os.access(os.path.join(home, "bin", "java"), os.X_OK)
    return shutil.which("java") is not None


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_for(what: str, check: object, processes: dict[str, subprocess.Popen[bytes]],
             logs: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        for name, process in processes.items():
            if process.poll() is not None:
                log = (logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the Spark {name} exited ({process.returncode}):\n{log}")
        if check():  # type: ignore[operator]
            return
        time.sleep(1)
    raise RuntimeError(f"timed out waiting for {what}")


def alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as reply:
            return int(json.load(reply).get("aliveworkers", 0))
    except (OSError, ValueError):
        return 0


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop one daemon and its children (its own process group), by id."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory,
                  request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """One cluster for the whole test session, stopped by process group at the end."""
    if not java_found():
        pytest.skip("a standalone Spark cluster needs Java 17: no java on PATH or in JAVA_HOME")
    pyspark = pytest.importorskip("pyspark", reason="the spark extra is not installed")
    home = Path(pyspark.__file__).resolve().parent
    root = tmp_path_factory.mktemp("spark-cluster")
    bare = root / "bare-python"
    venv.create(bare, with_pip=False)  # nothing installed: no streamagg, no pyarrow
    conf = root / "conf"
    conf.mkdir()
    (conf / "log4j2.properties").write_text(LOG4J2)
    (conf / "spark-defaults.conf").write_text(SPARK_DEFAULTS)
    work = root / "work"
    master_port, master_ui, worker_port, worker_ui = free_ports(4)
    base = {k: v for k, v in os.environ.items()
            if k not in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "PYTHONPATH", "VIRTUAL_ENV",
                         "SPARK_HOME", "SPARK_CONF_DIR")}
    base.update(SPARK_LOCAL_IP="127.0.0.1", SPARK_CONF_DIR=str(conf))
    daemon_env = dict(base, SPARK_HOME=str(home), PATH=f"{bare / 'bin'}{os.pathsep}{base['PATH']}",
                      SPARK_WORKER_DIR=str(work), SPARK_DAEMON_JAVA_OPTS=TEST_JVM_OPTIONS)
    spark_class = str(home / "bin" / "spark-class")
    commands = {
        "master": [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                   "--port", str(master_port), "--webui-port", str(master_ui)],
        "worker": [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                   "--port", str(worker_port), "--webui-port", str(worker_ui), "--cores", "2",
                   "--memory", "1g", "--work-dir", str(work),
                   f"spark://127.0.0.1:{master_port}"],
    }
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, command in commands.items():
            with open(root / f"{name}.log", "wb") as log:
                processes[name] = subprocess.Popen(
                    command, env=daemon_env, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True)  # its own process group
            if name == "master":
                wait_for("the master", lambda: _listening(master_port), processes, root)
        wait_for("the worker to register", lambda: alive_workers(master_ui) == 1, processes, root)
        # Drivers run the project's Python (PYTHONPATH kept: the code under test), never the
        # bare one, and cache the executors' environment where the next session finds it.
        driver_env = {k: v for k, v in os.environ.items()
                      if k not in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "SPARK_HOME",
                                   "SPARK_CONF_DIR")}
        cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
        xdg = cache.mkdir("xdg-cache") if cache is not None else root / "xdg-cache"
        driver_env.update(SPARK_LOCAL_IP="127.0.0.1", SPARK_CONF_DIR=str(conf),
                          XDG_CACHE_HOME=str(xdg))
        yield Cluster(f"spark://127.0.0.1:{master_port}", root, work, bare / "bin" / "python",
                      driver_env, processes)
    finally:
        for process in reversed(list(processes.values())):
            stop(process)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def children_of(parent: int, marker: bytes) -> list[int]:
    """The processes whose parent is ``parent`` and whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and marker in cmdline:
            found.append(int(entry.name))
    return found
