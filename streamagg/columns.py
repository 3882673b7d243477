"""The clean batch's schema, and what reading a file reports: its bad rows and counts."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

# The columns every clean batch carries, whatever the file called them.
KEY, INSTANT, GROUP = "key", "instant", "group"
CLEAN_SCHEMA = pa.schema([(KEY, pa.string()), (INSTANT, pa.int64()), (GROUP, pa.string())])

# A rejects line keeps at most this much raw text, so one runaway field cannot flood the file.
MAX_RAW_CHARS = 64 * 1024


@dataclass
class BadRow:
    """One rejected row: where it was, why, and its raw text."""

    uri: str
    record: int  # 1-based data record number, as the CSV parser counts them
    reason: str
    raw: str | None = None
    line: int | None = None  # physical line in the file, filled in by `locate_bad_rows`
    fields: tuple[bytes, ...] | None = None  # the required fields as parsed, to check the locating


@dataclass
class FileStats:
    """What reading one file found."""

    rows_read: int = 0
    bad_rows: list[BadRow] = field(default_factory=list)
    header_lines: int = 1
    data_offset: int = 0  # bytes before the first data record (the header, blank lines before it)
    data_line: int = 2  # the physical line the first data record starts on
    positions: list[int] = field(default_factory=list)  # of the required columns in the header
    empty: bool = False  # no header at all: counted like a zero-byte file
