"""One file through the reader and the locator, held against the reference: the fuzzers' oracle."""

from __future__ import annotations

import contextlib
import csv
import io

import pyarrow as pa

from streamagg.errors import StreamaggError
from streamagg.read import CLEAN_SCHEMA, FileStats, ReadLimits, locate_bad_rows, read_batches
from tests.reference import MissingColumn, Reject, read_file

# Limits small enough that a few hundred bytes reach every path: pyarrow's blocks and the csv
# fallback, a header or a row too wide to split, a row too long to read.
# Two blank lines make a file be read again (blank lines emptied), so the second reading is
# held against the reference too.
TINY = ReadLimits(block_size=64, gather_rows=3, gather_bytes=200, max_columns=8,
                  max_row_bytes=1000, blank_lines_before_rescan=2)


def read_all(data: bytes, chunk_size: int, limits: ReadLimits) -> tuple[list[pa.RecordBatch],
                                                                       FileStats]:
    """The clean batches and the located bad rows of ``data``."""
    def reopen() -> contextlib.AbstractContextManager[io.BytesIO]:
        return contextlib.nullcontext(io.BytesIO(data))

    stats = FileStats()
    batches = list(read_batches(io.BytesIO(data), "fuzz.csv", chunk_size=chunk_size,
                                stats=stats, reopen=reopen, limits=limits))
    locate_bad_rows(reopen, stats, limits)
    return batches, stats


def check(data: bytes, chunk_size: int, limits: ReadLimits) -> None:
    """Any bytes give clean batches and bad rows as the reference reads them, or one
    StreamaggError of one line; nothing else."""
    try:
        batches, stats = read_all(data, chunk_size, limits)
    except StreamaggError as err:
        assert str(err) and "\n" not in str(err).strip()
        return
    clean = [(r["key"], r["instant"], r["group"]) for b in batches for r in b.to_pylist()]
    assert all(batch.schema.equals(CLEAN_SCHEMA) for batch in batches)
    assert all(0 < batch.num_rows <= chunk_size for batch in batches)
    assert len(clean) + len(stats.bad_rows) == stats.rows_read
    lines = []
    for bad in stats.bad_rows:
        assert 1 <= bad.record <= stats.rows_read
        # Lines count LF only: after a header ended by a lone CR, line 1 is right.
        assert bad.line is not None and bad.line >= 1, bad
        lines.append(bad.line)
    # The reference implementation reads the same file the same way.
    rejects: list[Reject] = []
    try:
        good, rows_read, bad_count = read_file("fuzz.csv", data, rejects)
    except (MissingColumn, csv.Error):
        return  # the reference knows no lone CR line ends
    if b"\r" in data:
        # The reference counts lines by LF and splits records with csv on LF-split lines: with
        # a lone CR the two may see different records (the counts still agree).
        assert (len(clean), stats.rows_read, len(stats.bad_rows)) == (
            len(good), rows_read, bad_count)
        return
    assert clean == [(r.impression_id, r.instant, r.campaign) for r in good]
    assert (stats.rows_read, lines) == (rows_read, [r.line for r in rejects])
