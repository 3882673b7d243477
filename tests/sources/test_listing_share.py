"""The listing's share of --memory-limit holds while it lists: past it, exit 4, no more pages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamagg.budget import (
    LISTING_PATH_BYTES,
    LISTING_SEEN_BYTES,
    ListingAccount,
    listed_bytes,
)
from streamagg.errors import BadDataError
from streamagg.outputs.manifest import InputRecord
from streamagg.read.formats import name_kind
from streamagg.sources import InputFile
from streamagg.sources.local import LocalStorage
from streamagg.sources.s3 import S3Storage
from tests.fuzzing import fuzz_settings
from tests.reliability.helpers import PART
from tests.reliability.listing import PagedStore, etag

BASE = f"in/{PART}/"
ROOT = Path(__file__).resolve().parents[2]

# Names below the partition: inputs, other files, hidden ones, folder markers, in subfolders,
# of any length and (on S3) any characters.
EXTENSIONS = st.sampled_from([".csv", ".CSV.gz", ".txt", "/", ""])
FOLDERS = st.sampled_from(["", "a/", "a/b/", "_hidden/", "c d/"])


def refused(account: ListingAccount, list_it: Callable[[], object]) -> bool:
    try:
        list_it()
    except BadDataError as err:
        assert err.exit_code == 4
        message = str(err)
        assert f"listing stopped after {account.files:,} input file" in message, message
        assert "--memory-limit" in message and f"({account.where})" in message, message
        return True
    return False


@fuzz_settings(60)
@given(names=st.lists(st.tuples(FOLDERS, st.text(st.characters(codec="utf-8",
                                                               exclude_categories=["Cs"]),
                                                 min_size=1, max_size=40), EXTENSIONS,
                                st.sampled_from([0, 1, 5000])),
                      unique_by=lambda name: name[:3], max_size=40),
       pages=st.lists(st.integers(0, 9), max_size=8), share=st.integers(0, 24_000))
def test_an_s3_listing_stops_at_the_page_that_passes_its_share(
    names: list[tuple[str, str, str, int]], pages: list[int], share: int
) -> None:
    keys = sorted({f"{BASE}{folder}{name}{ext}": size for folder, name, ext, size in names}.items())
    store = PagedStore([key for key, _ in keys], pages, lengths=dict(keys))
    # What the account must hold after each page: every entry seen, then each input kept.
    held, passed_at = 0, None
    for number, page in enumerate(store.pages):
        held += LISTING_SEEN_BYTES * len(page)
        for key in page:
            size = store.lengths[key]
            if size and name_kind(key[len(BASE):]) == "input" and not key.endswith("/"):
                held += listed_bytes(key, etag(key))
        if held > share and passed_at is None:
            passed_at = number
    account = ListingAccount(share * 8, f"s3://bucket/{BASE}")
    assert account.share == share
    storage = S3Storage("s3://bucket/in", client=store)
    if refused(account, lambda: storage.list_partition(PART, account)):
        assert passed_at is not None, f"{account.held:,} held of {share:,}"
        assert store.calls == passed_at + 1  # not a page more was asked for
    else:
        assert passed_at is None and account.held == held <= share


LOCAL_NAMES = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"],
                                    exclude_characters="/"), min_size=1, max_size=30)


@fuzz_settings(20)
@given(names=st.lists(st.tuples(FOLDERS, LOCAL_NAMES, st.sampled_from([".csv", ".txt", ""]),
                                st.sampled_from([0, 1, 5000])),
                      unique_by=lambda name: (name[0], name[1] + name[2]), max_size=30),
       share=st.integers(0, 12_000))
def test_a_local_listing_is_refused_iff_what_it_holds_passes_its_share(
    names: list[tuple[str, str, str, int]], share: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        storage = LocalStorage(tmp)
        base = storage.root / PART
        base.mkdir(parents=True)
        for folder, name, ext, size in names:
            path = base / f"{folder}{name}{ext}"
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"x" * size)
            except OSError:
                continue  # ".", "..", a name too long, a file where a folder goes
        # Each input kept, and each visible folder walked, with its path as the walk names it.
        inputs, _ = storage.list_partition(PART)
        walked = []
        for folder, subfolders, _ in os.walk(str(base)):
            subfolders[:] = [name for name in subfolders if not name.startswith(("_", "."))]
            walked += [os.path.join(folder, name) for name in subfolders]
        held = (sum(listed_bytes(item.key, item.version) for item in inputs)
                + sum(LISTING_PATH_BYTES + sys.getsizeof(path) for path in walked))
        account = ListingAccount(share * 8, str(base))
        if refused(account, lambda: storage.list_partition(PART, account)):
            assert held > share
        else:
            assert account.held == held <= share


VERSIONS = st.sampled_from([f'"{7:032x}"', "2021-01-30T00:00:00.123456+00:00", '"x-12"'])


@fuzz_settings(10)
@given(key=st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1,
                   max_size=200), version=VERSIONS)
def test_the_formula_covers_what_a_kept_input_holds(key: str, version: str) -> None:
    # The InputFile, its manifest record and their place in lists, counted by tracemalloc for
    # 500 inputs of such keys (each its own strings, as listed), at most what is charged.
    count = 500
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        files = [InputFile(uri=f"s3://bucket/{key}{i:06d}", key=f"{key}{i:06d}",
                           size=10**9 + i, version=f"{version[:-1]}{i:06d}{version[-1]}")
                 for i in range(count)]
        records = [InputRecord(item, 10**6 + i, 10**5 + i) for i, item in enumerate(files)]
        held = (tracemalloc.get_traced_memory()[0] - before) / count
    finally:
        tracemalloc.stop()
    assert len(records) == count
    assert held <= listed_bytes(files[0].key, files[0].version), held


def test_an_input_file_keeps_its_uri_once_per_root() -> None:
    a = InputFile(uri=f"s3://bucket/{BASE}a.csv", key=f"{BASE}a.csv", size=1, version='"e"')
    b = InputFile(uri=f"s3://bucket/{BASE}b.csv", key=f"{BASE}b.csv", size=1, version='"e"')
    assert a.uri == f"s3://bucket/{BASE}a.csv" and a.head is b.head
    with pytest.raises(ValueError, match="ends with its key"):
        InputFile(uri="s3://bucket/x.csv", key="y.csv", size=1, version='"e"')


@pytest.mark.slow
def test_a_refused_listing_of_a_million_entries_peaks_near_its_share() -> None:
    # Holding the million entries took 536 MiB of VmHWM (82 MiB before listing) before they
    # were refused; charged as they come, the listing stops at the share (16 MiB at 128MB).
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "listing_memory.py"), "--entries",
         "1000000", "--memory-limit", "128MB"], capture_output=True, text=True, check=True,
        timeout=120)
    found = json.loads(out.stdout)
    assert found["refused"].startswith("listing stopped after ") and found["listed"] == 0
    assert found["pages_requested"] < 50  # of 1,000
    grew = found["vmhwm_mib"] - found["vmhwm_before_mib"]
    assert grew < 1.5 * found["share_mib"], found
