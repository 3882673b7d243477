"""The rest of a file pyarrow cannot go on with, read with Python's csv module."""

from __future__ import annotations

import csv
import io
import itertools
from array import array
from collections.abc import Iterator
from typing import BinaryIO

import pyarrow as pa

from ..columns import BadRow, FileStats
from ..config import Schema
from ..errors import BadDataError
from .clean import clean_columns
from .header import skip_header
from .quotes import EOF_PROBE_TEXT, UNTERMINATED

# The longest row (or quoted field) read at all: what pyarrow's blocks cannot take goes through
# the csv module, which holds a row whole (4 bytes a character); past this the file fails.
MAX_ROW_CHARS = 16 * 2**20


def read_rest_with_csv(stream: BinaryIO, uri: str, schema: Schema, width: int,
                       positions: list[int], skip: int, chunk_size: int, stats: FileStats,
                       invalid: array[int],
                       stop_after_bad: int | None = None) -> Iterator[pa.RecordBatch]:
    """Records after the first ``skip`` of a file, parsed with Python's csv module."""
    csv.field_size_limit(MAX_ROW_CHARS)
    skip_header(stream, stats.data_offset)
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
    # physical lines read so far + 1, and the line the current record starts on
    where = [stats.data_line, stats.data_line]
    lines = itertools.chain(_bounded_lines(text, uri, where), EOF_PROBE_TEXT.splitlines(True))
    records = _records(csv.reader(lines), where)
    number = 0
    last: list[str] = []
    pending: list[list[bytes]] = [[], [], []]
    numbers: list[int] = []  # the record number of each pending row
    try:
        for row in records:
            if stop_after_bad is not None and len(stats.bad_rows) > stop_after_bad:
                yield from _clean_pending(pending, numbers, uri, schema, stats)
                if len(stats.bad_rows) > stop_after_bad:  # now exact: every record is counted
                    stats.stopped = True
                    stats.rows_read = number
                    return
            number += 1
            last = row
            if number <= skip:
                continue
            if len(row) != width:
                invalid.append(number)
                stats.bad_rows.malformed.append(BadRow(
                    uri, number, f"expected {width} fields, got {len(row)}"))
                continue
            # Cleaned before the next row joins, so the last row stays pending to the end.
            if len(numbers) >= chunk_size:
                yield from _clean_pending(pending, numbers, uri, schema, stats)
            for column, position in zip(pending, positions, strict=True):
                column.append(row[position].encode("utf-8", "surrogateescape"))
            numbers.append(number)
    except csv.Error as err:
        if "field larger than field limit" in str(err):
            raise _too_long(uri, where[1]) from err
        raise BadDataError(f"unreadable CSV: {err}", uri=uri, line=where[1]) from err
    if last == [""] and number > skip:  # the probe's record: the file ended outside quotes
        invalid.pop()
        stats.bad_rows.malformed.pop()
        number -= 1
    elif numbers and numbers[-1] == number:  # a last field whose quote is never closed
        fields = tuple(column.pop() for column in pending)
        numbers.pop()
        stats.bad_rows.malformed.append(BadRow(uri, number, UNTERMINATED, fields=fields))
    yield from _clean_pending(pending, numbers, uri, schema, stats)
    stats.rows_read = number


def _records(reader: Iterator[list[str]], where: list[int]) -> Iterator[list[str]]:
    """Non-blank records, keeping ``where[1]`` at the line the next record starts on."""
    for row in reader:
        if row:
            yield row
        where[1] = where[0]


def _bounded_lines(text: io.TextIOWrapper, uri: str, where: list[int]) -> Iterator[str]:
    """The file's lines, each read with a bound: a row longer than ``MAX_ROW_CHARS`` fails
    before it is held in memory whole. ``where[0]`` counts LF-ended lines as they pass."""
    while line := text.readline(MAX_ROW_CHARS + 1):
        if len(line) > MAX_ROW_CHARS:
            raise _too_long(uri, where[1])
        where[0] += line.count("\n")
        yield line


def _too_long(uri: str, line: int) -> BadDataError:
    return BadDataError(f"row longer than {MAX_ROW_CHARS // 2**20} MiB (an unclosed quote?); "
                        "nothing written", uri=uri, line=line)


def _clean_pending(pending: list[list[bytes]], numbers: list[int], uri: str, schema: Schema,
                   stats: FileStats) -> Iterator[pa.RecordBatch]:
    """Clean the rows gathered by the csv fallback, exactly as pyarrow's blocks are cleaned."""
    if not numbers:
        return
    columns = [pa.array(values, pa.binary()) for values in pending]
    clean, bad = clean_columns(columns, schema)
    for index, reason in bad:
        fields = tuple(c[index].as_py() for c in columns)
        stats.bad_rows.append(BadRow(uri, numbers[index], reason, fields=fields))
    for column in pending:
        column.clear()
    numbers.clear()
    if clean.num_rows:
        yield clean
