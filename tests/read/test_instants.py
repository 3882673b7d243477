"""IMPRESSION_DATETIME in every ISO 8601 offset form: the vectorised casts, the exact per-row
parser and the reference agree on every string, valid or nearly so."""

from __future__ import annotations

import datetime as dt
import gzip
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from streamagg.read import parse_instant, parse_instants
from tests import reference
from tests.conftest import DAY, run_api
from tests.reference import expected_for

H = "IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n"

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def two(low: int, high: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).map(lambda n: f"{n:02d}")


# Every offset form and its near misses: Z and z, +HH, +HHMM, +HH:MM, either sign, hours and
# minutes at and past their range, a digit too few or too many, a stray colon or letter.
zone = st.one_of(
    st.sampled_from(["", "Z", "z", " Z", "Zz", "ZZ", "+", "-", "UTC", "+5", "+053", "+05:3",
                     "+05:30:00", "+0530Z", "05:30", "+05:", "+:0530", "+05_30", "\n"]),
    st.builds(lambda sign, hh: f"{sign}{hh}", st.sampled_from("+-"), two(0, 25)),
    st.builds(lambda sign, hh, sep, mm: f"{sign}{hh}{sep}{mm}", st.sampled_from("+-"),
              two(0, 25), st.sampled_from(["", ":"]), two(0, 61)),
)
instant_text = st.builds(
    lambda date, sep, time, fraction, zone: f"{date}{sep}{time}{fraction}{zone}",
    st.one_of(
        st.sampled_from(["2021-01-30", "2020-02-29", "2021-02-29", "1677-09-21", "1677-09-22",
                         "2262-04-11", "2262-04-12", "1970-01-01", "0000-01-01"]),
        st.builds(lambda y, m, d: f"{y:04d}-{m:02d}-{d:02d}", st.integers(1600, 2300),
                  st.integers(0, 13), st.integers(0, 32)),
    ),
    st.sampled_from([" ", "T", "t"]),
    st.builds(lambda h, m, s: f"{h}:{m}:{s}", two(0, 24), two(0, 60), two(0, 60)),
    st.one_of(st.just(""), st.text("0123456789", min_size=0, max_size=14).map(lambda d: "." + d)),
    zone,
)


def vectorised(texts: list[str]) -> list[int | None]:
    instants, unparsed = parse_instants(pa.array(texts, pa.string()))
    values: list[int | None] = list(instants.to_pylist())
    for index in unparsed:
        values[index] = None
    return values


@settings(max_examples=150, deadline=None)
@given(texts=st.lists(instant_text, min_size=1, max_size=12))
@example(texts=["2021-01-30 10:00:00+0000", "2021-01-30 10:00:00-05", "2021-01-30T10:00:00z"])
@example(texts=["1677-09-21 00:12:43.145224192-01", "2262-04-11 23:47:16.854775807+01"])
def test_the_vectorised_path_the_exact_parser_and_the_reference_agree(texts: list[str]) -> None:
    exact = [parse_instant(t) for t in texts]
    assert exact == [reference.parse_instant(t) for t in texts]
    assert vectorised(texts) == exact
    # A block of one value takes the general path alone, never its neighbours' fallback.
    assert [vectorised([t])[0] for t in texts] == exact


@pytest.mark.parametrize(("text", "utc"), [
    ("2021-01-30 10:00:00Z", "2021-01-30 10:00:00"),
    ("2021-01-30 10:00:00z", "2021-01-30 10:00:00"),
    ("2021-01-30T10:00:00+0000", "2021-01-30 10:00:00"),
    ("2021-01-30T10:00:00+05:30", "2021-01-30 04:30:00"),
    ("2021-01-30T10:00:00+0530", "2021-01-30 04:30:00"),
    ("2021-01-30T10:00:00+05", "2021-01-30 05:00:00"),
    ("2021-01-30T10:00:00-05", "2021-01-30 15:00:00"),
    ("2021-01-30T10:00:00.25-0130", "2021-01-30 11:30:00.250000"),
])
def test_every_iso_8601_offset_form_is_an_instant(text: str, utc: str) -> None:
    moment = dt.datetime.fromisoformat(utc).replace(tzinfo=dt.UTC)
    expected = (moment - EPOCH) // dt.timedelta(microseconds=1) * 1000
    assert parse_instant(text) == expected
    assert vectorised([text, "2021-01-30 00:00:00"])[0] == expected


def test_every_engine_takes_every_offset_form_and_blank_line(
    engine: str, partition: Callable[..., Path]
) -> None:
    # The same impressions in each offset form (one instant each: duplicates), blank lines of
    # spaces, tabs and BOMs before the header, between rows and at the end, and one bad row.
    forms = ["2021-01-30 09:00:00Z", "2021-01-30T09:00:00z", "2021-01-30 10:00:00+01:00",
             "2021-01-30T10:30:00+0130", "2021-01-30T04:00:00-05", "2021-01-30 09:00:00+0000"]
    body = "".join(f"i{n % 3},{form},c{n % 2}\n \t\n\ufeff\n" for n, form in enumerate(forms))
    data = ("  \n\ufeff\n" + H + "\t\n" + body + "bad,2021-01-30 09:00:00+24,1\n  ").encode()
    source = partition({"a.csv": data, "b.csv.gz": gzip.compress(data.replace(b"i", b"j"))})
    outcome = run_api(source, engine=engine, max_bad_rows="2")
    assert outcome.exit_code == 0, outcome.message
    expected = expected_for(source, DAY)
    assert (outcome.output, outcome.totals) == (expected.output, expected.totals)
    assert expected.totals["rows_read"] == 14 and expected.totals["bad_rows"] == 2
    assert expected.totals["impressions"] == 6
