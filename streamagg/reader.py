"""A binary CSV stream in, Arrow batches of (key text, instant, group) out; bad rows set aside."""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import functools
import gzip
import io
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import BinaryIO, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .config import Schema
from .errors import BadDataError, StorageError

# The columns every clean batch carries, whatever the file called them.
KEY, INSTANT, GROUP = "key", "instant", "group"
CLEAN_SCHEMA = pa.schema([(KEY, pa.string()), (INSTANT, pa.int64()), (GROUP, pa.string())])

DATETIME_PATTERN = (
    r"^(\d{4})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[ T]([01]\d|2[0-3]):([0-5]\d):([0-5]\d)"
    r"(?:\.(\d+))?(Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)?$"
)
_DATETIME_RE = re.compile(DATETIME_PATTERN)
_TRIM = " \t"
# "YYYY-MM-DDTHH:MM:SS.nnnnnnnnn": only a longer string can hold extra fraction digits.
_LONGEST_NANOSECOND_TEXT = 29
_HEADER_READ = 64 * 1024
# A rejects line keeps at most this much raw text, so one runaway field cannot flood the file.
MAX_RAW_CHARS = 64 * 1024
# The longest row (or quoted field) read at all: what pyarrow's blocks cannot take goes through
# the csv module, which holds a row whole (4 bytes a character); past this the file fails.
MAX_ROW_CHARS = 16 * 2**20
_NS_MIN, _NS_MAX = -(2**63), 2**63 - 1
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class _Scalars(NamedTuple):
    zero: pa.Scalar
    two: pa.Scalar
    epoch_text: pa.Scalar
    utc: pa.Scalar
    empty_text: pa.Scalar
    empty_binary: pa.Scalar


@functools.cache
def _scalars() -> _Scalars:
    """Typed scalars, made on first use: a bare Python literal in a compute call, or a scalar
    made at import, makes pyarrow import pandas (40 MB) to check whether it is a pandas value."""
    return _Scalars(pa.scalar(0, pa.int32()), pa.scalar(2, pa.int32()),
                    pa.scalar("1970-01-01 00:00:00", pa.string()), pa.scalar("Z", pa.string()),
                    pa.scalar("", pa.string()), pa.scalar(b"", pa.binary()))


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
    positions: list[int] = field(default_factory=list)  # of the required columns in the header
    empty: bool = False  # no header at all: counted like a zero-byte file


def open_decompressed(stream: BinaryIO, gzipped: bool) -> BinaryIO:
    """The stream's CSV bytes, gunzipped when the name says so."""
    if gzipped:
        return gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]
    return stream


class _NulByte(pa.ArrowInvalid):
    """pyarrow's chunker can split a record holding a NUL in a quoted field and a quoted line
    break at a block boundary (pyarrow 26), so a file with a NUL is read on with csv."""


class _Prefixed(io.RawIOBase):
    """Bytes already read for the header, followed by the rest of the stream."""

    def __init__(self, prefix: bytes, rest: BinaryIO) -> None:
        self._prefix = memoryview(prefix)
        self._rest = rest
        self._nul_in_prefix = b"\x00" in prefix

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._prefix:
            if self._nul_in_prefix:
                raise _NulByte("NUL byte")
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._rest.read(len(buffer))
        if b"\x00" in data:
            raise _NulByte("NUL byte")
        n = len(data)
        buffer[:n] = data
        return n


def _split_header(stream: BinaryIO, uri: str) -> tuple[list[str], bytes, int]:
    """Read exactly the header record: its names, the bytes read past it, its physical lines."""
    buf = b""
    skipped_lines = 0
    while True:
        chunk = stream.read(_HEADER_READ)
        buf += chunk
        # Blank lines before the header are skipped, as pyarrow does for data.
        while buf.startswith((b"\n", b"\r")):
            skipped_lines += 1
            buf = buf[2:] if buf.startswith(b"\r\n") else buf[1:]
        end = _record_end(buf)
        if end is not None or not chunk:
            break
        if len(buf) > 16 * 2**20:
            raise BadDataError("header row is longer than 16 MiB", uri=uri, line=1)
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


def read_batches(
    stream: BinaryIO,
    uri: str,
    *,
    schema: Schema | None = None,
    chunk_size: int = 100_000,
    block_size: int = 1 * 2**20,
    stats: FileStats | None = None,
    reopen: Callable[[], AbstractContextManager[BinaryIO]] | None = None,
    gather_rows: int | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream a decompressed CSV file as clean batches of at most ``chunk_size`` rows.

    pyarrow's small blocks are gathered up to ``gather_rows`` rows (default ``chunk_size``)
    before they are cleaned: fewer, larger batches cost less per row, more memory per reader.

    Only the three required columns are converted; bad rows are appended to ``stats.bad_rows``
    with their record number (see `locate_bad_rows` for line numbers and raw text). A file with
    no header at all (nothing but blank lines or a byte-order mark) is marked ``stats.empty``.

    pyarrow cannot go on past two things: a row longer than ``block_size``, and a row with the
    wrong number of fields whose text is not UTF-8. When ``reopen`` is given, the rest of such a
    file is read with Python's csv module instead, from the first record not yet returned.
    """
    schema = schema or Schema()
    stats = stats if stats is not None else FileStats()
    names, rest, header_lines = _split_header(stream, uri)
    stats.header_lines = header_lines
    if not names:
        stats.empty = True
        return
    positions = find_columns(names, schema, uri)
    stats.positions = positions
    if not rest:
        rest = stream.read(_HEADER_READ)
        if not rest:
            return  # a header and nothing else
    if rest.startswith(codecs.BOM_UTF8):
        rest = codecs.BOM_UTF8 + rest  # pyarrow drops one, taking it for the file's own BOM
    field_names = [f"f{i}" for i in range(len(names))]
    wanted = [field_names[p] for p in positions]
    invalid: list[int] = []  # record numbers of structurally bad rows, in order

    def on_invalid(row: pacsv.InvalidRow) -> str:
        if row.number is None:  # only happens with parallel parsing, which we do not use
            raise BadDataError("row has the wrong number of fields", uri=uri)
        invalid.append(row.number)
        stats.bad_rows.append(BadRow(
            uri, row.number,
            f"expected {row.expected_columns} fields, got {row.actual_columns}",
            row.text[:MAX_RAW_CHARS] if row.text is not None else None))
        return "skip"

    parsed = 0  # structurally valid rows returned so far, clean or not
    try:
        reader = pacsv.open_csv(
            _Prefixed(rest, stream),
            read_options=pacsv.ReadOptions(column_names=field_names, block_size=block_size,
                                           use_threads=False),
            parse_options=pacsv.ParseOptions(newlines_in_values=True,
                                             invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                include_columns=wanted, column_types={n: pa.binary() for n in wanted},
                strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
        # pyarrow reads ahead several blocks, so blocks stay small to bound memory; they are
        # gathered into batches of about chunk_size rows so the per-batch cost stays low.
        gathered: list[pa.RecordBatch] = []
        gathered_rows = 0
        gather_target = min(chunk_size, gather_rows or chunk_size)
        exhausted = False
        while not exhausted:
            try:
                block = reader.read_next_batch()
                gathered.append(block)
                gathered_rows += block.num_rows
            except StopIteration:
                exhausted = True
            if not gathered or (gathered_rows < gather_target and not exhausted):
                continue
            columns = [_concat([b.column(n) for b in gathered]) for n in wanted]
            gathered, gathered_rows = [], 0
            clean, bad = clean_columns(columns, schema)
            for index, reason in bad:
                record = _record_number(parsed + index, invalid)
                fields = tuple(c[index].as_py() for c in columns)
                stats.bad_rows.append(BadRow(uri, record, reason, fields=fields))
            parsed += len(columns[0])
            for offset in range(0, clean.num_rows, chunk_size):
                yield clean.slice(offset, chunk_size)
    except pa.ArrowInvalid as err:
        if "Empty CSV file" in str(err):
            pass  # only blank lines after the header
        elif reopen is None:
            raise BadDataError(f"unreadable CSV: {_first_line(err)}", uri=uri) from err
        else:
            # Keep what belongs to the records returned, then read on after the last of them.
            # pyarrow parses ahead, so it may have reported invalid rows past that point.
            done = _record_number(parsed - 1, invalid) if parsed else 0
            invalid[:] = [number for number in invalid if number <= done]
            stats.bad_rows[:] = [bad for bad in stats.bad_rows if bad.record <= done]
            with reopen() as again:
                yield from _read_rest_with_csv(again, uri, schema, len(names), positions, done,
                                               chunk_size, stats, invalid)
            parsed = stats.rows_read - len(invalid)
    except OSError as err:
        raise StorageError(f"read failed: {_first_line(err)}", uri=uri) from err
    stats.rows_read = parsed + len(invalid)
    stats.bad_rows.sort(key=lambda b: b.record)


def _read_rest_with_csv(stream: BinaryIO, uri: str, schema: Schema, width: int,
                        positions: list[int], skip: int, chunk_size: int, stats: FileStats,
                        invalid: list[int]) -> Iterator[pa.RecordBatch]:
    """Records after the first ``skip`` of a file, parsed with Python's csv module."""
    csv.field_size_limit(MAX_ROW_CHARS)
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
    where = [1, 1]  # physical lines read so far + 1, and the line the current record starts on
    records = _records(csv.reader(_bounded_lines(text, uri, where)), where)
    next(records, None)  # the header
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


def _concat(chunks: list[pa.Array]) -> pa.Array:
    return chunks[0] if len(chunks) == 1 else pa.concat_arrays(chunks)


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _record_number(valid_index: int, invalid: list[int]) -> int:
    """The record number of the ``valid_index``-th (0-based) well-formed row."""
    number = valid_index + 1
    for skipped in invalid:  # sorted: the parser reports them in order
        if skipped <= number:
            number += 1
        else:
            break
    return number


def clean_columns(
    columns: list[pa.Array], schema: Schema
) -> tuple[pa.RecordBatch, list[tuple[int, str]]]:
    """Validate, trim and parse one parsed block: the clean batch and (row, reason) of bad rows.

    Every step is one vectorised Arrow call over the block; Python only looks at rows that
    turned out bad, which are rare.
    """
    n = len(columns[0])
    texts: list[pa.Array] = []
    reasons: dict[int, str] = {}
    for name, column in zip(schema.required, columns, strict=True):
        text, broken = _to_utf8(column)
        for i in broken:
            reasons.setdefault(i, f"invalid UTF-8 in {name}")
        # ascii_trim is safe on UTF-8: space and tab never occur inside a multi-byte sequence.
        texts.append(pc.ascii_trim(text, _TRIM))
    for name, text in zip(schema.required, texts, strict=True):
        lengths = pc.binary_length(text)
        if n and pc.min(lengths).as_py() == 0:
            for i in _true_indices(pc.equal(lengths, _scalars().zero)):
                reasons.setdefault(i, f"empty {name}")
    instants, unparsed = parse_instants(texts[1])
    for i in unparsed:
        reasons.setdefault(i, f"invalid {schema.time_column}")
    if reasons:
        keep = np.ones(n, dtype=bool)
        keep[list(reasons)] = False
        mask = pa.array(keep)
        texts = [pc.filter(t, mask) for t in texts]
        instants = pc.filter(instants, mask)
    batch = pa.RecordBatch.from_arrays([texts[0], instants, texts[2]], schema=CLEAN_SCHEMA)
    return batch, sorted(reasons.items())


def _true_indices(mask: pa.Array) -> list[int]:
    indices: list[int] = pc.indices_nonzero(mask).to_pylist()
    return indices


def _to_utf8(column: pa.Array) -> tuple[pa.Array, list[int]]:
    """The column as UTF-8 text, with invalid values emptied and their rows listed."""
    try:
        return pc.cast(column, pa.string()), []
    except pa.ArrowInvalid:
        pass
    broken = []
    for i, value in enumerate(column.to_pylist()):
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            broken.append(i)
    mask = np.zeros(len(column), dtype=bool)
    mask[broken] = True
    fixed = pc.if_else(pa.array(mask), _scalars().empty_binary, column)
    return pc.cast(fixed, pa.string()), broken


def parse_instants(text: pa.Array) -> tuple[pa.Array, list[int]]:
    """Nanoseconds since the epoch, UTC, for each datetime; rows that do not parse are listed.

    Fast path: one RE2 check of the shape and one vectorised cast. Only a block holding an
    impossible date (Feb 30, a year out of range) falls back to the exact per-row parser, and
    both paths accept exactly the same strings.
    """
    n = len(text)
    if n == 0:
        return pa.array(np.zeros(0, dtype=np.int64)), []
    scalars = _scalars()
    shaped = pc.match_substring_regex(text, DATETIME_PATTERN)
    good_shape = bool(pc.all(shaped).as_py())
    unparsed = [] if good_shape else _true_indices(pc.invert(shaped))
    candidates = text if good_shape else pc.if_else(shaped, text, scalars.epoch_text)
    if pc.max(pc.binary_length(candidates)).as_py() > _LONGEST_NANOSECOND_TEXT:
        # More than nine fraction digits: keep nanoseconds, drop the rest, as Arrow cannot.
        candidates = pc.replace_substring_regex(candidates, r"(\.\d{9})\d+", r"\1")
    # On a well-shaped string a zone shows as a Z, a +, or a third '-'.
    zoned = pc.or_(pc.or_(pc.match_substring(candidates, "Z"), pc.match_substring(candidates, "+")),
                   pc.greater(pc.count_substring(candidates, "-"), scalars.two))
    try:
        if not pc.any(zoned).as_py():
            stamps = pc.cast(candidates, pa.timestamp("ns"))
        else:
            with_zone = pc.binary_join_element_wise(candidates, scalars.utc, scalars.empty_text)
            stamps = pc.cast(pc.if_else(zoned, candidates, with_zone),
                             pa.timestamp("ns", tz="UTC"))
        return pc.cast(stamps, pa.int64()), unparsed
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    values = np.zeros(n, dtype=np.int64)
    bad_shape = set(unparsed)
    for i, value in enumerate(text.to_pylist()):
        if i in bad_shape:
            continue
        ns = parse_instant(value)
        if ns is None:
            unparsed.append(i)
        else:
            values[i] = ns
    return pa.array(values), sorted(unparsed)


def parse_instant(value: str) -> int | None:
    """One datetime as nanoseconds since the epoch in UTC, or None: the exact, slow reference."""
    match = _DATETIME_RE.match(value)
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        moment = dt.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                             tzinfo=dt.UTC)
    except ValueError:
        return None
    delta = moment - _EPOCH
    ns = (delta.days * 86400 + delta.seconds) * 10**9
    if fraction:
        ns += int(fraction[:9].ljust(9, "0"))
    if offset and offset != "Z":
        sign = 1 if offset[0] == "+" else -1
        ns -= sign * (int(offset[1:3]) * 3600 + int(offset[4:6]) * 60) * 10**9
    return ns if _NS_MIN <= ns <= _NS_MAX else None


def locate_bad_rows(
    open_stream: Callable[[], AbstractContextManager[BinaryIO]], stats: FileStats
) -> None:
    """Fill in the physical line and raw text of a file's bad rows with a second pass.

    Only files that had bad rows pay for it. A vectorised scan finds record boundaries from
    quote parity; it is exact for RFC 4180 files, and every row it locates is checked against
    what the parser saw. A file where the check fails (stray quotes inside unquoted fields, lone
    CR line ends) is located again with Python's csv module, exactly but slower.
    """
    if not stats.bad_rows:
        return
    with open_stream() as raw:
        located = _scan_records(raw, {b.record for b in stats.bad_rows})
    if located is not None and all(b.record in located and _matches(b, *located[b.record],
                                                                    stats.positions)
                                   for b in stats.bad_rows):
        for bad in stats.bad_rows:
            if bad.record in located:
                line, text = located[bad.record]
                bad.line = line
                bad.raw = text.decode("utf-8", "backslashreplace")[:MAX_RAW_CHARS]
        return
    with open_stream() as raw:
        _locate_with_csv(raw, stats)


def _matches(bad: BadRow, line: int, text: bytes, positions: list[int]) -> bool:
    """Whether the located record is the one the parser reported."""
    if bad.fields is None:  # a wrong field count: pyarrow gave its text
        got = text.decode("utf-8", "replace")[:MAX_RAW_CHARS].rstrip("\r")
        return bad.raw is None or got == bad.raw.rstrip("\r")
    decoded = text.decode("utf-8", "surrogateescape")
    try:
        row = next(csv.reader([decoded] if "\n" not in decoded
                              else io.StringIO(decoded, newline="")), [])
    except csv.Error:  # a lone CR in an unquoted field: leave it to the exact locator
        return False
    try:
        found = tuple(row[p].encode("utf-8", "surrogateescape") for p in positions)
    except IndexError:
        return False
    return found == bad.fields


_SCAN_CHUNK = 256 * 2**10  # its numpy masks take several times this, held at once


def _scan_records(raw: BinaryIO, wanted: set[int]) -> dict[int, tuple[int, bytes]] | None:
    """Physical start line and raw bytes of the wanted data records, by quote parity.

    Returns None where parity cannot be trusted (lone CR line ends, a record over 64 MiB).
    """
    found: dict[int, tuple[int, bytes]] = {}
    last = max(wanted)
    carry = b""
    line = 1  # physical line of carry's first byte
    record = -1  # data records completed; the header is record 0
    eof = False
    while not eof and len(found) < len(wanted):
        # A record longer than a chunk doubles the read, so a huge field costs linear time.
        chunk = raw.read(max(_SCAN_CHUNK, len(carry)))
        eof = not chunk
        buf = carry + chunk
        if eof and buf and not buf.endswith(b"\n"):
            buf += b"\n"  # the last record may lack its line end
        data = np.frombuffer(buf, dtype=np.uint8)
        newlines = np.flatnonzero(data == 10)
        quotes = np.flatnonzero(data == 34)
        if b"\r" in chunk:
            returns = np.flatnonzero(data[:-1] == 13)
            lone = returns[data[returns + 1] != 10]
            # A lone CR outside quotes ends a record without a line feed: leave that to csv.
            if np.any(np.searchsorted(quotes, lone) % 2 == 0):
                return None
        # buf starts at a record start, outside quotes: a newline ends a record when an even
        # number of quotes precede it.
        ends = newlines[np.searchsorted(quotes, newlines) % 2 == 0]
        if len(ends):
            starts = np.concatenate(([0], ends[:-1] + 1))
            lengths = ends - starts
            blank = (lengths == 0) | ((lengths == 1) & (data[starts] == 13))
            numbers = record + np.cumsum(~blank)
            hit = np.flatnonzero(~blank & np.isin(numbers, list(wanted)))
            for i in hit:
                start, end = int(starts[i]), int(ends[i])
                text = buf[start:end]
                found[int(numbers[i])] = (line + int(np.searchsorted(newlines, start)),
                                          text[:-1] if text.endswith(b"\r") else text)
            record = int(numbers[-1])
            consumed = int(ends[-1]) + 1
            line += int(np.searchsorted(newlines, consumed))
            carry = buf[consumed:]
        else:
            carry = buf
        if len(carry) > 64 * 2**20:
            return None
        if record >= last:
            break
    return found


def _locate_with_csv(raw: BinaryIO, stats: FileStats) -> None:
    """The exact, slow locator: Python's csv module, reading lines as they are consumed.

    Physical lines are counted by LF, as editors and ``sed`` count them; a lone CR ends a
    record for the parser but starts no new line.
    """
    wanted = {b.record: b for b in stats.bad_rows}
    last = max(wanted)
    csv.field_size_limit(MAX_ROW_CHARS)  # the read pass took every row: they fit
    text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
    consumed: list[str] = []

    def lines() -> Iterator[str]:
        for line in text:
            consumed.append(line)
            yield line

    header_seen = False
    record = 0
    newlines_before = 0
    for fields in csv.reader(lines()):
        raw_text = "".join(consumed)
        consumed.clear()
        start = 1 + newlines_before
        newlines_before += raw_text.count("\n")
        if not fields:  # a blank line is no record
            continue
        if not header_seen:
            header_seen = True
            continue
        record += 1
        bad = wanted.get(record)
        if bad is not None:
            bad.line = start
            restored = raw_text.rstrip("\r\n").encode("utf-8", "surrogateescape")
            bad.raw = restored.decode("utf-8", "backslashreplace")[:MAX_RAW_CHARS]
        if record >= last:
            break
