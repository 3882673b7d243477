"""The output's bytes, and atomic publication that leaves the old file or the new one."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from streamagg.aggregate import HourlyRow
from streamagg.config import Schema
from streamagg.errors import StorageError
from streamagg.outputs.csv import csv_field, format_bucket, publish, write_output
from streamagg.sources.local import LocalStorage

DAY_START = 1611964800  # 2021-01-30 00:00:00 UTC


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
    digest = write_output(rows, out)
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
    digest = write_output(rows, out)
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
