"""The reader's memory follows the budget, not the shape of a file: the real CLI in a child, its
peak resident memory (VmHWM) at most 0.9x --memory-limit on every shape that once grew with its
input, or the shape refused with one line (exit 4) before memory grows."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import DAY, DAY_ARG, MANIFEST_NAME, day_path
from tests.reliability.helpers import LAUNCHER, REPO, child_env, error_line

MiB = 2**20
H = b"IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID"
ROW = b"a,2021-01-30 10:00:00,1"
EMOJI = "\N{GRINNING FACE}".encode()
# Each shape is sized so that the reader before this round passed the limit on it, or took
# minutes; together they still run in seconds.
Shape = Callable[[], bytes]


def good_rows(n: int, prefix: bytes = b"g") -> bytes:
    return b"".join(b"%s%d,2021-01-30 %02d:00:00,%d\n" % (prefix, i, i % 24, i % 7)
                    for i in range(n))


# name: ((rows read, bad rows), the file's bytes)
SHAPES: dict[str, tuple[tuple[int, int], Shape]] = {
    # 40,000 columns (under the 49,152 taken at 192MB), rows as wide: 33 MiB as Python strings.
    "wide.csv": ((30, 0), lambda: H + b",x" * 40_000 + b"\n"
                 + (ROW + b",y" * 40_000 + b"\n") * 30),
    # A row of 2.5 Mi two-letter fields under a narrow header: 150 MiB as csv.reader's list.
    "wide-row.csv": ((3, 1), lambda: H + b"\n" + ROW + b"\n" + ROW + b",ab" * (5 * MiB // 2)
                     + b"\n" + ROW + b"\n"),
    # Two rows of 10 MiB with an emoji, in an ignored column: csv.reader built them four bytes
    # a character (40 MiB), the row as text was UCS-4 too.
    "long-ignored.csv": ((3, 0), lambda: H + b",NOTE\n"
                         + (ROW + b"," + b"x" * (10 * MiB) + EMOJI + b"\n") * 2 + ROW + b",n\n"),
    # The same in IMPRESSION_ID: a key of 10 MiB each.
    "long-id.csv": ((2, 0), lambda: H + b"\n" + b"".join(
        c * (10 * MiB) + EMOJI + b",2021-01-30 10:00:00,1\n" for c in (b"x", b"y"))),
    # 30 MiB of blank lines before the header, gzipped: held whole, a Python step a line.
    "blank-before.csv.gz": ((1, 0), lambda: gzip.compress(
        b"\n" * (30 * MiB) + H + b"\n" + good_rows(1, b"bb"), 6)),
    # 30 MiB of blank lines after it, and 10 MiB of lines of spaces and tabs (no rows: once,
    # bad rows each; before that, the recursion that crashed).
    "blank-after.csv.gz": ((1, 0), lambda: gzip.compress(
        H + b"\n" + b"\n" * (30 * MiB) + b" \t\n" * (10 * MiB // 3) + good_rows(1, b"ba"), 6)),
    # 100,000 bad rows of both kinds (wrong width, no datetime) after 1,000 good ones.
    "bad-run.csv": ((101_000, 100_000), lambda: H + b"\n" + good_rows(1000, b"br") + b"".join(
        b"b%d,2021-01-30 10:00:00\n" % i if i % 2 else b"b%d,never,1\n" % i
        for i in range(100_000))),
}


def write_day(root: Path, names: list[str]) -> Path:
    folder = root / "source" / day_path(DAY)
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_bytes(SHAPES[name][1]())
    return root / "source"


def run_measured(source: Path, limit: str, *extra: str) -> tuple[int, str, int]:
    """Exit code, stderr and peak resident memory (VmHWM) of the CLI on ``source``."""
    peak = source.parent / "peak"
    done = subprocess.run([sys.executable, str(LAUNCHER), "--peak-file", str(peak), "--",
                           DAY_ARG, "--source", str(source), "--memory-limit", limit, *extra],
                          cwd=REPO, env=child_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=600, check=False)
    return done.returncode, done.stderr, int(peak.read_text())


def limit_bytes(limit: str) -> int:
    return int(limit.removesuffix("MB")) * MiB


@pytest.mark.slow
def test_every_hostile_shape_of_file_stays_within_the_margin(tmp_path: Path) -> None:
    source = write_day(tmp_path, list(SHAPES))
    code, stderr, peak = run_measured(source, "192MB", "--max-bad-rows", "100%")
    assert code == 0, stderr
    assert peak <= 0.9 * limit_bytes("192MB"), f"peak {peak / MiB:.0f} MiB"
    manifest = json.loads((source / "results" / day_path(DAY) / MANIFEST_NAME).read_text())
    read = {Path(i["path"]).name: (i["rows"], i["bad_rows"]) for i in manifest["inputs"]}
    assert read == {name: counts for name, (counts, _) in SHAPES.items()}


@pytest.mark.slow
@pytest.mark.parametrize("limit", ["192MB", "256MB"])
def test_rows_at_the_row_bound_stay_within_the_margin_and_past_it_are_refused(
    tmp_path: Path, limit: str
) -> None:
    # The row bound is 16 MiB from 256MB, a sixteenth of the budget below: just under it the
    # peak holds; just over it the file is refused before the row is held.
    bound = min(16 * MiB, limit_bytes(limit) // 16)
    folder = tmp_path / "source" / day_path(DAY)
    folder.mkdir(parents=True)
    (folder / "a.csv").write_bytes(H + b"\n" + b"".join(
        c * (bound - MiB) + EMOJI + b",2021-01-30 10:00:00,1\n" for c in (b"x", b"y")))
    code, stderr, peak = run_measured(tmp_path / "source", limit)
    assert code == 0, stderr
    assert peak <= 0.9 * limit_bytes(limit), f"peak {peak / MiB:.0f} MiB"
    (folder / "a.csv").write_bytes(H + b"\n" + b"x" * (bound + 1) + b",2021-01-30 10:00:00,1\n")
    code, stderr, peak = run_measured(tmp_path / "source", limit)
    assert code == 4, stderr
    assert f"row longer than {bound // MiB} MiB" in error_line(stderr)
    assert "a.csv, line 2" in error_line(stderr)
    assert peak <= 0.9 * limit_bytes(limit), f"peak {peak / MiB:.0f} MiB"


@pytest.mark.slow
def test_a_header_wider_than_the_budget_is_refused_before_memory_grows(tmp_path: Path) -> None:
    # 4 Mi empty fields in the header and the row (8 MiB): 1,233 MiB under 256MB before.
    folder = tmp_path / "source" / day_path(DAY)
    folder.mkdir(parents=True)
    (folder / "a.csv").write_bytes(H + b"," * (4 * MiB) + b"\n" + ROW + b"," * (4 * MiB) + b"\n")
    code, stderr, peak = run_measured(tmp_path / "source", "256MB")
    assert code == 4, stderr
    message = error_line(stderr)
    assert "header has more than 65536 columns" in message and "a.csv, line 1" in message
    assert peak <= 0.9 * limit_bytes("256MB"), f"peak {peak / MiB:.0f} MiB"


@pytest.mark.parametrize(("limit", "columns", "row_mib", "gather_mib"), [
    ("128MB", 32_768, 8, 4), ("192MB", 49_152, 12, 6), ("256MB", 65_536, 16, 8),
    ("1024MB", 262_144, 16, 32),
])
def test_the_reader_bounds_come_from_the_budget(limit: str, columns: int, row_mib: int,
                                                gather_mib: int) -> None:
    from streamagg.budget import Budget
    from streamagg.read import ReadLimits

    limits = ReadLimits.of(Budget.of(limit_bytes(limit)))
    assert (limits.max_columns, limits.max_row_bytes, limits.gather_bytes) == (
        columns, row_mib * MiB, gather_mib * MiB)
