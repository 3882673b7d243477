"""A file's records through Python's csv module, each held within the reader's bounds."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from typing import BinaryIO, NamedTuple

from ..errors import BadDataError
from .blank import is_blank_bytes
from .limits import ReadLimits
from .quotes import FieldCounter, split_fields

# csv.reader builds a field four bytes a character before it makes the string (60 MB for a field
# of 15 MB): records longer than this are split by `split_fields`, which slices each field once.
_LONG_RECORD = 64 * 1024
# A record's lines are joined into one piece every this many: a quoted field of millions of short
# lines would take 60 bytes a line as a list of strings.
_PIECE_LINES = 256


class Record(NamedTuple):
    """One record as the csv module splits it (an empty line is a record of no fields)."""

    fields: list[str] | None  # Latin-1 text; None when there are too many to make
    size: int  # its number of fields
    line: int  # the physical line (counted by LF) it starts on
    lines: list[str]  # its text in whole lines, a few joined into one piece (line ends kept)

    def raw(self, chars: int | None = None) -> bytes:
        """The record's bytes as the file holds them (the first ``chars`` of them)."""
        if chars is None:
            return "".join(self.lines).encode("latin-1")
        head, size = [], 0
        for line in self.lines:
            if size >= chars:
                break
            head.append(line[:chars - size])
            size += len(head[-1])
        return "".join(head).encode("latin-1")

    def is_blank(self) -> bool:
        """Whether it is a line of spaces, tabs and BOMs (a field that spans lines is quoted)."""
        return (self.size == 1 and len(self.lines) == 1 and self.lines[0].count("\n") <= 1
                and is_blank_bytes(self.raw()))


class _Unwieldy(Exception):
    """The record being read is too long for csv.reader, or has more separators than fields
    may be made of."""


class RecordTooLong(BadDataError):
    """A row (or a quoted field) longer than the reader's bound: the file fails."""


class _Lines:
    """The file's lines for csv.reader, with the current record's text kept at hand.

    An iterator object, not a generator, so that raising in it (a record too wide) leaves it
    usable for the next reader. Every line is bounded as it is read, and so is every record:
    what a record costs is known before it is held.
    """

    def __init__(self, text: io.TextIOBase, first_line: int, limits: ReadLimits,
                 tail: Iterable[str], uri: str) -> None:
        self._text = text
        self._tail = iter(tail)
        self._limits = limits
        self._uri = uri
        self._pieces: list[str] = []  # the current record's text: joined lines, then lines
        self._lines: list[str] = []
        self.start = first_line  # the physical line the current record starts on
        self._next_line = first_line
        self._chars = 0
        self._commas = 0
        self.guard = True

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        bound = self._limits.max_row_bytes
        line = self._text.readline(bound + 1) or next(self._tail)
        self._chars += len(line)
        if self._chars > bound:
            raise RecordTooLong(f"row longer than {bound // 2**20} MiB (an unclosed quote?); "
                                "nothing written", uri=self._uri, line=self.start)
        self._lines.append(line)
        if len(self._lines) >= _PIECE_LINES:
            self._pieces.append("".join(self._lines))
            self._lines.clear()
        self._next_line += line.count("\n")
        if self.guard:
            self._commas += line.count(",")
            if self._commas >= self._limits.max_columns or self._chars > _LONG_RECORD:
                raise _Unwieldy
        return line

    def take(self, fields: list[str] | None, size: int) -> Record:
        """The record just read, and a fresh start for the next."""
        text = self._pieces + self._lines if self._pieces else self._lines
        record = Record(fields, size, self.start, text)
        self._pieces, self._lines = [], []
        self.start, self._chars, self._commas = self._next_line, 0, 0
        return record

    def unwieldy(self) -> Record:
        """The record that tripped the guard, read to its end and counted; split by slicing,
        unless it has more fields than may be made (its separators not inside quotes)."""
        counter = FieldCounter()
        for piece in (*self._pieces, *self._lines):  # whole lines: a record ends at a line end
            counter.feed(piece)
        self.guard = False
        try:
            while not counter.ended:
                try:
                    line = next(self)
                except StopIteration:
                    break
                if not counter.in_quotes or '"' in line:  # else the quoted field goes on
                    counter.feed(line)
        finally:
            self.guard = True
        if counter.fields > self._limits.max_columns:
            return self.take(None, counter.fields)
        whole = "".join((*self._pieces, *self._lines))
        self._pieces, self._lines = [whole], []
        fields = split_fields(whole)
        del whole
        return self.take(fields, len(fields))


def read_records(stream: BinaryIO, first_line: int, limits: ReadLimits, uri: str,
                 tail: Iterable[str] = ()) -> Iterator[Record]:
    """The records of ``stream`` (past the header, at ``first_line``), then of ``tail``.

    Read as Latin-1, one byte a character whatever the text, so a long row of emoji costs its
    bytes, not four times them; ``field.encode("latin-1")`` gives back the file's bytes.
    """
    csv.field_size_limit(max(csv.field_size_limit(), limits.max_row_bytes + 1))
    text = io.TextIOWrapper(stream, encoding="latin-1", newline="")
    lines = _Lines(text, first_line, limits, tail, uri)
    while True:
        try:
            for fields in csv.reader(lines):
                yield lines.take(fields, len(fields))
            return
        except _Unwieldy:
            yield lines.unwieldy()
