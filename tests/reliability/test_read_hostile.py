"""Hostile input the reader must not let through silently: an unterminated last field, leading
lines that only look blank, and a flood of bad rows (bounded memory, an early stop)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from streamagg.read import FileStats, locate_bad_rows, read_batches
from tests.conftest import DAY, DAY_ARG, MANIFEST_NAME, OUTPUT_NAME, REJECTS_NAME, day_path
from tests.reference import expected_for
from tests.reliability.helpers import H, rows

Cli = Callable[..., Result]


def totals(source: Path) -> dict[str, int]:
    manifest = json.loads((source / "results" / day_path(DAY) / MANIFEST_NAME).read_text())
    return manifest["totals"]  # type: ignore[no-any-return]


def rejects(source: Path) -> list[list[str]]:
    text = (source / "results" / day_path(DAY) / REJECTS_NAME).read_text()
    return list(csv.reader(io.StringIO(text)))[1:]


# --- lines that only look blank before the header ------------------------------------------------


@pytest.mark.parametrize("lead", [
    b"   \n", b"\t\n", b" \t \r\n", b"\xef\xbb\xbf\n", b"\xef\xbb\xbf\r\n", b"\xef\xbb\xbf  \n",
    b"\n  \n\t\r\n",
])
def test_leading_lines_that_only_look_blank_are_skipped(
    cli: Cli, partition: Callable[..., Path], lead: bytes
) -> None:
    data = lead + (H + rows(20) + "bad,yesterday,1\n").encode()
    source = partition({"a.csv": data})
    result = cli(DAY_ARG, "--source", source, "--max-bad-rows", "5")
    assert result.exit_code == 0, result.output
    got = totals(source)
    assert got["rows_read"] == 21 and got["bad_rows"] == 1 and got["empty_files"] == 0, got
    # Line numbers stay physical: the bad row is on the header's line + 21.
    header_line = lead.count(b"\n") + 1
    assert rejects(source) == [[str(source / day_path(DAY) / "a.csv"), str(header_line + 21),
                                "invalid IMPRESSION_DATETIME", "bad,yesterday,1"]]
    assert (source / "results" / day_path(DAY) / OUTPUT_NAME).read_bytes() == \
        expected_for(source, DAY).output


def test_a_file_of_blank_looking_lines_only_is_empty(
    cli: Cli, partition: Callable[..., Path]
) -> None:
    source = partition({"a.csv": b"  \n\t\r\n\xef\xbb\xbf", "b.csv": H + rows(3)})
    result = cli(DAY_ARG, "--source", source)
    assert result.exit_code == 0, result.output
    assert totals(source)["empty_files"] == 1 and totals(source)["rows_read"] == 3


@pytest.mark.parametrize("block_size", [64, 1 << 20])
def test_blank_looking_lines_keep_the_locators_and_the_fallback_in_step(block_size: int) -> None:
    # A long row sends small blocks to the csv fallback; every locator must count records from
    # the real header, not from the blank-looking line.
    data = b" \t\n \n" + (H + "a,2021-01-30 10:00:00,1\n" + "b,nope,1\n" + "c," + "x" * 200
                          + ",1\n" + "d,2021-01-30 10:00:00\n").encode()
    stats = FileStats()
    batches = list(read_batches(io.BytesIO(data), "mem://a.csv", stats=stats,
                                block_size=block_size, reopen=lambda: _opened(data)))
    locate_bad_rows(lambda: _opened(data), stats)
    assert sum(b.num_rows for b in batches) == 1
    assert [(b.record, b.line, b.raw) for b in stats.bad_rows] == [
        (2, 5, "b,nope,1"), (3, 6, "c," + "x" * 200 + ",1"), (4, 7, "d,2021-01-30 10:00:00")]


def _opened(data: bytes):  # type: ignore[no-untyped-def]
    import contextlib

    return contextlib.nullcontext(io.BytesIO(data))
