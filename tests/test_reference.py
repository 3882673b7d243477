"""Hand-computed cases that make the reference implementation itself trustworthy."""

from __future__ import annotations

import gzip
from datetime import date

import pytest

from tests.reference import (
    MissingColumn,
    expected_day,
    hour_label,
    is_input,
    parse_instant,
    quote,
)

DAY = date(2021, 1, 30)
HEADER = "IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n"
BASE = 1611964800 * 10**9  # 2021-01-30 00:00:00 UTC in ns


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-01-30 10:00:00", BASE + 10 * 3600 * 10**9),
        ("2021-01-30T10:00:00Z", BASE + 10 * 3600 * 10**9),
        ("2021-01-30T11:00:00+01:00", BASE + 10 * 3600 * 10**9),
        ("2021-01-30T05:30:00-04:30", BASE + 10 * 3600 * 10**9),
        ("2021-01-30 10:00:00.5", BASE + 10 * 3600 * 10**9 + 500_000_000),
        ("2021-01-30 10:00:00.123456789", BASE + 10 * 3600 * 10**9 + 123_456_789),
        ("2021-01-30 10:00:00.1234567899", BASE + 10 * 3600 * 10**9 + 123_456_789),
        ("2021-01-30 00:30:00+01:00", BASE - 1800 * 10**9),
    ],
)
def test_parse_instant_accepts(text: str, expected: int) -> None:
    assert parse_instant(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2021-02-30 10:00:00",
        "2021-01-30 24:00:00",
        "2021-01-30 10:60:00",
        "2021-01-30 10:00:60",
        "2021-01-30 10:00",
        "2021-1-30 10:00:00",
        "2021-01-30",
        "2021-01-30 10:00:00.",
        "2021-01-30 10:00:00+01000",  # +HHMM is taken (docs/CONTRACT.md); five digits are not
        "2021-01-30 10:00:00+1",
        "2021-01-30 10:00:00 Z",
        "2021-01-30 10:00:00+24:00",
        "yesterday",
        "1500-01-30 10:00:00",  # beyond int64 nanoseconds
        "",
    ],
)
def test_parse_instant_rejects(text: str) -> None:
    assert parse_instant(text) is None


def test_helpers() -> None:
    assert hour_label(0) == "1970-01-01 00:00:00"
    assert hour_label(-1) == "1969-12-31 23:00:00"
    assert quote("plain") == "plain"
    assert quote("a,b") == '"a,b"'
    assert quote('say "hi"') == '"say ""hi"""'
    assert quote("two\nlines") == '"two\nlines"'
    assert is_input("part-1.csv") and is_input("sub/part-2.csv.gz")
    assert not is_input("_SUCCESS") and not is_input(".hidden.csv") and not is_input("x.txt")
    assert not is_input("_tmp/part.csv") and not is_input("part.csv.bak")


def test_small_day_by_hand() -> None:
    files = [
        (
            "b.csv",
            (
                b"campaign_id , Impression_Datetime,IMPRESSION_ID,extra\n"
                b"7,2021-01-30 10:15:00,a,x\n"  # duplicate of a.csv row 1, other campaign
                b"7,2021-01-30 10:20:00,b,x\n"
                b"\n"
                b"12,2021-01-30 23:59:59-01:00,c,x\n"  # 2021-01-31 00:59:59 UTC: outside the day
                b",2021-01-30 10:20:00,d,x\n"  # empty campaign: bad
            ),
        ),
        (
            "a.csv",
            (
                "\ufeffIMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\r\n"
                "a,2021-01-30T11:15:00+01:00,12\r\n"
                "a,2021-01-30 10:15:00,12\r\n"  # duplicate in the same file, same campaign
                "e,2021-01-30 10:59:59.999,7\r\n"
                "f,2021-02-30 10:00:00,7\r\n"  # impossible date: bad
                "g,2021-01-30 09:00:00,7,extra\r\n"  # too many fields: bad
            ).encode(),
        ),
        ("_SUCCESS", b""),
        ("empty.csv", b""),
        ("notes.txt", b"ignored"),
    ]
    result = expected_day(files, DAY)
    assert result.inputs == ["a.csv", "b.csv", "empty.csv"]
    assert result.output == (
        b"CAMPAIGN_ID,HOUR,IMPRESSIONS\n"
        b"7,2021-01-30 10:00:00,2\n"
        b"12,2021-01-30 10:00:00,1\n"
        b"12,2021-01-31 00:00:00,1\n"
    )
    assert result.totals == {
        "rows_read": 9,
        "bad_rows": 3,
        "duplicates": 2,
        "conflicting_duplicates": 1,
        "outside_day": 1,
        "empty_files": 1,
        "output_rows": 3,
        "impressions": 4,
    }
    assert result.totals["impressions"] == 9 - 3 - 2
    assert [(r.path, r.line) for r in result.rejects] == [("a.csv", 5), ("a.csv", 6), ("b.csv", 6)]
    assert result.rejects[1].raw == "g,2021-01-30 09:00:00,7,extra\r\n"
    assert result.rows_per_input == {"a.csv": (5, 2), "b.csv": (4, 1), "empty.csv": (0, 0)}


def test_sort_numeric_then_text() -> None:
    rows = "".join(
        f"{i},2021-01-30 10:00:00,{c}\n" for i, c in enumerate(["10", "9", "+9", "-1", "007"])
    )
    numeric = expected_day([("a.csv", (HEADER + rows).encode())], DAY).output
    assert numeric.decode().splitlines()[1:] == [
        "-1,2021-01-30 10:00:00,1",
        "007,2021-01-30 10:00:00,1",
        "+9,2021-01-30 10:00:00,1",
        "9,2021-01-30 10:00:00,1",
        "10,2021-01-30 10:00:00,1",
    ]
    text_rows = rows + "99,2021-01-30 10:00:00,b\n" + "98,2021-01-30 09:00:00,Z\n"
    mixed = expected_day([("a.csv", (HEADER + text_rows).encode())], DAY).output
    assert [line.split(",")[0] for line in mixed.decode().splitlines()[1:]] == [
        "Z",
        "+9",
        "-1",
        "007",
        "10",
        "9",
        "b",
    ]


def test_quoting_gzip_and_utf8() -> None:
    data = (
        HEADER
        + '"x,1","2021-01-30 10:00:00"," say ""hi"" "\n'
        + '"x\n2",2021-01-30 10:00:00,"a\nb"\n'
        + "x3,2021-01-30 10:00:00,caf\u00e9\n"
    ).encode() + b"x4,2021-01-30 10:00:00,\xff\n"
    result = expected_day([("day.csv.gz", gzip.compress(data))], DAY)
    assert (
        result.output
        == (
            "CAMPAIGN_ID,HOUR,IMPRESSIONS\n"
            '"a\nb",2021-01-30 10:00:00,1\n'
            "caf\u00e9,2021-01-30 10:00:00,1\n"
            '"say ""hi""",2021-01-30 10:00:00,1\n'
        ).encode()
    )
    assert [(r.line, "UTF-8" in r.reason) for r in result.rejects] == [
        (7, True)
    ]  # the 2nd record spans 3 lines


def test_missing_column() -> None:
    with pytest.raises(MissingColumn) as info:
        expected_day([("a.csv", b"IMPRESSION_ID,CAMPAIGN\n1,2\n")], DAY)
    assert info.value.column == "IMPRESSION_DATETIME"


def test_duplicated_required_column() -> None:
    with pytest.raises(MissingColumn) as info:
        expected_day(
            [("a.csv", b"IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID,campaign_id \n")], DAY
        )
    assert info.value.column == "CAMPAIGN_ID"


def test_empty_day_has_header_only() -> None:
    result = expected_day([("a.csv", HEADER.encode())], DAY)
    assert result.output == b"CAMPAIGN_ID,HOUR,IMPRESSIONS\n"
    assert result.totals["rows_read"] == 0
