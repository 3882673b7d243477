"""Consecutive small files of one layout read as one stream: one parse and one clean for many."""

from __future__ import annotations

import bisect
import secrets
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from ..columns import BadRow, FileStats, capped
from ..config import Schema
from .batches import malformed_row, open_parser, read_batches, sentinel_record, start_file
from .blank import is_blank_text
from .clean import clean_columns
from .formats import read_into
from .framing import splits_quoted_crlf
from .limits import ReadLimits
from .numbering import Runs, record_number
from .quotes import EOF_PROBE, is_probe

# Between two files' bytes: a record of one field, which no file of three columns or more holds
# as a row, so pyarrow hands it to the invalid-row handler with its number: where the next file
# starts. Random per process, so no input can hold it. A file that ends inside a quoted field
# swallows it, and the group is read file by file instead.
_MARKER_TEXT = f"streamagg-file-boundary-{secrets.token_hex(16)}"
_SEPARATOR = b"\n" + _MARKER_TEXT.encode() + b"\n"


@dataclass
class Member:
    """One file of a run read by `read_stitched`."""

    uri: str
    reopen: Callable[[], AbstractContextManager[BinaryIO]]  # its content from the start, anew
    stats: FileStats


@dataclass
class _Loaded:
    member: Member
    # Filled by the parse: its records' numbers in the joined stream, blank lines, bad rows.
    first_record: int = 0
    blanks: int = 0
    invalid: Runs = field(default_factory=Runs)
    malformed: list[BadRow] = field(default_factory=list)
    cleaned: list[BadRow] = field(default_factory=list)
    rows: int = 0


class _Unusual(Exception):
    """The joined parse met what only a file's own reading gets right: read file by file."""


class _Group:
    """Files of one layout (width, required columns' positions), their bytes joined in one
    buffer after a sentinel record, a marker record between two files, the probe at the end."""

    def __init__(self, width: int, positions: list[int], capacity: int) -> None:
        self.width, self.positions = width, positions
        self.sentinel = sentinel_record(width)
        self.capacity = capacity
        self.buffer = pa.allocate_buffer(capacity + len(self.sentinel) + len(EOF_PROBE))
        self.view = memoryview(self.buffer).cast("B")
        self.view[:len(self.sentinel)] = self.sentinel
        self.end = len(self.sentinel)
        self.files: list[_Loaded] = []
        self.overflow: bytes | None = None

    def fits(self, width: int, positions: list[int]) -> bool:
        return width == self.width and positions == self.positions

    def load(self, member: Member, head: bytes, stream: BinaryIO) -> bool:
        """Append ``head`` (read off the file already) and the rest of ``stream``. False when
        nothing was appended: the file holds a NUL (`read_batches` reads such a file its own
        way), or it does not fit, and then ``overflow`` holds what was read of it."""
        self.overflow = None
        separator = _SEPARATOR if self.files else b""
        start = self.end + len(separator)
        limit = len(self.sentinel) + self.capacity
        end = start + len(head)
        if end > limit:
            self.overflow = head
            return False
        self.view[self.end:start] = separator
        self.view[start:end] = head
        while end < limit:
            read = read_into(stream, self.view[end:limit])
            if not read:
                break
            end += read
        else:
            more = stream.read(1)
            if more:
                self.overflow = bytes(self.view[start:end]) + more
                return False
        body = np.frombuffer(self.buffer, np.uint8, count=end - start, offset=start)
        if len(body) and body.min() == 0:
            return False
        self.files.append(_Loaded(member))
        self.end = end
        return True

    def read(self, schema: Schema, limits: ReadLimits, stop_after_bad: int | None,
             ) -> pa.RecordBatch:
        """The files' clean rows, their bad rows and counts kept on each `_Loaded`; raises
        `_Unusual` for anything a file's own reading must decide."""
        self.view[self.end:self.end + len(EOF_PROBE)] = EOF_PROBE
        joined = self.buffer.slice(0, self.end + len(EOF_PROBE))
        if splits_quoted_crlf(joined, limits.block_size):
            raise _Unusual  # pyarrow would drop a LF from a quoted field there
        boundaries = _Boundaries(self.files, limits.blank_lines_before_rescan)
        blocks = []
        reader = None
        try:
            # pyarrow parses the first block as it opens.
            reader = open_parser(pa.BufferReader(joined), self.width, self.positions, limits,
                                 boundaries)
            while True:
                try:
                    blocks.append(reader.read_next_batch())
                except StopIteration:
                    break
        except pa.ArrowInvalid as err:  # a row longer than a block, blank lines, not UTF-8
            raise _Unusual from err
        finally:
            if reader is not None:
                reader.close()
        del self.view, self.buffer, joined  # the bytes, once parsed
        boundaries.finish()
        columns = [pa.concat_arrays([b.column(i) for b in blocks]).slice(1)
                   for i in range(len(self.positions))]
        del blocks
        _count_rows(self.files, boundaries, len(columns[0]))
        clean, bad = clean_columns(columns, schema)
        if bad:
            _place_bad_rows(self.files, bad, columns)
        if stop_after_bad is not None and any(
                len(f.malformed) + len(f.cleaned) > stop_after_bad for f in self.files):
            raise _Unusual  # where `read_batches` stops reading is its own to say
        return clean


class _Boundaries:
    """pyarrow's invalid-row handler for a group: markers tell where each file starts, blank
    lines and malformed records are charged to the file they are in, numbered as in it."""

    def __init__(self, files: list[_Loaded], blank_lines: int) -> None:
        self.files, self.blanks_left = files, blank_lines
        self.at = 0  # the file being parsed
        files[0].first_record = 2  # after the sentinel, record 1
        self.probe: int | None = None
        self.broken = False

    def __call__(self, row: pacsv.InvalidRow) -> str:
        if row.number is None or self.probe is not None:
            self.broken = True
            return "error"
        text = row.text
        if row.actual_columns == 1 and text == _MARKER_TEXT:
            self.at += 1
            if self.at >= len(self.files):
                self.broken = True
                return "error"
            self.files[self.at].first_record = row.number + 1
            return "skip"
        here = self.files[self.at]
        if row.actual_columns == 1 and text is not None and is_blank_text(text):
            here.blanks += 1
            self.blanks_left -= 1
            return "skip" if self.blanks_left > 0 else "error"
        if self.at == len(self.files) - 1 and is_probe(text):
            self.probe = row.number  # must be the last record of all
            return "skip"
        number = row.number - here.first_record + 1 - here.blanks
        here.invalid.add(number)
        here.malformed.append(malformed_row(here.member.uri, number, row))
        return "skip"

    def finish(self) -> None:
        """Every marker seen, and the probe after the last file's last record (else a quote
        was left open: the file says alone where)."""
        if self.broken or self.at != len(self.files) - 1 or self.probe is None:
            raise _Unusual


def _count_rows(files: list[_Loaded], boundaries: _Boundaries, parsed: int) -> None:
    """Each file's rows: the records between its first and the next file's marker (or the
    probe), less its blank lines and malformed records."""
    assert boundaries.probe is not None
    ends = [f.first_record - 1 for f in files[1:]] + [boundaries.probe]
    for loaded, end in zip(files, ends, strict=True):
        loaded.rows = end - loaded.first_record - loaded.blanks - len(loaded.malformed)
    if sum(f.rows for f in files) != parsed or any(f.rows < 0 for f in files):
        raise _Unusual


def _place_bad_rows(files: list[_Loaded], bad: list[tuple[int, str]],
                    columns: list[pa.Array]) -> None:
    """The cleaning's bad rows, by their index in the joined rows, to their files, numbered as
    `read_batches` numbers them."""
    starts = np.cumsum([0] + [f.rows for f in files[:-1]]).tolist()
    for index, reason in bad:
        at = bisect.bisect_right(starts, index) - 1
        loaded = files[at]
        record = record_number(index - starts[at], loaded.invalid)
        fields = capped(tuple(c[index].as_py() for c in columns))
        loaded.cleaned.append(BadRow(loaded.member.uri, record, reason, fields=fields))


def read_stitched(members: Iterable[Member], *, schema: Schema | None = None,
                  chunk_size: int = 100_000, limits: ReadLimits | None = None,
                  stop_after_bad: int | None = None,
                  stitch_bytes: int | None = None) -> Iterator[pa.RecordBatch | Member]:
    """Clean batches of the members' rows in file order, each member yielded once, in order,
    after the batches that hold its last rows: what `read_batches` gives file by file, its
    ``stats`` included, with fewer, larger batches.

    Consecutive files of one layout are joined, up to ``stitch_bytes`` of text (default half
    ``limits.gather_bytes``), and parsed and cleaned at once: on a day of 470 KB files the
    parser's start, the gathering and the cleaning had cost 1.2 ms a file. A file that cannot
    join (no rows, larger, a NUL, a header that fails) and a group whose joined parse meets
    anything unusual (a quote left open, blank lines past the bound, a row longer than a
    block, more bad rows than ``stop_after_bad``) are read file by file.
    """
    schema = schema or Schema()
    limits = limits or ReadLimits.default()
    capacity = stitch_bytes if stitch_bytes is not None else limits.gather_bytes // 2
    rows_per_batch = max(1, min(chunk_size, limits.gather_rows))
    # Past this bound a block may hold a group value longer than the limit, which
    # `read_batches` refuses naming the file: every file is read alone (limits past 1 GiB).
    stitching = limits.block_size <= limits.max_group_bytes
    group: _Group | None = None

    def alone(member: Member) -> Iterator[pa.RecordBatch | Member]:
        with member.reopen() as stream:
            yield from read_batches(stream, member.uri, schema=schema, chunk_size=chunk_size,
                                    stats=member.stats, reopen=member.reopen,
                                    stop_after_bad=stop_after_bad, limits=limits)
        yield member

    def flush(done: _Group | None) -> Iterator[pa.RecordBatch | Member]:
        if done is None or not done.files:
            return
        try:
            clean = done.read(schema, limits, stop_after_bad)
        except _Unusual:
            for loaded in done.files:
                yield from alone(loaded.member)
            return
        for offset in range(0, clean.num_rows, rows_per_batch):
            yield clean.slice(offset, rows_per_batch)
        for loaded in done.files:
            stats = loaded.member.stats
            for row in loaded.malformed:
                stats.bad_rows.malformed.append(row)
            for row in loaded.cleaned:
                stats.bad_rows.append(row)
            stats.rows_read = loaded.rows + len(loaded.invalid)
            yield loaded.member

    def join(member: Member, finished: list[_Group]) -> bool:
        """Load ``member`` into the group (a new one when it differs or is full: the one before
        goes to ``finished``); False when it is to be read alone."""
        nonlocal group
        with member.reopen() as stream:
            started = start_file(stream, member.uri, schema, limits, member.stats)
            if started is None:
                return False
            positions, width, rest = started
            if group is not None and not group.fits(width, positions):
                finished.append(group)
                group = None
            if group is None:
                group = _Group(width, positions, capacity)
            if group.load(member, rest, stream):
                return True
            overflow = group.overflow
            if not group.files or overflow is None:
                return False  # larger than a group, or a NUL
            finished.append(group)  # full: the file starts the next one
            group = _Group(width, positions, capacity)
            return group.load(member, overflow, stream)

    for member in members:
        finished: list[_Group] = []
        failed: Exception | None = None
        try:
            joined = stitching and join(member, finished)
        except Exception as err:  # noqa: BLE001 - raised again below, in its place
            joined, failed = False, err
        for full in finished:
            yield from flush(full)
        if not joined:
            before, group = group, None
            yield from flush(before)  # the files before it go first
            if failed is not None:
                # What reading it alone would raise there (its header, its storage), raised
                # without reading it again: a slow or failing store is not asked twice.
                raise failed
            yield from alone(member)
    yield from flush(group)
