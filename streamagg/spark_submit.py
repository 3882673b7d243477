"""The spark-submit entry point: ``spark-submit streamagg/spark_submit.py DATE [OPTIONS]``."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

if not __package__:
    # Run as a file, as spark-submit does: import the package from the folder above, not the
    # modules of this folder as top-level ones.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    sys.path.insert(0, os.path.dirname(_here))

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Hadoop's S3 connectors spell buckets s3a:// (open source) or s3n:// (old), and EMRFS s3://.
# streamagg reads and writes S3 itself, with boto3 on the driver and the executors, so all of
# them mean its s3://.
S3_ALIASES = ("s3a://", "s3n://")
URI_OPTIONS = ("--source", "--dest")
URI_VARIABLES = ("STREAMAGG_SOURCE", "STREAMAGG_DEST")


def streamagg_uri(uri: str) -> str:
    """A cluster's S3 URI as streamagg spells it: ``s3a://bucket/x`` -> ``s3://bucket/x``."""
    for alias in S3_ALIASES:
        if uri.startswith(alias):
            return "s3://" + uri[len(alias):]
    return uri


def command_args(argv: list[str]) -> list[str]:
    """The command's arguments: the Spark engine unless asked otherwise, S3 URIs mapped."""
    args = ["--engine", "spark"]  # first, so an explicit --engine later on wins
    uri_next = False
    for arg in argv:
        name, eq, value = arg.partition("=")
        if uri_next:
            args.append(streamagg_uri(arg))
        elif eq and name in URI_OPTIONS:
            args.append(f"{name}={streamagg_uri(value)}")
        else:
            args.append(arg)
        uri_next = not uri_next and arg in URI_OPTIONS
    return args


@contextlib.contextmanager
def shipped_package(spark: SparkSession) -> Iterator[None]:
    """Send the driver's own copy of streamagg to the executors, so both run the same code even
    where the cluster has another version installed, or none (its dependencies must be there)."""
    from streamagg.engines.spark.shipping import ship_package

    folder = tempfile.mkdtemp(prefix="streamagg-pyfiles-")
    try:
        ship_package(spark.sparkContext, folder)
        yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def spark_submit_stderr() -> str | None:
    """The path of spark-submit's own stderr, when this driver's stderr was merged into stdout.

    Spark's PythonRunner starts the Python driver with stderr redirected into stdout (one pipe
    that the JVM copies to its stdout), so log lines and errors would land among the results a
    caller reads from stdout. On Linux the JVM's stderr is reachable as /proc/<parent>/fd/2.
    None elsewhere, or when stderr already is separate (Glue, notebooks, a test).
    """
    try:
        out, err = os.fstat(1), os.fstat(2)
        if (out.st_dev, out.st_ino) != (err.st_dev, err.st_ino) or not stat.S_ISFIFO(err.st_mode):
            return None
        parent = os.getppid()
        with open(f"/proc/{parent}/cmdline", "rb") as cmdline:
            if b"org.apache.spark.deploy.SparkSubmit" not in cmdline.read():
                return None
        path = f"/proc/{parent}/fd/2"
        theirs = os.stat(path)
    except OSError:
        return None
    return None if (theirs.st_dev, theirs.st_ino) == (err.st_dev, err.st_ino) else path


def stderr_to_spark_submit() -> None:
    """Point this process's stderr (fd 2: log lines, errors, warnings) at spark-submit's."""
    path = spark_submit_stderr()
    if path is None:
        return
    try:
        # O_APPEND: a stderr redirected to a file is opened anew here, at offset 0 otherwise.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    except OSError:
        return
    sys.stderr.flush()
    os.dup2(fd, 2)
    os.close(fd)


def main(argv: list[str] | None = None) -> None:
    """Start (or join) the session spark-submit configured, then run the ``streamagg`` command."""
    stderr_to_spark_submit()
    from pyspark.sql import SparkSession

    from streamagg.engines.spark import quiet_pyspark_warnings
    from streamagg.ops.cli import main as command
    from streamagg.ops.command import drop_broken_streams

    args = command_args(sys.argv[1:] if argv is None else argv)
    for variable in URI_VARIABLES:
        if os.environ.get(variable):
            os.environ[variable] = streamagg_uri(os.environ[variable])
    # Made here, with spark-submit's master and settings: the engine then uses this session
    # and ignores --spark-master.
    with quiet_pyspark_warnings():
        spark = SparkSession.builder.appName("streamagg").getOrCreate()
    if spark.sparkContext.getConf().get("spark.log.level") is None:
        spark.sparkContext.setLogLevel("WARN")  # the job's own log says what it does
    try:
        with shipped_package(spark):
            command(args, prog_name="streamagg")  # exits with the command's status
    finally:
        drop_broken_streams()  # a published day's status stays 0 with stdout gone
        # After the JVM died (out of memory) stopping fails too; the command has said why.
        with contextlib.suppress(Exception):
            spark.stop()


if __name__ == "__main__":
    main()
