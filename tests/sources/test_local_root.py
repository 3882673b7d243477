"""A local source root that does not exist is bad usage (exit 2), not a day without data (3)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from streamagg.errors import UsageError
from streamagg.sources.local import LocalStorage
from tests.conftest import DAY, DAY_ARG, day_path

Cli = Callable[..., Result]


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_a_source_root_that_does_not_exist_exits_2_naming_it(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent" / "x"
    result = cli(DAY_ARG, "--source", missing)
    assert result.exit_code == 2, result.output
    assert error_lines(result) == [f"streamagg: error: source folder does not exist ({missing})"]
    assert not (tmp_path / "nonexistent").exists()  # not even the results folder


def test_a_source_root_that_is_a_file_exits_2(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a folder")
    result = cli(DAY_ARG, "--source", f"file://{tmp_path / 'data'}")
    assert result.exit_code == 2, result.output
    assert error_lines(result) == [
        f"streamagg: error: source folder is not a folder ({tmp_path / 'data'})"]


def test_an_existing_source_without_the_day_still_exits_3(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "source" / "2021" / "01" / "29").mkdir(parents=True)
    result = cli(DAY_ARG, "--source", tmp_path / "source")
    assert result.exit_code == 3, result.output
    assert "no input files in the partition" in error_lines(result)[-1]


def test_a_backfill_from_a_missing_source_exits_2(cli: Cli, tmp_path: Path) -> None:
    result = cli(DAY_ARG, "--to", "2021-01-31", "--source", tmp_path / "typo")
    assert result.exit_code == 2, result.output


def test_listing_a_missing_root_raises_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="source folder does not exist"):
        LocalStorage(str(tmp_path / "gone")).list_partition(day_path(DAY))
