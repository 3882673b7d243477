"""The rest of a file pyarrow cannot go on with, read with Python's csv module."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import BinaryIO

import pyarrow as pa

from ..columns import BadRow, FileStats
from ..config import Schema
from ..errors import BadDataError
from .clean import clean_columns
from .header import skip_header

# The longest row (or quoted field) read at all: what pyarrow's blocks cannot take goes through
# the csv module, which holds a row whole (4 bytes a character); past this the file fails.
MAX_ROW_CHARS = 16 * 2**20


def read_rest_with_csv(stream: BinaryIO, uri: str, schema: Schema, width: int,
                       positions: list[int], skip: int, chunk_size: int, stats: FileStats,
                       invalid: list[int]) -> Iterator[pa.RecordBatch]:
    """Records after the first ``skip`` of a file, parsed with Python's csv module."""
    csv.field_size_limit(MAX_ROW_CHARS)
    skip_header(stream, stats.data_offset)
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
    # physical lines read so far + 1, and the line the current record starts on
    where = [stats.data_line, stats.data_line]
    records = _records(csv.reader(_bounded_lines(text, uri, where)), where)
    number = 0
    pending: list[list[bytes]] = [[], [], []]
    try:
        for row in records:
            number += 1
            if number <= skip:
                continue
            if len(row) != width:
                invalid.append(number)
                stats.bad_rows.append(BadRow(
                    uri, number, f"expected {width} fields, got {len(row)}"))
                continue
            for column, position in zip(pending, positions, strict=True):
                column.append(row[position].encode("utf-8", "surrogateescape"))
            if len(pending[0]) >= chunk_size:
                yield from _clean_pending(pending, uri, schema, stats, number, invalid)
        yield from _clean_pending(pending, uri, schema, stats, number, invalid)
    except csv.Error as err:
        if "field larger than field limit" in str(err):
            raise _too_long(uri, where[1]) from err
        raise BadDataError(f"unreadable CSV: {err}", uri=uri, line=where[1]) from err
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


def _clean_pending(pending: list[list[bytes]], uri: str, schema: Schema, stats: FileStats,
                   last_number: int, invalid: list[int]) -> Iterator[pa.RecordBatch]:
    """Clean the rows gathered by the csv fallback, exactly as pyarrow's blocks are cleaned."""
    if not pending[0]:
        return
    columns = [pa.array(values, pa.binary()) for values in pending]
    clean, bad = clean_columns(columns, schema)
    if bad:
        # Record numbers of the gathered rows: count back from the last, skipping invalid ones.
        numbers: list[int] = []
        skipped = set(invalid)
        candidate = last_number
        while len(numbers) < len(pending[0]):
            if candidate not in skipped:
                numbers.append(candidate)
            candidate -= 1
        numbers.reverse()
        for index, reason in bad:
            fields = tuple(c[index].as_py() for c in columns)
            stats.bad_rows.append(BadRow(uri, numbers[index], reason, fields=fields))
    for column in pending:
        column.clear()
    if clean.num_rows:
        yield clean
