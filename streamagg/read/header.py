"""The header record: split off the stream by hand, its names matched to the required columns."""

from __future__ import annotations

import codecs
import csv
import io
from typing import BinaryIO, NamedTuple

from ..config import Schema
from ..errors import BadDataError
from .blank import BOM, blank_run_end
from .limits import ReadLimits
from .quotes import FieldCounter

HEADER_READ = 64 * 1024
# Stands for a column name too long to be any required one: it is never decoded or compared.
_LONG_NAME = "\ufffe"


class Header(NamedTuple):
    """The header record as read off the stream."""

    names: list[str]  # empty: the file has no header at all
    rest: bytes  # the bytes read past it
    line: int  # the physical line (counted by LF) it starts on
    data_offset: int  # bytes before the first data record
    data_line: int  # the physical line (counted by LF) the data begins on


def split_header(stream: BinaryIO, uri: str, schema: Schema | None = None,
                 limits: ReadLimits | None = None) -> Header:
    """Read exactly the header record, and no byte more than the returned ``rest``.

    Lines before the header that hold nothing but spaces, tabs or byte-order marks are blank:
    skipped (and forgotten as they pass), as docs/CONTRACT.md says. A header longer than a row
    may be, or with more columns than ``limits.max_columns``, is refused before its names are
    made: each name is a Python string, and pyarrow keeps a few structures per column.
    """
    schema = schema or Schema()
    limits = limits or ReadLimits.default()
    buf = bytearray()
    offset = 0  # bytes of the stream before buf[0]
    line = 1  # the physical line buf[0] is on
    started = False  # buf[0] is the header's first byte that is not blank
    counter = FieldCounter(limits.max_columns)
    scanned = 0  # buf[:scanned] is whole lines of the header, fed to the counter
    while True:
        chunk = stream.read(HEADER_READ)
        final = not chunk
        buf += chunk
        if not started:
            # Blank lines, and the blank bytes that open the header's line (names are trimmed
            # of them anyway), are dropped as they are read: a run of them costs no memory.
            cut = blank_run_end(buf)
            # The first bytes of a byte-order mark, at the end of what is read so far, may be
            # one whole with the next.
            started = cut < len(buf) and (final or not BOM.startswith(buf[cut:]))
            line += buf.count(b"\n", 0, cut)
            offset += cut
            del buf[:cut]
            if not started:
                if final:
                    return Header([], b"", line, offset, line)
                continue
        scanned = _feed_lines(counter, buf, scanned, final)
        if counter.over:
            raise BadDataError(f"header has more than {limits.max_columns} columns, more than "
                               "the reader takes within --memory-limit", uri=uri, line=line)
        if counter.ended or final:
            break
        if len(buf) > limits.max_row_bytes:
            raise BadDataError(f"header row is longer than {limits.max_row_bytes // 2**20} MiB",
                               uri=uri, line=line)
    end = scanned if counter.ended else len(buf)
    header, rest = bytes(buf[:end]), bytes(buf[end:])
    del buf
    data_line = line + header.count(b"\n")
    if not _is_utf8(header):
        raise BadDataError("header row is not valid UTF-8", uri=uri, line=line)
    # Split as Latin-1, one byte a character (never four, as one emoji in a header would make
    # a whole str), then only the names short enough to be a required one are decoded.
    fields = next(csv.reader(io.StringIO(header.decode("latin-1"), newline="")), [])
    longest = 4 * max(len(name) for name in schema.required)  # UTF-8: four bytes a character
    names = []
    for field in fields:
        raw = _trimmed(field.encode("latin-1"))
        names.append(raw.decode("utf-8") if len(raw) <= longest else _LONG_NAME)
    return Header(names, rest, line, offset + end, data_line)


def _feed_lines(counter: FieldCounter, buf: bytearray, start: int, final: bool) -> int:
    """Feed the counter the whole lines of ``buf`` from ``start`` until the record ends; the
    offset after the last line fed."""
    while not counter.ended and not counter.over:
        ends = [i for i in (buf.find(b"\n", start), buf.find(b"\r", start)) if i >= 0]
        if not ends:
            if final and start < len(buf):
                counter.feed(buf[start:].decode("latin-1"))
                return len(buf)
            return start
        end = min(ends) + 1
        if buf[end - 1] == 0x0D:
            if end == len(buf) and not final:
                return start  # could be the first half of CRLF: need more bytes
            if buf[end:end + 1] == b"\n":
                end += 1
        counter.feed(buf[start:end].decode("latin-1"))
        start = end
    return start


def _is_utf8(data: bytes) -> bool:
    """Whether ``data`` is UTF-8, checked in pieces: never one str of the whole."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        for start in range(0, len(data), HEADER_READ):
            decoder.decode(data[start:start + HEADER_READ])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _trimmed(name: bytes) -> bytes:
    """A name's bytes without the spaces, tabs and byte-order marks around it."""
    while True:
        trimmed = name.strip(b" \t").removeprefix(BOM).removesuffix(BOM)
        if trimmed == name:
            return name
        name = trimmed


def normalize_name(name: str) -> str:
    """A column name as it is matched: without the spaces, tabs and BOMs around it, in upper
    case."""
    return name.strip(" \t\ufeff").upper()


def find_columns(names: list[str], schema: Schema, uri: str, line: int = 1) -> list[int]:
    """Positions of the required columns, matched case-insensitively after trimming."""
    normalized = [normalize_name(n) for n in names]
    positions = []
    for wanted in schema.required:
        hits = [i for i, n in enumerate(normalized) if n == normalize_name(wanted)]
        if not hits:
            raise BadDataError("missing required column", uri=uri, line=line, column=wanted)
        if len(hits) > 1:
            raise BadDataError("required column appears more than once", uri=uri, line=line,
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
