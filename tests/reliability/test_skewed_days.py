"""Days that no hash can spread (one key, one busy instant) stay within the memory limit."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from tests.conftest import DAY, DAY_ARG, MANIFEST_NAME, OUTPUT_NAME, day_path
from tests.reference import expected_for
from tests.reliability.helpers import LAUNCHER, REPO, child_env

MiB = 2**20
LIMIT_MB = 256


def one_key(out: gzip.GzipFile, scale: int = 1) -> dict[str, int]:
    """One impression repeated 2M times (a spill partition of one key, 0.5 MB gzipped), then
    copies that disagree on the campaign; the totals the reference gives."""
    out.write(b"IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID,USER_AGENT\n")
    row = b"6f1c2a4e-93b1-4c1e-8f1a-0d2b3c4d5e6f,2021-01-30T10:00:00.123Z,123456,Mozilla/5.0\n"
    for _ in range(20):
        out.write(row * (100_000 // scale))
    # Late copies that disagree on the campaign: conflicts, and the first one still wins.
    out.write(b"6f1c2a4e-93b1-4c1e-8f1a-0d2b3c4d5e6f,2021-01-30 10:00:00.123,999,x\n" * 1000)
    rows = 2_000_000 // scale + 1000
    return totals(rows=rows, duplicates=rows - 1, conflicts=1000, output_rows=1)


def busy_instant(out: gzip.GzipFile, scale: int = 1) -> dict[str, int]:
    """1M distinct ids in one second, ids that share their length and first and last eight
    bytes (so hashing them spreads nothing), then 2000 of them again with other campaigns."""
    out.write(b"IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n")
    ids = 1_000_000 // scale
    for start in range(0, ids, 100_000):
        out.write("".join(f"evt-2021013010-{i:010d}-eu-west-1,2021-01-30 10:00:00,{i % 7}\n"
                          for i in range(start, min(start + 100_000, ids))).encode())
    again = range(0, ids, 500 // scale)
    out.write("".join(f"evt-2021013010-{i:010d}-eu-west-1,2021-01-30 10:00:00,{i % 5}\n"
                      for i in again).encode())
    return totals(rows=ids + len(again), duplicates=len(again),
                  conflicts=sum(i % 7 != i % 5 for i in again), output_rows=7)


def totals(*, rows: int, duplicates: int, conflicts: int, output_rows: int) -> dict[str, int]:
    return {"rows_read": rows, "bad_rows": 0, "duplicates": duplicates,
            "conflicting_duplicates": conflicts, "outside_day": 0, "empty_files": 0,
            "output_rows": output_rows, "impressions": rows - duplicates}


def write_day(source: Path, write: Callable[..., dict[str, int]], scale: int = 1
              ) -> dict[str, int]:
    path = source / day_path(DAY) / "day.csv.gz"
    path.parent.mkdir(parents=True)
    with gzip.open(path, "wb", compresslevel=1) as out:
        return write(out, scale)


SHAPES = pytest.mark.parametrize("write", [one_key, busy_instant],
                                 ids=["one key 2M times", "one busy instant"])


@pytest.mark.slow
@SHAPES
def test_a_day_no_split_can_spread_stays_within_the_limit(
    tmp_path: Path, write: Callable[..., dict[str, int]]
) -> None:
    # Before: the spill backend loaded such a piece whole, 480 MiB (one key) and 700 MiB (one
    # instant) under --memory-limit 256MB; now it is cut by key ranges or streamed. (The
    # reference takes a minute on these; the test below holds the same paths to it.)
    source = tmp_path / "source"
    expected = write_day(source, write)
    peak_file = tmp_path / "peak"
    done = subprocess.run(
        [sys.executable, str(LAUNCHER), "--peak-file", str(peak_file), "--", DAY_ARG,
         "--source", str(source), "--dest", str(tmp_path / "dest"), "--dedupe", "spill",
         "--memory-limit", f"{LIMIT_MB}MB", "--tmp-dir", str(tmp_path)],
        cwd=REPO, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    peak = int(peak_file.read_text())
    assert peak < LIMIT_MB * MiB, f"peak RSS {peak / MiB:.0f} MiB above {LIMIT_MB}MB"
    out = tmp_path / "dest" / day_path(DAY)
    assert json.loads((out / MANIFEST_NAME).read_text())["totals"] == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "peak", "source"]


@SHAPES
def test_pieces_cut_by_key_range_or_streamed_match_the_reference(
    tmp_path: Path, write: Callable[..., dict[str, int]], cli: Callable[..., Result],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same days, 100 times smaller, with a budget that fits no piece: every path of the
    # test above (hash splits that make no progress, key ranges, streamed slices) is taken.
    from streamagg.dedup import pieces

    monkeypatch.setattr(pieces, "WORK_PER_SPILLED_BYTE", 2**10)
    source = tmp_path / "source"
    totals = write_day(source, write, scale=100)
    result = cli(DAY_ARG, "--source", source, "--dest", tmp_path / "dest", "--dedupe", "spill",
                 "--tmp-dir", tmp_path)
    assert result.exit_code == 0, result.output
    expected = expected_for(source, DAY)
    out = tmp_path / "dest" / day_path(DAY)
    assert (out / OUTPUT_NAME).read_bytes() == expected.output
    assert json.loads((out / MANIFEST_NAME).read_text())["totals"] == expected.totals == totals
