"""read/clean.py: a parsed block's UTF-8 checks, trimming, empty fields and datetimes."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from streamagg.config import Schema
from streamagg.read import CLEAN_SCHEMA, clean_columns, parse_instant, parse_instants
from tests import reference
from tests.read.test_batches import H, read_all, rows_of

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


# --- a whole block ----------------------------------------------------------------------------

def pad(text: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """A value with or without padding of spaces and tabs at either edge."""
    edge = st.sampled_from([b"", b" ", b"\t", b" \t "])
    return st.builds(lambda a, v, b: a + v + b, edge, text, edge)


plain_value = pad(st.sampled_from([b"a", b"id 7", b"caf\xc3\xa9", b"", b"\xff", b"x\xc3",
                                   b"\xe2\x82\xac", b"0"]))
time_value = pad(st.one_of(datetime_like.map(str.encode), fixed_width_like.map(str.encode),
                           st.sampled_from([b"", b"\xff2021-01-30 10:00:00"])))
block_rows = st.lists(st.tuples(plain_value, time_value, plain_value), max_size=25)


def reference_row(row: tuple[bytes, bytes, bytes]) -> tuple[str, int, str] | None:
    """The reference's rule for one row: its clean values, or None for a bad row."""
    values = [field.decode("utf-8", "surrogateescape").strip(reference.FIELD_PADDING)
              for field in row]
    if any(not v or reference.has_invalid_utf8(v) for v in values):
        return None
    instant = reference.parse_instant(values[1])
    return None if instant is None else (values[0], instant, values[2])


@settings(max_examples=150, deadline=None)
@given(rows=block_rows)
@example(rows=[(b"", b"2021-01-30 10:00:00", b"g"), (b"", b"2021-01-30 10:00:00", b" ")])
def test_a_block_is_cleaned_as_the_reference_cleans_each_row(
    rows: list[tuple[bytes, bytes, bytes]],
) -> None:
    """Kept rows, their values and instants, and which rows are bad, as the row-by-row rule
    says, whichever path (canonical, vectorised, exact) the block takes."""
    expected = [reference_row(row) for row in rows]
    whole = [pa.array([row[i] for row in rows], pa.binary()) for i in range(3)]
    # The same values as slices of longer arrays, as pyarrow's blocks and the gathering hand
    # them over: the buffers hold bytes before and after them (once, all values were empty
    # over a buffer of other bytes, and an empty reduction raised).
    sliced = [pa.array([b" x ", *[row[i] for row in rows], b"\t\xff"], pa.binary()).slice(
        1, len(rows)) for i in range(3)]
    for columns in (whole, sliced):
        batch, bad = clean_columns(columns, Schema())
        assert batch.schema == CLEAN_SCHEMA
        assert [i for i, _ in bad] == [i for i, e in enumerate(expected) if e is None]
        assert all(reason for _, reason in bad)
        got = [(r["key"], r["instant"], r["group"]) for r in batch.to_pylist()]
        assert got == [e for e in expected if e is not None]


def test_the_reason_names_the_first_faulty_column() -> None:
    schema = Schema()
    columns = [pa.array(v, pa.binary()) for v in
               ([b"", b"a", b"a", b"\xff"], [b"x", b"  ", b"2021-01-30 25:00:00", b"x"],
                [b"g", b"g", b"g", b""])]
    _, bad = clean_columns(columns, schema)
    reasons = dict(bad)
    assert schema.id_column in reasons[0] and "empty" in reasons[0]
    assert schema.time_column in reasons[1]
    assert schema.time_column in reasons[2] and "invalid" in reasons[2]
    assert schema.id_column in reasons[3] and "UTF-8" in reasons[3]
