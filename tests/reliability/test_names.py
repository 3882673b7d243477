"""Hostile names and paths: links, names not UTF-8, control characters, early years, signals."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from streamagg.config import Config, day_stamp
from streamagg.errors import UsageError, printable
from streamagg.sources.local import LocalStorage
from tests.conftest import DAY, DAY_ARG, MANIFEST_NAME, OUTPUT_NAME, day_path
from tests.reliability.helpers import Child, H, error_line, lines, rows, wait_for

Cli = Callable[..., Result]


def tree(root: Path) -> list[str]:
    return sorted(p.as_posix() for p in root.rglob("*"))


@pytest.fixture
def no_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("the partition was listed")

    monkeypatch.setattr(LocalStorage, "list_partition", refuse)


# --- item 3: links to files and to folders follow one rule -------------------------------------


def test_links_to_files_and_folders_are_both_read_and_what_is_not_read_is_logged(
    cli: Cli, tmp_path: Path
) -> None:
    source, outside = tmp_path / "source", tmp_path / "outside"
    folder = source / day_path(DAY)
    folder.mkdir(parents=True)
    (outside / "sub").mkdir(parents=True)
    (folder / "a.csv").write_text(H + rows(5, prefix="a"))
    (outside / "b.csv").write_text(H + rows(7, prefix="b"))
    (outside / "sub" / "c.csv").write_text(H + rows(11, prefix="c"))
    (folder / "b.csv").symlink_to(outside / "b.csv")  # a linked file, outside the partition
    (folder / "linked").symlink_to(outside / "sub", target_is_directory=True)  # a linked folder
    (folder / "again").symlink_to(folder, target_is_directory=True)  # a loop
    os.mkfifo(folder / "pipe.csv")  # would block a reader for ever

    result = cli(DAY_ARG, "--source", source, "--dest", tmp_path / "out")

    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / day_path(DAY) / MANIFEST_NAME).read_text())
    read = {Path(i["path"]).relative_to(folder).as_posix(): i["rows"] for i in manifest["inputs"]}
    assert read == {"a.csv": 5, "b.csv": 7, "linked/c.csv": 11}
    assert manifest["totals"]["rows_read"] == 23
    warnings = [line for line in lines(result.stderr) if " WARNING " in line]
    assert any(f"not read: {folder / 'again'}: a link to a folder already listed" in line
               for line in warnings), result.stderr
    assert any(f"not read: {folder / 'pipe.csv'}: not a regular file" in line
               for line in warnings), result.stderr
    assert any(f"2 entries of {folder} not read" in line for line in warnings), result.stderr


def test_a_link_to_a_folder_above_the_partition_is_not_walked(cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "source"
    folder = source / day_path(DAY)
    folder.mkdir(parents=True)
    (folder / "a.csv").write_text(H + rows(5))
    other = source / day_path(DAY + dt.timedelta(days=1))
    other.mkdir(parents=True)
    (other / "next-day.csv").write_text(H + rows(3, prefix="n"))
    (folder / "root").symlink_to(source, target_is_directory=True)  # would read every day

    result = cli(DAY_ARG, "--source", source, "--dest", tmp_path / "out")

    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / day_path(DAY) / MANIFEST_NAME).read_text())
    assert [Path(i["path"]).name for i in manifest["inputs"]] == ["a.csv"]
    assert f"not read: {folder / 'root'}: a link to a folder already listed" in result.stderr


# --- item 6: a name that is not UTF-8 is refused before anything is written -------------------


def test_an_input_name_not_utf8_is_refused_before_anything_is_written(
    cli: Cli, tmp_path: Path
) -> None:
    source, dest = tmp_path / "source", tmp_path / "out"
    folder = source / day_path(DAY)
    folder.mkdir(parents=True)
    (folder / "a.csv").write_text(H + rows(5))
    assert cli(DAY_ARG, "--source", source, "--dest", dest).exit_code == 0
    out_dir = dest / day_path(DAY)
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    # Latin-1 names, as an old uploader writes them; one has a bad row (the rejects file).
    for name in (b"caf\xe9.csv", b"na\xefve.csv"):
        with open(os.path.join(os.fsencode(folder), name), "wb") as out:
            out.write((H + rows(3) + ",,\n").encode())

    result = cli(DAY_ARG, "--source", source, "--dest", dest)

    assert result.exit_code == 4, result.output
    line = error_line(result.stderr)
    assert line == ("streamagg: error: 2 input file name(s) not valid UTF-8; rename them "
                    f"(nothing written) ({folder}/caf\\xe9.csv)")
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before
    assert "Traceback" not in result.output


@pytest.mark.parametrize("option", ["--source", "--dest"])
def test_a_root_not_utf8_is_bad_usage(cli: Cli, tmp_path: Path, option: str) -> None:
    root = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"caf\xe9"))
    os.makedirs(os.path.join(root, day_path(DAY)))
    source = root if option == "--source" else tmp_path / "source"
    (Path(source) / day_path(DAY)).mkdir(parents=True, exist_ok=True)
    (Path(source) / day_path(DAY) / "a.csv").write_text(H + rows(5))
    result = cli(DAY_ARG, "--source", source, *(["--dest", root] if option == "--dest" else []))
    assert result.exit_code == 2, result.output
    assert error_line(result.stderr) == (
        f"streamagg: error: local path is not valid UTF-8 ({tmp_path}/caf\\xe9)")


def test_a_name_not_utf8_that_is_not_an_input_changes_nothing(cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "source"
    folder = source / day_path(DAY)
    folder.mkdir(parents=True)
    (folder / "a.csv").write_text(H + rows(5))
    for name in (b"caf\xe9.txt", b"_caf\xe9.csv", b"empty-caf\xe9.csv"):
        open(os.path.join(os.fsencode(folder), name), "wb").close()
    result = cli(DAY_ARG, "--source", source, "--dest", tmp_path / "out")
    assert result.exit_code == 0, result.output


# --- item 10: days before year 1000 (or any day no timestamp can hold) ------------------------


@pytest.mark.parametrize("date", ["0999-12-31", "0001-01-01", "1677-09-21", "2262-04-11",
                                  "9999-12-31"])
def test_a_day_no_instant_can_fall_on_is_refused(
    cli: Cli, tmp_path: Path, no_listing: None, date: str
) -> None:
    (tmp_path / "source" / "0999" / "12" / "31").mkdir(parents=True)
    result = cli(date, "--source", tmp_path / "source")
    assert result.exit_code == 2, result.output
    assert error_line(result.stderr) == (
        f"streamagg: error: invalid date {date}: streamagg handles the days from 1677-09-22 "
        "to 2262-04-10 (64-bit nanosecond timestamps)")
    assert tree(tmp_path) == [(tmp_path / p).as_posix() for p in
                              ("source", "source/0999", "source/0999/12", "source/0999/12/31")]


def test_the_first_and_last_days_are_read_and_named_with_four_digit_years(
    cli: Cli, tmp_path: Path
) -> None:
    for day in (dt.date(1677, 9, 22), dt.date(2262, 4, 10)):
        folder = tmp_path / "source" / f"{day.year:04d}" / f"{day.month:02d}" / f"{day.day:02d}"
        folder.mkdir(parents=True)
        (folder / "a.csv").write_text(H + f"x,{day} 10:00:00,1\n")
        result = cli(day.isoformat(), "--source", tmp_path / "source")
        assert result.exit_code == 0, result.output
        stamp = day_stamp(day)
        out = tmp_path / "source" / "results" / day_stamp(day, "/") / f"daily_agg_{stamp}_SA.csv"
        assert out.read_text() == f"CAMPAIGN_ID,HOUR,IMPRESSIONS\n1,{day} 10:00:00,1\n"


def test_names_and_paths_always_have_four_digit_years() -> None:
    assert day_stamp(dt.date(999, 1, 2), "/") == "0999/01/02"
    assert day_stamp(dt.date(999, 1, 2)) == "09990102"
    with pytest.raises(UsageError):
        Config(day=dt.date(999, 12, 31))


# --- item 11: --tmp-dir inside the source partition --------------------------------------------


@pytest.mark.parametrize("tmp", ["{part}", "{part}/work", "{part}/x/../work", "{link}"])
def test_a_tmp_dir_inside_the_source_partition_is_refused(
    cli: Cli, tmp_path: Path, no_listing: None, tmp: str
) -> None:
    source = tmp_path / "source"
    part = source / day_path(DAY)
    (part / "work").mkdir(parents=True)
    (part / "x").mkdir()
    (part / "a.csv").write_text(H + rows(5))
    (tmp_path / "link").symlink_to(part / "work", target_is_directory=True)
    before = tree(tmp_path)
    result = cli(DAY_ARG, "--source", source, "--tmp-dir",
                 tmp.format(part=part, link=tmp_path / "link"))
    assert result.exit_code == 2, result.output
    assert error_line(result.stderr).startswith(
        "streamagg: error: --tmp-dir lies inside the source partition; its work files would "
        "be read as input (")
    assert tree(tmp_path) == before


def test_a_tmp_dir_beside_the_partition_is_fine(cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / day_path(DAY)).mkdir(parents=True)
    (source / day_path(DAY) / "a.csv").write_text(H + rows(5))
    (source / "2021" / "work").mkdir()
    result = cli(DAY_ARG, "--source", source, "--tmp-dir", source / "2021" / "work")
    assert result.exit_code == 0, result.output
    assert os.listdir(source / "2021" / "work") == []


# --- item 12: control characters in names reach no line as they are ----------------------------

FORGED = "x\n12:00:00 INFO forged line\x1b[2J\x1b[31m.csv"


def test_control_characters_in_a_name_are_escaped_in_logs_summaries_and_errors(
    cli: Cli, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    folder = source / day_path(DAY)
    folder.mkdir(parents=True)
    (folder / FORGED).write_text(H + rows(5))
    shown = printable(str(folder / FORGED))
    assert "\n" not in shown and "\x1b" not in shown and "\\x1b[31m" in shown

    done = cli(DAY_ARG, "--source", source, "--verbose")
    assert done.exit_code == 0, done.output
    assert f"DEBUG read {shown}" in done.stderr
    dry = cli(DAY_ARG, "--source", source, "--dry-run")
    assert f"  {shown}  (" in dry.stdout
    (folder / "z.csv").write_text(H + rows(5))
    check = cli(DAY_ARG, "--source", source, "--check")
    assert check.exit_code == 0, check.output
    (folder / FORGED).write_text("IMPRESSION_ID,CAMPAIGN_ID\nx,1\n")  # a required column gone
    failed = cli(DAY_ARG, "--source", source)
    assert failed.exit_code == 4
    assert shown in error_line(failed.stderr)  # the whole message, the file named
    table = cli(DAY_ARG, "--to", "2021-01-31", "--source", source)
    assert table.exit_code == 4
    for result in (done, dry, check, failed, table):
        assert "\x1b" not in result.output
        for line in lines(result.stderr):
            assert line.startswith(("streamagg: error:", "{")) or re.match(
                r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ [A-Z]+ ", line), line
        assert not any("forged line" in line and shown not in line
                       for line in result.output.splitlines()), result.output


def test_json_logs_keep_the_name_in_one_record(cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "source"
    folder = source / day_path(DAY)
    folder.mkdir(parents=True)
    (folder / FORGED).write_text("IMPRESSION_ID,CAMPAIGN_ID\nx,1\n")
    result = cli(DAY_ARG, "--source", source, "--log-format", "json")
    assert result.exit_code == 4
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert printable(str(folder / FORGED)) in records[-1]["message"]
    assert "\x1b" not in result.stderr


# --- item 13: a stop prints its one line and nothing else --------------------------------------


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_a_stop_prints_one_json_record_and_no_blank_line(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop: str
) -> None:
    from streamagg.ops import backfill, command

    def stopped(*args: Any, **kwargs: Any) -> Any:
        # What the signal handlers raise: Ctrl-C's KeyboardInterrupt, or the SIGTERM one.
        raise KeyboardInterrupt if stop == "SIGINT" else command.Stopped(signal.SIGTERM)

    monkeypatch.setattr(backfill, "run_day", stopped)
    source = tmp_path / "source"
    (source / day_path(DAY)).mkdir(parents=True)
    (source / day_path(DAY) / "a.csv").write_text(H + rows(5))
    result = cli(DAY_ARG, "--source", source, "--log-format", "json")
    assert result.exit_code == (130 if stop == "SIGINT" else 143)
    records = [json.loads(line) for line in result.stderr.splitlines()]  # no blank line
    assert records[-1]["level"] == "error" and records[-1]["message"] == (
        "interrupted" if stop == "SIGINT" else "terminated by SIGTERM")
    assert not (source / "results" / day_path(DAY) / OUTPUT_NAME).exists()


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_real_signal_mid_run_leaves_stderr_pure_json_lines(
    spawn: Callable[..., Child], tmp_path: Path, stop: signal.Signals
) -> None:
    source, marker = tmp_path / "source", tmp_path / "paused"
    (source / day_path(DAY)).mkdir(parents=True)
    (source / day_path(DAY) / "a.csv").write_text(H + rows(5000))
    child = spawn([DAY_ARG, "--source", source, "--dest", tmp_path / "out", "--chunk-size",
                   "1000", "--log-format", "json"], pause="spill", marker=marker)
    wait_for(lambda: marker.exists() or child.process.poll() is not None, what="spill")
    os.kill(child.process.pid, stop)
    code, _, stderr = child.wait(timeout=30)
    assert code == (130 if stop == signal.SIGINT else 143), (code, stderr)
    records = [json.loads(line) for line in stderr.splitlines()]  # every line, no blank one
    assert records[-1]["level"] == "error" and records[-1]["exit_code"] == code
    assert not (tmp_path / "out").exists()
