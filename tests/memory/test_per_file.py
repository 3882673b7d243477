"""What is kept per file listed stays within its share: the manifest streamed one input at a time
(same bytes), and a listing past the share refused with exit 4 before a file is read."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamagg.budget import Budget, ListingAccount, listed_bytes
from streamagg.config import Config
from streamagg.errors import BadDataError
from streamagg.outputs.manifest import InputRecord, Manifest
from streamagg.sources import InputFile

MiB = 2**20
WHERE = "/data/2021/01/30"
texts = st.text(st.characters(codec="utf-8"), max_size=30)


def listed(n: int, name: str = "part") -> list[InputFile]:
    return [InputFile(uri=f"/data/2021/01/30/{name}-{i:06d}.csv", key=f"{name}-{i:06d}.csv",
                      size=5000, version="2021-01-30T00:00:00.000000000Z") for i in range(n)]


def refuse_long_listing(inputs: list[InputFile], memory_limit: int, where: str) -> None:
    """Each input charged to the listing's share, as the storages charge them while listing."""
    account = ListingAccount(memory_limit, where)
    for item in inputs:
        account.keep(item.key, item.version)


@settings(max_examples=40, deadline=None)
@given(names=st.lists(texts, max_size=4),
       source=st.text(st.characters(codec="utf-8", categories=["L", "N", "P", "S"]), max_size=9))
def test_the_streamed_manifest_is_the_whole_manifest_byte_for_byte(names: list[str],
                                                                   source: str) -> None:
    # Names with quotes, control characters, '"inputs": []' and any UTF-8 (the source option
    # refuses control characters): json escapes them alike.
    config = Config(day="2021-01-30", source=f"/{source}" + '"inputs": []', dest="/out")
    now = dt.datetime(2021, 1, 31, tzinfo=dt.UTC)
    manifest = Manifest(config=config, started=now, finished=now)
    manifest.inputs = [InputRecord(InputFile(uri=f"/{n}", key=n, size=i, version=n), i, 0)
                       for i, n in enumerate(names)]
    out = io.StringIO()
    manifest.write_json(out)
    assert out.getvalue() == manifest.to_json()
    assert len(json.loads(out.getvalue())["inputs"]) == len(names)


@pytest.mark.parametrize("limit_mib", [128, 192, 256, 1024])
def test_a_listing_within_its_share_runs_and_past_it_is_refused(limit_mib: int) -> None:
    share = Budget.of(limit_mib * MiB).listing_bytes
    assert share == limit_mib * MiB // 8
    one = listed(1)[0]
    per_file = listed_bytes(one.key, one.version)
    fits = share // per_file
    refuse_long_listing(listed(fits), limit_mib * MiB, WHERE)  # no error
    with pytest.raises(BadDataError) as refused:
        refuse_long_listing(listed(fits + 1), limit_mib * MiB, WHERE)
    assert refused.value.exit_code == 4
    message = str(refused.value)
    assert f"listing stopped after {fits + 1:,} input files" in message
    assert "--memory-limit" in message
    assert "/data/2021/01/30" in message


def test_a_day_of_40000_files_fits_the_default_limit() -> None:
    # The day of 40,000 one-row files runs under 256MB (about 100,000 files fit).
    refuse_long_listing(listed(40_000), 256 * MiB, WHERE)
