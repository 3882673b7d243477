"""A file read again once it shows many blank lines gives what one reading gives."""

from __future__ import annotations

import contextlib
import dataclasses
import io
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import streamagg.read.batches as reader_module
import streamagg.read.header as header_module
from streamagg.read import FileStats, ReadLimits, read_batches
from tests.read import test_whole_file as whole_file

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

HEADER = b"IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n"
LINES = [
    b"a,2021-01-30 10:00:00,1\n",  # a row
    b"b,2021-01-30 11:59:59,2\r\n",
    b"a,2021-01-30 10:00:00,1,extra\n",  # malformed: a field too many
    b"c,never,3\n",  # cleaned out: no datetime
    b'"q\n \n",2021-01-30 12:00:00,4\n',  # a quoted line break, a blank-looking line inside
    b" \n", b"\t\n", b" \t \r\n", b"\xef\xbb\xbf\n", b"  \xef\xbb\xbf \n",  # blank lines
    b"\n", b"\r\n",  # empty lines
]


@st.composite
def blank_heavy(draw: st.DrawFn) -> bytes:
    """A header, then runs of rows, bad rows and blank lines of every kind, in any order."""
    runs = draw(st.lists(st.tuples(st.sampled_from(LINES), st.integers(1, 6)), max_size=30))
    return HEADER + b"".join(line * count for line, count in runs)


@contextlib.contextmanager
def reading(monkeypatch: pytest.MonkeyPatch, *, streamed: bool) -> Iterator[None]:
    """A short header read, so the blocks after it go through the streamed way's emptying;
    ``streamed``: no file is read whole."""
    with monkeypatch.context() as patched:
        patched.setattr(header_module, "HEADER_READ", 64)
        patched.setattr(reader_module, "HEADER_READ", 64)
        if streamed:
            patched.setattr(reader_module, "WHOLE_FILE_BLOCKS", 0)
        yield


def outcome(data: bytes, *, threshold: int, streamed: bool, lazy: bool, block_size: int,
            gather_rows: int, monkeypatch: pytest.MonkeyPatch) -> tuple[object, ...]:
    limits = dataclasses.replace(ReadLimits.default(), blank_lines_before_rescan=threshold)
    with reading(monkeypatch, streamed=streamed):
        return whole_file.outcome(data, block_size, chunk_size=3, lazy=lazy,
                                  gather_rows=gather_rows, limits=limits)


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=blank_heavy(), threshold=st.integers(1, 4), streamed=st.booleans(),
       lazy=st.booleans(), block_size=st.sampled_from([64, 256, 1 << 20]),
       gather_rows=st.integers(1, 8))
@example(data=HEADER + LINES[0] * 3 + b" \n" * 5 + LINES[2] + b" \n" * 3 + LINES[1],
         threshold=2, streamed=True, lazy=True, block_size=64, gather_rows=1)
# A malformed record returned before the stop: the second reading must not report it again.
@example(data=HEADER + LINES[0] * 3 + LINES[2] + LINES[0] * 5 + b" \n" * 50 + LINES[0],
         threshold=2, streamed=True, lazy=True, block_size=64, gather_rows=1)
@example(data=HEADER + LINES[0] * 3 + LINES[2] + LINES[0] * 5 + b" \n" * 50 + LINES[0],
         threshold=2, streamed=False, lazy=False, block_size=64, gather_rows=1)
def test_reading_again_after_blank_lines_changes_nothing(
        data: bytes, threshold: int, streamed: bool, lazy: bool, block_size: int,
        gather_rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows, bad rows (record, line, reason, text) and counts are those of a reading that never
    stops for blank lines, whether the file is read whole or streamed, read again from its
    start (``lazy``) or emptied from the first block, and wherever the stop falls among the
    batches already returned."""
    once = outcome(data, threshold=10**9, streamed=streamed, lazy=lazy, block_size=block_size,
                   gather_rows=gather_rows, monkeypatch=monkeypatch)
    again = outcome(data, threshold=threshold, streamed=streamed, lazy=lazy,
                    block_size=block_size, gather_rows=gather_rows, monkeypatch=monkeypatch)
    assert again == once


def test_a_file_full_of_blank_lines_is_read_again_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the threshold the file is opened a second time, and not a third: the second reading
    empties its blank lines ahead of the parser, so its handler never stops it."""
    data = HEADER + LINES[0] + b" \n" * 5000 + LINES[1] + b"\t\n" * 5000 + LINES[0]
    opened = []

    def reopen() -> contextlib.AbstractContextManager[io.BytesIO]:
        opened.append(1)
        return contextlib.nullcontext(io.BytesIO(data))

    for streamed in (False, True):
        opened.clear()
        stats = FileStats()
        with reading(monkeypatch, streamed=streamed):
            rows = sum(b.num_rows for b in read_batches(
                io.BytesIO(data), "f.csv", block_size=256 if streamed else 1 << 16, gather_rows=1,
                stats=stats,
                reopen=reopen))
        assert (rows, stats.rows_read, len(stats.bad_rows)) == (3, 3, 0)
        # Read whole, the file is in memory already: it is emptied there, not opened again.
        assert len(opened) == (1 if streamed else 0)
