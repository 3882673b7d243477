"""Malformed input: bad rows quarantined with their line, bad files named, memory bounded."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import functools
import gzip
import io
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from streamagg.read import FileStats, read_batches
from streamagg.sources.local import LocalStorage
from tests.conftest import (
    DAY,
    DAY_ARG,
    MANIFEST_NAME,
    OUTPUT_NAME,
    PACKAGE_DEDUPE_BACKENDS,
    REJECTS_NAME,
    day_path,
)
from tests.reference import expected_for
from tests.reliability.helpers import LAUNCHER, REPO, H, child_env, error_line, rows

Cli = Callable[..., Result]
MiB = 2**20
# pyarrow reports a row it cannot decode for its invalid-row handler as "exception ignored"
# before raising; the reader then reads that file with the csv module (the CLI mutes it).
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

# One row of every bad kind docs/CONTRACT.md lists, between good rows (a line number each).
KINDS = (
    H                                                   # line 1
    + "good1,2021-01-30 10:00:00,1\n"                   # 2
    + ",2021-01-30 10:00:00,1\n"                        # 3  empty id
    + "e2,,1\n"                                         # 4  empty datetime
    + "e3,2021-01-30 10:00:00,\n"                       # 5  empty campaign
    + " \t ,2021-01-30 10:00:00,1\n"                    # 6  id of spaces and tabs only
    + "e5,yesterday,1\n"                                # 7  datetime does not parse
    + "e6,2021-02-30 10:00:00,1\n"                      # 8  no such day
    + "e7,2021-01-30 24:00:00,1\n"                      # 9  no such hour
    + "e8,2021-01-30 10:00:00+25:00,1\n"                # 10 no such offset
    + "e9,2262-04-12 00:00:00,1\n"                      # 11 beyond nanosecond range
    + "e10,2021-01-30 10:00:00,1,extra\n"               # 12 too many fields
    + "e11,2021-01-30 10:00:00\n"                       # 13 too few fields
    + '"e12\n  multi",2021-01-30 10:00:00,1,x\n'        # 14-15 too many, over two lines
    + "good2,2021-01-30 11:00:00,2\n"                   # 16
).encode() + (
    b"e13\xff,2021-01-30 10:00:00,1\n"                  # 17 id not UTF-8
    + b"e14,2021-01-30 10:00:00\xc3,1\n"                # 18 datetime not UTF-8
    + b"e15,2021-01-30 10:00:00,\xe2\x82\n"             # 19 campaign not UTF-8
    + b"e16\xfe,2021-01-30 10:00:00,1,2\n"              # 20 not UTF-8 and too many fields
    + b"\n"                                             # 21 blank: skipped, not bad
    + b'"good3, quoted",2021-01-30T12:00:00Z,"3"\n'     # 22
    + b'e17,"2021-01-30 13:00:00,1\n'                   # 23 unclosed quote: eats the rest
    + b"good-not,2021-01-30 13:00:00,1\n"               # 24 (inside the open quote)
)
BAD_LINES = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 17, 18, 19, 20, 23]


def rejects_of(path: Path) -> list[tuple[str, int]]:
    with open(path, encoding="utf-8", newline="") as rejects:
        return [(Path(row["file"]).name, int(row["line"])) for row in csv.DictReader(rejects)]


@pytest.mark.parametrize("dedupe", PACKAGE_DEDUPE_BACKENDS)
@pytest.mark.parametrize("gzipped", [False, True])
def test_every_bad_row_kind_is_quarantined_with_its_line(
    cli: Cli, partition: Callable[..., Path], dedupe: str, gzipped: bool
) -> None:
    name = "kinds.csv.gz" if gzipped else "kinds.csv"
    source = partition({name: gzip.compress(KINDS) if gzipped else KINDS,
                        "plain.csv": H + rows(200)})
    result = cli(DAY_ARG, "--source", source, "--max-bad-rows", "100", "--dedupe", dedupe,
                 "--chunk-size", "3")
    assert result.exit_code == 0, result.output
    expected = expected_for(source, DAY)
    out = source / "results" / day_path(DAY)
    assert (out / OUTPUT_NAME).read_bytes() == expected.output
    assert rejects_of(out / REJECTS_NAME) == [(name, line) for line in BAD_LINES]
    assert [(Path(r.path).name, r.line) for r in expected.rejects] == rejects_of(
        out / REJECTS_NAME)
    manifest = (out / MANIFEST_NAME).read_text()
    assert '"bad_rows": 17' in manifest and '"rows_read": 220' in manifest


@pytest.mark.parametrize(("content", "words", "line"), [
    (b"IMPRESSION_ID,CAMPAIGN_ID\na,1\n", "missing required column", 1),
    (b"impression_id,IMPRESSION_DATETIME,Campaign_Id,IMPRESSION_ID\na,b,c,d\n",
     "required column appears more than once", 1),
    (b"IMPRESSION_ID\xff,IMPRESSION_DATETIME,CAMPAIGN_ID\na,b,c\n", "not valid UTF-8", 1),
    (b'"IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\na,b,c\n', "missing required column", 1),
])
def test_bad_headers_fail_with_exit_4_naming_file_and_line(
    cli: Cli, partition: Callable[..., Path], content: bytes, words: str, line: int
) -> None:
    source = partition({"a.csv": H + rows(5), "b.csv": content})
    result = cli(DAY_ARG, "--source", source)
    assert result.exit_code == 4, result.output
    message = error_line(result.stderr)
    assert words in message and f"b.csv, line {line}" in message, message
    assert not (source / "results").exists()


@pytest.mark.parametrize("seed", range(6))
def test_a_file_that_is_not_csv_at_all(cli: Cli, partition: Callable[..., Path],
                                        seed: int) -> None:
    noise = random.Random(seed).randbytes(300_000)
    source = partition({"a.csv": H + rows(5), "noise.csv": noise})
    result = cli(DAY_ARG, "--source", source)
    assert result.exit_code == 4, result.output
    message = error_line(result.stderr)
    assert "noise.csv, line 1" in message, message
    assert not (source / "results").exists()


@pytest.mark.parametrize(("name", "content", "words"), [
    ("cut.csv.gz", gzip.compress((H + rows(5000)).encode())[:-4000], "read failed"),
])
def test_broken_gzip_fails_with_exit_1_naming_the_file(
    cli: Cli, partition: Callable[..., Path], name: str, content: bytes, words: str
) -> None:
    source = partition({"a.csv": H + rows(5)})
    (source / day_path(DAY) / name).write_bytes(content)  # as is: the fixture would gzip it
    result = cli(DAY_ARG, "--source", source)
    assert result.exit_code == 1, result.output
    message = error_line(result.stderr)
    assert words in message and name in message, message
    assert not (source / "results").exists()


@pytest.mark.parametrize(("files", "rows_read", "empty"), [
    ({"header.csv": H}, 0, 0),
    ({"header.csv": H.replace("\n", "\r\n") + "\r\n\r\n", "bom.csv": "\ufeff",
      "blank.csv": "\n\n", "empty.csv.gz": gzip.compress(b"")}, 0, 3),
])
def test_files_without_rows_give_a_header_only_output(
    cli: Cli, partition: Callable[..., Path], files: dict[str, str | bytes], rows_read: int,
    empty: int
) -> None:
    source = partition(files)
    result = cli(DAY_ARG, "--source", source)
    assert result.exit_code == 0, result.output
    out = source / "results" / day_path(DAY)
    assert (out / OUTPUT_NAME).read_bytes() == b"CAMPAIGN_ID,HOUR,IMPRESSIONS\n"
    manifest = (out / MANIFEST_NAME).read_text()
    assert f'"rows_read": {rows_read}' in manifest and f'"empty_files": {empty}' in manifest


# --- huge fields: memory stays bounded -----------------------------------------------------------


def run_measured(args: list[str], peak_file: Path, timeout: float = 120) -> tuple[int, str, int]:
    """Run the CLI in a child; its exit code, stderr and own peak RSS in bytes."""
    done = subprocess.run([sys.executable, str(LAUNCHER), "--peak-file", str(peak_file), "--",
                           *args], cwd=REPO, env=child_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=timeout, check=False)
    return done.returncode, done.stderr, int(peak_file.read_text())


def write_huge(path: Path, before: int, field: bytes, after: bytes, gzipped: bool) -> None:
    """``before`` good rows, then a row holding ``field``, then ``after``; streamed to disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if gzipped else open
    with opener(path, "wb") as out:  # type: ignore[operator]
        out.write(b"IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID,USER_AGENT\n")
        out.write("".join(f"a{i},2021-01-30 10:00:00,1,ua\n" for i in range(before)).encode())
        out.write(b'huge,2021-01-30 11:00:00,2,"')
        for _ in range(100):
            out.write(field)
        out.write(after)


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "gzipped"), [
    ("quoted field of 100 MB", False),
    ("line of 100 MB", True),
    ("unclosed quote, then 100 MB of rows", False),
])
def test_a_100_mb_row_fails_clearly_in_bounded_memory(
    tmp_path: Path, kind: str, gzipped: bool
) -> None:
    source = tmp_path / "source"
    path = source / day_path(DAY) / ("huge.csv.gz" if gzipped else "huge.csv")
    if kind.startswith("quoted"):
        write_huge(path, 1000, b"x" * MiB, b'"\nb,2021-01-30 12:00:00,3,ua\n', gzipped)
    elif kind.startswith("line"):
        write_huge(path, 1000, b"y," * (MiB // 2), b'"\n', gzipped)
    else:
        row = b"c,2021-01-30 12:00:00,3,ua\n"
        write_huge(path, 1000, row * (MiB // len(row)), b"", gzipped)
    code, stderr, peak = run_measured([DAY_ARG, "--source", str(source), "--memory-limit",
                                       "256MB"], tmp_path / "peak")
    assert code == 4, stderr
    message = error_line(stderr)
    assert "row longer than 16 MiB" in message and f"{path.name}, line 1002" in message, message
    assert peak < 256 * MiB, f"peak RSS {peak / MiB:.0f} MiB"
    assert not (source / "results").exists()


def test_a_row_just_under_the_limit_is_read(partition: Callable[..., Path], cli: Cli) -> None:
    big = "z" * (6 * MiB)  # longer than any reader block: the csv fallback takes it
    source = partition({"a.csv": "IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID,UA\n"
                        + f'a,2021-01-30 10:00:00,1,"{big}"\nb,2021-01-30 10:00:00,1,x\n'})
    result = cli(DAY_ARG, "--source", source)
    assert result.exit_code == 0, result.output
    out = source / "results" / day_path(DAY) / OUTPUT_NAME
    assert out.read_bytes() == b"CAMPAIGN_ID,HOUR,IMPRESSIONS\n1,2021-01-30 10:00:00,2\n"


# --- local files changed between listing and reading ---------------------------------------------


@pytest.mark.parametrize("change", ["rewritten", "appended", "deleted", "replaced"])
def test_local_input_changed_after_listing_fails_naming_it(
    cli: Cli, partition: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    source = partition({"a.csv": H + rows(50), "b.csv": H + rows(50, prefix="b")})
    target = source / day_path(DAY) / "b.csv"
    listing = LocalStorage.list_partition

    def list_then_change(self: LocalStorage, relative: str, *args: object) -> tuple[list, int]:
        found = listing(self, relative, *args)  # type: ignore[arg-type]
        stamp = dt.datetime(2022, 1, 1).timestamp()
        if change == "rewritten":  # same size, new bytes and mtime
            target.write_text(target.read_text().replace("b1,", "b9,", 1))
        elif change == "appended":
            with open(target, "a", encoding="utf-8") as out:
                out.write("late,2021-01-30 10:00:00,1\n")
        elif change == "deleted":
            target.unlink()
        else:  # a new file renamed over the old one
            (target.parent / ".new").write_text(H + rows(60, prefix="n"))
            os.replace(target.parent / ".new", target)
        if target.exists():
            os.utime(target, (stamp, stamp))
        return found

    monkeypatch.setattr(LocalStorage, "list_partition", list_then_change)
    result = cli(DAY_ARG, "--source", source)
    assert result.exit_code == 1, result.output
    message = error_line(result.stderr)
    words = "No such file" if change == "deleted" else "changed since it was listed"
    assert words in message and str(target) in message, message
    assert not (source / "results").exists()


def test_local_input_growing_while_read_fails(
    cli: Cli, partition: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A writer still appending to a file the run is reading: the run must not count half.
    source = partition({"a.csv": H + rows(30_000)})
    target = source / day_path(DAY) / "a.csv"
    opening = LocalStorage.open_input

    def open_then_append(self: LocalStorage, item: object) -> io.BufferedReader:
        stream = opening(self, item)  # type: ignore[arg-type]
        with open(target, "a", encoding="utf-8") as out:
            out.write(rows(10, prefix="late"))
        return stream  # type: ignore[return-value]

    monkeypatch.setattr(LocalStorage, "open_input", open_then_append)
    result = cli(DAY_ARG, "--source", source)
    assert result.exit_code == 1, result.output
    message = error_line(result.stderr)
    assert "changed while it was read" in message and str(target) in message, message


# --- a pyarrow chunker bug the fuzz test found -------------------------------------------------


@pytest.mark.parametrize(("block", "alignments"), [(4096, range(0, 200, 3)),
                                                   (1 << 20, range(175, 200, 4))])
def test_a_quoted_nul_and_line_break_across_a_block_boundary_stay_one_row(
    block: int, alignments: range
) -> None:
    # pyarrow 26 splits such a record in two at some alignments to a block boundary (1 MiB
    # blocks included), inventing a bad row; the reader sends files with a NUL to the csv path.
    header = b"IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID,X,X\n"
    row = b"a,2021-01-30 10:00:00,1,x,y\n"
    base = row * (block // len(row) - 8)
    for shift in alignments:
        record = b"p" * (1 + shift) + b',"\x00\xff",,' + b"z" * 40 + b',"\r"\n'
        data = header + base + record + row * 2
        stats = FileStats()
        clean = sum(batch.num_rows for batch in read_batches(
            io.BytesIO(data), "f.csv", block_size=block, stats=stats,
            reopen=functools.partial(contextlib.nullcontext, io.BytesIO(data))))
        assert (stats.rows_read, len(stats.bad_rows)) == (len(base) // len(row) + 3, 1), shift
        assert clean == stats.rows_read - 1
