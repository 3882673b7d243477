"""read/batches.py: bytes in, clean (key, instant, group) batches out, bad rows located."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

import pyarrow as pa
import pytest

from streamagg.config import Schema
from streamagg.errors import BadDataError
from streamagg.read import (
    CLEAN_SCHEMA,
    FileStats,
    locate_bad_rows,
    read_batches,
)
from tests import reference

H = "IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n"


def read_all(data: bytes, **options: object) -> tuple[list[pa.RecordBatch], FileStats]:
    stats = FileStats()
    batches = list(read_batches(io.BytesIO(data), "mem://a.csv", stats=stats, **options))
    return batches, stats


def rows_of(batches: list[pa.RecordBatch]) -> list[tuple[str, int, str]]:
    return [(r["key"], r["instant"], r["group"]) for batch in batches for r in batch.to_pylist()]


def locate(data: bytes, stats: FileStats) -> None:
    @contextlib.contextmanager
    def opener() -> Iterator[io.BytesIO]:
        yield io.BytesIO(data)

    locate_bad_rows(opener, stats)


def test_clean_rows_in_file_order() -> None:
    data = (H + "b,2021-01-30T10:00:00+01:00, 7 \n a ,2021-01-30 10:00:00.5,x\n").encode()
    batches, stats = read_all(data)
    assert all(batch.schema == CLEAN_SCHEMA for batch in batches)
    base = reference.parse_instant("2021-01-30 09:00:00")
    assert rows_of(batches) == [("b", base, "7"), ("a", base + 3600 * 10**9 + 5 * 10**8, "x")]
    assert stats.rows_read == 2 and stats.bad_rows == []


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 1000])
def test_batches_hold_at_most_chunk_size_rows(chunk_size: int) -> None:
    data = (H + "".join(f"id{i},2021-01-30 10:00:00,{i % 3}\n" for i in range(23))).encode()
    batches, stats = read_all(data, chunk_size=chunk_size)
    assert all(0 < batch.num_rows <= chunk_size for batch in batches)
    assert [r[0] for r in rows_of(batches)] == [f"id{i}" for i in range(23)]
    assert stats.rows_read == 23


def test_column_names_are_parameters() -> None:
    schema = Schema(id_column="user", time_column="ts", group_column="ad_group")
    data = b"Ts,AD_GROUP,other,USER\n2021-01-30 10:00:00,g1,x,u1\n"
    batches, _ = read_all(data, schema=schema)
    assert rows_of(batches) == [("u1", reference.parse_instant("2021-01-30 10:00:00"), "g1")]
    with pytest.raises(BadDataError) as info:
        read_all((H + "a,2021-01-30 10:00:00,1\n").encode(), schema=schema)
    assert info.value.column == "user" and info.value.exit_code == 4


def test_missing_column_names_file_and_column() -> None:
    with pytest.raises(BadDataError) as info:
        read_all(b"IMPRESSION_ID,CAMPAIGN_ID\na,1\n")
    assert info.value.column == "IMPRESSION_DATETIME"
    assert "mem://a.csv" in str(info.value) and "IMPRESSION_DATETIME" in str(info.value)


def bad_file(rows: int) -> bytes:
    """Rows with a bad one every seventh, some spanning lines, to cross block boundaries."""
    out = [H]
    for i in range(rows):
        if i % 7 == 3:
            out.append(f"bad{i},{'nope' if i % 2 else '2021-02-30 00:00:00'},1\n")
        elif i % 11 == 5:
            out.append(f'id{i},2021-01-30 10:00:00,"two\nlines"\n')
        elif i % 13 == 6:
            out.append(f"short{i},2021-01-30 10:00:00\n")
        else:
            out.append(f"id{i},2021-01-30 10:00:00,{i % 4}\n")
    return "".join(out).encode()


@pytest.mark.parametrize("block_size", [256, 1024, 4 * 2**20])
def test_bad_rows_are_located_exactly(block_size: int) -> None:
    data = bad_file(300)
    batches, stats = read_all(data, block_size=block_size, chunk_size=17)
    locate(data, stats)
    rejects: list[reference.Reject] = []
    good, rows_read, bad = reference.read_file("a.csv", data, rejects)
    assert stats.rows_read == rows_read
    assert len(stats.bad_rows) == bad
    assert [(b.line, b.raw) for b in stats.bad_rows] == [
        (r.line, r.raw.rstrip("\n")) for r in rejects
    ]
    assert rows_of(batches) == [(r.impression_id, r.instant, r.campaign) for r in good]


def test_the_first_bytes_after_the_header_sample_the_row_size() -> None:
    row = "3f2b9a70-0c1e-4c4e-9f59-2a8d1e9c6b11,2021-01-30 10:00:00,12345\n"
    _, stats = read_all((H + row * 5000).encode())
    assert stats.row_bytes == len(row)
    _, no_record = read_all((H + row.rstrip("\n")).encode())  # no line end after the header
    assert no_record.row_bytes is None


def test_rows_longer_than_the_sample_still_give_a_row_size() -> None:
    row = "id1,2021-01-30 10:00:00," + "7" * 20_000 + "\n"  # past ROW_SAMPLE_BYTES
    _, stats = read_all((H + row * 3).encode())
    assert stats.row_bytes == len(row)
