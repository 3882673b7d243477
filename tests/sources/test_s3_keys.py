"""Every key S3 lists can be read: control characters and URL syntax in keys, on moto and
SeaweedFS, through listing, reading, the manifest and a rerun's comparison."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from botocore.exceptions import ClientError
from click.testing import Result
from hypothesis import example, given
from hypothesis import strategies as st

from streamagg.errors import printable
from streamagg.sources.s3 import S3Storage
from tests.conftest import DAY, DAY_ARG, MANIFEST_NAME, OUTPUT_NAME, S3, to_bytes
from tests.fuzzing import fuzz_settings
from tests.reference import expected_day

pytestmark = pytest.mark.s3
Cli = Callable[..., Result]
H = "IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n"
PART = "2021/01/30"

# Every ASCII control character, and what a URI would take for syntax or trim.
NASTY = [chr(code) for code in (*range(0x20), 0x7F)] + ["%", "%2F", "+", "?", "#", " ", "&",
                                                          "=", ";", "\\", "'", '"', "<", "~"]


@pytest.fixture
def s3(s3_any: S3) -> S3:
    return s3_any


def names() -> list[str]:
    """Every character of `NASTY` in a name and in a folder name (four to a name, so a day
    stays small), and folders with trailing spaces."""
    groups = ["".join(NASTY[at:at + 4]) for at in range(0, len(NASTY), 4)]
    return ([f"k{group}x.csv" for group in groups] + [f"d{group}/y.csv" for group in groups]
            + ["trailing  /z.csv", "ends with spaces   /w.csv"])


def test_keys_with_any_character_are_listed_read_and_recorded(cli: Cli, s3: S3) -> None:
    stored: list[tuple[str, bytes]] = []
    refused: list[str] = []
    for number, name in enumerate(names()):
        data = to_bytes(name, H + f"i{number},2021-01-30 {number % 24:02d}:00:00,{number % 5}\n")
        try:
            s3.put(f"in/{PART}/{name}", data)
        except ClientError:
            refused.append(name)  # the server itself cannot hold this key
            continue
        stored.append((name, data))
    # Servers that cannot hold a key at all: moto's router loses one holding a newline,
    # SeaweedFS refuses NUL. Every key a server holds must be read.
    refusing = "\n" if s3.server == "moto" else "\x00"
    assert refused == [name for name in names() if refusing in name], [
        printable(name) for name in refused]
    args = [DAY_ARG, "--source", f"{s3.uri}/in", "--dest", f"{s3.uri}/out",
            "--endpoint-url", s3.endpoint]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    # What the server lists is what must be read (SeaweedFS stores a backslash as "/").
    base = f"in/{PART}/"
    listed = [(key[len(base):], s3.get(key)) for key in s3.keys(base)]
    assert len(listed) == len(stored)
    manifest = json.loads(s3.get(f"out/{PART}/{MANIFEST_NAME}"))
    assert sorted(entry["path"] for entry in manifest["inputs"]) == sorted(
        f"{s3.uri}/{base}{name}" for name, _ in listed)
    expected = expected_day(listed, DAY)
    assert manifest["totals"] == expected.totals
    assert s3.get(f"out/{PART}/{OUTPUT_NAME}") == expected.output
    # The manifest's paths match the listing again: nothing looks new, gone or modified.
    check = cli(*args, "--check", "--log-format", "json")
    assert check.exit_code == 0, check.output
    assert "unchanged" in check.stdout, check.stdout


KEY_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"],
                                 exclude_characters="\n\r/"), min_size=1, max_size=10).filter(
    lambda name: not name.startswith(("_", ".")))


@pytest.mark.fuzz
@fuzz_settings(10)
@given(name=KEY_TEXT)
@example(name="tab\there")  # lost on the way through a URI, as smart_open parsed it
@example(name="a?b#c%41+d ")
def test_any_listed_key_reads_back_its_own_bytes(s3_moto: S3, name: str) -> None:
    key = f"in/{PART}/{name}.csv"
    data = f"{H}{name!r}\n".encode()
    s3_moto.put(key, data)
    storage = S3Storage(f"{s3_moto.uri}/in", endpoint_url=s3_moto.endpoint)
    listed = {item.key: item for item in storage.list_partition(PART)[0]}
    assert key in listed
    with storage.open_input(listed[key]) as body:
        assert body.read() == data


@pytest.fixture
def s3_moto(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> S3:
    from tests.conftest import bucket_on

    return bucket_on(moto_server, monkeypatch)
