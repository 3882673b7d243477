"""Sizes people read are binary units named as such (KiB, MiB, GiB), never a bare byte count."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner, Result

from streamagg.testing.generate import main as generate
from streamagg.units import human_bytes
from tests.conftest import DAY_ARG
from tests.ops.helpers import GOOD, assert_ok, lines

Cli = Callable[..., Result]
# A size in decimal units, or a long bare byte count, as a person would misread it.
MISNAMED = re.compile(r"\d (KB|MB|GB)\b|\b\d{5,} bytes\b")


def test_human_bytes_names_binary_units() -> None:
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(502.2 * 2**20) == "502.2 MiB"
    assert human_bytes(3 * 2**30) == "3.0 GiB"


def test_generator_prints_binary_units(tmp_path: Path) -> None:
    result = CliRunner().invoke(generate, ["--out", str(tmp_path), "--date", "2021-01-30",
                                           "--rows", "20000", "--files", "2", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert not MISNAMED.search(result.output), result.output
    total = sum(p.stat().st_size for p in tmp_path.rglob("part-*"))
    assert f"{human_bytes(total)} total" in result.output, result.output


def test_reading_log_line_says_mib_not_bytes(cli: Cli, partition: Callable[..., Path]) -> None:
    source = partition({"a.csv": GOOD + "".join(f"x{i},2021-01-30 10:00:00,1\n"
                                                for i in range(2000))})
    result = cli(DAY_ARG, "--source", source)
    assert_ok(result)
    reading = [line for line in lines(result.stderr) if "reading 1 file " in line]
    assert reading and re.search(r"\(\d+\.\d KiB\)", reading[0]), result.stderr
    assert not MISNAMED.search(result.stderr), result.stderr


def test_memory_limit_error_names_units(cli: Cli, partition: Callable[..., Path]) -> None:
    source = partition({"a.csv": GOOD})
    result = cli(DAY_ARG, "--source", source, "--memory-limit", "100MB")
    assert result.exit_code == 2
    message = lines(result.stderr)[-1]
    assert "100.0 MiB is below the minimum of 128.0 MiB" in message, message
    assert not MISNAMED.search(message), message


def test_dry_run_lists_sizes_in_binary_units(cli: Cli, partition: Callable[..., Path]) -> None:
    source = partition({"a.csv": GOOD})
    result = cli(DAY_ARG, "--source", source, "--dry-run")
    assert_ok(result)
    assert f"({human_bytes(len(GOOD))})" in result.stdout, result.stdout


def test_one_timestamp_format_for_people() -> None:
    import datetime as dt

    from streamagg.units import count_of, human_time

    assert human_time("2021-01-31T03:10:07.412+01:00") == "2021-01-31T02:10:07Z"
    assert human_time(dt.datetime(2021, 1, 31, 2, 10, 7)) == "2021-01-31T02:10:07Z"
    # Read from an untrusted manifest: shown as it is, never a crash.
    assert (human_time("yesterday"), human_time(None), human_time(12)) == ("yesterday", "?", "12")
    assert (count_of(1, "file"), count_of(0, "file"), count_of(1234, "day")) == (
        "1 file", "0 files", "1,234 days")
