"""The input-format registry: extensions in any case, compression by content, damaged gzip."""

from __future__ import annotations

import gzip
import importlib
import io
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from streamagg.errors import StorageError
from streamagg.read import gunzip, open_decompressed, reader_for
from streamagg.read.formats import COMPRESSIONS, name_kind
from streamagg.sources import InputFile
from tests.conftest import DAY, DAY_ARG, MANIFEST_NAME, OUTPUT_NAME, S3, day_path
from tests.reference import expected_day
from tests.reliability.helpers import H, error_line, rows

Cli = Callable[..., Result]


def item(key: str, size: int = 1000) -> InputFile:
    return InputFile(uri=f"/data/{key}", key=key, size=size, version="v")


@pytest.fixture(params=["isal", "zlib"])
def decompressor(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each gunzip: ISA-L's, and the standard library's that is used where isal cannot load."""
    if request.param == "zlib":
        monkeypatch.setitem(sys.modules, "isal", None)  # import isal raises ImportError
        importlib.reload(gunzip)
        assert gunzip.GZIP.decompress(io.BytesIO(gzip.compress(b"x"))).__class__ is gzip.GzipFile
    yield request.param
    if request.param == "zlib":
        monkeypatch.undo()
        importlib.reload(gunzip)


# --- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "compressed"), [
    ("a.csv", False), ("A.CSV", False), ("b.Csv.Gz", True), ("sub/c.csv.GZ", True)])
def test_extensions_match_in_any_case(key: str, compressed: bool) -> None:
    reader = reader_for(item(key, 1000))
    assert reader.format.name == "csv"
    assert (reader.named_compression is not None) is compressed
    assert reader.expected_bytes == (int(1000 * gunzip.GZIP.expansion) if compressed else 1000)
    assert name_kind(key) == "input"


@pytest.mark.parametrize(("key", "kind"), [
    ("a.txt", "other"), ("a.csv.bak", "other"), ("a.gz", "other"), ("a.c\u017fv", "other"),
    ("_SUCCESS", "hidden"), (".a.CSV", "hidden"), ("_tmp/a.csv", "hidden")])
def test_other_names_are_not_inputs(key: str, kind: str) -> None:
    assert name_kind(key) == kind
    if kind == "other":
        with pytest.raises(ValueError, match="no input format"):
            reader_for(item(key))


def test_every_compression_has_magic_bytes_and_a_suffix() -> None:
    for name in COMPRESSIONS:
        compression = COMPRESSIONS.load(name)
        assert compression.name == name and compression.magic and compression.suffix


# --- content ----------------------------------------------------------------------------------


class Trickle(io.RawIOBase):
    """A stream that gives at most ``step`` bytes a read, as a network body may."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = memoryview(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._step, len(self._data))
        buffer[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


def read_all(stream: Any, size: int, readinto: bool) -> bytes:
    out = bytearray()
    while True:
        if readinto:
            buffer = bytearray(size)
            n = stream.readinto(buffer)
            chunk = bytes(buffer[:n])
        else:
            chunk = stream.read(size)
        if not chunk:
            return bytes(out)
        out += chunk


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=4000), compressed=st.booleans(), members=st.integers(1, 3),
       step=st.integers(1, 600), size=st.integers(1, 5000), readinto=st.booleans())
def test_the_content_decides_whether_to_gunzip(decompressor: str, content: bytes,
                                               compressed: bool, members: int, step: int,
                                               size: int, readinto: bool) -> None:
    assume(compressed or not content.startswith(b"\x1f\x8b"))  # such bytes are gzip, not text
    cut = [len(content) * i // members for i in range(members + 1)]
    parts = [content[a:b] for a, b in zip(cut, cut[1:], strict=False)]  # empty members too
    stored = b"".join(gzip.compress(p, mtime=0) for p in parts) if compressed else content
    stream = open_decompressed(Trickle(stored, step), "/data/x.csv")  # type: ignore[arg-type]
    assert read_all(stream, size, readinto) == content


# --- whole runs ---------------------------------------------------------------------------------


def run_day(cli: Cli, source: Path) -> tuple[Result, dict[str, Any] | None]:
    result = cli(DAY_ARG, "--source", source, "--dest", source / "out")
    folder = source / "out" / day_path(DAY)
    manifest = json.loads((folder / MANIFEST_NAME).read_text()) if result.exit_code == 0 else None
    return result, manifest


def test_names_in_any_case_and_compression_by_content_are_read(
        cli: Cli, tmp_path: Path, decompressor: str) -> None:
    text = [H + rows(40, prefix=p) for p in "abcdef"]
    files = {
        "A.CSV": text[0].encode(),
        "b.Csv.Gz": gzip.compress(text[1].encode()),
        "c.csv": gzip.compress(text[2].encode()),  # gzip without the name saying so
        "d.csv.gz": text[3].encode(),  # text despite the name
        # concatenated members, an empty one among them, and zero padding after the last
        "e.csv": gzip.compress(text[4][:100].encode()) + gzip.compress(b"")
        + gzip.compress(text[4][100:].encode()) + bytes(16),
        "f.csv.gz": gzip.compress(b""),  # one empty member: a file without a header
    }
    folder = tmp_path / day_path(DAY)
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    result, manifest = run_day(cli, tmp_path)
    assert result.exit_code == 0, result.output
    # The reference has no notion of a file without a header: it counts as one empty file.
    expected = expected_day([(k, v) for k, v in files.items() if k != "f.csv.gz"], DAY)
    expected.totals["empty_files"] += 1
    assert (tmp_path / "out" / day_path(DAY) / OUTPUT_NAME).read_bytes() == expected.output
    assert manifest is not None and manifest["totals"] == expected.totals
    assert manifest["totals"]["rows_read"] == 5 * 40


GOOD = gzip.compress((H + rows(3000)).encode())
DAMAGED = {
    "truncated": GOOD[:-4000],
    "cut in its trailer": GOOD[:-3],
    "garbage after a member": GOOD + b"garbage after the member",
    "corrupt deflate blocks": GOOD[:20] + bytes(64) + GOOD[84:],
    "a wrong CRC": GOOD[:-8] + b"\0\0\0\0" + GOOD[-4:],
    "magic bytes alone": b"\x1f\x8b",
    "a header alone": GOOD[:10],
}


@pytest.mark.parametrize("damage", list(DAMAGED))
def test_damaged_gzip_ends_in_one_line_naming_the_file(cli: Cli, tmp_path: Path, damage: str,
                                                       decompressor: str) -> None:
    name = "bad.csv.gz" if list(DAMAGED).index(damage) % 2 else "bad.csv"  # by content
    folder = tmp_path / day_path(DAY)
    folder.mkdir(parents=True)
    (folder / "a.csv").write_text(H + rows(5))
    (folder / name).write_bytes(DAMAGED[damage])
    result, _ = run_day(cli, tmp_path)
    assert result.exit_code == 1, result.output
    message = error_line(result.stderr)
    assert "read failed: damaged gzip data" in message and str(folder / name) in message, message
    assert not (tmp_path / "out" / day_path(DAY)).exists()


def test_damaged_gzip_raises_a_storage_error_naming_the_input() -> None:
    stream = open_decompressed(io.BytesIO(DAMAGED["truncated"]), "s3://b/k.csv")
    with pytest.raises(StorageError) as info:
        read_all(stream, 1 << 16, readinto=False)
    assert "s3://b/k.csv" in str(info.value) and "ends inside a member" in str(info.value)


@pytest.mark.s3
def test_an_object_uploaded_with_content_encoding_gzip_is_gunzipped(cli: Cli, s3: S3) -> None:
    text = H + rows(50)
    key = f"in/{day_path(DAY)}/a.csv"
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=gzip.compress(text.encode()),
                         ContentEncoding="gzip", ContentType="text/csv")
    result = cli(DAY_ARG, "--source", f"{s3.uri}/in", "--endpoint-url", s3.endpoint)
    assert result.exit_code == 0, result.output
    expected = expected_day([("a.csv", text.encode())], DAY)
    assert s3.get(f"in/results/{day_path(DAY)}/{OUTPUT_NAME}") == expected.output
