"""Blank lines (nothing, or only spaces, tabs and byte-order marks) are no rows wherever they
stand, and a run of any length of them, or of bad rows, ends the read cleanly."""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import resource
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from hypothesis import given, settings
from hypothesis import strategies as st

from streamagg.read import FileStats, ReadLimits, locate_bad_rows, read_batches
from tests.conftest import DAY, DAY_ARG, MANIFEST_NAME, OUTPUT_NAME, REJECTS_NAME, day_path
from tests.reference import expected_for
from tests.reliability import reader_check
from tests.reliability.helpers import REPO, H, child_env, rows

Cli = Callable[..., Result]
BLANKS = [b"  ", b"\t", b" \t ", b"\xef\xbb\xbf", b"\xef\xbb\xbf \t", b"\t\xef\xbb\xbf", b""]
ENDS = [b"\n", b"\r\n"]


def results(source: Path) -> tuple[dict[str, int], bytes, list[list[str]]]:
    folder = source / "results" / day_path(DAY)
    totals = json.loads((folder / MANIFEST_NAME).read_text())["totals"]
    rejects_path = folder / REJECTS_NAME
    rejects = (list(csv.reader(io.StringIO(rejects_path.read_text())))[1:]
               if rejects_path.exists() else [])
    return totals, (folder / OUTPUT_NAME).read_bytes(), rejects


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=40).map(lambda b: bytes(b"\n\r \t\xefa"[c % 6] for c in b)))
def test_a_padded_line_start_is_a_line_end_then_a_space_tab_or_bom(data: bytes) -> None:
    """The reader's quick check for blank lines to empty (read/blank.py), on bytes and on a
    numpy view alike, against its definition byte by byte."""
    import numpy as np

    from streamagg.read.blank import padded_line_start

    wanted = any(a in b"\r\n" and b in b" \t\xef" for a, b in zip(data, data[1:], strict=False))
    assert padded_line_start(data) == wanted
    assert padded_line_start(np.frombuffer(data, np.uint8)) == wanted


@pytest.mark.parametrize("blank", BLANKS[:-1])
@pytest.mark.parametrize("end", [*ENDS, b""])
def test_one_trailing_blank_line_does_not_fail_a_50_row_file(
    cli: Cli, partition: Callable[..., Path], blank: bytes, end: bytes
) -> None:
    # Under the default --max-bad-rows 1%, one bad row in 50 fails the day: it is no row.
    source = partition({"a.csv": (H + rows(50)).encode() + blank + end})
    result = cli(DAY_ARG, "--source", source)
    assert result.exit_code == 0, result.output
    totals, output, rejects = results(source)
    assert (totals["rows_read"], totals["bad_rows"], rejects) == (50, 0, [])
    assert output == expected_for(source, DAY).output


@settings(max_examples=25, deadline=None)
@given(layout=st.lists(st.tuples(st.sampled_from(["row", "bad", "blank"]),
                                 st.sampled_from(BLANKS), st.sampled_from(ENDS)),
                       min_size=1, max_size=12),
       block_size=st.sampled_from([64, 1 << 20]))
def test_blank_lines_anywhere_keep_rows_bad_rows_and_lines_as_the_reference(
    layout: list[tuple[str, bytes, bytes]], block_size: int
) -> None:
    body = []
    for index, (kind, blank, end) in enumerate(layout):
        if kind == "row":
            body.append(f"i{index},2021-01-30 10:00:00,{index % 3}".encode() + end)
        elif kind == "bad":
            body.append(f"i{index},never,1".encode() + end)
        else:
            body.append(blank + end)
    # A long row sends the rest of the file through the csv fallback with small blocks.
    long_row = b"long," + b"x" * 100 + b",1\n"
    data = H.encode() + b"".join(body[:3]) + long_row + b"".join(body[3:])
    limits = reader_check.TINY if block_size == 64 else ReadLimits.default()
    for chunk_size in (1, 4):
        reader_check.check(data, chunk_size, limits)


def test_a_blank_looking_line_inside_a_quoted_field_is_part_of_the_value() -> None:
    data = (H + '"a\n  \n\t\nb",2021-01-30 10:00:00,1\n  \n').encode()
    stats = FileStats()
    batches = list(read_batches(io.BytesIO(data), "a.csv", stats=stats))
    assert [r["key"] for b in batches for r in b.to_pylist()] == ["a\n  \n\t\nb"]
    assert stats.rows_read == 1 and not stats.bad_rows


def test_blank_lines_shift_no_bad_row_off_its_line() -> None:
    data = (H + "  \n\t\r\na,2021-01-30 10:00:00,1\n \nb,never,1\n\ufeff\n"
            "c,2021-01-30 10:00:00\n").encode()

    def reopen() -> contextlib.AbstractContextManager[io.BytesIO]:
        return contextlib.nullcontext(io.BytesIO(data))

    for block_size in (64, 1 << 20):
        stats = FileStats()
        list(read_batches(io.BytesIO(data), "a.csv", stats=stats, block_size=block_size,
                          reopen=reopen))
        locate_bad_rows(reopen, stats)
        assert stats.rows_read == 3
        assert [(b.record, b.line, b.raw) for b in stats.bad_rows] == [
            (2, 6, "b,never,1"), (3, 8, "c,2021-01-30 10:00:00")]


# --- runs of records that hold no row, right after the header ---------------------------------

# pyarrow's streaming reader skipped the blocks before its first row by recursion, a level of
# stack per block (on its own thread): with the 8 MiB default stack, some 15,000 blocks of blank
# lines or bad rows crashed the process with SIGSEGV (3,000 Mi blank lines in a 3 MB gzip). A
# child with a 128 KiB stack crashed within 20,000 lines in blocks of 64 bytes, or 120 MiB of
# blank lines in the CLI's blocks of 256 KiB.
# It ends as the CLI does (`streamagg.__main__`), with os._exit: Arrow's thread pools, torn down
# in the interpreter's exit, aborted 1 to 6 children in 100 on a loaded machine
# (apache/arrow#34314), a flaky failure of this test that said nothing of the reading.
CHILD = textwrap.dedent("""
    import io, os, sys
    from streamagg.read import FileStats, read_batches
    data = sys.stdin.buffer.read()
    stats = FileStats()
    rows = sum(b.num_rows for b in read_batches(io.BytesIO(data), "t.csv", block_size=64,
                                                stats=stats))
    print(rows, stats.rows_read, len(stats.bad_rows), flush=True)
    os._exit(0)
""")


def small_stack() -> None:
    resource.setrlimit(resource.RLIMIT_STACK, (128 * 1024, resource.RLIM_INFINITY))


@pytest.mark.parametrize(("line", "bad"), [
    (b"\n", 0), (b"\r\n", 0), (b" \t\n", 0), (b"\xef\xbb\xbf\n", 0), (b"x\n", 1), (b"x,y\n", 1),
], ids=["empty", "crlf", "spaces", "bom", "one-field", "two-fields"])
def test_a_long_run_without_rows_after_the_header_ends_cleanly(line: bytes, bad: int) -> None:
    data = H.encode() + line * 40_000 + b"a,2021-01-30 10:00:00,1\n"
    done = subprocess.run([sys.executable, "-c", CHILD], input=data, capture_output=True,
                          cwd=REPO, env=child_env(), preexec_fn=small_stack, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [b"1", str(1 + 40_000 * bad).encode(),
                                   str(40_000 * bad).encode()]


@pytest.mark.slow
def test_a_gzip_of_blank_lines_after_the_header_runs_with_a_small_stack(tmp_path: Path) -> None:
    # The shape reported (a header, a long run of blank lines, one row, gzipped) through the
    # CLI, with a stack small enough that the old recursion crashed within the run.
    blank = gzip.compress(H.encode() + b"\n" * (120 * 2**20) + rows(1).encode(), 6)
    folder = tmp_path / "source" / day_path(DAY)
    folder.mkdir(parents=True)
    (folder / "a.csv.gz").write_bytes(blank)
    done = subprocess.run([sys.executable, "-m", "streamagg", DAY_ARG, "--source",
                           str(tmp_path / "source")], capture_output=True, text=True, cwd=REPO,
                          env=child_env(), preexec_fn=small_stack, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    totals = json.loads((tmp_path / "source" / "results" / day_path(DAY)
                         / MANIFEST_NAME).read_text())["totals"]
    assert (totals["rows_read"], totals["bad_rows"]) == (1, 0)
