"""Run configuration: every option validated up front, as a usage error naming the bad value."""

from __future__ import annotations

import datetime as dt

import pytest

from streamagg import Config
from streamagg.config import BadRowLimit, parse_day, parse_size
from streamagg.errors import UsageError


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("256MB", 256 * 2**20),
        ("1GB", 2**30),
        ("512MiB", 512 * 2**20),
        ("64mb", 64 * 2**20),
        ("2048KB", 2 * 2**20),
        ("1.5GB", 3 * 2**29),
        (" 128MB ", 128 * 2**20),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "MB", "-1MB", "1XB", "1e3", "12 34MB"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_size(text)


def test_parse_day() -> None:
    assert parse_day("2020-02-29") == dt.date(2020, 2, 29)
    for text in (
        "2021-02-29",
        "2021-1-30",
        "2021-01-30 ",
        "20210130",
        "2021/01/30",
        "\u0662021-01-30",
    ):
        with pytest.raises(UsageError) as info:
            parse_day(text)
        assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("text", "rows_read", "allowed"),
    [
        ("0", 1000, 0),
        ("10", 5, 10),
        ("1%", 1000, 10),
        ("1%", 99, 0),
        ("0.5%", 1000, 5),
        ("100%", 7, 7),
        ("0%", 7, 0),
    ],
)
def test_bad_row_limit(text: str, rows_read: int, allowed: int) -> None:
    assert BadRowLimit.parse(text).allowed(rows_read) == allowed


@pytest.mark.parametrize(
    "options",
    [
        {"initials": "A1"},
        {"initials": "ABCDEFGHI"},
        {"initials": ""},
        {"initials": "\u00c9"},
        {"chunk_size": 0},
        {"memory_limit": 1024},
        {"dedupe": "bloom"},
        {"engine": "flink"},
        {"max_bad_rows": "-1"},
        {"max_bad_rows": "101%"},
        {"log_format": "xml"},
    ],
)
def test_config_rejects(options: dict[str, object]) -> None:
    with pytest.raises(UsageError) as info:
        Config(day=dt.date(2021, 1, 30), source="data", **options)  # type: ignore[arg-type]
    assert info.value.exit_code == 2
    assert str(info.value) and "\n" not in str(info.value)


def test_config_defaults_and_names() -> None:
    config = Config(day=dt.date(2021, 1, 30), source="s3://bucket/logs/")
    assert config.initials == "SA" and config.chunk_size == 100_000
    assert config.memory_limit == 256 * 2**20 and config.dedupe == "spill"
    assert config.engine == "local" and config.dry_run is False
    assert config.output_name == "daily_agg_20210130_SA.csv"
    assert config.resolved_dest == "s3://bucket/logs/results"
    assert Config(day=dt.date(2021, 1, 30), source="x", initials="ab").output_name == (
        "daily_agg_20210130_ab.csv"
    )
