"""Malformed records that are not UTF-8: pyarrow's invalid-row callback cannot decode them and
reports that as an ignored exception, a traceback on stderr. They are bad rows like any other,
located and counted as the reference reader does, and nothing is printed."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streamagg.read import FileStats, locate_bad_rows, read_batches
from tests import reference

H = b"IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID,X\n"
# Any byte but those that make fields and records: a malformed record keeps its field count.
junk = st.binary(min_size=1, max_size=12).map(
    lambda b: bytes(c for c in b if c not in b'\n\r",') or b"\xff")


@st.composite
def rows(draw: st.DrawFn) -> bytes:
    """A good row (its fourth field junk, which is not read), or a record of two or five
    fields holding junk that is not UTF-8 as a rule."""
    index = draw(st.integers(0, 10**6))
    good = f"id{index},2021-01-30 1{index % 10}:00:00,c{index % 7},".encode()
    kind = draw(st.sampled_from(["good", "short", "long"]))
    if kind == "good":
        return good + draw(junk)
    if kind == "short":
        return draw(junk) + b",2021-01-30 10:00:00"
    return good + draw(junk) + b"," + draw(junk)


@contextlib.contextmanager
def unraisables() -> Iterator[list[Any]]:
    """Every report of an ignored exception made meanwhile."""
    seen: list[Any] = []
    previous = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        yield seen
    finally:
        sys.unraisablehook = previous


@settings(max_examples=60, deadline=None)
@given(records=st.lists(rows(), min_size=1, max_size=30),
       block_size=st.sampled_from([64, 256, 1 << 20]))
def test_undecodable_malformed_records_are_bad_rows_and_print_nothing(
        records: list[bytes], block_size: int) -> None:
    data = H + b"\n".join(records) + b"\n"

    def reopen() -> contextlib.AbstractContextManager[io.BytesIO]:
        return contextlib.nullcontext(io.BytesIO(data))

    stats = FileStats()
    with unraisables() as seen:
        batches = list(read_batches(io.BytesIO(data), "t.csv", stats=stats, reopen=reopen,
                                    block_size=block_size))
        locate_bad_rows(reopen, stats)
    assert not seen, [str(u.exc_value) for u in seen]
    rejects: list[reference.Reject] = []
    good, rows_read, bad = reference.read_file("t.csv", data, rejects)
    assert [(r["key"], r["instant"], r["group"]) for b in batches for r in b.to_pylist()] == [
        (row.impression_id, row.instant, row.campaign) for row in good]
    assert (stats.rows_read, len(stats.bad_rows)) == (rows_read, bad)
    assert [(b.line, b.reason) for b in stats.bad_rows] == [(r.line, r.reason) for r in rejects]


def test_the_hook_passes_on_every_other_report() -> None:
    def fail() -> None:
        raise ValueError("not ours")

    with unraisables() as seen:
        list(read_batches(io.BytesIO(H + b"a,2021-01-30 10:00:00,1,x\n"), "t.csv",
                          stats=FileStats()))  # wraps the hook set above
        report: Callable[[Any], object] = sys.unraisablehook
        try:
            fail()
        except ValueError as err:
            report(type("U", (), {"exc_type": ValueError, "exc_value": err,
                                  "exc_traceback": err.__traceback__})())
    assert [str(u.exc_value) for u in seen] == ["not ours"]


def test_the_cli_prints_no_traceback_for_such_a_record(tmp_path: Path) -> None:
    day = tmp_path / "source" / "2021" / "01" / "30"
    day.mkdir(parents=True)
    (day / "a.csv").write_bytes(H + b"a,2021-01-30 10:00:00,1,x\n"
                                b"b,2021-01-30 10:00:00,1,\xff,\xfe\n"
                                b"c,2021-01-30 11:00:00,2,y\n")
    done = subprocess.run([sys.executable, "-m", "streamagg", "2021-01-30", "--source",
                           str(tmp_path / "source"), "--no-progress", "--max-bad-rows", "5"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    rejects = next((tmp_path / "source" / "results").rglob("*.rejects.csv")).read_text()
    assert "expected 4 fields, got 5" in rejects and "\\xff" in rejects

