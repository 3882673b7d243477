"""The ``streamagg`` command: parse options, call the pipeline, map errors to exit codes."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any

import click

from .. import __version__
from ..config import LOG_FORMATS, BadRowLimit, Config, parse_day, parse_size
from ..errors import StreamaggError, UsageError
from ..pandas_guard import keep_pandas_out
from ..registry import DEDUPE_BACKENDS, ENGINES
from . import logs
from .allocators import tune_allocators
from .backfill import run_days

log = logging.getLogger("streamagg")


class _OneLineErrors(click.Command):
    """Every failure: one line on stderr, its exit code (docs/CONTRACT.md), no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        # click answers a KeyboardInterrupt that reaches its main() with an empty line on
        # stderr (to end a terminal's ``^C``), which would break one JSON object per line;
        # so a stop inside the command never reaches it as one.
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as err:
            raise _Stopped(terminated=isinstance(err, _Terminated)) from err

    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        logs.reset()
        error_format = logs.format_from_args(list(args) if args is not None else sys.argv[1:])
        try:
            result = super().main(args=args, prog_name=prog_name or "streamagg",
                                  complete_var=complete_var, standalone_mode=False, **extra)
        except _Stopped as err:
            if err.terminated:
                _fail("terminated by SIGTERM", 143, error_format)
            _fail("interrupted", 130, error_format)
        except click.exceptions.Abort as err:
            # A stop while click itself parses the options still arrives as Abort.
            if isinstance(err.__context__, _Terminated):
                _fail("terminated by SIGTERM", 143, error_format)
            _fail("interrupted", 130, error_format)
        except click.ClickException as err:
            _fail(err.format_message(), err.exit_code, error_format)
        except StreamaggError as err:
            _fail(str(err), err.exit_code, error_format)
        except _Terminated:
            _fail("terminated by SIGTERM", 143, error_format)
        except KeyboardInterrupt:
            _fail("interrupted", 130, error_format)
        except Exception as err:  # noqa: BLE001 - unexpected: still one line, exit 1
            log.debug("unexpected error", exc_info=True)
            _fail(f"unexpected error: {type(err).__name__}: {err}", 1, error_format)
        sys.exit(result if isinstance(result, int) else 0)


class _Stopped(Exception):
    """A SIGINT or SIGTERM inside the command, carried past click's own KeyboardInterrupt
    handling."""

    def __init__(self, *, terminated: bool) -> None:
        super().__init__("terminated" if terminated else "interrupted")
        self.terminated = terminated


def _fail(message: str, code: int, log_format: str) -> None:
    click.echo(logs.error_line(message, code, log_format), err=True)
    sys.exit(code)


@click.command(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("date")
@click.option("--source", envvar="STREAMAGG_SOURCE", default="./data", show_default=True,
              help="Root of the date partitions: a path, file:// or s3://bucket[/prefix]. "
                   "[env: STREAMAGG_SOURCE]")
@click.option("--dest", envvar="STREAMAGG_DEST", default=None,
              help="Root of the results. [default: <source>/results; env: STREAMAGG_DEST]")
@click.option("--initials", envvar="STREAMAGG_INITIALS", default="SA", show_default=True,
              help="1 to 8 ASCII letters for the file name. [env: STREAMAGG_INITIALS]")
@click.option("--chunk-size", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Rows per record batch.")
@click.option("--memory-limit", default="256MB", show_default=True,
              help="Target for the peak resident memory of the whole process, e.g. 256MB or "
                   "1GB (binary units; at least 128MB, reliable from 192MB). The summary warns "
                   "when the measured peak passed it.")
@click.option("--dedupe", type=click.Choice(DEDUPE_BACKENDS.names), default="spill",
              show_default=True,
              help="On-disk key set: hash-partitioned spill files or a sqlite key table.")
@click.option("--tmp-dir", type=click.Path(file_okay=False), default=None,
              help="Where spill files go; removed at exit. [default: system temp]")
@click.option("--engine", type=click.Choice(ENGINES.names), default="local", show_default=True,
              help="Where the work runs.")
@click.option("--spark-master", default="local[*]", show_default=True,
              help="Spark master for --engine spark: local[N], yarn, spark://host:port. "
                   "A running session (spark-submit) is used as it is.")
@click.option("--spark-env", default="auto", show_default=True, metavar="auto|PATH|none",
              help="What cluster executors run: auto ships an archive of this Python "
                   "environment (built once, cached) unless PYSPARK_PYTHON is set; PATH ships "
                   "that archive; none ships only the streamagg package.")
@click.option("--endpoint-url", default=None,
              help="An S3-compatible endpoint. [env: AWS_ENDPOINT_URL]")
@click.option("--max-bad-rows", default="1%", show_default=True,
              help="Fail when more rows than this are bad: a count or a percentage of rows read.")
@click.option("--dry-run", is_flag=True, help="List inputs and the output path; write nothing.")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default="text", show_default=True,
              help="Log lines for people or for log collectors.")
@click.option("--progress/--no-progress", default=None,
              help="A progress bar on stderr. [default: on when stderr is a terminal]")
@click.option("--to", "to", metavar="DATE", default=None,
              help="Backfill: run every day from DATE to this one, with a status table.")
@click.option("--keep-going", is_flag=True,
              help="In a backfill, go on past a failed day (the exit status still says so).")
@click.option("--skip-unchanged", is_flag=True,
              help="Skip a day whose inputs, output and parameters match its manifest.")
@click.option("--check", is_flag=True,
              help="Report new, gone and modified inputs since the manifest; write nothing.")
@click.option("--incremental", is_flag=True,
              help="Fold only files that arrived since the last run into the day's kept state; "
                   "recompute the whole day when that is not exact.")
@click.option("--state", "state", metavar="URI", default=None,
              help="Root of the kept states for --incremental. [default: beside the results]")
@click.option("--plot", is_flag=True,
              help="Also write a PNG of the day beside the output (needs the plot extra).")
@click.version_option(__version__, prog_name="streamagg")
def main(date: str, source: str, dest: str | None, initials: str, chunk_size: int,
         memory_limit: str, dedupe: str, tmp_dir: str | None, engine: str,
         endpoint_url: str | None, max_bad_rows: str, dry_run: bool, log_format: str,
         progress: bool | None, spark_master: str, spark_env: str, to: str | None,
         keep_going: bool, skip_unchanged: bool, check: bool, incremental: bool,
         state: str | None, plot: bool) -> int:
    """Aggregate one day of ad impressions: DATE is YYYY-MM-DD (with --to, a range of days)."""
    if engine == "local":  # pyspark's Arrow functions need pandas on the Spark engine's driver
        keep_pandas_out()
    _terminate_cleanly()
    _quiet_pyarrow_row_text()
    console = logs.setup(log_format)
    if check and (dry_run or skip_unchanged):
        raise UsageError("--check writes nothing: it cannot be combined with --dry-run or "
                         "--skip-unchanged")
    config = Config(
        day=parse_day(date), source=source, dest=dest or None, initials=initials,
        chunk_size=chunk_size, memory_limit=parse_size(memory_limit), dedupe=dedupe,
        tmp_dir=tmp_dir, engine=engine, endpoint_url=endpoint_url,
        max_bad_rows=BadRowLimit.parse(max_bad_rows), dry_run=dry_run, log_format=log_format,
        spark_master=spark_master, spark_env=spark_env, plot=plot,
        incremental=incremental, state=state or None,
    )
    tune_allocators(memory_limit=config.memory_limit)
    mode = "check" if check else "skip-unchanged" if skip_unchanged else "run"
    return run_days(config, until=parse_day(to) if to is not None else None, mode=mode,
                    keep_going=keep_going, progress=progress, console=console)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop) unwinds like Ctrl-C, so temp files and uploads are cleaned."""


def _terminate_cleanly() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise _Terminated()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def _quiet_pyarrow_row_text() -> None:
    """pyarrow reports a row it cannot decode for its invalid-row handler as an "exception
    ignored" on stderr before raising; the reader then re-reads that file exactly, so the
    message is noise for the operator."""
    default = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, UnicodeDecodeError) and "on_invalid" in repr(
                unraisable.object):
            return
        default(unraisable)

    sys.unraisablehook = hook
