"""Every S3 call has a deadline: a store that stalls or drips any kind of call is given up on."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config as BotoConfig
from click.testing import Result

from streamagg.errors import StorageError
from streamagg.sources import s3_client
from streamagg.sources.s3 import S3Storage
from streamagg.sources.s3_deadlines import Deadline, enforce
from tests.conftest import DAY_ARG, S3
from tests.reliability.faults import FaultProxy
from tests.reliability.helpers import PART, H, error_line, put_day, results, rows

pytestmark = pytest.mark.s3
Cli = Callable[..., Result]
DEADLINE = 0.4  # seconds: a healthy call to moto takes a few milliseconds
SLACK = 8.0  # a loaded machine's scheduling, and the retry that finds the call expired
OUT = rf"/out/{PART}/x\.csv$"

# Each kind of call: its operation, the request it sends (method, path regex, query
# substring), and (in `call`) what makes the storage send it.
KINDS: dict[str, tuple[str, str, str, str]] = {
    "list": ("ListObjectsV2", "GET", "", "list-type=2"),
    "list uploads": ("ListMultipartUploads", "GET", "", "uploads"),
    "check bucket": ("HeadBucket", "HEAD", r"^/[^/]+/?$", ""),
    "read": ("GetObject", "GET", rf"/in/{PART}/a\.csv$", ""),
    "read state": ("GetObject", "GET", r"/out/state\.json$", ""),
    "upload": ("PutObject", "PUT", OUT, ""),
    "start upload": ("CreateMultipartUpload", "POST", OUT, "uploads"),
    "upload part": ("UploadPart", "PUT", OUT, "partNumber=2"),
    "complete upload": ("CompleteMultipartUpload", "POST", OUT, "uploadId="),
    "abort upload": ("AbortMultipartUpload", "DELETE", OUT, "uploadId="),
    "delete": ("DeleteObject", "DELETE", OUT, ""),
}


class OnlyFor:
    """The storage's deadline in these tests: `DEADLINE` for the call under test, a long one
    for the healthy calls around it (a multipart upload's other steps), which a loaded machine
    may slow past a fraction of a second. botocore's own ``before-call`` event, registered
    before the storage's, says which call is starting."""

    def __init__(self, operation: str) -> None:
        self.operation = operation
        self.current = ""

    def of_call(self, sent: int) -> float:
        return DEADLINE if self.current == self.operation else 60.0

    def of_listing(self) -> float:
        return 600.0  # a whole listing: each page's own deadline is the one under test

    def starting(self, model: Any, **_: Any) -> None:
        self.current = model.name


def call(kind: str, storage: S3Storage, s3: S3, tmp_path: Path) -> None:
    """Make the storage send the kind of call ``kind``."""
    local = tmp_path / "x.csv"
    local.write_bytes(b"x" * (3 * 1024 if "upload" in kind and kind != "upload" else 100))
    if kind == "list":
        storage.list_partition(PART)
    elif kind == "list uploads":
        storage.remove_abandoned([f"{PART}/x.csv"], older_than=0)
    elif kind == "check bucket":
        storage.check_destination()
    elif kind == "read":
        (item,), _ = S3Storage(f"{s3.uri}/in", endpoint_url=s3.endpoint).list_partition(PART)
        with storage.open_input(item) as body:
            body.read()
    elif kind == "read state":
        storage.read_bytes("state.json")
    elif kind == "delete":
        storage.remove(f"{PART}/x.csv")
    else:
        storage.publish(str(local), f"{PART}/x.csv")


@pytest.mark.parametrize("fault", ["stall", "drip"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_call_that_stalls_or_drips_fails_at_its_deadline_naming_it(
    s3: S3, proxy: FaultProxy, small_parts: int, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path, kind: str, fault: str,
) -> None:
    if kind in ("list", "read"):
        put_day(s3, "in", {"a.csv": H + rows(10)})
    elif kind == "read state":
        s3.put("out/state.json", b"{}")
    if kind == "abort upload":  # a part fails for good, then its upload's abort hangs
        proxy.add("status", method="PUT", path=OUT, query="partNumber=2", times=-1)
    operation, method, path, query = KINDS[kind]
    hung = proxy.add(fault, method=method, path=path, query=query, times=-1, interval=0.1)
    root = "in" if kind in ("list", "read") else "out"
    storage = S3Storage(f"{s3.uri}/{root}", endpoint_url=proxy.url)
    deadline = OnlyFor(operation)
    storage.deadline = deadline  # type: ignore[assignment]
    storage.client.meta.events.register_first("before-call.s3", deadline.starting)
    began = time.monotonic()
    with pytest.raises(StorageError) as failed:
        call(kind, storage, s3, tmp_path)
    elapsed = time.monotonic() - began
    assert hung.hits == 1, "a call past its deadline is not tried again"
    assert elapsed < DEADLINE + SLACK, f"took {elapsed:.1f} s"
    message = str(failed.value)
    if kind == "abort upload":
        # s3transfer reports the part's failure; the abort only had to end in time.
        assert "S3 upload part failed" in message, message
        return
    name = "read" if kind == "read state" else kind
    assert f"S3 {name} failed: no complete answer within its deadline of {DEADLINE} s " \
           "(STREAMAGG_S3_DEADLINE)" in message, message
    where = f"(s3://{s3.bucket})" if kind == "check bucket" else f"s3://{s3.bucket}/{root}/"
    assert where in message, message


def test_a_listing_that_drips_ends_the_run_with_exit_1(
    cli: Cli, s3: S3, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The case: 200 OK, then a byte now and then, in a listing (it ran past 400 s).
    monkeypatch.setenv("STREAMAGG_S3_DEADLINE", "1")
    put_day(s3, "in", {"a.csv": H + rows(10)})
    proxy.add("trickle", method="GET", query="list-type=2", times=-1, interval=0.2)
    began = time.monotonic()
    result = cli(DAY_ARG, "--source", f"{s3.uri}/in", "--dest", f"{s3.uri}/out",
                 "--endpoint-url", proxy.url)
    assert result.exit_code == 1, result.output
    assert time.monotonic() - began < 1 + SLACK
    message = error_line(result.stderr)
    assert message.endswith("S3 list failed: no complete answer within its deadline of 1 s "
                            f"(STREAMAGG_S3_DEADLINE) (s3://{s3.bucket}/in/{PART}/)"), message
    assert results(s3, "out") == {}


def test_an_uploads_deadline_grows_with_its_bytes_at_the_minimum_rate() -> None:
    deadline = Deadline(seconds=120, min_rate=32 * 1024)
    assert deadline.of_call(0) == 120
    assert deadline.of_call(8 * 2**20) == 120 + 256  # an 8 MiB part at 32 KiB/s
    assert Deadline(seconds=5, min_rate=0).of_call(1) == float("inf")  # no minimum rate


def test_the_connection_hook_is_installed(s3: S3) -> None:
    # Without it a single trickling answer could outlast the deadline (see _watch_connections):
    # this fails when a botocore upgrade moves what the hook relies on.
    assert enforce(s3_client.make_client(s3.endpoint), Deadline())


def test_a_body_that_stalls_for_good_fails_on_its_pace_not_after_every_re_read(
    s3: S3, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each stall ends in a read timeout and smart_open asks again; the waits add up across the
    # re-reads, so the object is given up on for its pace (1 KiB/s over 1 s here).
    monkeypatch.setattr(s3_client, "RETRY_CONFIG", BotoConfig(
        retries={"total_max_attempts": 5, "mode": "standard"}, connect_timeout=1,
        read_timeout=0.3))
    monkeypatch.setenv("STREAMAGG_S3_MIN_RATE", "1KB")
    monkeypatch.setenv("STREAMAGG_S3_SLOW_SECONDS", "1")
    put_day(s3, "in", {"a.csv": H + rows(100)})
    storage = S3Storage(f"{s3.uri}/in", endpoint_url=proxy.url)
    (item,), _ = storage.list_partition(PART)
    stalled = proxy.add("trickle", method="GET", path=rf"/in/{PART}/a\.csv$", times=-1,
                        interval=60)
    with pytest.raises(StorageError, match="too slow") as failed, storage.open_input(item) as body:
        body.read()
    assert item.uri in str(failed.value)
    assert 2 <= stalled.hits <= 5
