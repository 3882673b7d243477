"""The output's deterministic CSV bytes, and atomic publication of a run's files."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections.abc import Iterable
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..aggregate import BUCKET, COUNT
from ..columns import GROUP
from ..config import Schema
from ..sources import Storage

# Written by hand, measured against the libraries on a 24k-row day (2026-12): csv.writer with
# lineterminator="\n" leaves a field holding a lone CR unquoted (RFC 4180 quotes it, and so did
# every earlier output: the bytes would change), and was no faster (203 ms against 174 ms);
# pyarrow's writer quotes every string, the header too.
_NEEDS_QUOTES = (",", '"', "\r", "\n")
_QUOTE_PATTERN = '[,"\r\n]'
# Lines are built for at most this many bytes of campaigns at a time: `csv_lines` holds them a few
# times over (65,536 rows of 760 KiB campaigns, whole, peaked at 290 MiB under 192MB).
_SLICE_BYTES = 1 << 20


def csv_field(value: str) -> str:
    """RFC 4180: quote only when the field holds a comma, a quote or a line break."""
    if any(ch in value for ch in _NEEDS_QUOTES):
        return '"' + value.replace('"', '""') + '"'
    return value


# A day has a few dozen buckets and thousands of rows per bucket: strftime once per bucket
# (4 us a row was 60 ms of a 15k-row output).
@functools.lru_cache(maxsize=4096)
def format_bucket(start_seconds: int) -> str:
    moment = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=start_seconds)
    return f"{moment:%Y-%m-%d %H:%M:%S}"


def write_output(parts: Iterable[pa.Table], out: BinaryIO, schema: Schema | None = None,
                 grain_seconds: int = 3600) -> str:
    """Write the day's CSV (UTF-8, LF, header always) from (group, bucket, count) tables in
    output order, and return its sha256."""
    schema = schema or Schema()
    digest = hashlib.sha256()
    header = ",".join(csv_field(c) for c in (schema.group_column, schema.bucket_column,
                                              schema.count_column))
    _emit((header + "\n").encode("utf-8"), out, digest)
    for part in parts:
        for piece in _slices(part):
            _emit(csv_lines(piece, grain_seconds), out, digest)
    return digest.hexdigest()


def csv_lines(part: pa.Table, grain_seconds: int) -> memoryview:
    """The output lines of a (group, bucket, count) table, built column by column: the same
    bytes as `csv_field` and `format_bucket` row by row, without a Python object per row."""
    groups = part.column(GROUP).combine_chunks()
    needs_quotes = pc.match_substring_regex(groups, _QUOTE_PATTERN)
    fields = groups
    if pc.any(needs_quotes).as_py():
        quoted = pc.binary_join_element_wise(
            '"', pc.replace_substring(groups, '"', '""'), '"', "")
        fields = pc.if_else(needs_quotes, quoted, groups)
        del quoted
    buckets = part.column(BUCKET).to_numpy()
    starts, where = np.unique(buckets, return_inverse=True)
    texts = pa.array([format_bucket(int(b) * grain_seconds) for b in starts.tolist()])
    hours = texts.take(pa.array(where.reshape(-1)))
    # The line end joins the counts, not the lines: a second join would copy every line.
    counts = pc.binary_join_element_wise(
        pc.cast(part.column(COUNT).combine_chunks(), pa.string()), "\n", "")
    lines = pc.binary_join_element_wise(fields, hours, counts, ",")
    offsets = np.frombuffer(lines.buffers()[1], np.int32)
    first, last = offsets[lines.offset], offsets[lines.offset + len(lines)]
    return memoryview(lines.buffers()[2])[first:last]


def _slices(part: pa.Table) -> Iterable[pa.Table]:
    """``part`` in slices of whole rows holding at most `_SLICE_BYTES` of campaigns (or one
    row); a part of short campaigns is one slice."""
    if not part.num_rows:
        return
    ends = np.cumsum(pc.binary_length(part.column(GROUP)).to_numpy(zero_copy_only=False))
    start = 0
    while start < part.num_rows:
        before = int(ends[start - 1]) if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, before + _SLICE_BYTES, "right")))
        yield part.slice(start, stop - start)
        start = stop


def _emit(data: bytes | memoryview, out: BinaryIO, digest: hashlib._Hash) -> None:
    out.write(data)
    digest.update(data)


def publish(storage: Storage, local_path: str, relative: str) -> str:
    """Replace ``relative`` below the storage's root atomically; return its URI."""
    storage.publish(local_path, relative)
    return storage.uri_of(relative)
