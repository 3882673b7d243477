"""The driver JVM pyspark starts, launched with its stderr read line by line into the log."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping

log = logging.getLogger("streamagg")

# The JVM's own start-up notes (not Spark's log): nothing an operator acts on.
_JVM_NOISE = ("WARNING: Using incubator modules",)
_LEVELS = {"TRACE": logging.DEBUG, "DEBUG": logging.DEBUG, "INFO": logging.INFO,
           "WARN": logging.WARNING, "WARNING": logging.WARNING, "ERROR": logging.ERROR,
           "FATAL": logging.ERROR}


def launch_logged_jvm(settings: Mapping[str, str]) -> bool:
    """Start the gateway JVM pyspark would start for ``settings``, with its stderr on a pipe
    whose lines become log records: on a terminal they step around the progress bar instead of
    landing on it, and with JSON logs they are JSON records too.

    pyspark then uses this gateway for the session (``SparkContext._gateway``; the launch is
    pyspark's own, with ``popen_kwargs`` its documented hook for capturing the JVM's output).
    Nothing is launched, and False returned, when a gateway exists already (an earlier session
    of this process, spark-submit's).
    """
    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway

    if SparkContext._gateway is not None or "PYSPARK_GATEWAY_PORT" in os.environ:
        return False
    conf = SparkConf()
    conf.setAll(list(settings.items()))
    read_end, write_end = os.pipe()
    threading.Thread(target=forward_lines, args=(read_end,), name="spark-jvm-stderr",
                     daemon=True).start()
    try:
        gateway = launch_gateway(conf, popen_kwargs={"stderr": write_end})
    finally:
        os.close(write_end)  # the JVM holds its own copy; EOF comes when it exits
    SparkContext._ensure_initialized(gateway=gateway)
    return True


def forward_lines(fd: int) -> None:
    """Log each line read from ``fd`` until its end: the JVM's stderr."""
    level = logging.WARNING
    with open(fd, "rb", closefd=True) as pipe:
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                level = line_level(line, level)
                log.log(level, "spark: %s", line, extra={"origin": "spark"})


def line_level(line: str, previous: int) -> int:
    """The level of a line of the JVM's stderr: a log4j line's own (Spark's log settings put
    the level first), the previous line's for the rest of a stack trace, DEBUG for the JVM's
    start-up notes, else WARNING."""
    if line.startswith(_JVM_NOISE):
        return logging.DEBUG
    if line[:1].isspace() or line.startswith(("Caused by", "...")):
        return previous
    first = line.split(" ", 1)[0]
    return _LEVELS.get(first, logging.WARNING)
