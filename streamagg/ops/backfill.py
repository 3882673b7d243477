"""Runs of one day or a range of days: skip and check decisions, per-day status and exit code."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..config import Config
from ..errors import NoInputError, StreamaggError, UsageError, printable
from ..outputs.report import RunReport
from ..pipeline import run_day
from ..sources import InputFile, redact
from ..units import count_of
from . import logs
from .changes import Changes, inspect_day
from .progress import progress_for

log = logging.getLogger("streamagg")

MODES = ("run", "skip-unchanged", "check")
# The exit code of a backfill with failed days is the first of these among them: a retry cannot
# fix bad usage (2) or bad data (4), so only when every failure is "anything else" (1: storage,
# network) does the backfill exit 1, the code a scheduler may retry on.
EXIT_PRIORITY = (2, 4, 1)
_DETAIL_WIDTH = 90  # longer errors are cut here; the log and the last line carry them whole


@dataclass
class DayResult:
    """What became of one day."""

    day: dt.date
    # done, dry run, skipped, unchanged, changed, no input, failed, interrupted, not run
    status: str
    seconds: float = 0.0
    report: RunReport | None = None
    changes: Changes | None = None
    error: str | None = None
    exit_code: int = 0

    @property
    def impressions(self) -> int | None:
        if self.report is not None and not self.report.dry_run:
            return self.report.totals.get("impressions")
        if self.changes is not None:
            return self.changes.impressions
        return None

    def detail(self) -> str:
        """The table's fourth column: impressions, or what went wrong, or what changed."""
        if self.status == "no input":
            return "-"  # the status says it; the path is in the log
        if self.error:
            return self.error
        if self.report is not None and self.report.dry_run:
            return count_of(len(self.report.inputs), "input file")
        if self.status == "changed" and self.changes is not None:
            return self.changes.brief()
        return f"{self.impressions:,}" if self.impressions is not None else "-"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"day": self.day.isoformat(), "status": self.status,
                               "impressions": self.impressions, "error": self.error,
                               "exit_code": self.exit_code, "seconds": round(self.seconds, 3)}
        if self.report is not None:
            out["output"] = self.report.output_uri
        if self.changes is not None:
            out["changes"] = self.changes.as_dict()
        return out


class BackfillFailed(StreamaggError):
    """Some days of a backfill failed; the exit code is the highest-priority of theirs."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def days_between(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every day from ``first`` to ``last``, both included."""
    if last < first:
        raise UsageError(f"--to {last.isoformat()} is before DATE {first.isoformat()}")
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def run_days(config: Config, *, until: dt.date | None = None, mode: str = "run",
             keep_going: bool = False, progress: bool | None = None,
             console: logs.Console | None = None) -> int:
    """The command's work: one day (errors propagate), or each day to ``until`` with a table.

    Returns the exit status; a failed backfill raises `BackfillFailed` after its table.
    """
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}")
    if keep_going and until is None:
        raise UsageError("--keep-going applies to a backfill only: give --to DATE too")
    console = console or logs.Console(config.log_format, logs.new_run_id())
    if until is None:
        result = run_one_day(config, mode=mode, progress=progress)
        with published_stays_done(result.status in PUBLISHED, result.day):
            show_day(console, result)
        return 0
    return _backfill(config, days_between(config.day, until), mode=mode, keep_going=keep_going,
                     progress=progress, console=console)


# A day in one of these states has its manifest published: it is done, whatever happens to
# the summary that says so.
PUBLISHED = ("done", "skipped")


@contextlib.contextmanager
def published_stays_done(published: bool, day: dt.date | None = None) -> Iterator[None]:
    """Once the manifest is published the day is done: stdout failing under the summary (a
    full disk, a closed pipe) is a warning, not a failure. Otherwise it fails the run."""
    try:
        yield
    except logs.StdoutError as err:
        if not published:
            raise
        with logs.context(**({"day": day.isoformat()} if day is not None else {})):
            log.warning("the results are published, but %s; their manifest has the summary",
                        err, extra={"status": "published"})


def run_one_day(config: Config, *, mode: str = "run", progress: bool | None = None) -> DayResult:
    """Check, skip or run one day; a failure raises its `StreamaggError`."""
    day = config.day.isoformat()
    began = time.monotonic()
    with logs.context(day=day):
        if mode == "check":
            changes = inspect_day(config)
            status = "unchanged" if changes.unchanged else "changed"
            return DayResult(config.day, status, time.monotonic() - began, changes=changes)
        if mode == "skip-unchanged" and not config.dry_run:
            changes = inspect_day(config)
            if changes.unchanged:
                result = DayResult(config.day, "skipped", time.monotonic() - began,
                                   changes=changes)
                log.info("%s skipped: its %s unchanged since the run that finished %s", day,
                         count_of(changes.inputs, "input file") + (
                             " is" if changes.inputs == 1 else " are"), changes.finished_text,
                         extra={"status": "skipped", "inputs": changes.inputs})
                return result
            log.info("%s changed: %s; recomputing the whole day", day, changes.brief(),
                     extra={"status": "changed", "new": len(changes.new),
                            "gone": len(changes.gone), "modified": len(changes.modified)})
        bar = None if config.dry_run else progress_for(day, progress)
        try:
            report = run_day(config, on_file_done=_log_file, progress=bar)
        finally:
            if bar is not None:
                bar.close()
        seconds = time.monotonic() - began
        if report.dry_run:
            return DayResult(config.day, "dry run", seconds, report=report)
        totals = report.totals
        log.info("%s done: %s impressions from %s rows (%s bad, %s duplicates) in %.1f s",
                 day, f"{totals['impressions']:,}", f"{totals['rows_read']:,}",
                 f"{totals['bad_rows']:,}", f"{totals['duplicates']:,}", seconds,
                 extra={"status": "done", **totals, "output": report.output_uri,
                        "seconds": round(seconds, 3)})
        return DayResult(config.day, "done", seconds, report=report)


def _log_file(item: InputFile) -> None:
    # Noise at the default level (one line per file); --verbose shows them.
    log.debug("read %s", item.uri, extra={"file": item.uri, "bytes": item.size})


def show_day(console: logs.Console, result: DayResult) -> None:
    """What a single-day run prints on stdout at the end."""
    if result.report is not None:
        console.summary(result.report, result.seconds)
        return
    changes = result.changes
    assert changes is not None
    if result.status == "skipped":
        if console.json:
            console.emit({"day": changes.day, "status": "skipped", "output": changes.output_uri,
                          "manifest": changes.manifest_uri, "inputs": changes.inputs,
                          "impressions": changes.impressions})
        else:
            console.echo(f"{changes.day}: skipped: {count_of(changes.inputs, 'input file')} "
                         f"unchanged since the run that finished {changes.finished_text}")
            console.echo(f"  output     {changes.output_uri}")
            console.echo(f"  manifest   {changes.manifest_uri}")
        return
    if console.json:
        console.emit(changes.as_dict())
        return
    for line in changes.lines():
        console.echo(line)
    if not changes.unchanged:
        console.echo("a run recomputes the whole day")


def _backfill(config: Config, days: list[dt.date], *, mode: str, keep_going: bool,
              progress: bool | None, console: logs.Console) -> int:
    results: list[DayResult] = []
    log.info("backfill of %s, %s to %s", count_of(len(days), "day"), days[0], days[-1],
             extra={"from": days[0].isoformat(), "to": days[-1].isoformat(), "days": len(days)})
    try:
        for day in days:
            result = _one_of_many(dataclasses.replace(config, day=day), mode, progress)
            results.append(result)
            if result.report is not None and result.report.stopped is not None:
                raise result.report.stopped  # that day is done; the ones after it are not run
            if not console.json and result.changes is not None and mode == "check":
                for line in result.changes.lines():
                    console.echo(line)
            if not console.json and result.report is not None and result.report.dry_run:
                console.summary(result.report, result.seconds)
            if result.status == "failed" and not keep_going:
                break
    except KeyboardInterrupt as stop:
        # The table still says what was done before the stop (Ctrl-C, or a scheduler's SIGTERM).
        # One that came after a day was published leaves that day done, the next one not run.
        last = results[-1].report if results else None
        if last is None or last.stopped is not stop:
            results.append(DayResult(days[len(results)], "interrupted"))
        with contextlib.suppress(logs.StdoutError):  # the stop is what must be told
            _show_table(console, results, days, config)
        raise
    # The days run are published; a table stdout cannot take does not undo them.
    with published_stays_done(mode != "check" and not config.dry_run):
        _show_table(console, results, days, config)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        codes = {r.exit_code for r in failed}
        code = next((c for c in EXIT_PRIORITY if c in codes), max(codes))
        first = failed[0]
        raise BackfillFailed(f"{len(failed):,} of {count_of(len(days), 'day')} failed; first "
                             f"{first.day.isoformat()}: {first.error}", code)
    missing = [r.day.isoformat() for r in results if r.status == "no input"]
    if len(missing) == len(days):
        raise NoInputError(f"no input files in any partition from {days[0]} to {days[-1]}",
                           uri=redact(config.source))
    if missing:
        # A day without input inside a range is what a scheduler must hear about (exit 3),
        # as it would running that day alone; the table says which days.
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise NoInputError(f"{len(missing):,} of {count_of(len(days), 'day')} had no input "
                           f"files: {shown}",
                           uri=redact(config.source))
    return 0


def _one_of_many(config: Config, mode: str, progress: bool | None) -> DayResult:
    began = time.monotonic()
    day = config.day.isoformat()
    try:
        return run_one_day(config, mode=mode, progress=progress)
    except NoInputError as err:
        # Not a failure inside a backfill: days without traffic exist; the table shows them.
        log.warning("%s: %s", day, err, extra={"day": day, "status": "no input"})
        return DayResult(config.day, "no input", time.monotonic() - began, error=str(err),
                         exit_code=err.exit_code)
    except StreamaggError as err:
        log.error("%s failed: %s", day, err,
                  extra={"day": day, "status": "failed", "exit_code": err.exit_code})
        return DayResult(config.day, "failed", time.monotonic() - began, error=str(err),
                         exit_code=err.exit_code)
    except Exception as err:  # noqa: BLE001 - one day's surprise must not hide the others'
        log.error("%s failed: unexpected error", day, exc_info=True,
                  extra={"day": day, "status": "failed", "exit_code": 1})
        return DayResult(config.day, "failed", time.monotonic() - began,
                         error=f"unexpected error: {type(err).__name__}: {err}", exit_code=1)


def _show_table(console: logs.Console, results: list[DayResult], days: list[dt.date],
                config: Config) -> None:
    rows = results + [DayResult(d, "not run") for d in days[len(results):]]
    if console.json:
        failed = [r for r in rows if r.status == "failed"]
        missing = [r for r in rows if r.status == "no input"]
        console.emit({"from": days[0].isoformat(), "to": days[-1].isoformat(),
                      "status": "failed" if failed else "no input" if missing else "done",
                      "days": [r.as_dict() for r in rows]})
        return
    for line in format_table(rows).splitlines():
        console.echo(line)


def format_table(rows: list[DayResult]) -> str:
    """day, status, impressions (or the error), seconds: one line per day, aligned."""
    def status(r: DayResult) -> str:
        return f"{r.status} ({r.exit_code})" if r.status == "failed" else r.status

    def detail(r: DayResult) -> str:
        text = "" if r.status in ("not run", "interrupted") else printable(r.detail())
        return text if len(text) <= _DETAIL_WIDTH else text[:_DETAIL_WIDTH - 3] + "..."

    status_width = max(len("status"), *(len(status(r)) for r in rows))
    detail_width = max(len("impressions or error"), *(len(detail(r)) for r in rows))
    lines = [f"{'day':<10}  {'status':<{status_width}}  {'impressions or error':<{detail_width}}"
             f"  {'seconds':>7}"]
    for r in rows:
        seconds = f"{r.seconds:7.1f}" if r.status not in ("not run", "interrupted") else " " * 7
        lines.append(f"{r.day.isoformat():<10}  {status(r):<{status_width}}  "
                     f"{detail(r):<{detail_width}}  {seconds}")
    done = sum(r.status in ("done", "skipped", "unchanged", "changed", "dry run") for r in rows)
    lines.append(f"{done:,} of {count_of(len(rows), 'day')} ok, "
                 f"{sum(r.status == 'failed' for r in rows):,} failed, "
                 f"{sum(r.status == 'no input' for r in rows):,} without input")
    return "\n".join(line.rstrip() for line in lines)
