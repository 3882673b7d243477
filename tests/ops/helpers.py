"""Shared bits of the operator tests: sample days and a CLI result's lines."""

from __future__ import annotations

from click.testing import Result

H = "IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n"
GOOD = H + "a,2021-01-30 10:00:00,1\nb,2021-01-30 11:00:00,2\n"
# Two duplicates (one conflicting), a bad row with a readable time, one without, one late row.
MIXED = H + (
    "a,2021-01-30 10:00:00,1\n"
    "a,2021-01-30T10:00:00Z,2\n"
    "b,2021-01-30 11:15:00,2\n"
    "b,2021-01-30 11:15:00,2\n"
    "c,2021-01-30 11:30:00,\n"
    "d,not a time,3\n"
    "e,2021-01-31 00:10:00,4\n"
)


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def assert_ok(result: Result) -> None:
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
