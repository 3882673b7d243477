"""What a Spark job ships to its executors: streamagg as a zip, optionally a Python environment."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata as metadata
import io
import logging
import os
import re
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import StreamaggError
from ...sources.s3_deadlines import DEADLINE_VARIABLE
from ...sources.s3_reads import MIN_RATE_VARIABLE, SLOW_SECONDS_VARIABLE

if TYPE_CHECKING:
    from pyspark import SparkContext

log = logging.getLogger("streamagg")

# Spark unpacks `spark.archives` entries into each executor's working folder under this alias.
ENV_ALIAS = "environment"
EXECUTOR_PYTHON = f"./{ENV_ALIAS}/bin/python"
# Distributions the executors never need from the archive: Spark puts its own pyspark and py4j
# on their path, and streamagg itself travels as a zip (addPyFile), so it is always this code.
NOT_SHIPPED = {"pyspark", "py4j", "streamagg"}
# pyspark's Arrow functions (mapInArrow) import pyarrow on the executors; pandas only on the
# driver (its version check), so it stays out of the archive.
SPARK_PYTHON_NEEDS = ("pyarrow",)
# What no import reads: test suites, C headers and sources, type stubs (a third of pyarrow).
SKIPPED_FOLDERS = {"__pycache__", "tests", "include"}
SKIPPED_SUFFIXES = {".pyc", ".pyi", ".pyx", ".pxd", ".pxi", ".h", ".hpp", ".c", ".cc", ".cpp"}
_LOCAL_MASTER = re.compile(r"local(\[[^\]]*\]|-cluster\[[^\]]*\])?")
_SHIPPED_MARK = "_streamagg_package_shipped"


def is_local_master(master: str) -> bool:
    """``local``, ``local[N]``, ``local[*]``: executors are this process's own Python children."""
    return _LOCAL_MASTER.fullmatch(master.strip()) is not None


def environment_to_ship(spark_env: str, master: str, environ: Mapping[str, str]) -> str | None:
    """The archive to unpack on the executors and run as their Python, or None for none.

    Never for a local master, whose executors run this very interpreter. ``auto`` builds (or
    reuses) one only when nobody chose the executors' Python already (``PYSPARK_PYTHON``); a
    path is used as given.
    """
    if spark_env == "none" or is_local_master(master):
        return None
    if spark_env != "auto":
        return os.path.abspath(spark_env)
    if environ.get("PYSPARK_PYTHON"):
        log.info("PYSPARK_PYTHON is set: the executors run it, no environment is shipped")
        return None
    return environment_archive()


# --- the package ---------------------------------------------------------------------------------


def package_zip(folder: str) -> str:
    """A zip of the imported streamagg package's Python files, in ``folder``; its path."""
    import streamagg

    package = os.path.dirname(os.path.abspath(streamagg.__file__))
    path = os.path.join(folder, "streamagg.zip")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for root, dirs, files in os.walk(package):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith(".py"):
                    full = os.path.join(root, name)
                    archive.write(full, os.path.relpath(full, os.path.dirname(package)))
    return path


def ship_package(context: SparkContext, folder: str) -> None:
    """Send the driver's streamagg to the executors (once per context), so both run the same code
    whether the cluster has another version installed or none."""
    if getattr(context, _SHIPPED_MARK, False):
        return
    context.addPyFile(package_zip(folder))
    setattr(context, _SHIPPED_MARK, True)


# --- the environment -----------------------------------------------------------------------------


def runtime_distributions() -> list[metadata.Distribution]:
    """The installed distributions streamagg's executors import: its requirements, theirs, and so
    on, plus what pyspark's Arrow functions need; not test or benchmark tools."""
    wanted = [requirement_name(r) for r in (metadata.requires("streamagg") or [])
              if "extra" not in r.partition(";")[2]]
    wanted += SPARK_PYTHON_NEEDS
    found: dict[str, metadata.Distribution] = {}
    while wanted:
        name = normalise(wanted.pop())
        if name in found or name in NOT_SHIPPED:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional or platform-specific requirement not installed here
        found[name] = dist
        wanted += [requirement_name(r) for r in (dist.requires or [])
                   if "extra" not in r.partition(";")[2]]
    return [found[name] for name in sorted(found)]


def requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return match.group(1) if match else requirement


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def cache_folder(environ: Mapping[str, str] | None = None) -> str:
    """Where built archives are kept: ``$XDG_CACHE_HOME/streamagg``, else ``~/.cache/streamagg``."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "streamagg")


def environment_key(distributions: list[metadata.Distribution]) -> str:
    """What the archive's content depends on: the interpreter and each distribution's version."""
    lines = [sys.version, sys.platform, base_python()]
    lines += sorted(f"{normalise(d.metadata['Name'])}=={d.version}" for d in distributions)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:20]


def base_python() -> str:
    """The interpreter a venv's ``bin/python`` points at (nodes must have it at the same path)."""
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def environment_archive(cache: str | None = None) -> str:
    """A tar.gz of a venv holding streamagg's runtime distributions, built once per content."""
    distributions = runtime_distributions()
    folder = cache or cache_folder()
    path = os.path.join(folder, f"environment-{environment_key(distributions)}.tar.gz")
    if os.path.isfile(path):
        log.debug("reusing the executors' environment %s", path)
        return path
    try:
        os.makedirs(folder, exist_ok=True)
        log.info("packing the executors' Python environment into %s (once)", path)
        handle, partial = tempfile.mkstemp(prefix=".environment-", suffix=".partial", dir=folder)
        os.close(handle)
        try:
            write_environment(partial, distributions)
            os.chmod(partial, 0o644)  # mkstemp's 0600 would keep other users' runs out
            os.replace(partial, path)  # whole or not at all, also when two runs race
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
    except OSError as err:
        raise StreamaggError(f"cannot pack the executors' environment into {folder}: "
                             f"{err.strerror or err}") from err
    return path


def write_environment(path: str, distributions: list[metadata.Distribution]) -> None:
    """A venv as venv-pack lays it out: ``bin/python`` links to the base interpreter (by absolute
    path, as venv-pack does), ``pyvenv.cfg``, and the distributions' files in site-packages."""
    python = base_python()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    site = f"lib/python{version}/site-packages"
    config = (f"home = {os.path.dirname(python)}\ninclude-system-site-packages = false\n"
              f"version = {sys.version.split()[0]}\n").encode()
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        add_bytes(tar, "pyvenv.cfg", config)
        for name in ("python", "python3", f"python{version}"):
            link = tarfile.TarInfo(f"bin/{name}")
            link.type, link.linkname, link.mode = tarfile.SYMTYPE, python, 0o777
            tar.addfile(link)
        for dist in distributions:
            root = Path(str(dist.locate_file("")))
            for file in dist.files or []:
                parts = Path(file).parts
                # Scripts (../../bin), caches, tests and sources stay behind: executors import.
                if (".." in parts or SKIPPED_FOLDERS.intersection(parts[:-1])
                        or file.suffix in SKIPPED_SUFFIXES):
                    continue
                full = root / file
                if full.is_file():
                    tar.add(str(full), arcname=f"{site}/{file.as_posix()}", recursive=False)


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


@contextlib.contextmanager
def executor_python(archive: str | None) -> Iterator[dict[str, str]]:
    """The settings a new session needs to run ``archive`` as its executors' Python (none for
    None); pyspark reads the executors' interpreter from PYSPARK_PYTHON when the context starts."""
    if archive is None:
        yield {}
        return
    before = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = EXECUTOR_PYTHON
    try:
        yield {"spark.archives": f"{archive}#{ENV_ALIAS}", "spark.pyspark.python": EXECUTOR_PYTHON}
    finally:
        if before is None:
            os.environ.pop("PYSPARK_PYTHON", None)
        else:
            os.environ["PYSPARK_PYTHON"] = before


# The S3 settings every call's deadline and every read's pace come from (sources/s3_*.py).
S3_SETTINGS = (DEADLINE_VARIABLE, MIN_RATE_VARIABLE, SLOW_SECONDS_VARIABLE)


def s3_settings_for_executors(environ: Mapping[str, str]) -> dict[str, str]:
    """The driver's S3 deadline settings as Spark settings for its executors, which read the
    inputs and do not inherit the driver's environment on a cluster: without them an executor's
    calls would keep the default deadline whatever was set."""
    return {f"spark.executorEnv.{name}": environ[name] for name in S3_SETTINGS
            if environ.get(name, "").strip()}
