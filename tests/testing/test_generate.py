"""The sample-day generator writes valid, deterministic CSV whose reported totals are true."""

from __future__ import annotations

import collections
import csv
import datetime as dt
import gzip
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from streamagg.testing.generate import (
    ADLOG_COLUMNS,
    ALL_COLUMNS,
    NARROW_COLUMNS,
    REQUIRED_COLUMNS,
    WIDE_COLUMNS,
    GeneratedDay,
    generate_day,
    main,
)

DAY = dt.date(2021, 1, 30)
# The contract's datetime grammar, and nothing looser: fromisoformat would also take "20210130".
_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})?"
)


def _instant(text: str) -> dt.datetime | None:
    match = _DATETIME.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, zone = match.group(7), match.group(8)
    try:
        value = dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)
    except ValueError:
        return None
    if fraction:
        value += dt.timedelta(microseconds=int(fraction[:6].ljust(6, "0")))
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        value -= sign * dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    return value


def _text(path: Path) -> str:
    data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    return data.decode("utf-8")


@dataclass
class Observed:
    """Totals worked out from the files alone, the slow and obvious way."""

    rows: int = 0
    bad_rows: int = 0
    duplicates: int = 0
    duplicates_within_file: int = 0
    duplicates_across_files: int = 0
    conflicting_duplicates: int = 0
    outside_day: int = 0
    formats: collections.Counter[str] = field(default_factory=collections.Counter)
    bad_reasons: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def impressions(self) -> int:
        return self.rows - self.bad_rows - self.duplicates


def observe(generated: GeneratedDay) -> Observed:
    seen: dict[tuple[str, dt.datetime], tuple[int, str]] = {}
    obs = Observed()
    for file_index, path in enumerate(sorted(generated.paths, key=str)):
        reader = csv.reader(io.StringIO(_text(path), newline=""), strict=True)
        header = [name.strip().lstrip("\ufeff").strip().upper() for name in next(reader)]
        where = {name: header.index(name) for name in REQUIRED_COLUMNS}
        for record in reader:
            if not record:  # blank line
                continue
            obs.rows += 1
            if len(record) != len(header):
                obs.bad_rows += 1
                obs.bad_reasons["field count"] += 1
                continue
            impression_id, when, campaign = (
                record[where[name]].strip(" \t") for name in REQUIRED_COLUMNS
            )
            instant = _instant(when)
            if not impression_id or not campaign or not when:
                obs.bad_rows += 1
                obs.bad_reasons["empty"] += 1
                continue
            if instant is None:
                obs.bad_rows += 1
                obs.bad_reasons["datetime"] += 1
                continue
            obs.formats[re.sub(r"\d", "9", when)] += 1
            key = (impression_id, instant)
            if key in seen:
                first_file, first_campaign = seen[key]
                obs.duplicates += 1
                if first_file == file_index:
                    obs.duplicates_within_file += 1
                else:
                    obs.duplicates_across_files += 1
                obs.conflicting_duplicates += first_campaign != campaign
            else:
                seen[key] = (file_index, campaign)
                obs.outside_day += instant.date() != DAY
    return obs


def test_same_seed_writes_identical_bytes(tmp_path: Path) -> None:
    first = generate_day(tmp_path / "a", DAY, rows=5_000, files=3, gzip_files=1, seed=7)
    second = generate_day(tmp_path / "b", DAY, rows=5_000, files=3, gzip_files=1, seed=7)
    other = generate_day(tmp_path / "c", DAY, rows=5_000, files=3, gzip_files=1, seed=8)

    assert [p.read_bytes() for p in first.paths] == [p.read_bytes() for p in second.paths]
    assert [p.read_bytes() for p in first.paths] != [p.read_bytes() for p in other.paths]
    assert (first.rows, first.duplicates, first.bad_rows) == (
        second.rows, second.duplicates, second.bad_rows)


def test_writes_the_requested_rows_in_date_partition(tmp_path: Path) -> None:
    generated = generate_day(tmp_path, DAY, rows=10_001, files=4, seed=1)

    partition = tmp_path / "2021" / "01" / "30"
    assert generated.partition == partition
    assert [p.name for p in generated.paths] == [f"part-0000{i}.csv" for i in range(4)]
    assert sorted(partition.iterdir()) == generated.paths
    counts = []
    for path in generated.paths:
        with path.open(newline="", encoding="utf-8") as handle:
            records = list(csv.reader(handle, strict=True))
        assert records[0] == list(ALL_COLUMNS)
        counts.append(len(records) - 1)
    assert sum(counts) == generated.rows == 10_001
    assert max(counts) - min(counts) <= 1
    assert generated.bytes == sum(p.stat().st_size for p in generated.paths)


def test_output_is_rfc4180_with_quoted_commas_and_quotes(tmp_path: Path) -> None:
    generated = generate_day(tmp_path, DAY, rows=3_000, files=1, bad_row_rate=0, seed=2)
    data = generated.paths[0].read_bytes()

    assert b"\r" not in data and data.endswith(b"\n")
    agents = [row["USER_AGENT"] for row in csv.DictReader(io.StringIO(data.decode()))]
    assert any("," in agent for agent in agents)
    assert any('"' in agent for agent in agents)
    assert b'""AdsBot""' in data  # inner quotes doubled, as RFC 4180 says


def test_gzip_files_are_readable_csv(tmp_path: Path) -> None:
    generated = generate_day(tmp_path, DAY, rows=4_000, files=4, gzip_files=2, seed=3)

    names = [p.name for p in generated.paths]
    assert names == ["part-00000.csv", "part-00001.csv", "part-00002.csv.gz", "part-00003.csv.gz"]
    for path in generated.paths[2:]:
        with gzip.open(path, "rt", newline="", encoding="utf-8") as handle:
            records = list(csv.reader(handle, strict=True))
        assert records[0] == list(ALL_COLUMNS)
        assert len(records) - 1 == 1_000


def test_reported_totals_match_the_files(tmp_path: Path) -> None:
    generated = generate_day(
        tmp_path, DAY, rows=30_000, files=3, duplicate_rate=0.1, bad_row_rate=0.01,
        late_rate=0.01, offset_rate=0.1, gzip_files=1, seed=4,
    )
    observed = observe(generated)

    assert observed.rows == generated.rows == 30_000
    assert observed.bad_rows == generated.bad_rows == sum(generated.bad_row_kinds.values())
    assert observed.duplicates == generated.duplicates
    assert observed.conflicting_duplicates == generated.conflicting_duplicates
    assert observed.outside_day == generated.outside_day
    assert observed.impressions == generated.impressions
    assert generated.impressions == generated.rows - generated.bad_rows - generated.duplicates


def test_duplicates_occur_within_and_across_files_and_conflict(tmp_path: Path) -> None:
    generated = generate_day(tmp_path, DAY, rows=20_000, files=4, duplicate_rate=0.05, seed=5)
    observed = observe(generated)

    assert 900 <= generated.duplicates <= 1_100
    assert observed.duplicates_within_file > 50
    assert observed.duplicates_across_files > 50
    # About conflict_rate (0.2) of the duplicates name another campaign.
    assert 0.1 < generated.conflicting_duplicates / generated.duplicates < 0.3


def test_bad_rows_of_every_spec_kind(tmp_path: Path) -> None:
    generated = generate_day(tmp_path, DAY, rows=20_000, files=2, bad_row_rate=0.02, seed=6)
    observed = observe(generated)

    assert 300 <= generated.bad_rows <= 500
    assert all(count > 0 for count in generated.bad_row_kinds.values()), generated.bad_row_kinds
    assert set(observed.bad_reasons) == {"field count", "empty", "datetime"}


def test_datetime_variants_and_late_rows(tmp_path: Path) -> None:
    generated = generate_day(
        tmp_path, DAY, rows=20_000, files=2, offset_rate=0.2, late_rate=0.02, seed=9)
    observed = observe(generated)
    shapes = set(observed.formats)

    assert "9999-99-99 99:99:99" in shapes
    assert "9999-99-99T99:99:99Z" in shapes
    assert any("." in s for s in shapes)
    assert any(s.endswith("+99:99") for s in shapes)
    assert any(s.endswith("-99:99") for s in shapes)
    assert generated.outside_day > 100
    # Canonical rows are the large majority, as in real exports.
    assert observed.formats["9999-99-99 99:99:99"] > 0.6 * generated.rows


def test_required_columns_only(tmp_path: Path) -> None:
    generated = generate_day(
        tmp_path, DAY, rows=5_000, files=2, bad_row_rate=0.01, extra_columns=False, seed=10)
    observed = observe(generated)

    for path in generated.paths:
        assert path.read_text().splitlines()[0] == "IMPRESSION_DATETIME,CAMPAIGN_ID,IMPRESSION_ID"
    assert observed.rows == 5_000
    assert observed.bad_rows == generated.bad_rows > 0
    assert observed.duplicates == generated.duplicates > 0


def test_vary_layout_changes_headers_but_not_totals(tmp_path: Path) -> None:
    generated = generate_day(tmp_path, DAY, rows=9_000, files=3, vary_layout=True, seed=11)
    raw = [p.read_bytes() for p in generated.paths]
    headers = [data.split(b"\n", 1)[0] for data in raw]

    assert len(set(headers)) == 3
    assert raw[1].startswith(b"\xef\xbb\xbf")
    assert b"\r\n" in raw[2]
    observed = observe(generated)
    assert observed.rows == generated.rows
    assert observed.duplicates == generated.duplicates
    assert observed.impressions == generated.impressions


def test_stale_parts_are_replaced(tmp_path: Path) -> None:
    generate_day(tmp_path, DAY, rows=1_000, files=5, seed=12)
    other = tmp_path / "2021" / "01" / "30" / "_SUCCESS"
    other.write_text("")
    generated = generate_day(tmp_path, DAY, rows=1_000, files=2, seed=12)

    names = sorted(p.name for p in generated.partition.iterdir())
    assert names == ["_SUCCESS", "part-00000.csv", "part-00001.csv"]


def test_zero_rows_writes_headers_only(tmp_path: Path) -> None:
    generated = generate_day(tmp_path, DAY, rows=0, files=2)

    assert generated.rows == generated.impressions == 0
    assert [p.read_text() for p in generated.paths] == [",".join(ALL_COLUMNS) + "\n"] * 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rows": -1},
        {"files": 0},
        {"gzip_files": 5, "files": 4},
        {"duplicate_rate": 1.5},
        {"duplicate_rate": 0.6, "bad_row_rate": 0.5},
    ],
)
def test_rejects_impossible_arguments(tmp_path: Path, kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        generate_day(tmp_path, DAY, **kwargs)  # type: ignore[arg-type]


def test_cli_lists_the_files_written(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["--out", str(tmp_path), "--date", "2021-01-30", "--rows", "2000", "--files", "2",
         "--gzip-files", "1", "--seed", "3", "--bad-row-rate", "0.01"],
    )

    assert result.exit_code == 0, result.output
    partition = tmp_path / "2021" / "01" / "30"
    assert str(partition / "part-00000.csv") in result.output
    assert str(partition / "part-00001.csv.gz") in result.output
    assert "wrote 2,000 rows in 2 files" in result.output
    assert (partition / "part-00001.csv.gz").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["--date", "2021-01-30"],
        ["--date", "2021-02-30", "--out", "x"],
        ["--date", "2021-01-30", "--out", "x", "--files", "2", "--gzip-files", "3"],
    ],
)
def test_cli_bad_usage_exits_2(tmp_path: Path, args: list[str]) -> None:
    result = CliRunner().invoke(main, args)

    assert result.exit_code == 2, result.output


def test_streamagg_reports_the_generated_totals(tmp_path: Path) -> None:
    """The pipeline and the generator agree on every total the manifest carries."""
    from streamagg import Config, run_day

    generated = generate_day(
        tmp_path / "src", DAY, rows=20_000, files=3, bad_row_rate=0.002, gzip_files=1,
        vary_layout=True, seed=13,
    )
    report = run_day(Config(day=DAY, source=str(tmp_path / "src"), dest=str(tmp_path / "out")))

    totals = report.totals
    assert totals["rows_read"] == generated.rows
    assert totals["bad_rows"] == generated.bad_rows
    assert totals["duplicates"] == generated.duplicates
    assert totals["conflicting_duplicates"] == generated.conflicting_duplicates
    assert totals["outside_day"] == generated.outside_day
    assert totals["impressions"] == generated.impressions


# The shapes of common ad logs: their columns, and the bytes of a row (mean) they should have.
AD_LOG_SHAPES = pytest.mark.parametrize(("shape", "columns", "row_bytes"), [
    ("adlog", ADLOG_COLUMNS, (75, 100)),
    ("narrow", NARROW_COLUMNS, (88, 100)),
    ("wide", WIDE_COLUMNS, (270, 330)),
])


@AD_LOG_SHAPES
def test_ad_log_shapes_are_deterministic(tmp_path: Path, shape: str, columns: tuple[str, ...],
                                         row_bytes: tuple[int, int]) -> None:
    first = generate_day(tmp_path / "a", DAY, rows=6_000, files=3, seed=21, shape=shape)
    second = generate_day(tmp_path / "b", DAY, rows=6_000, files=3, seed=21, shape=shape)
    mixed = generate_day(tmp_path / "c", DAY, rows=6_000, files=3, seed=21)

    assert [p.read_bytes() for p in first.paths] == [p.read_bytes() for p in second.paths]
    assert first.paths[0].read_bytes() != mixed.paths[0].read_bytes()


@AD_LOG_SHAPES
def test_ad_log_shapes_have_exact_copy_duplicates_and_one_timestamp_form(
        tmp_path: Path, shape: str, columns: tuple[str, ...], row_bytes: tuple[int, int]) -> None:
    generated = generate_day(tmp_path, DAY, rows=40_000, files=4, seed=22, shape=shape)
    observed = observe(generated)
    lines = [line for path in generated.paths for line in path.read_text().splitlines()[1:]]
    records = [r for path in generated.paths
               for r in list(csv.reader(io.StringIO(path.read_text(), newline="")))[1:]]

    for path in generated.paths:
        assert path.read_text().splitlines()[0] == ",".join(columns)
    # 5% duplicates, every one the same bytes as an earlier line: distinct lines = impressions.
    assert 1_900 <= generated.duplicates <= 2_100
    assert observed.duplicates == generated.duplicates
    assert observed.duplicates_within_file > 100 and observed.duplicates_across_files > 100
    assert len(set(lines)) == generated.impressions == len(lines) - generated.duplicates
    assert generated.conflicting_duplicates == observed.conflicting_duplicates == 0
    assert generated.bad_rows == observed.bad_rows == generated.outside_day == 0
    assert set(observed.formats) == {"9999-99-99 99:99:99"}
    uuid = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
    at = columns.index("IMPRESSION_ID")
    assert all(len(r) == len(columns) and uuid.fullmatch(r[at]) for r in records)
    assert row_bytes[0] <= generated.bytes / generated.rows <= row_bytes[1]
    if "REFERRER" in columns:
        # Quoted as exports quote text, and some hold a comma, so the quoting matters.
        assert sum('"https://' in line for line in lines) == len(lines)
        assert sum("," in r[columns.index("REFERRER")] for r in records) > len(records) // 4
    else:
        assert not any('"' in line for line in lines)  # short fields, nothing to quote


def test_the_narrow_shape_has_thousands_of_campaigns(tmp_path: Path) -> None:
    generated = generate_day(tmp_path, DAY, rows=40_000, files=2, seed=25, shape="narrow")
    records = [r for path in generated.paths
               for r in list(csv.reader(io.StringIO(path.read_text(), newline="")))[1:]]

    assert len({r[NARROW_COLUMNS.index("CAMPAIGN_ID")] for r in records}) > 1_000


@pytest.mark.parametrize("shape", ["adlog", "narrow", "wide"])
def test_ad_log_shapes_parse_in_streamagg(tmp_path: Path, shape: str) -> None:
    from streamagg import Config, run_day

    generated = generate_day(tmp_path / "src", DAY, rows=20_000, files=3, seed=23, shape=shape,
                             gzip_files=1)
    report = run_day(Config(day=DAY, source=str(tmp_path / "src"), dest=str(tmp_path / "out")))

    assert report.totals["rows_read"] == generated.rows
    assert report.totals["bad_rows"] == 0
    assert report.totals["duplicates"] == generated.duplicates
    assert report.totals["impressions"] == generated.impressions


def test_adlog_shape_takes_explicit_rates_and_rejects_unknown_shapes(tmp_path: Path) -> None:
    generated = generate_day(tmp_path, DAY, rows=20_000, files=2, seed=24, shape="adlog",
                             bad_row_rate=0.01)
    assert observe(generated).bad_rows == generated.bad_rows > 100
    with pytest.raises(ValueError, match="shape"):
        generate_day(tmp_path, DAY, rows=10, shape="weblog")
    result = CliRunner().invoke(main, ["--out", str(tmp_path / "cli"), "--date", "2021-01-30",
                                       "--rows", "1000", "--files", "1", "--shape", "adlog"])
    assert result.exit_code == 0, result.output
    assert "0 bad rows" in result.output


@pytest.mark.slow
def test_a_million_rows_is_quick(tmp_path: Path) -> None:
    import time

    started = time.perf_counter()
    generated = generate_day(tmp_path, DAY, rows=1_000_000, files=4)
    elapsed = time.perf_counter() - started

    assert generated.rows == 1_000_000
    assert elapsed < 30, f"took {elapsed:.1f}s"
