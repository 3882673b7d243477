"""The command's frame: grouped help, one voice for every error line, signals that unwind."""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
from typing import Any

import click

from ..errors import StreamaggError
from . import logs

# --help shows the options in these groups, in this order (click has no groups of its own; the
# libraries that add them, cloup and click-option-group, would be a runtime dependency for a
# dozen lines of layout).
OPTION_GROUPS = (
    ("Input", ("source", "endpoint_url", "max_bad_rows")),
    ("Output", ("dest", "initials", "plot", "dry_run")),
    ("Memory and speed", ("memory_limit", "chunk_size", "dedupe", "tmp_dir")),
    ("Engine", ("engine", "spark_master", "spark_env")),
    ("Scheduling", ("to", "keep_going", "skip_unchanged", "check", "incremental", "state")),
    ("Messages", ("quiet", "verbose", "log_format", "progress")),
)
USAGE = "streamagg DATE [OPTIONS]"
EXAMPLE = "streamagg 2021-01-30 --source ./data"
# Signals that stop a run the way Ctrl-C does (temporary files removed, uploads aborted), with
# the shell's exit code for each: 128 + the signal's number.
_QUOTED_OPTION = re.compile(r"""['"](--?[A-Za-z][\w-]*)['"]""")
STOP_SIGNALS: dict[int, str] = {signal.SIGTERM: "terminated by SIGTERM",
                signal.SIGHUP: "terminated by SIGHUP (the terminal closed)"}


class Stopped(KeyboardInterrupt):
    """A stop signal (SIGTERM, SIGHUP) unwinds like Ctrl-C, so temp files and uploads are
    cleaned; it remembers which signal it was."""

    def __init__(self, signum: int) -> None:
        super().__init__(STOP_SIGNALS.get(signum, "stopped"))
        self.signum = signum


class _Carried(Exception):
    """A stop inside the command, carried past click's own KeyboardInterrupt handling (which
    would print an empty line, breaking one JSON object per line)."""

    def __init__(self, stop: KeyboardInterrupt) -> None:
        super().__init__(str(stop))
        self.stop = stop


def stop_line(stop: BaseException | None) -> tuple[str, int]:
    """The line and exit code of a stop: 130 for Ctrl-C, 128 + N for signal N."""
    if isinstance(stop, Stopped):
        return STOP_SIGNALS.get(stop.signum, "stopped"), 128 + stop.signum
    return "interrupted", 130


def stop_on_signals() -> None:
    """SIGTERM (a scheduler's stop) and SIGHUP (a closed terminal) raise `Stopped` in the main
    thread. A SIGHUP already ignored (``nohup``) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: Any) -> None:
        raise Stopped(signum)

    for signum in STOP_SIGNALS:
        if signum == signal.SIGHUP and signal.getsignal(signum) is signal.SIG_IGN:
            continue
        signal.signal(signum, handler)


def click_message(err: click.ClickException) -> str:
    """click's message in streamagg's voice: lower case, no final full stop, option names bare.
    ``Invalid value for '--chunk-size': ...`` reads ``invalid value for --chunk-size: ...``."""
    if isinstance(err, click.MissingParameter) and err.param is not None \
            and err.param.name == "date":
        return f"missing DATE (usage: {USAGE}, e.g. {EXAMPLE}); try streamagg --help"
    text = _QUOTED_OPTION.sub(r"\1", err.format_message().strip())
    if text[:1].isupper() and not text[1:2].isupper():
        text = text[0].lower() + text[1:]
    return text.rstrip(".")


class OneLineCommand(click.Command):
    """Every failure: one line on stderr, its exit code (docs/CONTRACT.md), no traceback; the
    options grouped in --help."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as stop:
            raise _Carried(stop) from stop

    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        logs.reset()
        argv = list(args) if args is not None else sys.argv[1:]
        error_format = logs.format_from_args(argv)
        try:
            result = super().main(args=argv, prog_name=prog_name or "streamagg",
                                  complete_var=complete_var, standalone_mode=False, **extra)
        except _Carried as carried:
            fail(*stop_line(carried.stop), error_format)
        except click.exceptions.Abort as err:
            # A stop while click itself parses the options still arrives as Abort.
            fail(*stop_line(err.__context__), error_format)
        except click.ClickException as err:
            fail(click_message(err), err.exit_code, error_format)
        except StreamaggError as err:
            fail(str(err), err.exit_code, error_format)
        except KeyboardInterrupt as stop:
            fail(*stop_line(stop), error_format)
        except Exception as err:  # noqa: BLE001 - unexpected: still one line, exit 1
            logs.log.debug("unexpected error", exc_info=True)
            fail(f"unexpected error: {type(err).__name__}: {err}", 1, error_format)
        sys.exit(result if isinstance(result, int) else 0)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, "DATE [OPTIONS]")

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        by_name = {param.name: param for param in self.get_params(ctx)}
        grouped: set[str] = set()
        for title, names in OPTION_GROUPS:
            records = [record for name in names if name in by_name
                       for record in [by_name[name].get_help_record(ctx)] if record]
            grouped.update(names)
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)
        rest = [record for param in self.get_params(ctx)
                if isinstance(param, click.Option) and param.name not in grouped
                for record in [param.get_help_record(ctx)] if record]
        if rest:
            with formatter.section("Other"):
                formatter.write_dl(rest)


def drop_broken_streams() -> None:
    """Flush stdout and stderr; one that cannot take it (a closed pipe, a full disk) is swapped
    for /dev/null, so that the interpreter's own flush at exit cannot turn a finished run's
    status into 120 with an "Exception ignored" message."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115


def fail(message: str, code: int, log_format: str) -> None:
    """Print the one error line, if stderr can take it, and exit with ``code``."""
    try:
        click.echo(logs.error_line(message, code, log_format), err=True)
    except (OSError, ValueError):
        pass  # a closed terminal (SIGHUP) or a full disk: the exit code still tells
    sys.exit(code)
