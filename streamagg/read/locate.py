"""Where a file's bad rows are: their physical line and raw text, found in a second pass."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import BinaryIO

import numpy as np

from ..columns import MAX_RAW_CHARS, BadRow, BadRows, FileStats, capped, raw_text
from .blank import blank_spans
from .header import skip_header
from .limits import ReadLimits
from .quotes import UNTERMINATED, unterminated_reason
from .records import read_records


def locate_bad_rows(
    open_stream: Callable[[], AbstractContextManager[BinaryIO]], stats: FileStats,
    limits: ReadLimits | None = None,
) -> None:
    """Fill in the physical line and raw text of a file's bad rows with a second pass.

    Only files that had bad rows pay for it. A vectorised scan finds record boundaries from
    quote parity; it is exact for RFC 4180 files, and every row it locates is checked against
    what the parser saw. A file where the check fails (stray quotes inside unquoted fields, lone
    CR line ends) is located again with Python's csv module, exactly but slower. Rows stream
    through in record order, from ``stats.bad_rows`` to a new `BadRows`: memory stays bounded.
    """
    if not stats.bad_rows:
        return
    located = BadRows(stats.bad_rows.tmp_dir)
    try:
        with open_stream() as raw:
            skip_header(raw, stats.data_offset)
            for bad in _scan_records(raw, iter(stats.bad_rows), stats.data_line,
                                     stats.positions):
                located.append(bad)
    except _Untrusted:
        located.close()
        located = BadRows(stats.bad_rows.tmp_dir)
        with open_stream() as raw:
            skip_header(raw, stats.data_offset)
            for bad in _locate_with_csv(raw, iter(stats.bad_rows), stats.data_line,
                                        limits or ReadLimits.default()):
                located.append(bad)
    stats.bad_rows.close()
    stats.bad_rows = located


class _Untrusted(Exception):
    """Quote parity cannot be trusted for this file: locate it with the csv module."""


def _matches(bad: BadRow, text: bytes, positions: list[int]) -> bool:
    """Whether the located record is the one the parser reported."""
    if bad.fields is None:  # a wrong field count: the parser gave its text
        got = raw_text(text, "replace").rstrip("\r")
        return bad.raw is None or got == bad.raw.rstrip("\r")
    # Latin-1: one byte a character, and the field's bytes back exactly.
    decoded = text.decode("latin-1")
    try:
        row = next(csv.reader(io.StringIO(decoded, newline="")), [])
    except csv.Error:  # a lone CR in an unquoted field: leave it to the exact locator
        return False
    try:
        found = capped(tuple(row[p].encode("latin-1") for p in positions))
    except IndexError:
        return False
    return found == bad.fields


_SCAN_CHUNK = 256 * 2**10  # its numpy masks take several times this, held at once
# A record longer than this is left to the exact locator: the masks and positions of a longer
# one would take tens of times its bytes (a field of quotes is eight bytes a byte).
_SCAN_LONGEST = 4 * _SCAN_CHUNK


def _scan_records(raw: BinaryIO, wanted: Iterator[BadRow], data_line: int,
                  positions: list[int]) -> Iterator[BadRow]:
    """The wanted bad rows (in record order) with their physical start line and raw text,
    found by quote parity; ``raw`` is past the header, at ``data_line``.

    Raises `_Untrusted` where parity cannot be trusted (lone CR line ends, a record that is not
    the one the parser saw, or one never found), or for a record over `_SCAN_LONGEST`.
    """
    pending = next(wanted, None)
    carry = b""
    line = data_line  # physical line of carry's first byte
    record = 0  # data records completed
    eof = False
    while pending is not None and not eof:
        # A record longer than a chunk doubles the read, so a huge field costs linear time.
        chunk = raw.read(max(_SCAN_CHUNK, len(carry)))
        eof = not chunk
        buf = carry + chunk
        if eof and buf and not buf.endswith(b"\n"):
            buf += b"\n"  # the last record may lack its line end
        data = np.frombuffer(buf, dtype=np.uint8)
        newlines = np.flatnonzero(data == 10)
        quotes = np.flatnonzero(data == 34)
        # A CR that ended the last read (carry's last byte) is judged now, its next byte read.
        if b"\r" in chunk or carry.endswith(b"\r"):
            returns = np.flatnonzero(data[:-1] == 13)
            lone = returns[data[returns + 1] != 10]
            # A lone CR outside quotes ends a record without a line feed: leave that to csv.
            if np.any(np.searchsorted(quotes, lone) % 2 == 0):
                raise _Untrusted
        # buf starts at a record start, outside quotes: a newline ends a record when an even
        # number of quotes precede it.
        ends = newlines[np.searchsorted(quotes, newlines) % 2 == 0]
        if len(ends):
            starts = np.concatenate(([0], ends[:-1] + 1))
            records = np.flatnonzero(~blank_spans(data, starts, ends))
            # The k-th non-blank record here is record + 1 + k.
            while pending is not None and pending.record - record - 1 < len(records):
                if pending.record <= record:
                    raise _Untrusted  # out of order: cannot happen, the runs are sorted
                i = int(records[pending.record - record - 1])
                start, end = int(starts[i]), int(ends[i])
                text = buf[start:end]
                text = text[:-1] if text.endswith(b"\r") else text
                found = line + int(np.searchsorted(newlines, start))
                if not _matches(pending, text, positions):
                    raise _Untrusted
                # In place: read back from the file's own runs, which this pass replaces.
                pending.line, pending.raw = found, raw_text(text)
                yield pending
                pending = next(wanted, None)
            record += len(records)
            consumed = int(ends[-1]) + 1
            line += int(np.searchsorted(newlines, consumed))
            carry = buf[consumed:]
        else:
            carry = buf
        if len(carry) > _SCAN_LONGEST:
            raise _Untrusted
    if pending is not None:
        raise _Untrusted


def _locate_with_csv(raw: BinaryIO, wanted: Iterator[BadRow], data_line: int,
                     limits: ReadLimits) -> Iterator[BadRow]:
    """The exact, slow locator: Python's csv module, record by record, each within the
    reader's bounds.

    Physical lines are counted by LF, as editors and ``sed`` count them; a lone CR ends a
    record for the parser but starts no new line.
    """
    pending = next(wanted, None)
    if pending is None:
        return
    number = 0
    for record in read_records(raw, data_line, limits, pending.uri):
        if not record.size or record.is_blank():
            continue  # a blank line is no record
        number += 1
        if number != pending.record:
            continue
        reason = pending.reason
        if reason == UNTERMINATED:  # only the quick scan never finds such a record
            reason = unterminated_reason("".join(record.lines), record.line)
        yield replace(pending, line=record.line, reason=reason,
                      raw=raw_text(record.raw(4 * MAX_RAW_CHARS + 2).rstrip(b"\r\n")))
        pending = next(wanted, None)
        if pending is None:
            return
    # Not found (cannot happen: the read pass saw it): kept as it is, never dropped.
    yield pending
    yield from wanted
