"""Run configuration: every option validated up front, as a usage error naming the bad value;
defaults and parsing in one place; file names from `DayLayout` alone."""

from __future__ import annotations

import dataclasses
import datetime as dt
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamagg import Config
from streamagg.config import (
    LARGEST,
    BadRowLimit,
    Schema,
    default_memory_limit,
    parse_count,
    parse_day,
    parse_size,
)
from streamagg.errors import UsageError
from streamagg.layout import DayLayout

DAY = dt.date(2021, 1, 30)


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
        ("0.1KB", 102),
        (".5K", 512),
        ("7", 7),
        (str(LARGEST), LARGEST),
        ("8388607.99999TB", int(Fraction("8388607.99999") * 2**40)),  # exact: no float
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "MB", "-1MB", "1XB", "1e3", "12 34MB", "\u0663MB",
                                  "9" * 400, "9" * 400 + "MB", "8388608TB", str(LARGEST + 1),
                                  "1" + "0" * 5000])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_size(text, "--memory-limit")
    assert info.value.exit_code == 2 and len(str(info.value)) < 200


def test_parse_count_bounds() -> None:
    assert parse_count("1", "n", least=1) == 1
    assert parse_count(f" {LARGEST} ", "n") == LARGEST
    for bad in (0, str(LARGEST + 1), 2**63, "1_000", "\u0663", "1.0", True, None, 1.0, "-1"):
        with pytest.raises(UsageError):
            parse_count(bad, "n", least=1)


def test_parse_day() -> None:
    assert parse_day("2020-02-29") == dt.date(2020, 2, 29)
    for text in (
        "2021-02-29",
        "2021-1-30",
        "2021-01-30 ",
        "20210130",
        "2021/01/30",
        "\u0662021-01-30",
        "0001-01-01",
        "9999-12-31",
    ):
        with pytest.raises(UsageError) as info:
            parse_day(text)
        assert info.value.exit_code == 2


def test_a_datetime_gives_its_date_in_utc() -> None:
    # An Airflow logical_date is an aware datetime; its day is the UTC one.
    assert Config(day=dt.datetime(2021, 1, 30, 23, 0)).day == DAY
    aware = dt.datetime(2021, 1, 31, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    config = Config(day=aware)
    assert config.day == DAY and type(config.day) is dt.date
    assert DayLayout.of(config).output_name == "daily_agg_20210130_SA.csv"
    for out_of_range in (dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59)):
        with pytest.raises(UsageError):
            Config(day=out_of_range)


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
        (" 2 % ", 100, 2),
        (str(LARGEST), 1, LARGEST),
    ],
)
def test_bad_row_limit(text: str, rows_read: int, allowed: int) -> None:
    assert BadRowLimit.parse(text).allowed(rows_read) == allowed


@pytest.mark.parametrize("text", ["-1", "101%", "1e2%", "nan%", "inf", "some", "%", "1_0",
                                  str(LARGEST + 1), "9" * 5000])
def test_bad_row_limit_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        BadRowLimit.parse(text)


def test_bad_row_limit_keeps_its_text_form() -> None:
    # The manifest and the kept state record it as text: the same as before this round.
    assert [str(BadRowLimit.parse(t)) for t in ("1%", "0.5%", "100%", "12")] == [
        "1%", "0.5%", "100%", "12"]


@pytest.mark.parametrize(
    "options",
    [
        {"initials": "A1"},
        {"initials": "ABCDEFGHI"},
        {"initials": ""},
        {"initials": "\u00c9"},
        {"chunk_size": 0},
        {"chunk_size": 2**63},
        {"memory_limit": 1024},
        {"memory_limit": "9" * 400},
        {"dedupe": "bloom"},
        {"engine": "flink"},
        {"max_bad_rows": "-1"},
        {"max_bad_rows": "101%"},
        {"log_format": "xml"},
        {"day": None},
        {"day": 20210130},
        {"source": 5},
        {"source": ""},
        {"memory_limit": None},
        {"workers": "x"},
        {"schema": "x"},
        {"dry_run": "yes"},
        {"state": "9" * 256},
        {"dest": "file:///" + "a/" * 2100},
        {"tmp_dir": "\ud800"},
        {"max_bad_rows": BadRowLimit(count=1, fraction=0.5)},
    ],
)
def test_config_rejects(options: dict[str, object]) -> None:
    with pytest.raises(UsageError) as info:
        Config(**{"day": DAY, "source": "data", **options})  # type: ignore[arg-type]
    assert info.value.exit_code == 2
    assert str(info.value) and "\n" not in str(info.value)


def test_config_defaults_and_names() -> None:
    config = Config(day=DAY, source="s3://bucket/logs/")
    assert config.initials == "SA" and config.chunk_size == 100_000
    assert config.memory_limit == default_memory_limit() == 256 * 2**20
    assert config.dedupe == "spill" and config.engine == "local" and config.dry_run is False
    assert str(config.max_bad_rows) == "1%" and config.spark_master is None
    assert config.resolved_dest == "s3://bucket/logs/results"
    layout = DayLayout.of(config)
    assert layout.output == "2021/01/30/daily_agg_20210130_SA.csv"
    assert (layout.manifest_name, layout.rejects_name, layout.plot_name, layout.state_name) == (
        "_daily_agg_20210130_SA.manifest.json", "_daily_agg_20210130_SA.rejects.csv",
        "_daily_agg_20210130_SA.png", "_daily_agg_20210130_SA.state")
    assert layout.published[-1] == layout.manifest  # the manifest goes last
    assert DayLayout.of(Config(day=DAY, initials="ab")).output_name == "daily_agg_20210130_ab.csv"
    # File names live in DayLayout only.
    assert not [name for name in dir(Config) if name.endswith("_name") or name == "day_path"]


def test_text_and_values_give_the_same_config() -> None:
    from_text = Config(day="2021-01-30", memory_limit="1GB", max_bad_rows="5",  # type: ignore[arg-type]
                       chunk_size="5000")  # type: ignore[arg-type]
    from_values = Config(day=DAY, memory_limit=2**30, max_bad_rows=BadRowLimit(count=5),
                         chunk_size=5000)
    assert from_text == from_values
    # Replacing a field re-validates without parsing twice into something else.
    assert dataclasses.replace(from_values, day=dt.date(2021, 1, 31)).memory_limit == 2**30


def test_empty_optional_texts_mean_the_default() -> None:
    config = Config(day=DAY, dest="", endpoint_url="", state="")
    assert (config.dest, config.endpoint_url, config.state) == (None, None, None)


# --- the class: any value of any field is a Config or a UsageError, never another exception -----

ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=True), st.text(max_size=30), st.binary(max_size=8),
    st.sampled_from(["2021-01-30", "256MB", "1%", "9" * 400, "local", "spill", "json", "auto",
                     "SA", "data", "1e400%", "nan%", "\x00", "\u0663"]),
    st.dates(), st.datetimes(), st.datetimes(timezones=st.timezones()),
    st.builds(BadRowLimit, count=st.none() | st.integers(-5, 2**64),
              fraction=st.none() | st.floats()),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(),
                                                         max_size=2),
)
FIELDS = [f.name for f in dataclasses.fields(Config)]
SCHEMA_FIELDS = [f.name for f in dataclasses.fields(Schema)]


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.dictionaries(st.sampled_from(FIELDS), ANY_VALUE, min_size=1, max_size=4),
       st.dictionaries(st.sampled_from(SCHEMA_FIELDS), ANY_VALUE, max_size=2))
def test_any_field_value_is_a_config_or_a_usage_error(fields: dict[str, object],
                                                      schema: dict[str, object]) -> None:
    fields = {"day": DAY, **fields}
    try:
        if schema:
            fields["schema"] = Schema(**schema)  # type: ignore[arg-type]
        config = Config(**fields)  # type: ignore[arg-type]
    except UsageError as err:
        assert "\n" not in str(err) and len(str(err)) < 400, str(err)
        return
    # What validation let through is what the run can hold.
    assert isinstance(config.day, dt.date) and type(config.day) is dt.date
    assert 1 <= config.chunk_size <= LARGEST and isinstance(config.chunk_size, int)
    assert config.memory_limit <= LARGEST and isinstance(config.memory_limit, int)
    limit = config.max_bad_rows
    assert (limit.count is None) != (limit.fraction is None)
    assert limit.count is None or 0 <= limit.count <= LARGEST
    assert limit.fraction is None or 0 <= limit.fraction <= 1
    assert isinstance(config.source, str) and DayLayout.of(config).output_name
