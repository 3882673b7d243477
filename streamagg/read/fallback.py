"""The rest of a file pyarrow cannot go on with, read with Python's csv module."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from ..columns import MAX_RAW_CHARS, BadRow, FileStats, capped, raw_text
from ..config import Schema
from ..errors import BadDataError
from .clean import clean_columns
from .header import skip_header
from .limits import GROUP_EXTRA_COPIES, ReadLimits, refuse_long_group
from .numbering import Runs
from .quotes import EOF_PROBE_TEXT, UNTERMINATED
from .records import read_records


def read_rest_with_csv(stream: BinaryIO, uri: str, schema: Schema, width: int,
                       positions: list[int], skip: int, chunk_size: int, stats: FileStats,
                       invalid: Runs, stop_after_bad: int | None = None,
                       limits: ReadLimits | None = None) -> Iterator[pa.RecordBatch]:
    """Records after the first ``skip`` of a file, parsed with Python's csv module; blank lines
    (nothing, or spaces, tabs and BOMs) are no records."""
    limits = limits or ReadLimits.default()
    skip_header(stream, stats.data_offset)
    number = 0
    pending: list[list[bytes]] = [[], [], []]
    pending_bytes = 0
    numbers: list[int] = []  # the record number of each pending row
    last: list[str] | None = None
    records = read_records(stream, stats.data_line, limits, uri,
                           tail=EOF_PROBE_TEXT.splitlines(True))
    try:
        for record in records:
            if not record.size or record.is_blank():
                continue  # a blank line: no record at all
            if stop_after_bad is not None and len(stats.bad_rows) > stop_after_bad:
                yield from _clean_pending(pending, numbers, uri, schema, stats)
                if len(stats.bad_rows) > stop_after_bad:  # now exact: every record is counted
                    stats.stopped = True
                    stats.rows_read = number
                    return
            number += 1
            last = record.fields
            if number <= skip:
                continue
            if record.size != width:
                invalid.add(number)
                # Its text (as pyarrow gives it) checks the locating, which quote parity can miss.
                stats.bad_rows.malformed.append(BadRow(
                    uri, number, f"expected {width} fields, got {record.size}",
                    raw_text(record.raw(4 * MAX_RAW_CHARS).rstrip(b"\r\n"), "replace")))
                continue
            assert record.fields is not None  # as many as the header's, which were made
            # Cleaned before the next row joins, so the last row stays pending to the end.
            if len(numbers) >= chunk_size or pending_bytes >= limits.gather_bytes:
                yield from _clean_pending(pending, numbers, uri, schema, stats)
                pending_bytes = 0
            refuse_long_group(len(record.fields[positions[2]]), limits, uri,
                              schema.group_column, line=record.line)
            for column, position in zip(pending, positions, strict=True):
                value = record.fields[position].encode("latin-1")
                column.append(value)
                pending_bytes += len(value)
            pending_bytes += GROUP_EXTRA_COPIES * len(pending[2][-1])
            numbers.append(number)
    except csv.Error as err:
        raise BadDataError(f"unreadable CSV: {err}", uri=uri) from err
    if last == [""] and number > skip:  # the probe's record: the file ended outside quotes
        invalid.pop()
        stats.bad_rows.malformed.pop()
        number -= 1
    elif numbers and numbers[-1] == number:  # a last field whose quote is never closed
        fields = capped(tuple(column.pop() for column in pending))
        numbers.pop()
        stats.bad_rows.malformed.append(BadRow(uri, number, UNTERMINATED, fields=fields))
    yield from _clean_pending(pending, numbers, uri, schema, stats)
    stats.rows_read = number


def _clean_pending(pending: list[list[bytes]], numbers: list[int], uri: str, schema: Schema,
                   stats: FileStats) -> Iterator[pa.RecordBatch]:
    """Clean the rows gathered by the csv fallback, exactly as pyarrow's blocks are cleaned."""
    if not numbers:
        return
    columns = [_binary(values) for values in pending]
    for column in pending:
        column.clear()
    clean, bad = clean_columns(columns, schema)
    for index, reason in bad:
        fields = capped(tuple(c[index].as_py() for c in columns))
        stats.bad_rows.append(BadRow(uri, numbers[index], reason, fields=fields))
    numbers.clear()
    if clean.num_rows:
        yield clean


def _binary(values: list[bytes]) -> pa.Array:
    """The values as one Arrow binary array, their bytes copied once into a buffer of their
    size (``pa.array`` grows its buffer by doubling: twice a long field's bytes, at once)."""
    # 32-bit offsets: what is pending stays far below 2 GiB (gather_bytes and one row).
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum([len(v) for v in values], out=offsets[1:])
    return pa.Array.from_buffers(pa.binary(), len(values),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(values))])
