"""A small file read whole and the same file streamed give the same rows, bad rows and errors."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any, BinaryIO

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import streamagg.read.batches as reader_module
from streamagg.errors import StreamaggError
from streamagg.read import FileStats, locate_bad_rows, read_batches
from tests.reliability.test_fuzz_reader import csv_like

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def outcome(data: bytes, block_size: int, *, chunk_size: int = 7, lazy: bool = True,
            opener: Callable[[bytes], BinaryIO] = io.BytesIO,
            **options: Any) -> tuple[object, ...]:
    """Rows, located bad rows and counts of ``data``, read (and read again) through
    ``opener``; ``lazy``: the reader may open it again (``options`` go to `read_batches`)."""
    def reopen() -> contextlib.AbstractContextManager[BinaryIO]:
        return contextlib.nullcontext(opener(data))

    stats = FileStats()
    try:
        rows = [r for b in read_batches(opener(data), "f.csv", chunk_size=chunk_size,
                                        block_size=block_size, stats=stats,
                                        reopen=reopen if lazy else None, **options)
                for r in b.to_pylist()]
        locate_bad_rows(reopen, stats)
    except StreamaggError as err:
        return ("error", str(err))
    bad = [(b.record, b.line, b.reason, b.raw) for b in stats.bad_rows]
    return rows, bad, stats.rows_read, stats.empty


def both_ways(data: bytes, block_size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = outcome(data, block_size)
    with monkeypatch.context() as patched:
        patched.setattr(reader_module, "WHOLE_FILE_BLOCKS", 0)  # every file streamed
        streamed = outcome(data, block_size)
    assert whole == streamed


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=csv_like(), block_size=st.sampled_from([64, 256, 4096, 1 << 20]))
@example(data=b"IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\na,2021-01-30 10:00:00,\x00\n",
         block_size=1 << 20)
@example(data=b'IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\na,2021-01-30 10:00:00,"7',
         block_size=1 << 20)
def test_whole_and_streamed_read_alike(data: bytes, block_size: int,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    both_ways(data, block_size, monkeypatch)


@pytest.mark.parametrize("rows", [0, 1, 1000, 30_000])  # the last is past 4 blocks of 256 KiB
def test_files_around_the_whole_file_bound_read_alike(rows: int,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    body = "".join(f"id{i},2021-01-30 {i % 24:02d}:00:00,{i % 9}\n" for i in range(rows))
    both_ways(b"IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n" + body.encode(), 256 << 10,
              monkeypatch)
