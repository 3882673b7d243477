"""The output's bytes, and atomic publication that leaves the old file or the new one."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamagg.aggregate import HourlyRow
from streamagg.config import Schema
from streamagg.errors import StorageError
from streamagg.outputs.csv import csv_field, format_bucket, publish, write_output
from streamagg.sources.local import LocalStorage

DAY_START = 1611964800  # 2021-01-30 00:00:00 UTC


def counts_of(rows: list[HourlyRow], grain: int = 3600) -> list[pa.Table]:
    """The rows as the counts hand them to the writer: (group, bucket, count) tables."""
    return [pa.table({"group": pa.array([r.group for r in rows], pa.string()),
                      "bucket": pa.array([r.bucket_start // grain for r in rows], pa.int64()),
                      "count": pa.array([r.count for r in rows], pa.int64())})]


def test_fields_quoted_only_where_needed() -> None:
    assert csv_field("plain text é") == "plain text é"
    assert csv_field("a,b") == '"a,b"'
    assert csv_field('say "hi"') == '"say ""hi"""'
    assert csv_field("a\nb") == '"a\nb"'
    assert csv_field("a\rb") == '"a\rb"'
    assert csv_field("") == ""


def test_bucket_format() -> None:
    assert format_bucket(DAY_START + 10 * 3600) == "2021-01-30 10:00:00"
    assert format_bucket(-3600) == "1969-12-31 23:00:00"


def test_output_bytes_and_digest() -> None:
    rows = [
        HourlyRow("7", DAY_START, 2),
        HourlyRow("Acme, Inc.", DAY_START, 1),
        HourlyRow('q"t', DAY_START + 3600, 12345678901),
        HourlyRow("caf\u00e9", DAY_START + 3600, 1),
    ]
    out = io.BytesIO()
    digest = write_output(counts_of(rows), out)
    data = out.getvalue()
    assert data == (
        b"CAMPAIGN_ID,HOUR,IMPRESSIONS\n"
        b"7,2021-01-30 00:00:00,2\n"
        b'"Acme, Inc.",2021-01-30 00:00:00,1\n'
        b'"q""t",2021-01-30 01:00:00,12345678901\n'
        b"caf\xc3\xa9,2021-01-30 01:00:00,1\n"
    )
    assert digest == hashlib.sha256(data).hexdigest()


def test_header_always_and_names_from_schema() -> None:
    out = io.BytesIO()
    write_output([], out, Schema(group_column="AD_GROUP", bucket_column="SLOT", count_column="N"))
    assert out.getvalue() == b"AD_GROUP,SLOT,N\n"


def test_many_rows_stream_identically() -> None:
    rows = [HourlyRow(str(i), DAY_START + (i % 24) * 3600, i) for i in range(25_001)]
    out = io.BytesIO()
    digest = write_output(counts_of(rows[:7]) + counts_of(rows[7:]), out)
    lines = out.getvalue().decode().split("\n")
    assert len(lines) == 25_003 and lines[-1] == ""
    assert lines[25_001] == f"25000,2021-01-30 {25000 % 24:02d}:00:00,25000"
    assert digest == hashlib.sha256(out.getvalue()).hexdigest()


def test_publish_replaces_atomically(tmp_path: Path) -> None:
    storage = LocalStorage(str(tmp_path / "dest"))
    new = tmp_path / "new.csv"
    new.write_bytes(b"v1\n")
    uri = publish(storage, str(new), "2021/01/30/out.csv")
    target = tmp_path / "dest/2021/01/30/out.csv"
    assert uri == str(target) and target.read_bytes() == b"v1\n"
    new.write_bytes(b"v2\n")
    publish(storage, str(new), "2021/01/30/out.csv")
    assert target.read_bytes() == b"v2\n"
    assert sorted(os.listdir(target.parent)) == ["out.csv"]


def test_failed_publish_keeps_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = LocalStorage(str(tmp_path / "dest"))
    new = tmp_path / "new.csv"
    new.write_bytes(b"old\n")
    publish(storage, str(new), "out.csv")
    new.write_bytes(b"new\n")

    def refuse(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(StorageError) as info:
        publish(storage, str(new), "out.csv")
    assert "out.csv" in str(info.value)
    assert (tmp_path / "dest/out.csv").read_bytes() == b"old\n"
    assert os.listdir(tmp_path / "dest") == ["out.csv"]


FIELD_TEXT = st.text(st.sampled_from(["a", ",", '"', "\r", "\n", "\u00e9", "\U0001f600", " ", "7"]),
                     min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(FIELD_TEXT, st.integers(-10**5, 10**6),
                               st.integers(-(2**63), 2**63 - 1)), max_size=30),
       grain=st.sampled_from([1, 900, 3600]), cut=st.integers(0, 30))
def test_lines_built_column_by_column_are_those_of_the_row_rules(
    rows: list[tuple[str, int, int]], grain: int, cut: int
) -> None:
    """The writer renders whole columns at once; the bytes are those `csv_field` and
    `format_bucket` give row by row, whatever the slices it is handed."""
    objects = [HourlyRow(g, b * grain, c) for g, b, c in rows]
    out = io.BytesIO()
    write_output(counts_of(objects[:cut], grain) + counts_of(objects[cut:], grain), out,
                 grain_seconds=grain)
    want = "CAMPAIGN_ID,HOUR,IMPRESSIONS\n" + "".join(
        f"{csv_field(g)},{format_bucket(b * grain)},{c}\n" for g, b, c in rows)
    assert out.getvalue() == want.encode("utf-8")
