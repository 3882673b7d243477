"""The header record: split off the stream by hand, its names matched to the required columns."""

from __future__ import annotations

import codecs
import csv
import io
from typing import BinaryIO, NamedTuple

from ..config import Schema
from ..errors import BadDataError

HEADER_READ = 64 * 1024


class Header(NamedTuple):
    """The header record as read off the stream."""

    names: list[str]  # empty: the file has no header at all
    rest: bytes  # the bytes read past it
    lines: int  # its physical lines, the blank ones before it included
    data_offset: int  # bytes before the first data record
    data_line: int  # the physical line (counted by LF) the data begins on


def split_header(stream: BinaryIO, uri: str) -> Header:
    """Read exactly the header record, and no byte more than the returned ``rest``.

    Lines before the header that hold
    nothing but spaces, tabs or a byte-order mark are blank: skipped, as docs/CONTRACT.md says.
    """
    buf = b""
    skipped = 0  # bytes of blank lines before the header
    skipped_lines = 0
    while True:
        chunk = stream.read(HEADER_READ)
        buf += chunk
        while True:
            line_end = _blank_line_end(buf, skipped, final=not chunk)
            if line_end is None:
                break
            skipped_lines += 1
            skipped = line_end
        end = _record_end(buf[skipped:])
        if end is not None or not chunk:
            break
        if len(buf) - skipped > 16 * 2**20:
            raise BadDataError("header row is longer than 16 MiB", uri=uri, line=skipped_lines + 1)
    header_start = skipped
    header_end = len(buf) if end is None else skipped + end
    header, rest = buf[header_start:header_end], buf[header_end:]
    if header.startswith(codecs.BOM_UTF8):
        header = header[len(codecs.BOM_UTF8):]
    if not header.strip(b" \t\r\n"):
        return Header([], rest, skipped_lines, header_end, buf.count(b"\n", 0, header_end) + 1)
    line = buf.count(b"\n", 0, header_start) + 1
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadDataError("header row is not valid UTF-8", uri=uri, line=line) from err
    names = next(csv.reader(io.StringIO(text, newline="")), [])
    lines = skipped_lines + 1 + text.rstrip("\r\n").count("\n")
    return Header(names, rest, lines, header_end, buf.count(b"\n", 0, header_end) + 1)


def _blank_line_end(buf: bytes, start: int, *, final: bool) -> int | None:
    """Offset just past the line at ``start`` if it is blank (spaces and tabs, after a
    byte-order mark), else None; also None while more bytes could still make it blank."""
    pos = start
    if buf.startswith(codecs.BOM_UTF8, start):
        pos += len(codecs.BOM_UTF8)
    while pos < len(buf) and buf[pos] in b" \t":
        pos += 1
    if pos == len(buf):
        return None  # blank so far: the caller reads more, or ends with a file of no header
    if buf[pos:pos + 2] == b"\r\n":
        return pos + 2
    if buf[pos] == 0x0D:
        if pos + 1 == len(buf) and not final:
            return None  # could be the first half of CRLF: need more bytes
        return pos + 1
    if buf[pos] == 0x0A:
        return pos + 1
    return None


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


def skip_header(stream: BinaryIO, data_offset: int) -> None:
    """Read past the header (and the blank lines before it), so the next byte is data."""
    left = data_offset
    while left > 0:
        chunk = stream.read(min(left, HEADER_READ))
        if not chunk:
            break
        left -= len(chunk)
