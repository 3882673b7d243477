"""The reader on its own: bytes in, clean (key, instant, group) batches out, bad rows located."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamagg.config import Schema
from streamagg.errors import BadDataError
from streamagg.read import (
    CLEAN_SCHEMA,
    FileStats,
    locate_bad_rows,
    parse_instant,
    parse_instants,
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


# --- datetimes ---------------------------------------------------------------------------------

datetime_like = st.builds(
    lambda date, sep, time, frac, zone: f"{date}{sep}{time}{frac}{zone}",
    st.sampled_from(
        [
            "2021-01-30",
            "2020-02-29",
            "2021-02-29",
            "2021-13-01",
            "2021-1-30",
            "1969-12-31",
            "2262-04-11",
            "2262-04-12",
            "1677-09-21",
            "1677-09-22",
            "0001-01-01",
        ]
    ),
    st.sampled_from([" ", "T", "t", "  "]),
    st.sampled_from(
        ["00:00:00", "23:59:59", "24:00:00", "10:60:00", "10:00:60", "9:00:00", "10:00"]
    ),
    st.sampled_from(["", ".", ".5", ".000000001", ".1234567891", ".12345678912345"]),
    st.sampled_from(
        ["", "Z", "z", "+00:00", "-00:00", "+01:00", "-23:59", "+24:00", "+0100", "+01", " Z"]
    ),
)


@settings(max_examples=300, deadline=None)
@given(text=datetime_like)
def test_parse_instant_matches_reference(text: str) -> None:
    assert parse_instant(text) == reference.parse_instant(text)


def assert_parsed_like_reference(texts: list[str]) -> None:
    """`parse_instants` on one block lists the rows the reference refuses and gives its values
    for the rest."""
    instants, unparsed = parse_instants(pa.array(texts, pa.string()))
    expected = [reference.parse_instant(t) for t in texts]
    assert sorted(unparsed) == [i for i, e in enumerate(expected) if e is None]
    values = instants.to_pylist()
    assert [v for v, e in zip(values, expected, strict=True) if e is not None] == [
        e for e in expected if e is not None
    ]


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(datetime_like, min_size=1, max_size=20))
def test_vectorised_parse_matches_row_by_row(texts: list[str]) -> None:
    assert_parsed_like_reference(texts)


# Every value 19 characters wide, as the canonical form is: the fixed-width fast path decides
# (a valid time, Feb 30, hour 24, a letter or space where a digit belongs, another separator).
fixed_width_like = st.builds(
    lambda date, sep, time: f"{date}{sep}{time}",
    st.sampled_from(["2021-01-30", "2020-02-29", "2021-02-29", "2021-13-01", "2021-00-10",
                     "2021-1-30 ", "1677-09-21", "2262-04-12", "0001-01-01", "2021/01/30"]),
    st.sampled_from([" ", "T", "t", "_"]),
    st.sampled_from(["00:00:00", "23:59:59", "24:00:00", "10:60:00", "10:00:60", "1a:00:00",
                     " 9:00:00", "10:00+01", "10:00:0Z"]),
)


@settings(max_examples=150, deadline=None)
@given(texts=st.one_of(
    st.lists(fixed_width_like, min_size=1, max_size=20),
    # Mostly 19 wide, some other forms: the canonical rows are parsed apart from the rest.
    st.lists(st.one_of(fixed_width_like, fixed_width_like, fixed_width_like, datetime_like),
             min_size=1, max_size=30),
))
def test_fixed_width_parse_matches_row_by_row(texts: list[str]) -> None:
    assert_parsed_like_reference(texts)


def test_canonical_datetimes_and_unpadded_fields_take_the_fast_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A block in the canonical form with no padding needs neither the regex nor a trim."""
    import pyarrow.compute as pc

    def unused(*args: object, **kwargs: object) -> None:
        raise AssertionError("the fast path should not need this")

    monkeypatch.setattr(pc, "match_substring_regex", unused)
    monkeypatch.setattr(pc, "ascii_trim", unused)
    data = (H + "a,2021-01-30 10:00:00,7\nb c,2021-01-30T23:59:59,x y\n").encode()
    batches, stats = read_all(data)
    base = reference.parse_instant("2021-01-30 10:00:00")
    assert rows_of(batches) == [("a", base, "7"), ("b c", base + (13 * 3600 + 3599) * 10**9, "x y")]
    assert stats.bad_rows == []


@pytest.mark.parametrize("padded", [" a", "a ", "\ta", "a\t", "\t", " "])
def test_padding_at_either_edge_of_any_value_is_trimmed(padded: str) -> None:
    rows = [f"id{i},2021-01-30 10:00:00,{i}\n" for i in range(5)]
    rows[4] = f"id4,2021-01-30 10:00:00,{padded}\n"  # the last value of the block
    batches, stats = read_all((H + "".join(rows)).encode())
    got = rows_of(batches)
    if padded.strip():
        assert got[-1][2] == "a" and len(got) == 5
    else:
        assert len(got) == 4 and [b.reason for b in stats.bad_rows] == ["empty CAMPAIGN_ID"]


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
