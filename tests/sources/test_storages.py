"""Listing a day's inputs: the same names, order and empty-file count on every storage."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamagg.errors import UsageError
from streamagg.read import reader_for
from streamagg.sources import is_input_name, storage_for
from streamagg.sources.local import LocalStorage
from streamagg.sources.s3 import S3Storage
from tests.conftest import S3

FILES: dict[str, bytes] = {
    "b.csv": b"x",
    "a.csv.gz": b"x",
    "a/z.csv": b"x",
    "a.csv": b"x",
    "A.csv": b"x",
    "sub/deeper/c.csv": b"x",
    "empty.csv": b"",
    "sub/empty.csv.gz": b"",
    "_SUCCESS": b"",
    "_part.csv": b"x",
    ".hidden.csv": b"x",
    "_tmp/inside.csv": b"x",
    "notes.txt": b"x",
    "x.csv.bak": b"x",
    "x.CSV.tmp": b"x",
    "C.CSV": b"x",
    "d.Csv.Gz": b"x",
}
# Lexicographic by full path: "a.csv" < "a.csv.gz" < "a/z.csv" because "." < "/".
EXPECTED = ["A.csv", "C.CSV", "a.csv", "a.csv.gz", "a/z.csv", "b.csv", "d.Csv.Gz",
            "sub/deeper/c.csv"]


@pytest.mark.parametrize(
    ("name", "wanted"),
    [
        ("a.csv", True),
        ("a.csv.gz", True),
        ("sub/a.csv", True),
        ("_SUCCESS", False),
        (".a.csv", False),
        ("_a.csv", False),
        ("a.txt", False),
        ("a.csv.tmp", False),
        ("a.gz", False),
        ("A.CSV", True),
        ("b.Csv.Gz", True),
        ("sub/_x/a.csv", False),
        ("a.c\u017fv", False),  # casefolds to .csv, but is not ASCII
    ],
)
def test_input_names(name: str, wanted: bool) -> None:
    assert is_input_name(name) is wanted


def test_local_listing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for name, data in FILES.items():
        path = root / "2021/01/30" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    storage = storage_for(str(root))
    assert isinstance(storage, LocalStorage)
    inputs, empty = storage.list_partition("2021/01/30")
    assert [i.key.split("2021/01/30/", 1)[1] for i in inputs] == EXPECTED
    assert empty == 2
    assert all(i.size == 1 and i.version for i in inputs)
    assert [reader_for(i).named_compression is not None for i in inputs] == [
        False, False, False, True, False, False, True, False]
    assert storage.list_partition("2021/01/31") == ([], 0)


@pytest.mark.s3
def test_s3_listing_matches_local(s3_any: S3) -> None:
    s3 = s3_any  # on moto and on SeaweedFS
    for name, data in FILES.items():
        s3.client.put_object(Bucket=s3.bucket, Key=f"root/2021/01/30/{name}", Body=data)
    storage = storage_for(f"s3://{s3.bucket}/root", endpoint_url=s3.endpoint)
    assert isinstance(storage, S3Storage)
    inputs, empty = storage.list_partition("2021/01/30")
    assert [i.key.split("2021/01/30/", 1)[1] for i in inputs] == EXPECTED
    assert empty == 2
    assert all(i.uri.startswith(f"s3://{s3.bucket}/root/2021/01/30/") and i.version for i in inputs)
    with storage.open_input(inputs[0]) as stream:
        assert stream.read() == b"x"


@pytest.mark.parametrize("uri", ["gs://bucket/x", "s3://", "s3://key:secret@bucket/x"])
def test_unusable_uris_are_usage_errors(uri: str) -> None:
    with pytest.raises(UsageError) as info:
        storage_for(uri)
    assert "secret" not in str(info.value)
