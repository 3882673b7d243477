"""The ``streamagg`` command: parse options, call the pipeline, map errors to exit codes."""

from __future__ import annotations

import importlib.abc
import json
import logging
import signal
import sys
import threading
import time
import uuid
from typing import Any

import click

from . import __version__
from .config import (
    DEDUPE_BACKENDS,
    ENGINES,
    LOG_FORMATS,
    BadRowLimit,
    Config,
    parse_day,
    parse_size,
)
from .errors import StreamaggError
from .memory import tune_allocators
from .pipeline import RunReport, run_day
from .sources import InputFile

log = logging.getLogger("streamagg")


class _OneLineErrors(click.Command):
    """Every failure is one line on stderr and its SPEC exit code; no traceback when expected."""

    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        try:
            result = super().main(args=args, prog_name=prog_name or "streamagg",
                                  complete_var=complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            _fail("interrupted", 130)
        except click.ClickException as err:
            _fail(err.format_message(), err.exit_code)
        except StreamaggError as err:
            _fail(str(err), err.exit_code)
        except _Terminated:
            _fail("terminated by SIGTERM", 143)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as err:  # noqa: BLE001 - unexpected: still one line, exit 1
            log.debug("unexpected error", exc_info=True)
            _fail(f"unexpected error: {type(err).__name__}: {err}", 1)
        sys.exit(result if isinstance(result, int) else 0)


def _fail(message: str, code: int) -> None:
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    click.echo(f"streamagg: error: {first}", err=True)
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
              help="Working-set budget, e.g. 256MB or 1GB.")
@click.option("--dedupe", type=click.Choice(DEDUPE_BACKENDS), default="spill", show_default=True,
              help="On-disk key set: hash-partitioned spill files or a sqlite key table.")
@click.option("--tmp-dir", type=click.Path(file_okay=False), default=None,
              help="Where spill files go; removed at exit. [default: system temp]")
@click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
              help="Where the work runs.")
@click.option("--spark-master", default="local[*]", show_default=True,
              help="Spark master for --engine spark: local[N], yarn, spark://host:port. "
                   "A running session (spark-submit) is used as it is.")
@click.option("--endpoint-url", default=None,
              help="An S3-compatible endpoint. [env: AWS_ENDPOINT_URL]")
@click.option("--max-bad-rows", default="1%", show_default=True,
              help="Fail when more rows than this are bad: a count or a percentage of rows read.")
@click.option("--dry-run", is_flag=True, help="List inputs and the output path; write nothing.")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default="text", show_default=True,
              help="Log lines for people or for log collectors.")
@click.option("--progress/--no-progress", default=None,
              help="A progress bar on stderr. [default: on when stderr is a terminal]")
@click.version_option(__version__, prog_name="streamagg")
def main(date: str, source: str, dest: str | None, initials: str, chunk_size: int,
         memory_limit: str, dedupe: str, tmp_dir: str | None, engine: str,
         endpoint_url: str | None, max_bad_rows: str, dry_run: bool, log_format: str,
         progress: bool | None, spark_master: str) -> int:
    """Aggregate one day of ad impressions: DATE is YYYY-MM-DD."""
    if engine == "local":  # pyspark's Arrow functions need pandas on the Spark engine's driver
        _keep_pandas_out()
    tune_allocators()
    _terminate_cleanly()
    _quiet_pyarrow_row_text()
    run_id = uuid.uuid4().hex[:12]
    _setup_logging(log_format, run_id)
    if progress is None:
        progress = sys.stderr.isatty()
    config = Config(
        day=parse_day(date), source=source, dest=dest or None, initials=initials,
        chunk_size=chunk_size, memory_limit=parse_size(memory_limit), dedupe=dedupe,
        tmp_dir=tmp_dir, engine=engine, endpoint_url=endpoint_url,
        max_bad_rows=BadRowLimit.parse(max_bad_rows), dry_run=dry_run, log_format=log_format,
        progress=progress, spark_master=spark_master,
    )
    began = time.monotonic()
    if progress and not dry_run:
        report = _run_with_progress(config)
    else:
        report = run_day(config)
    _print_summary(report, log_format, run_id, time.monotonic() - began)
    return 0


class _NoPandas(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError("streamagg keeps pandas out of its process")
        return None


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


def _keep_pandas_out() -> None:
    """pyarrow imports pandas, when installed, on its first conversion of a Python value,
    which costs about 40 MB of a 256 MB budget for nothing: the command never needs it."""
    if "pandas" not in sys.modules and not any(isinstance(f, _NoPandas) for f in sys.meta_path):
        sys.meta_path.insert(0, _NoPandas())


def _run_with_progress(config: Config) -> RunReport:
    from .pipeline import plan

    _, _, inputs, _ = plan(config)
    total = sum(i.size for i in inputs) or 1
    with click.progressbar(length=total, label="reading", file=sys.stderr,
                           show_eta=True, show_percent=True) as bar:
        def advance(item: InputFile) -> None:
            bar.update(item.size)

        return run_day(config, on_file_done=advance)


def _print_summary(report: RunReport, log_format: str, run_id: str, seconds: float) -> None:
    if report.dry_run:
        if log_format == "json":
            click.echo(json.dumps({"run_id": run_id, "dry_run": True,
                                   "inputs": [i.uri for i in report.inputs],
                                   "output": report.output_uri}))
            return
        click.echo(f"{len(report.inputs)} input files:")
        for item in report.inputs:
            click.echo(f"  {item.uri}  ({item.size} bytes)")
        click.echo(f"output would be written to {report.output_uri}")
        return
    totals = report.totals
    if log_format == "json":
        click.echo(json.dumps({"run_id": run_id, "output": report.output_uri,
                               "manifest": report.manifest_uri, "rejects": report.rejects_uri,
                               "totals": totals, "elapsed_seconds": round(seconds, 3),
                               "peak_memory_bytes": report.manifest.get("peak_memory_bytes")}))
        return
    peak = report.manifest.get("peak_memory_bytes", 0) / 2**20
    click.echo(f"wrote {report.output_uri}")
    click.echo(f"  inputs       {len(report.inputs)} files ({totals['empty_files']} empty skipped)")
    click.echo(f"  rows read    {totals['rows_read']:,}")
    click.echo(f"  bad rows     {totals['bad_rows']:,}"
               + (f"  -> {report.rejects_uri}" if report.rejects_uri else ""))
    click.echo(f"  duplicates   {totals['duplicates']:,} "
               f"({totals['conflicting_duplicates']:,} with a different campaign)")
    click.echo(f"  impressions  {totals['impressions']:,} "
               f"({totals['outside_day']:,} outside the day)")
    click.echo(f"  output rows  {totals['output_rows']:,}")
    click.echo(f"  time         {seconds:.2f} s, peak memory {peak:.0f} MB")
    click.echo(f"  manifest     {report.manifest_uri}")


class _JsonFormatter(logging.Formatter):
    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
                           "level": record.levelname.lower(), "run_id": self.run_id,
                           "message": record.getMessage()})


def _setup_logging(log_format: str, run_id: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter(run_id))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                               "%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
