"""One error root whose subclasses know their exit code and build their one-line message."""

from __future__ import annotations


class StreamaggError(Exception):
    """Root of every expected failure; the CLI prints ``str(err)`` and exits with ``exit_code``."""

    exit_code = 1

    def __init__(self, message: str, *, uri: str | None = None, line: int | None = None,
                 column: str | None = None) -> None:
        self.message = message
        self.uri = uri
        self.line = line
        self.column = column
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.uri:
            where.append(self.uri)
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.column:
            where.append(f"column {self.column}")
        return f"{self.message} ({', '.join(where)})" if where else self.message


class UsageError(StreamaggError):
    """Bad date, initials or option: nothing was read."""

    exit_code = 2


class NoInputError(StreamaggError):
    """The partition holds no input files: nothing was written."""

    exit_code = 3


class BadDataError(StreamaggError):
    """A file lacks a required column, or too many rows are bad: nothing was written."""

    exit_code = 4


class StorageError(StreamaggError):
    """Listing, reading or writing failed after retries."""

    exit_code = 1
