"""Backfills: each day in turn, a status table, and the exit code of the worst failure."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from streamagg.config import Config
from streamagg.errors import UsageError
from streamagg.ops.backfill import EXIT_PRIORITY, DayResult, days_between, format_table
from tests.conftest import day_path
from tests.ops.helpers import H, assert_ok, lines

Cli = Callable[..., Result]
FIRST, LAST = dt.date(2021, 1, 1), dt.date(2021, 1, 4)
MISSING_COLUMN = "IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN\nx,2021-01-03 10:00:00,1\n"


def rows_for(day: dt.date, n: int) -> str:
    return H + "".join(f"id{i},{day} {i % 24:02d}:00:00,{i % 3}\n" for i in range(n))


def truncated_gzip(day: dt.date) -> bytes:
    data = gzip.compress(rows_for(day, 500).encode())
    return data[: len(data) // 2]  # a read error: exit 1


@pytest.fixture
def month(partition: Callable[..., Path]) -> Callable[..., Path]:
    """Days 1..4 of January 2021; ``broken`` maps a day number to the files that replace it."""

    def make(broken: dict[int, dict[str, str | bytes]] | None = None,
             empty: tuple[int, ...] = ()) -> Path:
        root: Path | None = None
        for number in range(1, 5):
            if number in empty:
                continue
            day = dt.date(2021, 1, number)
            files = (broken or {}).get(number) or {"a.csv": rows_for(day, number * 10)}
            root = partition(files, day=day)
        assert root is not None
        return root

    return make


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The status table by day: the cells split on runs of spaces."""
    found = {}
    for line in lines(stdout):
        if line[:4] == "2021" and line[10:12] == "  ":
            found[line[:10]] = [cell for cell in line.split("  ") if cell.strip()]
    return found


def test_every_day_in_turn_with_a_table(cli: Cli, month: Callable[..., Path]) -> None:
    source = month()
    result = cli(str(FIRST), "--to", str(LAST), "--source", source)
    assert_ok(result)
    table = table_rows(result.stdout)
    assert list(table) == ["2021-01-01", "2021-01-02", "2021-01-03", "2021-01-04"]
    for number, cells in enumerate(table.values(), start=1):
        assert cells[1].strip() == "done" and cells[2].strip() == f"{number * 10}"
        float(cells[3])  # seconds
    assert lines(result.stdout)[0].split() == ["day", "status", "impressions", "or", "error",
                                               "seconds"]
    assert lines(result.stdout)[-1] == "4 of 4 days ok, 0 failed, 0 without input"
    for number in range(1, 5):
        assert (source / "results" / day_path(dt.date(2021, 1, number))
                / f"daily_agg_202101{number:02d}_SA.csv").exists()


def test_stops_at_the_first_failure(cli: Cli, month: Callable[..., Path]) -> None:
    source = month(broken={2: {"a.csv": MISSING_COLUMN}})
    result = cli(str(FIRST), "--to", str(LAST), "--source", source)
    assert result.exit_code == 4
    table = table_rows(result.stdout)
    assert [cells[1].strip() for cells in table.values()] == ["done", "failed (4)", "not run",
                                                               "not run"]
    assert "missing required column" in table["2021-01-02"][2]
    last = lines(result.stderr)[-1]
    assert last.startswith("streamagg: error: 1 of 4 days failed; first 2021-01-02: missing")
    assert not (source / "results" / day_path(dt.date(2021, 1, 3))).exists()


def test_keep_going_runs_every_day_and_reports_the_worst_exit(
    cli: Cli, month: Callable[..., Path]
) -> None:
    source = month(broken={2: {"a.csv.gz": truncated_gzip(dt.date(2021, 1, 2))},
                           3: {"a.csv": MISSING_COLUMN}})
    result = cli(str(FIRST), "--to", str(LAST), "--source", source, "--keep-going")
    # Bad data (4) outranks a read error (1): a retry cannot fix the backfill.
    assert result.exit_code == 4
    statuses = [cells[1].strip() for cells in table_rows(result.stdout).values()]
    assert statuses == ["done", "failed (1)", "failed (4)", "done"]
    assert "2 of 4 days failed; first 2021-01-02: read failed" in lines(result.stderr)[-1]
    assert (source / "results" / day_path(LAST) / "daily_agg_20210104_SA.csv").exists()


def test_only_retryable_failures_exit_1(cli: Cli, month: Callable[..., Path]) -> None:
    source = month(broken={3: {"a.csv.gz": truncated_gzip(dt.date(2021, 1, 3))}})
    result = cli(str(FIRST), "--to", str(LAST), "--source", source, "--keep-going")
    assert result.exit_code == 1


def test_days_without_input_are_not_failures_but_exit_3(
    cli: Cli, month: Callable[..., Path]
) -> None:
    source = month(empty=(2, 4))
    result = cli(str(FIRST), "--to", str(LAST), "--source", source)
    # The contract: no failure, but a day without input is what a scheduler must hear about.
    assert result.exit_code == 3, result.output
    statuses = [cells[1].strip() for cells in table_rows(result.stdout).values()]
    assert statuses == ["done", "no input", "done", "no input"]
    assert lines(result.stdout)[-1] == "2 of 4 days ok, 0 failed, 2 without input"
    assert lines(result.stderr)[-1] == (
        f"streamagg: error: 2 of 4 days had no input files: 2021-01-02, 2021-01-04 ({source})")
    # The days that had input were still done.
    assert (source / "results" / day_path(LAST.replace(day=3))).exists()


def test_a_failed_day_outranks_a_day_without_input(
    cli: Cli, month: Callable[..., Path]
) -> None:
    source = month(broken={3: {"a.csv.gz": truncated_gzip(dt.date(2021, 1, 3))}}, empty=(2,))
    result = cli(str(FIRST), "--to", str(LAST), "--source", source, "--keep-going")
    assert result.exit_code == 1, result.output


def test_json_backfill_with_a_day_without_input_says_so(
    cli: Cli, month: Callable[..., Path]
) -> None:
    source = month(empty=(4,))
    result = cli(str(FIRST), "--to", str(LAST), "--source", source, "--log-format", "json")
    assert result.exit_code == 3
    summary = json.loads(lines(result.stdout)[-1])
    assert summary["status"] == "no input"
    assert [d["status"] for d in summary["days"]] == ["done", "done", "done", "no input"]


def test_keep_going_without_to_is_refused(cli: Cli, month: Callable[..., Path]) -> None:
    source = month()
    result = cli(str(FIRST), "--source", source, "--keep-going")
    assert result.exit_code == 2
    assert lines(result.stderr) == [
        "streamagg: error: --keep-going applies to a backfill only: give --to DATE too"]
    assert not (source / "results").exists()


def test_no_input_on_any_day_exits_3(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "2020" / "12" / "31").mkdir(parents=True)  # a root of partitions, none of them
    result = cli(str(FIRST), "--to", str(LAST), "--source", tmp_path)
    assert result.exit_code == 3
    assert "no input files in any partition from 2021-01-01 to 2021-01-04" in result.stderr


def test_to_before_date_is_bad_usage(cli: Cli, month: Callable[..., Path]) -> None:
    source = month()
    result = cli(str(LAST), "--to", str(FIRST), "--source", source)
    assert result.exit_code == 2
    assert "--to 2021-01-01 is before DATE 2021-01-04" in result.stderr
    assert not (source / "results").exists()
    assert cli(str(FIRST), "--to", "2021-02-30", "--source", source).exit_code == 2


def test_json_backfill_is_one_summary_line(cli: Cli, month: Callable[..., Path]) -> None:
    source = month(broken={3: {"a.csv": MISSING_COLUMN}}, empty=(4,))
    result = cli(str(FIRST), "--to", str(LAST), "--source", source, "--keep-going",
                 "--log-format", "json", "--verbose")
    assert result.exit_code == 4
    summary = json.loads(lines(result.stdout)[-1])
    assert len(lines(result.stdout)) == 1
    assert summary["status"] == "failed" and summary["from"] == "2021-01-01"
    days = {d["day"]: d for d in summary["days"]}
    assert days["2021-01-02"]["status"] == "done" and days["2021-01-02"]["impressions"] == 20
    assert days["2021-01-03"]["exit_code"] == 4 and "missing" in days["2021-01-03"]["error"]
    assert days["2021-01-04"]["status"] == "no input"
    records = [json.loads(line) for line in lines(result.stderr)]
    assert len({r["run_id"] for r in records} | {summary["run_id"]}) == 1
    assert {r.get("day") for r in records if r.get("file")} == {"2021-01-01", "2021-01-02"}


def test_skip_unchanged_in_a_backfill(cli: Cli, month: Callable[..., Path]) -> None:
    source = month()
    assert_ok(cli(str(FIRST), "--to", str(LAST), "--source", source))
    partition_2 = source / day_path(dt.date(2021, 1, 2))
    (partition_2 / "late.csv").write_text(H + "late,2021-01-02 05:00:00,7\n")
    result = cli(str(FIRST), "--to", str(LAST), "--source", source, "--skip-unchanged")
    assert_ok(result)
    table = table_rows(result.stdout)
    assert [c[1].strip() for c in table.values()] == ["skipped", "done", "skipped", "skipped"]
    assert table["2021-01-02"][2].strip() == "21"
    assert table["2021-01-03"][2].strip() == "30"  # a skipped day shows its manifest's count


def test_check_in_a_backfill(cli: Cli, month: Callable[..., Path]) -> None:
    source = month()
    assert_ok(cli(str(FIRST), "--to", str(LAST), "--source", source))
    late = source / day_path(dt.date(2021, 1, 3)) / "late.csv"
    late.write_text(H + "x,2021-01-03 01:00:00,1\n")
    result = cli(str(FIRST), "--to", str(LAST), "--source", source, "--check")
    assert_ok(result)
    table = table_rows(result.stdout)
    assert [c[1].strip() for c in table.values()] == ["unchanged", "unchanged", "changed",
                                                       "unchanged"]
    assert "1 new, 0 gone, 0 modified" in table["2021-01-03"][2]


def test_days_between() -> None:
    assert days_between(FIRST, FIRST) == [FIRST]
    assert days_between(dt.date(2020, 2, 28), dt.date(2020, 3, 1))[1] == dt.date(2020, 2, 29)
    with pytest.raises(UsageError):
        days_between(LAST, FIRST)


def test_exit_priority_is_documented_order() -> None:
    assert EXIT_PRIORITY == (2, 4, 1)


def test_table_truncates_long_errors() -> None:
    text = format_table([DayResult(FIRST, "failed", 1.0, error="x" * 500, exit_code=1),
                         DayResult(LAST, "not run")])
    assert max(len(line) for line in text.splitlines()) < 130
    assert "..." in text
    assert text.splitlines()[-1] == "0 of 2 days ok, 1 failed, 0 without input"


def test_dry_run_backfill_lists_each_day(cli: Cli, month: Callable[..., Path]) -> None:
    source = month()
    result = cli(str(FIRST), "--to", str(LAST), "--source", source, "--dry-run")
    assert_ok(result)
    assert result.stdout.count("output would be written to") == 4
    assert [c[1].strip() for c in table_rows(result.stdout).values()] == ["dry run"] * 4
    assert not (source / "results").exists()


def test_a_one_day_range_is_a_backfill_of_one(cli: Cli, month: Callable[..., Path]) -> None:
    source = month()
    result = cli(str(FIRST), "--to", str(FIRST), "--source", source)
    assert_ok(result)
    assert list(table_rows(result.stdout)) == ["2021-01-01"]


def test_interrupt_prints_the_table_so_far(
    cli: Cli, month: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamagg.ops import backfill

    real = backfill.run_one_day

    def stop_on_the_third(config: Config, **kwargs: Any) -> DayResult:
        if config.day == dt.date(2021, 1, 3):
            raise KeyboardInterrupt
        return real(config, **kwargs)

    monkeypatch.setattr(backfill, "run_one_day", stop_on_the_third)
    source = month()
    result = cli(str(FIRST), "--to", str(LAST), "--source", source)
    assert result.exit_code == 130
    statuses = [cells[1].strip() for cells in table_rows(result.stdout).values()]
    assert statuses == ["done", "done", "interrupted", "not run"]
    assert lines(result.stderr)[-1] == "streamagg: error: interrupted"


@pytest.mark.parametrize("stop_on", [dt.date(2021, 1, 2), LAST])
def test_a_stop_after_a_day_is_published_leaves_that_day_done(
    cli: Cli, month: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, stop_on: dt.date
) -> None:
    # A SIGTERM while earlier state generations are removed (after the manifest): the day is
    # done and the table says so; the backfill stops there, with the stop's exit code.
    from streamagg.ops.command import Stopped
    from streamagg.state import DayState

    real = DayState.collect_garbage

    def stop_after(self: DayState, keep: Any) -> None:
        real(self, keep)
        if self.config.day == stop_on:
            raise Stopped(15)

    monkeypatch.setattr(DayState, "collect_garbage", stop_after)
    source = month()
    result = cli(str(FIRST), "--to", str(LAST), "--source", source)
    assert result.exit_code == 143, result.output
    statuses = [cells[1].strip() for cells in table_rows(result.stdout).values()]
    done = (stop_on - FIRST).days + 1
    assert statuses[:done] == ["done"] * done
    assert statuses[done:] == ["not run"] * (4 - done)
    assert "the day is published and done" in result.stderr
    assert (source / "results" / day_path(stop_on)).is_dir()


def test_a_stop_after_a_single_day_is_published_exits_0(
    cli: Cli, month: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamagg.ops.command import Stopped
    from streamagg.state import DayState

    def stop(self: DayState, keep: Any) -> None:
        raise Stopped(15)

    monkeypatch.setattr(DayState, "collect_garbage", stop)
    source = month()
    result = cli(str(FIRST), "--source", source, "--incremental")
    assert result.exit_code == 0, result.output
    assert "the day is published and done" in result.stderr
    manifest = json.loads(next((source / "results" / day_path(FIRST)).glob("*manifest*"))
                          .read_text())
    assert manifest["totals"]["impressions"] > 0
