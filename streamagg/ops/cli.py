"""The ``streamagg`` command: declare the options, call the pipeline, map errors to exit codes."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import click

from .. import __version__
from ..config import (
    DEFAULT_MEMORY_LIMIT_HELP,
    DEFAULT_SPARK_MASTER,
    LOG_FORMATS,
    Config,
    parse_day,
)
from ..errors import UsageError
from ..pandas_guard import keep_pandas_out
from ..registry import DEDUPE_BACKENDS, ENGINES
from . import logs
from .allocators import tune_allocators
from .backfill import run_days
from .command import OneLineCommand, stop_on_signals


def default(name: str) -> Any:
    """`Config`'s default for a field: the only place defaults are written."""
    for spec in dataclasses.fields(Config):
        if spec.name == name:
            if spec.default is not dataclasses.MISSING:
                return spec.default
            return spec.default_factory()  # type: ignore[operator]
    raise KeyError(name)


def shown_default(name: str) -> str:
    """How --help writes a field's default: thousands separators, sizes as given."""
    if name == "memory_limit":
        return DEFAULT_MEMORY_LIMIT_HELP
    value = default(name)
    return f"{value:,}" if isinstance(value, int) else str(value)


EPILOG = """\b
Examples:
  streamagg 2021-01-30 --source ./data          one day; results in ./data/results
  streamagg 2021-01-30 --source s3://logs/impressions --dest s3://logs/daily
  streamagg 2021-01-01 --to 2021-01-31          January, one day after the other
  streamagg 2021-01-30 --dry-run                list the inputs, write nothing

\b
Exit status:
  0    done: also a skip, a dry run, a check; once the results are published,
       0 even if stdout or stderr can no longer be written
  2    bad usage: a bad date or option, a source root that is not there
  3    the day's folder holds no input files: the data has not arrived
  4    bad data: a missing column, more bad rows than --max-bad-rows
  1    anything else: storage, network or Spark failures, after retries
  130  interrupted (Ctrl-C); 143 terminated (SIGTERM); 129 the terminal
       closed (SIGHUP). Temporary files are removed, uploads aborted.
Every failure prints one line on stderr; nothing is written unless the whole
day succeeded. docs/CONTRACT.md has the whole contract.
"""


@click.command(cls=OneLineCommand, epilog=EPILOG,
               context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("date")
@click.option("--source", envvar="STREAMAGG_SOURCE", metavar="URI",
              help="Root of the date partitions: a path, file:// or s3://bucket[/prefix]. "
                   f"[default: {shown_default('source')}; env: STREAMAGG_SOURCE]")
@click.option("--endpoint-url", metavar="URL",
              help="An S3-compatible endpoint. [env: AWS_ENDPOINT_URL]")
@click.option("--max-bad-rows", metavar="N|P%",
              help="Fail when more rows than this are bad: a count or a percentage of rows "
                   f"read. [default: {shown_default('max_bad_rows')}]")
@click.option("--dest", envvar="STREAMAGG_DEST", metavar="URI",
              help="Root of the results. [default: <source>/results; env: STREAMAGG_DEST]")
@click.option("--initials", envvar="STREAMAGG_INITIALS", metavar="LETTERS",
              help="1 to 8 ASCII letters for the file names. "
                   f"[default: {shown_default('initials')}; env: STREAMAGG_INITIALS]")
@click.option("--plot", is_flag=True,
              help="Also write a PNG of the day beside the output (needs the plot extra).")
@click.option("--dry-run", is_flag=True, help="List inputs and the output path; write nothing.")
@click.option("--memory-limit", metavar="SIZE",
              help="Target for the peak resident memory of the whole process, e.g. 256MB or "
                   "1GB (binary units; at least 128MB, reliable from 192MB). The summary warns "
                   f"when the measured peak passed it. [default: {shown_default('memory_limit')}]")
@click.option("--chunk-size", metavar="ROWS",
              help=f"Rows per record batch, 1 or more. [default: {shown_default('chunk_size')}]")
@click.option("--dedupe", type=click.Choice(DEDUPE_BACKENDS.names),
              help="On-disk key set: hash-partitioned spill files or a sqlite key table. "
                   f"[default: {shown_default('dedupe')}]")
@click.option("--tmp-dir", metavar="PATH",
              help="Where spill files go; removed at exit. [default: the system's temp folder]")
@click.option("--engine", type=click.Choice(ENGINES.names),
              help=f"Where the work runs. [default: {shown_default('engine')}]")
@click.option("--spark-master", metavar="MASTER",
              help="Spark master for --engine spark: local[N], yarn, spark://host:port. A "
                   "running session (spark-submit's) is used as it is. "
                   f"[default: {DEFAULT_SPARK_MASTER}]")
@click.option("--spark-env", metavar="auto|PATH|none",
              help="What cluster executors run: auto ships an archive of this Python "
                   "environment (built once, cached) unless PYSPARK_PYTHON is set; PATH ships "
                   "that archive; none ships only the streamagg package. "
                   f"[default: {shown_default('spark_env')}]")
@click.option("--to", "to", metavar="LAST_DATE",
              help="A backfill: run DATE, then each following day up to and including "
                   "LAST_DATE (YYYY-MM-DD), one after the other, with a status table.")
@click.option("--keep-going", is_flag=True,
              help="In a backfill, go on past a failed day (the exit status still says so).")
@click.option("--skip-unchanged", is_flag=True,
              help="Skip a day whose inputs, output and parameters match its manifest.")
@click.option("--check", is_flag=True,
              help="Report new, gone and modified inputs since the manifest; write nothing.")
@click.option("--incremental", is_flag=True,
              help="Fold only files that arrived since the last run into the day's kept state; "
                   "recompute the whole day when that is not exact.")
@click.option("--state", "state", metavar="URI",
              help="Root of the kept states for --incremental. [default: beside the results]")
@click.option("-q", "--quiet", is_flag=True,
              help="Only warnings and errors on stderr (the summary still goes to stdout).")
@click.option("-v", "--verbose", is_flag=True,
              help="Also a line on stderr for each file read, and debugging details.")
@click.option("--log-format", type=click.Choice(LOG_FORMATS),
              help=f"Log lines for people or for log collectors. "
                   f"[default: {shown_default('log_format')}]")
@click.option("--progress/--no-progress", default=None,
              help="A progress bar on stderr. [default: on when stderr is a terminal, off "
                   "with --quiet]")
@click.version_option(__version__, "-V", "--version", prog_name="streamagg")
def main(date: str, to: str | None, keep_going: bool, skip_unchanged: bool, check: bool,
         quiet: bool, verbose: bool, progress: bool | None, **options: Any) -> int:
    """Aggregate one day of ad impressions: de-duplicate the day's CSV logs, count them per
    campaign and hour, write one CSV. DATE is the day, YYYY-MM-DD."""
    stop_on_signals()
    if quiet and verbose:
        raise UsageError("-q/--quiet and -v/--verbose contradict each other: give one")
    if check and (options["dry_run"] or skip_unchanged):
        raise UsageError("--check writes nothing: it cannot be combined with --dry-run or "
                         "--skip-unchanged")
    # Options not given are left out, so that Config's defaults apply; Config parses the rest.
    given: dict[str, Any] = {name: value for name, value in options.items() if value is not None}
    config = Config(**{"day": date, **given})
    if config.engine == "local":  # pyspark's Arrow functions need pandas on Spark's driver
        keep_pandas_out()
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    console = logs.setup(config.log_format, level=level)
    tune_allocators(memory_limit=config.memory_limit)
    mode = "check" if check else "skip-unchanged" if skip_unchanged else "run"
    if quiet and progress is None:
        progress = False  # stderr stays silent on a clean run
    return run_days(config, until=parse_day(to) if to is not None else None, mode=mode,
                    keep_going=keep_going, progress=progress, console=console)
