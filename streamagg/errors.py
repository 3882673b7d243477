"""One error root whose subclasses know their exit code and build their one-line message."""

from __future__ import annotations

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` safe for one line of a log or terminal: control and other unprintable
    characters (newlines, ANSI escapes, bidi overrides) shown as escapes, and bytes that were not
    UTF-8 (surrogate-escaped) as ``\\xNN``. Printable text, backslashes included, is unchanged,
    so escaping twice changes nothing."""
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char.isprintable():
            out.append(char)
        elif char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif 0xDC80 <= ord(char) <= 0xDCFF:  # a byte os.fsdecode could not decode
            out.append(f"\\x{ord(char) - 0xDC00:02x}")
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return "".join(out)


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
        # Names come from storage and may hold a newline or a terminal escape: one line, inert.
        return printable(f"{self.message} ({', '.join(where)})" if where else self.message)


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
