"""Listings are complete or the run fails: a stand-in store pages wrongly in every known way."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import Result
from hypothesis import given
from hypothesis import strategies as st

from streamagg import budget
from streamagg.budget import Budget
from streamagg.errors import StorageError
from streamagg.sources import s3_listing
from streamagg.sources.s3 import S3Storage
from tests.conftest import DAY, DAY_ARG, MANIFEST_NAME, OUTPUT_NAME, S3
from tests.fuzzing import fuzz_settings
from tests.reference import expected_day
from tests.reliability.faults import FaultProxy
from tests.reliability.helpers import PART, H, error_line, put_day, results, rows
from tests.reliability.listing import MISBEHAVIOURS, PagedStore

pytestmark = pytest.mark.s3
Cli = Callable[..., Result]

# What the error line says for each way of paging wrongly.
WORDS = {
    "truncated_without_token": "marked truncated but gives no continuation token",
    "key_twice": "listed twice",
    "token_cycle": "continuation token seen before",
    "token_repeated": "continuation token seen before",
    "outside_prefix": "outside the prefix",
    "endless": "makes no progress",
    "endless_keys": "listing never ends: 20 pages",
}


@pytest.fixture(autouse=True)
def few_empty_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_listing, "MAX_EMPTY_PAGES", 5)
    monkeypatch.setattr(s3_listing, "MAX_PAGES", 20)  # more than any listing here has


def three_files() -> dict[str, str | bytes]:
    return {f"{name}.csv": H + rows(100, prefix=name) for name in "abc"}


@pytest.mark.parametrize("misbehave", ["none", *MISBEHAVIOURS])
def test_a_day_listed_wrongly_fails_naming_the_prefix_and_writes_nothing(
    cli: Cli, s3: S3, proxy: FaultProxy, misbehave: str
) -> None:
    stored = put_day(s3, "in", three_files())
    proxy.add("listing", method="GET", query="list-type=2", times=-1, misbehave=misbehave)
    result = cli(DAY_ARG, "--source", f"{s3.uri}/in", "--dest", f"{s3.uri}/out",
                 "--endpoint-url", proxy.url)
    if misbehave == "none":  # the stand-in's paging itself is right: the day is whole
        assert result.exit_code == 0, result.output
        partition = [seen for seen in proxy.requests("listing") if f"prefix=in/{PART}" in
                     seen.query.replace("%2F", "/")]
        assert len(partition) == 3  # one page per file
        found = results(s3, "out")
        manifest = json.loads(found[MANIFEST_NAME])
        assert found[OUTPUT_NAME] == expected_day(stored, DAY).output
        assert len(manifest["inputs"]) == 3 and manifest["totals"]["rows_read"] == 300
        return
    assert result.exit_code == 1, result.output
    message = error_line(result.stderr)
    assert WORDS[misbehave] in message, message
    assert f"(s3://{s3.bucket}/in/{PART}/)" in message, message
    assert results(s3, "out") == {}  # never a partial or doubled day


@pytest.mark.parametrize("misbehave", MISBEHAVIOURS)
@pytest.mark.parametrize("listing", ["state folder", "uploads"])
def test_every_other_listing_is_checked_too(
    s3: S3, proxy: FaultProxy, misbehave: str, listing: str
) -> None:
    storage = S3Storage(f"{s3.uri}/out", endpoint_url=proxy.url)
    folder = f"{PART}/_state"
    for name in "abc":
        if listing == "uploads":
            s3.client.create_multipart_upload(Bucket=s3.bucket, Key=f"out/{PART}/{name}.csv")
        else:
            s3.put(f"out/{folder}/{name}.arrow", b"x")
    query = "uploads" if listing == "uploads" else "list-type=2"
    proxy.add("listing", method="GET", query=query, times=-1, misbehave=misbehave)
    with pytest.raises(StorageError) as failed:
        if listing == "uploads":
            storage.remove_abandoned([f"{PART}/a.csv"], older_than=0)
        else:
            storage.list_below(folder)
    prefix = f"out/{PART}/" + ("" if listing == "uploads" else "_state/")
    assert WORDS[misbehave] in str(failed.value) and f"s3://{s3.bucket}/{prefix}" in str(
        failed.value)


@pytest.mark.parametrize(("files", "fit"), [(3, 3), (8, 3)])
def test_a_day_past_its_share_on_s3_is_refused_while_listing(
    cli: Cli, s3: S3, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch, files: int, fit: int
) -> None:
    # Three inputs fit the 16 MiB share of 128MB once each is charged a third of it.
    share = Budget.of(128 * 2**20).listing_bytes
    monkeypatch.setattr(budget, "LISTED_FILE_BYTES", share // fit - 1_000)
    put_day(s3, "in", {f"{n}.csv": H + rows(10, prefix=str(n)) for n in range(files)})
    proxy.add("listing", method="GET", query="list-type=2", times=-1, misbehave="none")
    for dry_run in (["--dry-run"], []):
        result = cli(DAY_ARG, "--source", f"{s3.uri}/in", "--dest", f"{s3.uri}/out",
                     "--endpoint-url", proxy.url, "--memory-limit", "128MB", *dry_run)
        if files <= fit:
            assert result.exit_code == 0, result.output
            continue
        assert result.exit_code == 4, result.output
        (line,) = [line for line in result.stderr.splitlines() if line.strip()]
        assert f"listing stopped after {fit + 1:,} input files" in line, line
        assert f"(s3://{s3.bucket}/in/{PART})" in line and "raise --memory-limit" in line, line
    pages = [seen for seen in proxy.requests("listing")
             if f"prefix=in/{PART}" in seen.query.replace("%2F", "/")]
    # One entry a page: each run stopped at the page that passed the share.
    assert len(pages) == 2 * min(files, fit + 1)
    assert bool(results(s3, "out")) == (files <= fit)  # written only by the run that fits


# --- the same, without HTTP: any listing, paged any way, corrupted any way ---------------------


# A key is any text below the prefix: control characters and URL syntax included.
KEYS = st.lists(st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1,
                        max_size=8).map(lambda name: f"in/{name}"), unique=True, max_size=12)


@pytest.mark.fuzz
@fuzz_settings(100)
@given(keys=KEYS, sizes=st.lists(st.integers(0, 4), max_size=4),
       fault=st.sampled_from(["none", *MISBEHAVIOURS]), at=st.integers(0, 4))
def test_a_listing_returns_every_key_once_or_fails(
    keys: list[str], sizes: list[int], fault: str, at: int
) -> None:
    # Fewer empty pages in a row than MAX_EMPTY_PAGES (5 here) unless the fault is "endless".
    store = PagedStore(keys, sizes, fault, at)
    try:
        listed = S3Storage("s3://bucket", client=store).list_below("in")
    except StorageError as err:
        assert store.corrupts, err
        assert "(s3://bucket/in/)" in str(err)
        return
    assert not store.corrupts, f"{fault} at page {store.at} of {store.pages} passed"
    assert listed == sorted(keys)  # whole, and each key once


class _Endless:
    """A store that answers every page just in time: a fresh key and a fresh token, for ever."""

    def __init__(self) -> None:
        self.calls = 0

    def list_objects_v2(self, **params: Any) -> dict[str, Any]:
        self.calls += 1
        time.sleep(0.01)
        return {"IsTruncated": True, "NextContinuationToken": f"t{self.calls}",
                "Contents": [{"Key": f"in/{self.calls:09}", "Size": 1, "ETag": '"e"'}]}


def test_a_listing_that_never_ends_is_given_up_on_at_its_deadline(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each page well within its own deadline, the whole past ten of them.
    monkeypatch.setattr(s3_listing, "MAX_PAGES", 10**6)
    monkeypatch.setenv("STREAMAGG_S3_DEADLINE", "0.05")
    store = _Endless()
    began = time.monotonic()
    with pytest.raises(StorageError) as failed:
        S3Storage("s3://bucket", client=store).list_below("in")
    assert "listing never ends" in str(failed.value) and "(s3://bucket/in/)" in str(failed.value)
    assert "0.5 s (the listing's deadline, 10 x STREAMAGG_S3_DEADLINE)" in str(failed.value)
    assert 0.5 <= time.monotonic() - began < 5 and store.calls > 5


def test_a_listing_past_its_entries_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_listing, "MAX_ENTRIES", 30)
    store = PagedStore([f"in/{n:03}" for n in range(40)], [10, 10, 10], "none", 0)
    with pytest.raises(StorageError) as failed:
        S3Storage("s3://bucket", client=store).list_below("in")
    assert "3 pages and 30 entries" in str(failed.value)
