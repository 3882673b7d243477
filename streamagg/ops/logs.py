"""How a run speaks: log lines as text or JSON on stderr, one-line errors, end-of-run summaries."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import click

from ..budget import RELIABLE_MEMORY_LIMIT
from ..errors import StorageError, printable
from ..units import count_of, human_bytes

if TYPE_CHECKING:
    from ..config import Config
    from ..outputs.report import RunReport

log = logging.getLogger("streamagg")

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is a field.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "taskName"}


class LiveLine(Protocol):
    """A line redrawn in place, which log records must step around."""

    def clear(self) -> None: ...

    def redraw(self) -> None: ...

    def stage(self, text: str) -> None:
        """What the run is doing while no bytes flow (a record's ``stage`` field)."""


@dataclass
class _State:
    log_format: str = "text"
    run_id: str = ""
    live: LiveLine | None = None


_state = _State()
_fields: dict[str, Any] = {}  # added to every JSON record, e.g. the day of a backfill


def new_run_id() -> str:
    """Twelve hex digits: enough to tell runs apart in a log store, short enough to type."""
    return uuid.uuid4().hex[:12]


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, run_id, message, then context and extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "run_id": _state.run_id,
            "message": printable(record.getMessage()),
        }
        payload.update(_fields)
        payload.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time LEVEL message``, the message escaped so that a name holding a newline or a
    terminal escape can neither forge a second line nor reach the terminal. The time is the
    one format people read everywhere (`streamagg.units.human_time`): ISO 8601, UTC."""

    converter = staticmethod(time.gmtime)
    default_time_format = "%Y-%m-%dT%H:%M:%SZ"
    default_msec_format = None

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = printable(record.message)
        return super().formatMessage(record)


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is now, stepping around a progress bar on it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            live = _state.live
            if live is not None:
                live.clear()
                stage = getattr(record, "stage", None)
                if isinstance(stage, str):
                    live.stage(stage)
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
            if live is not None:
                live.redraw()
        except (OSError, ValueError):
            pass  # stderr is gone (a closed terminal, a full disk): nobody to tell, go on
        except Exception:  # noqa: BLE001 - logging must never fail the run
            self.handleError(record)


def setup(log_format: str, run_id: str | None = None, level: int = logging.INFO) -> Console:
    """Route the ``streamagg`` logger to stderr as text or JSON lines, from ``level`` up
    (WARNING for --quiet, DEBUG for --verbose); the console for stdout."""
    _state.log_format = log_format
    _state.run_id = run_id or new_run_id()
    _state.live = None
    _fields.clear()
    handler = _StderrHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    return Console(log_format, _state.run_id)


def reset() -> None:
    """Forget an earlier run in this process (tests, callers invoking the command twice)."""
    _state.log_format, _state.run_id, _state.live = "text", "", None
    _fields.clear()


def format_from_args(args: Sequence[str]) -> str:
    """``--log-format`` as given on the command line, for errors raised before it is parsed."""
    for index, arg in enumerate(args):
        if arg == "--log-format" and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith("--log-format="):
            return arg.split("=", 1)[1]
    return "text"


def error_line(message: str, code: int, log_format: str | None = None) -> str:
    """The one line a failed run prints on stderr: text, or a JSON record in JSON mode."""
    # Escaped, not cut at a newline: the whole message, naming its file, stays on one line.
    first = printable(message.strip()) or "failed"
    if (log_format or _state.log_format) == "json":
        return json.dumps({"ts": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
                           .replace("+00:00", "Z"), "level": "error",
                           "run_id": _state.run_id or new_run_id(), "message": first,
                           "exit_code": code, **_fields}, default=str, ensure_ascii=False)
    return f"streamagg: error: {first}"


@contextlib.contextmanager
def context(**fields: Any) -> Iterator[None]:
    """Fields added to every JSON log record inside the block (not thread-local on purpose:
    reader threads log on behalf of the same day)."""
    previous = dict(_fields)
    _fields.update(fields)
    try:
        yield
    finally:
        _fields.clear()
        _fields.update(previous)


def set_live_line(line: LiveLine | None) -> None:
    """The progress bar currently drawn on stderr, which log records clear and redraw."""
    _state.live = line


class StdoutError(StorageError):
    """stdout cannot take the summary (a full disk, a closed pipe): exit 1, unless the day was
    already published (then it is a warning; see `backfill.run_days`)."""


@dataclass(frozen=True)
class Console:
    """Where summaries go (stdout), in the run's format."""

    log_format: str
    run_id: str

    @property
    def json(self) -> bool:
        return self.log_format == "json"

    def emit(self, payload: dict[str, Any]) -> None:
        """One JSON line on stdout, carrying the run id."""
        self._write(json.dumps({"run_id": self.run_id, **payload}, default=str,
                               ensure_ascii=False))

    def echo(self, text: str = "") -> None:
        """One line for people; whatever names it holds are escaped (`printable`)."""
        self._write(printable(text))

    @staticmethod
    def _write(line: str) -> None:
        try:
            click.echo(line)
        except (OSError, ValueError) as err:  # ValueError: stdout was closed
            reason = getattr(err, "strerror", None) or str(err)
            raise StdoutError(f"cannot write to stdout: {reason}") from err

    def summary(self, report: RunReport, seconds: float) -> None:
        """The end of a run at a glance (text), or one JSON line with the same facts."""

        day = report.config.day.isoformat()
        if report.dry_run:
            if self.json:
                self.emit({"day": day, "status": "dry run", "dry_run": True,
                           "inputs": [i.uri for i in report.inputs],
                           "output": report.output_uri})
                return
            self.echo(f"{count_of(len(report.inputs), 'input file')}:")
            for item in report.inputs:
                self.echo(f"  {item.uri}  ({human_bytes(item.size)})")
            self.echo(f"output would be written to {report.output_uri}")
            return
        totals = report.totals
        peak = report.peak_memory_bytes
        jvm_peak = report.jvm_peak_memory_bytes
        input_bytes = sum(i.size for i in report.inputs)
        warnings = [w for w in (memory_warning(report.config, peak),) if w]
        if self.json:
            self.emit({"day": day, "status": "done", "output": report.output_uri,
                       "manifest": report.manifest_uri, "rejects": report.rejects_uri,
                       "plot": report.plot_uri, "inputs": len(report.inputs),
                       "input_bytes": input_bytes, "totals": totals,
                       "mode": report.mode, "mode_reason": report.mode_reason,
                       "elapsed_seconds": round(seconds, 3), "peak_memory_bytes": peak,
                       "jvm_peak_memory_bytes": jvm_peak,
                       "memory_limit_bytes": report.config.memory_limit,
                       "warnings": warnings})
            return
        read = max(1, totals["rows_read"])
        rows = [
            ("inputs", f"{count_of(len(report.inputs), 'file')}, {human_bytes(input_bytes)}"
                       f" ({totals['empty_files']:,} empty skipped)"),
            ("rows read", f"{totals['rows_read']:,}"),
            ("bad rows", f"{totals['bad_rows']:,} ({totals['bad_rows'] / read:.2%})"
                         + (f" -> {report.rejects_uri}" if report.rejects_uri else "")),
            ("duplicates", f"{totals['duplicates']:,} "
                           f"({totals['conflicting_duplicates']:,} with a different campaign)"),
            ("impressions", f"{totals['impressions']:,} "
                            f"({totals['outside_day']:,} outside the day)"),
            ("output rows", f"{totals['output_rows']:,}"),
            ("time", f"{seconds:,.2f} s, peak memory {human_bytes(peak)}"
                     + (f" (Python), {human_bytes(jvm_peak)} (Spark's JVM)"
                        if jvm_peak is not None else "")),
            ("manifest", str(report.manifest_uri)),
        ]
        if report.plot_uri:
            rows.append(("plot", report.plot_uri))
        if report.config.incremental:
            rows.insert(0, ("mode", f"{report.mode} ({report.mode_reason})"))
        rows += [("warning", text) for text in warnings]
        self.echo(f"wrote {report.output_uri}")
        for name, value in rows:
            self.echo(f"  {name:<12} {value}")


def memory_warning(config: Config, peak: int) -> str | None:
    """Say so when the measured peak passed --memory-limit, a target the run could not keep.

    Only for the local engine: on Spark the limit sizes reader blocks and nothing more.
    """
    if config.engine != "local" or peak <= config.memory_limit:
        return None
    text = (f"peak memory {human_bytes(peak)} passed --memory-limit "
            f"{human_bytes(config.memory_limit)}")
    if config.memory_limit < RELIABLE_MEMORY_LIMIT:
        text += "; limits below 192MB hold only on some machines (README, Memory)"
    return text
