"""A binary CSV stream in, Arrow batches of (key text, instant, group) out; bad rows set aside."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.csv as pacsv

from ..columns import MAX_RAW_CHARS, BadRow, FileStats, capped
from ..config import Schema
from ..errors import BadDataError, StorageError
from .blank import is_blank_text
from .clean import clean_columns
from .fallback import read_rest_with_csv
from .framing import Prefixed, Whole, whole_if_small
from .header import HEADER_READ, find_columns, split_header
from .limits import ReadLimits, gathered_size, refuse_long_groups
from .numbering import Runs, record_number
from .quotes import UNTERMINATED, is_probe, strip_probe

ROW_SAMPLE_BYTES = 16 * 1024
# A file of up to this many blocks is read whole (see `whole_if_small`): pyarrow reads about a
# dozen blocks ahead of its parse anyway, so this bounds nothing new.
WHOLE_FILE_BLOCKS = 4


class _Reporting:
    """pyarrow's invalid-row handler for one reading of a file: malformed records into
    ``invalid`` and ``stats`` (but those up to ``reported``, reported by an earlier reading),
    blank lines counted, and past ``blanks`` of them (None: no bound, in a reading that empties
    them ahead), the reading stopped (``too_many_blanks``)."""

    def __init__(self, uri: str, stats: FileStats, invalid: Runs, *, reported: int,
                 blanks: int | None) -> None:
        self.uri, self.stats, self.invalid, self.reported = uri, stats, invalid, reported
        # Records pyarrow counts that are none: the sentinel, then blank lines of spaces, tabs
        # or BOMs (empty ones it skips itself). Reported in record order, they shift the
        # numbers after.
        self.uncounted = 1
        self.blanks_left = blanks
        self.too_many_blanks = False

    def __call__(self, row: pacsv.InvalidRow) -> str:
        if row.number is None:  # only happens with parallel parsing, which we do not use
            raise BadDataError("row has the wrong number of fields", uri=self.uri)
        if row.actual_columns == 1 and row.text is not None and is_blank_text(row.text):
            self.uncounted += 1  # a blank line, as docs/CONTRACT.md says
            if self.blanks_left is not None:
                self.blanks_left -= 1
                if self.blanks_left <= 0:
                    self.too_many_blanks = True
                    return "error"  # pyarrow then fails the reading, at this record
            return "skip"
        number = row.number - self.uncounted
        if number <= self.reported:
            return "skip"
        self.invalid.add(number)
        self.stats.bad_rows.malformed.append(malformed_row(self.uri, number, row))
        return "skip"


def malformed_row(uri: str, number: int, row: pacsv.InvalidRow) -> BadRow:
    """The bad row of a record pyarrow found with the wrong number of fields."""
    return BadRow(uri, number, f"expected {row.expected_columns} fields, got {row.actual_columns}",
                  row.text[:MAX_RAW_CHARS] if row.text is not None else None)


def _framed(stream: BinaryIO, rest: bytes, sentinel: bytes, limits: ReadLimits,
            scan: bool) -> Prefixed | Whole:
    """The sentinel, ``rest`` (read past the header) and the rest of ``stream``, for pyarrow:
    read whole when the file is small (`WHOLE_FILE_BLOCKS`)."""
    return whole_if_small(sentinel + rest, stream,
                          len(sentinel) + len(rest) + WHOLE_FILE_BLOCKS * limits.block_size,
                          limits.block_size, scan=scan)


def _read_again(again: contextlib.ExitStack,
                reopen: Callable[[], AbstractContextManager[BinaryIO]], uri: str, schema: Schema,
                limits: ReadLimits, sentinel: bytes) -> Prefixed | Whole:
    """The file opened anew (kept open by ``again``), past its header, to be parsed with its
    blank lines emptied ahead of the parser."""
    stream = again.enter_context(reopen())
    rest = split_header(stream, uri, schema, limits).rest or stream.read(HEADER_READ)
    framed = _framed(stream, rest, sentinel, limits, scan=True)
    return framed.scanned() if isinstance(framed, Whole) else framed


def read_batches(
    stream: BinaryIO,
    uri: str,
    *,
    schema: Schema | None = None,
    chunk_size: int = 100_000,
    block_size: int | None = None,
    stats: FileStats | None = None,
    reopen: Callable[[], AbstractContextManager[BinaryIO]] | None = None,
    gather_rows: int | None = None,
    stop_after_bad: int | None = None,
    limits: ReadLimits | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream a decompressed CSV file as clean batches of at most ``chunk_size`` rows.

    pyarrow's small blocks are gathered up to ``gather_rows`` rows (default
    ``limits.gather_rows``) or ``limits.gather_bytes`` before they are cleaned: fewer, larger
    batches cost less per row, more memory per reader. ``limits`` (the default
    ``--memory-limit``'s when not given) also bounds the header's columns and a row's length;
    ``block_size`` and ``gather_rows`` override its own.

    Only the three required columns are converted; bad rows are appended to ``stats.bad_rows``
    with their record number (see `locate_bad_rows` for line numbers and raw text). A file with
    no header at all (nothing but blank lines or a byte-order mark) is marked ``stats.empty``.

    pyarrow cannot go on past two things: a row longer than ``block_size``, and a row with the
    wrong number of fields whose text is not UTF-8. When ``reopen`` is given, the rest of such a
    file is read with Python's csv module instead, from the first record not yet returned.

    With ``stop_after_bad`` (a ``--max-bad-rows`` count), reading stops as soon as the file has
    more bad rows than that, and ``stats.stopped`` says so: the run fails anyway.
    """
    schema = schema or Schema()
    limits = limits or ReadLimits.default()
    if block_size is not None:
        limits = dataclasses.replace(limits, block_size=block_size)
    stats = stats if stats is not None else FileStats()
    started = start_file(stream, uri, schema, limits, stats)
    if started is None:
        return
    positions, width, rest = started
    # Record numbers of the malformed rows, as runs: a billion of them in a row is one.
    invalid = Runs()
    parsed = 0  # structurally valid rows returned so far, clean or not
    # pyarrow's streaming reader skips the blocks that hold no row (blank lines, bad rows) before
    # its first row by recursion, one level of stack a block: a few gigabytes of blank lines
    # after a header overflowed a thread's stack (SIGSEGV). A first record of the right width,
    # dropped again, puts a row in the first block, so that path is never taken.
    sentinel = sentinel_record(width)
    # A streamed file that cannot be read again from its start has its blank lines emptied
    # ahead of the parser from the first block (see `ReadLimits.blank_lines_before_rescan`).
    scanned = reopen is None
    framed = _framed(stream, rest, sentinel, limits, scan=scanned)
    del rest
    with contextlib.ExitStack() as again:
        # Read a second time (blank lines emptied), the first ``replayed`` rows and the records up
        # to ``reported`` were returned and reported by the first reading.
        replayed = reported = 0
        # A file read whole is emptied only when it needs to be, however it came.
        scanned = scanned and isinstance(framed, Prefixed)
        while True:
            on_invalid = _Reporting(uri, stats, invalid, reported=reported,
                                    blanks=None if scanned else limits.blank_lines_before_rescan)
            reader = None
            try:
                reader = open_parser(framed.source, width, positions, limits, on_invalid)
                # pyarrow reads ahead several blocks, so blocks stay small to bound memory; they
                # are gathered into batches of about chunk_size rows so the per-batch cost stays
                # low.
                gathered: list[pa.RecordBatch] = []
                gathered_rows = gathered_bytes = 0
                gather_target = min(chunk_size, gather_rows or limits.gather_rows or chunk_size)
                exhausted = False
                first = True
                while not exhausted:
                    try:
                        block = reader.read_next_batch()
                        if first:
                            block, first = block.slice(1), False  # the sentinel
                        if replayed and block.num_rows:  # returned by the first reading
                            skipped = min(replayed, block.num_rows)
                            block, replayed = block.slice(skipped), replayed - skipped
                        if block.num_rows:  # a block of blank lines or bad rows holds none
                            gathered.append(block)
                            gathered_rows += block.num_rows
                            gathered_bytes += gathered_size(block, 2)
                    except StopIteration:
                        exhausted = True
                    # Past a count limit, what is gathered is cleaned at once, to see whether to
                    # stop.
                    over = stop_after_bad is not None and len(stats.bad_rows) > stop_after_bad
                    room = gathered_rows < gather_target and gathered_bytes < limits.gather_bytes
                    # Read to its end, the last record may hold an unclosed quote: the newest block
                    # waits for the last batch; the read-ahead before it goes on by size (it was
                    # 7.6 MiB once).
                    at_eof = framed.at_eof and not exhausted
                    if not exhausted and (room and not over
                                          or at_eof and (room or len(gathered) < 2)):
                        continue
                    kept = [gathered.pop()] if at_eof else []
                    # By position, in ``wanted``'s order as pyarrow gives them: a lookup by name
                    # cost 2.4% of the samples holding the GIL on a day of 2,000 small files.
                    columns = [_concat([b.column(i) for b in gathered]) if gathered
                               else pa.array([], pa.binary()) for i in range(len(positions))]
                    gathered, gathered_rows = kept, sum(b.num_rows for b in kept)
                    gathered_bytes = sum(gathered_size(b, 2) for b in kept)
                    refuse_long_groups(columns[2], parsed, invalid, limits, uri,
                                       schema.group_column)
                    cut = exhausted and _check_last_record(columns, parsed, invalid, stats, uri)
                    if cut:  # the last record is a bad row now
                        columns = [c.slice(0, len(c) - 1) for c in columns]
                    clean, bad = clean_columns(columns, schema)
                    for index, reason in bad:
                        record = record_number(parsed + index, invalid)
                        fields = capped(tuple(c[index].as_py() for c in columns))
                        stats.bad_rows.append(BadRow(uri, record, reason, fields=fields))
                    parsed += len(columns[0]) + cut
                    del columns
                    if parsed and not cut:
                        invalid.forget_upto(record_number(parsed - 1, invalid))
                    for offset in range(0, clean.num_rows, chunk_size):
                        yield clean.slice(offset, chunk_size)
                    if over and not (exhausted or at_eof) and _stop(parsed, invalid, stats,
                                                                    stop_after_bad):
                        break
            except pa.ArrowInvalid as err:
                # Keep what belongs to the records returned, then read on after the last of
                # them. pyarrow parses ahead, so it may have reported invalid rows past that
                # point.
                done = record_number(parsed - 1, invalid) if parsed else 0
                if reader is not None:
                    reader.close()
                    reader = None
                if on_invalid.too_many_blanks:
                    # The file again from its start, blank lines emptied this time.
                    invalid.truncate_after(done)
                    stats.bad_rows.truncate(done)
                    replayed, reported, scanned = parsed, done, True
                    if isinstance(framed, Whole):
                        framed = framed.scanned()
                    else:
                        assert reopen is not None  # else its blank lines were emptied already
                        framed = _read_again(again, reopen, uri, schema, limits, sentinel)
                    continue
                if reopen is None:
                    raise BadDataError(f"unreadable CSV: {_first_line(err)}", uri=uri) from err
                invalid.truncate_after(done)
                stats.bad_rows.truncate(done)
                with reopen() as rest_of_file:
                    yield from read_rest_with_csv(rest_of_file, uri, schema, width, positions,
                                                  done, chunk_size, stats, invalid,
                                                  stop_after_bad, limits)
                return
            except OSError as err:
                raise StorageError(f"read failed: {_first_line(err)}", uri=uri) from err
            finally:
                # Closed here, on this thread: left to the garbage collector, pyarrow's
                # read-ahead thread may still call into Python while the interpreter exits,
                # which aborts it.
                if reader is not None:
                    reader.close()
            break
    stats.rows_read = parsed + len(invalid)


def sentinel_record(width: int) -> bytes:
    """A record of ``width`` fields put before a file's rows and dropped again, so that
    pyarrow's first block holds a row (see where `read_batches` makes it)."""
    return b"s" + b"," * (width - 1) + b"\n"


def start_file(stream: BinaryIO, uri: str, schema: Schema, limits: ReadLimits,
               stats: FileStats) -> tuple[list[int], int, bytes] | None:
    """Read a file's header into ``stats`` (where it is, the required columns' positions, a
    sample of the row size) and the first bytes past it: the positions, the header's width and
    those bytes; None for a file with no header (``stats.empty``) or nothing after it."""
    header = split_header(stream, uri, schema, limits)
    stats.header_line, stats.data_offset, stats.data_line = (
        header.line, header.data_offset, header.data_line)
    if not header.names:
        stats.empty = True
        return None
    positions = find_columns(header.names, schema, uri, header.line)
    stats.positions = positions
    width = len(header.names)
    rest = header.rest
    del header  # a wide header's names
    if not rest:
        rest = stream.read(HEADER_READ)
        if not rest:
            return None  # a header and nothing else
    # The row size from the first 16 KiB past the header (or to the first line end beyond):
    # counting all the 64 KiB read in every file took 70 us of a small file's fixed cost, for
    # an estimate only the day's first file gives.
    sampled = rest.rfind(b"\n", 0, ROW_SAMPLE_BYTES) + 1 or rest.find(b"\n") + 1
    if sampled:
        stats.row_bytes = sampled / rest.count(b"\n", 0, sampled)
    return positions, width, rest


class _UndecodableRows:
    """`sys.unraisablehook` without the one report pyarrow makes of a malformed record that is
    not UTF-8: its invalid-row callback decodes the record before calling the handler, fails,
    prints that failure as an ignored exception (a traceback on stderr), then fails the reading
    with `ArrowInvalid`. `read_batches` reads such a file on from its last record with the csv
    module, which reports the record as a bad row, its bytes escaped: the traceback told nothing
    that went wrong. Every other report goes to the hook it wraps."""

    def __init__(self, wrapped: Callable[[Any], object]) -> None:
        self.wrapped = wrapped

    def __call__(self, unraisable: Any) -> None:
        if not _undecodable_row(unraisable.exc_type, unraisable.exc_traceback):
            self.wrapped(unraisable)


def _undecodable_row(kind: type[BaseException] | None, trace: TracebackType | None) -> bool:
    if kind is None or not issubclass(kind, UnicodeDecodeError):
        return False
    while trace is not None:
        if trace.tb_frame.f_code.co_name.endswith("_handle_invalid_row"):
            return True
        trace = trace.tb_next
    return False


def open_parser(source: object, width: int, positions: list[int], limits: ReadLimits,
                on_invalid: Callable[[pacsv.InvalidRow], str]) -> pacsv.CSVStreamingReader:
    """pyarrow's streaming reader over ``source``: records of ``width`` fields, the required
    ones (at ``positions``) as binary, in that order, named ``f<position>``; malformed records
    to ``on_invalid``."""
    # Wrapped whenever a parser opens, not once: whatever set the hook since (a test runner
    # does, per test) keeps getting every other report.
    if not isinstance(sys.unraisablehook, _UndecodableRows):
        sys.unraisablehook = _UndecodableRows(sys.unraisablehook)
    field_names = [f"f{i}" for i in range(width)]
    wanted = [field_names[p] for p in positions]
    return pacsv.open_csv(
        source,
        read_options=pacsv.ReadOptions(column_names=field_names, block_size=limits.block_size,
                                       use_threads=False),
        parse_options=pacsv.ParseOptions(newlines_in_values=True,
                                         invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(
            include_columns=wanted, column_types={n: pa.binary() for n in wanted},
            strings_can_be_null=False, quoted_strings_can_be_null=False),
    )


def _stop(parsed: int, invalid: Runs, stats: FileStats, limit: int | None) -> bool:
    """Whether the records read so far hold more bad rows than ``limit``; if so, forget what
    pyarrow reported beyond them, and mark the file as stopped early."""
    done = record_number(parsed - 1, invalid) if parsed else 0
    # The malformed records right after the last row returned are read too.
    done = max(done, invalid.run_end(done + 1))
    if limit is None or stats.bad_rows.cleaned.count + invalid.count_upto(done) <= limit:
        return False
    invalid.truncate_after(done)
    stats.bad_rows.truncate(done)
    stats.stopped = True
    return True


def _check_last_record(columns: list[pa.Array], parsed: int, invalid: Runs,
                       stats: FileStats, uri: str) -> bool:
    """Drop the probe's record; if there is none (the file ended inside a quoted field), the
    last record is a bad row. True when that is the last of ``columns`` (the last rows parsed,
    after the ``parsed`` ones returned before), which the caller then leaves out."""
    last = parsed + len(columns[0]) + len(invalid)  # the probe's record number, if it is there
    bad = stats.bad_rows.malformed.last()
    if invalid.last() == last and bad is not None and bad.record == last:
        if is_probe(bad.raw):
            invalid.pop()
            stats.bad_rows.malformed.pop()
        else:  # a quote left open mid-row: its field count is wrong already
            bad.raw = strip_probe(bad.raw)
        return False
    if not len(columns[0]):
        return False  # cannot happen: the last record is parsed only once the stream ended
    fields = capped(tuple(c[len(c) - 1].as_py() for c in columns))
    stats.bad_rows.malformed.append(BadRow(uri, last, UNTERMINATED, fields=fields))
    return True


def _concat(chunks: list[pa.Array]) -> pa.Array:
    return chunks[0] if len(chunks) == 1 else pa.concat_arrays(chunks)


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__

