"""A run of small files read as one stitched parse gives what reading each file alone gives."""

from __future__ import annotations

import contextlib
import dataclasses
import io
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, cast

import pyarrow as pa
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import streamagg.read.stitch as stitch_module
from streamagg.errors import StreamaggError
from streamagg.read import CLEAN_SCHEMA, FileStats, ReadLimits, locate_bad_rows, read_batches
from streamagg.read.stitch import Member, read_stitched
from tests.fuzzing import fuzz_settings
from tests.reliability.reader_check import TINY

# pyarrow reports a row it cannot decode for its invalid-row handler as "exception ignored"
# before raising; the reader then reads that file with the csv module.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

ID, TIME, GROUP, EXTRA = "IMPRESSION_ID", "IMPRESSION_DATETIME", "CAMPAIGN_ID", "X"
STANDARD = (ID, TIME, GROUP)
HEADER = b"IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n"
# A row's id, datetime and group, laid out in the order of its file's header.
VALUES = [
    (b"a", b"2021-01-30 10:00:00", b"1"),
    (b"b", b"2021-01-30 11:59:59", b"2"),
    (b"c", b"never", b"3"),  # cleaned out: no datetime
    (b"", b"2021-01-30 10:00:00", b"5"),  # cleaned out: empty id
    (b"\xff\xfe", b"2021-01-30 10:00:00", b"6"),  # cleaned out: invalid UTF-8
    (b'"q,1\n \n"', b"2021-01-30 12:00:00", b'"7,8"'),  # quoted commas and line breaks
    (b'"x""y"', b'"2021-01-30 13:00:00"', b" 9 "),
    (b'"r\r\nn"', b"2021-01-30 14:00:00", b'"\r\n"'),  # quoted CRLFs: a block may split one
    (b"g", b"2021-01-30 10:00:00", b"G" * 40),  # a group too long under LONG_GROUPS' limits
]
# Lines whatever the header: blank lines, empty lines, rows pyarrow cannot go on past.
LITERAL = [
    b" \n", b"\t\n", b" \t \r\n", b"\xef\xbb\xbf\n", b"  \xef\xbb\xbf \n",  # blank lines
    b"\n", b"\r\n",  # empty lines
    b"\xff,\xfe\n",  # a field too few, not UTF-8: the csv fallback
    b"h,2021-01-30 10:00:00,1\r",  # a lone CR line end
    b"L" * 1200 + b",2021-01-30 10:00:00,1\n",  # longer than a block, or than TINY's rows
]
TAME = [line for line in LITERAL if not line.startswith((b"\xff", b"L"))]
SHAPES = ["row", "row", "row", "crlf", "more", "fewer"]


@st.composite
def header(draw: st.DrawFn) -> tuple[bytes, tuple[str, ...]]:
    """A header's bytes and its columns (the order rows are laid out in)."""
    kind = draw(st.sampled_from(["standard"] * 12 + ["permuted", "extra", "lower", "missing"]))
    names: tuple[str, ...] = STANDARD
    if kind == "permuted":
        names = tuple(draw(st.permutations(STANDARD)))
    elif kind == "extra":
        at = draw(st.integers(0, 3))
        names = (*STANDARD[:at], EXTRA, *STANDARD[at:])
    elif kind == "missing":
        missing = draw(st.sampled_from(STANDARD))
        names = tuple(n for n in STANDARD if n != missing)
    text = ",".join(n.lower() if kind == "lower" else n for n in names).encode()
    text += draw(st.sampled_from([b"\n"] * 6 + [b"\r\n", b"\r"]))
    if draw(st.integers(0, 7)) == 0:
        text = draw(st.sampled_from([b" \n", b"\n\n", b"\xef\xbb\xbf", b"\t\r\n"])) + text
    return text, names


def row(values: tuple[bytes, bytes, bytes], names: tuple[str, ...], shape: str) -> bytes:
    by_name = dict(zip(STANDARD, values, strict=True)) | {EXTRA: b"x"}
    fields = [by_name[n] for n in names]
    if shape == "more":
        fields.append(b"extra")
    elif shape == "fewer":
        fields.pop()
    return b",".join(fields) + (b"\r\n" if shape == "crlf" else b"\n")


@st.composite
def small_file(draw: st.DrawFn, wild: bool = True) -> bytes:
    """A header, then runs of rows (clean, cleaned out, of a wrong width) and blank lines; its
    end sometimes without a line end, or (``wild``) inside an open quote, a NUL in it, a
    malformed row that is not UTF-8. Or a file with no header at all, or nothing after it."""
    kind = draw(st.sampled_from(["rows"] * 20 + ["empty", "blank", "header only"]))
    if kind == "empty":
        return b""
    if kind == "blank":
        return draw(st.sampled_from([b" \n", b"\n\n", b"\xef\xbb\xbf", b"\t \r\n \n"]))
    text, names = draw(header())
    if kind == "header only":
        return draw(st.sampled_from([text, text.rstrip(b"\r\n")]))
    lines = []
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.integers(0, 3)) == 0:
            line = draw(st.sampled_from(LITERAL if wild else TAME))
        else:
            line = row(draw(st.sampled_from(VALUES)), names, draw(st.sampled_from(SHAPES)))
        lines.append(line * draw(st.integers(1, 4)))
    body = b"".join(lines)
    end = draw(st.sampled_from(["newline"] * 6 + ["no newline"] * 2
                               + (["open quote", "nul"] if wild else [])))
    if end == "no newline":
        body = body.rstrip(b"\r\n")
    elif end == "open quote":
        body += draw(st.sampled_from([b'z,2021-01-30 10:00:00,"7\n', b'"open', b'",\n\n']))
    elif end == "nul":  # mostly in the rows, sometimes in the header
        data = text + body
        at = draw(st.integers(0, len(data) - 1))
        return data[:at] + b"\x00" + data[at:]
    return text + body


class Trickle(io.RawIOBase):
    """A stream that hands over a few bytes a call, as a decompressor or a socket may."""

    def __init__(self, data: bytes, most: int) -> None:
        self.data, self.at, self.most = data, 0, most

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.most, len(self.data) - self.at)
        buffer[:n] = self.data[self.at:self.at + n]
        self.at += n
        return n


STREAMS = ["bytes", "bytes", "generator", "trickle"]


def reopener(data: bytes, kind: str) -> Callable[[], contextlib.AbstractContextManager[BinaryIO]]:
    """The file's content from its start, a new stream each call, of the given ``kind``."""
    if kind == "bytes":
        def reopen() -> contextlib.AbstractContextManager[BinaryIO]:
            return contextlib.nullcontext(io.BytesIO(data))
        return reopen

    @contextlib.contextmanager
    def opened() -> Iterator[BinaryIO]:
        if kind == "generator":
            yield io.BytesIO(data)
        else:
            with Trickle(data, 7) as stream:
                yield cast(BinaryIO, stream)
    return opened


def rows_of(batch: pa.RecordBatch) -> list[tuple[Any, ...]]:
    return [tuple(r.values()) for r in batch.to_pylist()]


def summary(stats: FileStats) -> tuple[object, ...]:
    """What the two ways must agree on: the counts, where the data begins, the bad rows."""
    bad = [(b.uri, b.record, b.line, b.reason, b.raw, b.fields) for b in stats.bad_rows]
    return (stats.rows_read, stats.header_line, stats.data_offset, stats.data_line,
            list(stats.positions), stats.empty, stats.stopped, stats.row_bytes, bad)


@dataclasses.dataclass
class Outcome:
    rows: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)
    stats: list[tuple[object, ...]] = dataclasses.field(default_factory=list)  # a file's, in order
    ends: list[int] = dataclasses.field(default_factory=list)  # rows yielded at each file's end
    bad: list[int] = dataclasses.field(default_factory=list)  # a file's bad rows
    error: tuple[str, str] | None = None


def per_file(members: list[Member], options: dict[str, Any]) -> Outcome:
    """The oracle: each file alone through `read_batches`, then `locate_bad_rows`."""
    out = Outcome()
    try:
        for m in members:
            stats = FileStats()
            with m.reopen() as stream:
                for batch in read_batches(stream, m.uri, stats=stats, reopen=m.reopen,
                                          **options):
                    out.rows.extend(rows_of(batch))
            if stats.bad_rows:
                locate_bad_rows(m.reopen, stats, options["limits"])
            out.stats.append(summary(stats))
            out.ends.append(len(out.rows))
            out.bad.append(len(stats.bad_rows))
    except StreamaggError as err:
        out.error = (type(err).__name__, str(err))
    return out


def stitched(members: list[Member], options: dict[str, Any], stitch_bytes: int | None) -> Outcome:
    """`read_stitched`, a file's bad rows located as soon as its event says it is read."""
    out = Outcome()
    chunk_size = options["chunk_size"]
    try:
        for item in read_stitched(iter(members), stitch_bytes=stitch_bytes, **options):
            if isinstance(item, Member):
                assert item is members[len(out.stats)], "a member out of order or twice"
                if item.stats.bad_rows:
                    locate_bad_rows(item.reopen, item.stats, options["limits"])
                out.stats.append(summary(item.stats))
                out.ends.append(len(out.rows))
                out.bad.append(len(item.stats.bad_rows))
            else:
                assert 0 < item.num_rows <= chunk_size and item.schema.equals(CLEAN_SCHEMA)
                out.rows.extend(rows_of(item))
    except StreamaggError as err:
        out.error = (type(err).__name__, str(err))
    return out


def members_of(files: list[bytes], streams: list[str]) -> list[Member]:
    return [Member(f"f{i}.csv", reopener(data, kind), FileStats())
            for i, (data, kind) in enumerate(zip(files, streams, strict=True))]


def check(files: list[bytes], streams: list[str], options: dict[str, Any],
          stitch_bytes: int | None) -> None:
    oracle = per_file(members_of(files, streams), options)
    got = stitched(members_of(files, streams), options, stitch_bytes)
    limit = options["stop_after_bad"]
    over = [i for i, bad in enumerate(oracle.bad) if limit is not None and bad > limit]
    if over:
        # The run fails at the first file with more bad rows than the limit, and where
        # `read_batches` stops in it depends on how far pyarrow's read-ahead thread got (a
        # streamed file): only the files before it are compared, and that it is over too.
        cut = over[0]
        rows = oracle.ends[cut - 1] if cut else 0
        assert got.rows[:rows] == oracle.rows[:rows]
        assert got.stats[:cut] == oracle.stats[:cut]
        assert all(g >= o for g, o in zip(got.ends[:cut], oracle.ends[:cut], strict=True))
        assert len(got.bad) > cut and got.bad[cut] > limit
        return
    assert got.error == oracle.error
    assert got.rows == oracle.rows
    # Every member read before the error (all of them without one) has its event, with the
    # same stats.
    assert got.stats == oracle.stats
    # Each event comes after the batches that hold its file's last rows.
    assert all(g >= o for g, o in zip(got.ends, oracle.ends, strict=True)), (
        got.ends, oracle.ends)


# Limits under which the row of a 40-byte group fails its file (a group value is checked against
# max_group_bytes only when a block is larger), and that row fits in a block.
LONG_GROUPS = dataclasses.replace(TINY, max_group_bytes=32, block_size=128,
                                  blank_lines_before_rescan=1000)


@st.composite
def limits(draw: st.DrawFn) -> ReadLimits:
    kind = draw(st.sampled_from(["default"] * 3 + ["small"] * 3 + ["tiny", "long groups"]))
    if kind == "tiny":
        return TINY
    if kind == "long groups":
        return LONG_GROUPS
    base = ReadLimits.default()
    if kind == "default":
        return base
    return dataclasses.replace(base, block_size=draw(st.sampled_from([64, 128, 256, 1024])),
                               blank_lines_before_rescan=draw(st.sampled_from([1, 3, 1000, 1000])))


@pytest.mark.fuzz
@fuzz_settings(200)
# Two runs in three tame, so that most of their groups are read joined.
@given(files=st.sampled_from([False, False, True]).flatmap(
           lambda wild: st.lists(small_file(wild), min_size=1, max_size=8)),
       data=st.data(),
       chunk_size=st.integers(1, 50), limits=limits(),
       stitch_bytes=st.sampled_from([None, None, (30, 400), (400, 5000), (400, 5000)]).flatmap(
           lambda size: st.just(size) if size is None else st.integers(*size)),
       stop_after_bad=st.one_of(st.none(), st.integers(0, 3)))
@example(files=[HEADER + b"a,2021-01-30 10:00:00,1\n"] * 3, data=None, chunk_size=2,
         limits=ReadLimits.default(), stitch_bytes=None, stop_after_bad=None)
# A file ending inside a quote: the marker after it is swallowed.
@example(files=[HEADER + b'a,2021-01-30 10:00:00,"1\n', HEADER + b"b,2021-01-30 10:00:00,2\n"],
         data=None, chunk_size=5, limits=ReadLimits.default(), stitch_bytes=None,
         stop_after_bad=None)
# A missing column in the second file: raised after the first file's rows.
@example(files=[HEADER + b"a,2021-01-30 10:00:00,1\n",
                b"IMPRESSION_ID,CAMPAIGN_ID\nb,2\n", HEADER + b"c,2021-01-30 10:00:00,3\n"],
         data=None, chunk_size=5, limits=ReadLimits.default(), stitch_bytes=None,
         stop_after_bad=None)
# Past the bound on blank lines in the joined parse's first block: pyarrow fails as the parse
# opens, and the group is read file by file.
@example(files=[HEADER + b" \n"] * 2, data=None, chunk_size=5,
         limits=dataclasses.replace(ReadLimits.default(), blank_lines_before_rescan=1),
         stitch_bytes=None, stop_after_bad=None)
def test_stitched_reads_as_each_file_alone(files: list[bytes], data: st.DataObject | None,
                                           chunk_size: int, limits: ReadLimits,
                                           stitch_bytes: int | None,
                                           stop_after_bad: int | None) -> None:
    """Clean rows in order, each file's counts, offsets and located bad rows, and the error
    (type and message) with what came before it, are those of reading each file alone; each
    member's event comes once, in order, after its last rows."""
    streams = ([data.draw(st.sampled_from(STREAMS)) for _ in files] if data is not None
               else ["bytes"] * len(files))
    options = {"chunk_size": chunk_size, "limits": limits, "stop_after_bad": stop_after_bad}
    check(files, streams, options, stitch_bytes)


@contextlib.contextmanager
def counting(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Counts of pyarrow parses (`open_csv`, the stitched ones and read_batches' own) and of
    files the stitching leaves to `read_batches`."""
    counts = {"parses": 0, "alone": 0}
    open_csv, alone = stitch_module.pacsv.open_csv, stitch_module.read_batches

    def counted_open_csv(*args: Any, **kwargs: Any) -> Any:
        counts["parses"] += 1
        return open_csv(*args, **kwargs)

    def counted_alone(*args: Any, **kwargs: Any) -> Any:
        counts["alone"] += 1
        return alone(*args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(stitch_module.pacsv, "open_csv", counted_open_csv)
        patched.setattr(stitch_module, "read_batches", counted_alone)
        yield counts


def clean_file(index: int, header: bytes = HEADER) -> bytes:
    names = tuple(n.strip() for n in header.decode().strip().split(","))
    return header + b"".join(
        row((f"id{index}-{i}".encode(), b"2021-01-30 10:00:00", b"7"), names, "row")
        for i in range(3))


OPTIONS = {"chunk_size": 4, "limits": ReadLimits.default(), "stop_after_bad": None}


def test_clean_files_of_one_header_are_one_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    files = [clean_file(i) for i in range(5)]
    with counting(monkeypatch) as counts:
        got = stitched(members_of(files, ["bytes"] * 5), OPTIONS, None)
    assert counts == {"parses": 1, "alone": 0}
    assert len(got.rows) == 15 and got.error is None
    check(files, ["bytes"] * 5, OPTIONS, None)


def test_a_different_header_splits_the_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """A, A, B, B, A: three runs of one header, three parses, whichever way each is read."""
    permuted = b"CAMPAIGN_ID,IMPRESSION_ID,IMPRESSION_DATETIME\n"
    files = [clean_file(0), clean_file(1), clean_file(2, permuted), clean_file(3, permuted),
             clean_file(4)]
    with counting(monkeypatch) as counts:
        got = stitched(members_of(files, ["bytes"] * 5), OPTIONS, None)
    assert counts["parses"] == 3
    assert counts["alone"] <= 1  # only the last file may be read alone
    assert len(got.rows) == 15 and got.error is None
    check(files, ["bytes"] * 5, OPTIONS, None)


def test_stitch_bytes_bounds_a_group(monkeypatch: pytest.MonkeyPatch) -> None:
    files = [clean_file(i) for i in range(6)]  # about 100 bytes of text each
    with counting(monkeypatch) as counts:
        got = stitched(members_of(files, ["bytes"] * 6), OPTIONS, 250)
    assert 1 < counts["parses"] < 6
    assert len(got.rows) == 18
    check(files, ["bytes"] * 6, OPTIONS, 250)


def test_a_block_that_splits_a_quoted_crlf_is_read_file_by_file() -> None:
    """pyarrow drops the LF that opens a block after one ending in a CR (framing.Prefixed):
    for one of these paddings of the first file, a block boundary of the joined bytes falls
    inside the second file's quoted CRLF; the LF must stay in the value, as when each file is
    read alone."""
    options = {**OPTIONS, "limits": dataclasses.replace(ReadLimits.default(), block_size=64)}
    for pad in range(64):
        files = [HEADER + b"a" * (pad + 1) + b",2021-01-30 10:00:00,1\n",
                 HEADER + b'"x\r\ny",2021-01-30 10:00:00,2\n']
        check(files, ["bytes"] * 2, options, None)
