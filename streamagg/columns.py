"""The clean batch's schema, and what reading a file reports: its bad rows and counts."""

from __future__ import annotations

import heapq
import os
import pickle
import tempfile
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

import numpy as np
import pyarrow as pa

from .errors import StorageError

# The columns every clean batch carries, whatever the file called them.
KEY, INSTANT, GROUP = "key", "instant", "group"
# A row's time bucket, instant // grain: what counts and later occurrences are kept per.
BUCKET = "bucket"
CLEAN_SCHEMA = pa.schema([(KEY, pa.string()), (INSTANT, pa.int64()), (GROUP, pa.string())])


def string_buffers(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A (large) string or binary array's value offsets and data bytes, without copying."""
    _, offset_buffer, data_buffer = array.buffers()
    if offset_buffer is None:  # an empty array may have no buffers at all
        return np.zeros(len(array) + 1, dtype=np.int64), np.zeros(0, dtype=np.uint8)
    width = np.int64 if pa.types.is_large_string(array.type) or pa.types.is_large_binary(
        array.type) else np.int32
    offsets = np.frombuffer(offset_buffer, dtype=width)[array.offset:array.offset + len(array) + 1]
    data = (np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None
            else np.zeros(0, dtype=np.uint8))
    return offsets, data


# A rejects line keeps at most this much raw text, so one runaway field cannot flood the file.
MAX_RAW_CHARS = 64 * 1024
# A bad row keeps at most this much of each required field (to check the locating, and its
# time for the manifest's hours): a bad row costs the same whatever its fields' length.
MAX_FIELD_BYTES = 64 * 1024


def raw_text(raw: bytes, errors: str = "backslashreplace") -> str:
    """The start of a record's bytes as a bad row keeps it."""
    # Four bytes a character at most: enough bytes for MAX_RAW_CHARS characters, no more.
    return raw[:4 * MAX_RAW_CHARS].decode("utf-8", errors)[:MAX_RAW_CHARS]


def capped(fields: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """A bad row's required fields as it keeps them."""
    return tuple(f[:MAX_FIELD_BYTES] for f in fields)


@dataclass(slots=True)
class BadRow:
    """One rejected row: where it was, why, and its raw text."""

    uri: str
    record: int  # 1-based data record number, as the CSV parser counts them
    reason: str
    raw: str | None = None
    line: int | None = None  # physical line in the file, filled in by `locate_bad_rows`
    # The required fields as parsed (each cut at MAX_FIELD_BYTES), to check the locating.
    fields: tuple[bytes, ...] | None = None


# A file's bad rows wait in memory up to this many, or this much raw text, then go to disk.
_RUN_ROWS = 4096
_RUN_BYTES = 2**20


class _Run:
    """Bad rows in record order: pickled chunks in an anonymous temporary file, then a tail."""

    def __init__(self, tmp_dir: str | None) -> None:
        self._tmp_dir = tmp_dir
        self._file: IO[bytes] | None = None
        # Per chunk on disk, its offset, last record and rows: 24 bytes a chunk of up to 4096
        # rows, so a run of a billion bad rows keeps 6 MB at hand.
        self._offsets, self._lasts, self._rows = array("q"), array("q"), array("q")
        self._tail: list[BadRow] = []
        self._tail_bytes = 0
        self.count = 0

    def append(self, row: BadRow) -> None:
        self._tail.append(row)
        self._tail_bytes += _size(row)
        self.count += 1
        if len(self._tail) > _RUN_ROWS or self._tail_bytes > _RUN_BYTES:
            self._store(self._tail[:-1])  # the last row stays at hand, for `last`
            self._tail = self._tail[-1:]
            self._tail_bytes = _size(self._tail[0])

    def last(self) -> BadRow | None:
        return self._tail[-1] if self._tail else None

    def pop(self) -> None:
        row = self._tail.pop()
        self._tail_bytes -= _size(row)
        self.count -= 1

    def _store(self, rows: list[BadRow]) -> None:
        try:
            if self._file is None:
                self._file = tempfile.TemporaryFile(dir=self._tmp_dir)
            self._file.seek(0, os.SEEK_END)
            at = self._file.tell()
            # As tuples: a slotted dataclass pickles through a Python call per row.
            pickle.dump([(r.uri, r.record, r.reason, r.raw, r.line, r.fields) for r in rows],
                        self._file, protocol=pickle.HIGHEST_PROTOCOL)
        except OSError as err:
            raise self._failed(err) from err
        self._offsets.append(at)
        self._lasts.append(rows[-1].record)
        self._rows.append(len(rows))

    def _failed(self, err: OSError) -> StorageError:
        """The work folder failed, not the input being read: say so, naming the folder."""
        return StorageError(f"cannot set bad rows aside: {err.strerror or err}",
                            uri=self._tmp_dir or tempfile.gettempdir())

    def _load(self, index: int) -> list[BadRow]:
        assert self._file is not None
        try:
            self._file.seek(self._offsets[index])  # flushes what is still buffered
        except OSError as err:
            raise self._failed(err) from err
        stored = pickle.load(self._file)  # noqa: S301 - our own temporary file
        rows = [BadRow(*row) for row in stored]
        return rows

    def truncate(self, last_record: int) -> None:
        """Forget the rows after ``last_record``."""
        kept = [row for row in self._tail if row.record <= last_record]
        while self._lasts and self._lasts[-1] > last_record:
            rows = self._load(len(self._lasts) - 1)
            assert self._file is not None
            self._file.truncate(self._offsets.pop())
            self._lasts.pop()
            self._rows.pop()
            kept = [row for row in rows if row.record <= last_record] + kept
            if rows[0].record <= last_record:
                break
        self._tail = kept
        self._tail_bytes = sum(_size(row) for row in kept)
        self.count = sum(self._rows) + len(kept)
        if len(kept) > 1 and (len(kept) > _RUN_ROWS or self._tail_bytes > _RUN_BYTES):
            # A whole chunk came back: it goes out again.
            self._store(kept[:-1])
            self._tail = kept[-1:]
            self._tail_bytes = _size(self._tail[0])

    def __iter__(self) -> Iterator[BadRow]:
        for index in range(len(self._offsets)):
            yield from self._load(index)
        yield from list(self._tail)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _size(row: BadRow) -> int:
    """About what a bad row takes in memory: the object and its strings (a raw text holding
    one emoji takes four bytes a character)."""
    return 400 + 4 * len(row.raw or "") + sum(33 + len(f) for f in row.fields or ())


class BadRows:
    """A file's bad rows, in record order, in bounded memory whatever their number.

    The parser reports rows of the wrong shape as it parses (ahead of the rows returned), the
    cleaning reports its own per batch: each kind arrives in record order, so each is a run of
    its own and reading them back merges the two.
    """

    def __init__(self, tmp_dir: str | None = None) -> None:
        self.tmp_dir = tmp_dir
        self.malformed = _Run(tmp_dir)  # wrong field count, unclosed quote: the parser's
        self.cleaned = _Run(tmp_dir)  # what the cleaning found

    def append(self, row: BadRow) -> None:
        """A bad row found by the cleaning (or put back in order, by the locator)."""
        self.cleaned.append(row)

    def truncate(self, last_record: int) -> None:
        """Forget the rows after ``last_record`` (pyarrow parsed ahead of what was returned)."""
        self.malformed.truncate(last_record)
        self.cleaned.truncate(last_record)

    def __iter__(self) -> Iterator[BadRow]:
        return heapq.merge(self.malformed, self.cleaned, key=lambda row: row.record)

    def __len__(self) -> int:
        return self.malformed.count + self.cleaned.count

    def __eq__(self, other: object) -> bool:
        if isinstance(other, BadRows | list):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"BadRows({len(self)} rows)"

    def close(self) -> None:
        self.malformed.close()
        self.cleaned.close()


@dataclass
class FileStats:
    """What reading one file found."""

    rows_read: int = 0
    bad_rows: BadRows = field(default_factory=BadRows)
    header_line: int = 1  # the physical line the header starts on
    data_offset: int = 0  # bytes before the first data record (the header, blank lines before it)
    data_line: int = 2  # the physical line the first data record starts on
    positions: list[int] = field(default_factory=list)  # of the required columns in the header
    empty: bool = False  # no header at all: counted like a zero-byte file
    stopped: bool = False  # reading stopped early: more bad rows than a count limit allows
    # Bytes per record in the first bytes after the header (None when they end no record): a
    # sample of the file's row size, which sizes the spill before the day is read.
    row_bytes: float | None = None
