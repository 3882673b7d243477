"""The header record: split off the stream by hand, its names matched to the required columns."""

from __future__ import annotations

import codecs
import csv
import io
from typing import BinaryIO

from ..config import Schema
from ..errors import BadDataError

HEADER_READ = 64 * 1024


def split_header(stream: BinaryIO, uri: str) -> tuple[list[str], bytes, int]:
    """Read exactly the header record: its names, the bytes read past it, its physical lines."""
    buf = b""
    skipped_lines = 0
    while True:
        chunk = stream.read(HEADER_READ)
        buf += chunk
        # Blank lines before the header are skipped, as pyarrow does for data.
        while buf.startswith((b"\n", b"\r")):
            skipped_lines += 1
            buf = buf[2:] if buf.startswith(b"\r\n") else buf[1:]
        end = _record_end(buf)
        if end is not None or not chunk:
            break
        if len(buf) > 16 * 2**20:
            raise BadDataError("header row is longer than 16 MB", uri=uri, line=1)
    if end is None:
        end = len(buf)
    header, rest = buf[:end], buf[end:]
    if not header.strip():
        return [], rest, skipped_lines
    if header.startswith(codecs.BOM_UTF8):
        header = header[len(codecs.BOM_UTF8):]
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadDataError("header row is not valid UTF-8", uri=uri, line=1) from err
    names = next(csv.reader(io.StringIO(text, newline="")), [])
    lines = skipped_lines + 1 + text.rstrip("\r\n").count("\n")
    return names, rest, lines


def _record_end(buf: bytes) -> int | None:
    """Offset just past the first record's line end, or None if the record is incomplete."""
    in_quotes = False
    start = 0
    while True:
        nl = buf.find(b"\n", start)
        cr = buf.find(b"\r", start)
        ends = [i for i in (nl, cr) if i >= 0]
        if not ends:
            return None
        pos = min(ends)
        in_quotes ^= buf.count(b'"', start, pos) % 2 == 1
        if not in_quotes:
            if buf[pos:pos + 2] == b"\r\n":
                return pos + 2
            if buf[pos:pos + 1] == b"\r" and pos + 1 == len(buf):
                return None  # could be the first half of CRLF: need more bytes
            return pos + 1
        start = pos + 1


def normalize_name(name: str) -> str:
    return name.lstrip("\ufeff").strip(" \t").upper()


def find_columns(names: list[str], schema: Schema, uri: str) -> list[int]:
    """Positions of the required columns, matched case-insensitively after trimming."""
    normalized = [normalize_name(n) for n in names]
    positions = []
    for wanted in schema.required:
        hits = [i for i, n in enumerate(normalized) if n == normalize_name(wanted)]
        if not hits:
            raise BadDataError("missing required column", uri=uri, line=1, column=wanted)
        if len(hits) > 1:
            raise BadDataError("required column appears more than once", uri=uri, line=1,
                               column=wanted)
        positions.append(hits[0])
    return positions
