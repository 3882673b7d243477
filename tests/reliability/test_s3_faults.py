"""S3 faults through a proxy before moto: 5xx and throttling, broken reads, replaced objects."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from streamagg.errors import StorageError
from streamagg.sources import InputFile
from streamagg.sources.s3_reads import CheckedBody
from tests.conftest import DAY, DAY_ARG, MANIFEST_NAME, OUTPUT_NAME, S3
from tests.reference import expected_day
from tests.reliability.faults import FaultProxy
from tests.reliability.helpers import PART, H, error_line, put_day, results, rows

pytestmark = pytest.mark.s3
Cli = Callable[..., Result]

ATTEMPTS = 5  # RETRY_CONFIG's total attempts per S3 call

# Which requests each S3 operation of a run sends (method, path regex, query substring).
OUTPUT_RE = rf"/out/{PART}/daily_agg_20210130_SA\.csv$"
OPERATIONS = {
    "list": ("GET", "", "list-type=2", "S3 list failed"),
    "read": ("GET", rf"/in/{PART}/.+\.csv", "", "S3 read failed"),
    "put": ("PUT", OUTPUT_RE, "", "S3 upload failed"),
    "part upload": ("PUT", OUTPUT_RE, "partNumber=", "S3 upload part failed"),
    "complete": ("POST", OUTPUT_RE, "uploadId=", "S3 complete upload failed"),
}
WHERE = {"list": f"in/{PART}/", "read": f"in/{PART}/", "put": OUTPUT_NAME,
         "part upload": OUTPUT_NAME, "complete": OUTPUT_NAME}


def day_files(extra: int = 0) -> dict[str, str | bytes]:
    """Two inputs (one gzipped) with a duplicate across them; ``extra`` more rows change it."""
    return {"a.csv": H + rows(300) + rows(extra, prefix="x"),
            "b.csv.gz": H + rows(200, prefix="b") + "i5,2021-01-30 05:05:00,3\n"}


def run(cli: Cli, s3: S3, endpoint: str) -> Result:
    return cli(DAY_ARG, "--source", f"{s3.uri}/in", "--dest", f"{s3.uri}/out",
               "--endpoint-url", endpoint)


def uses_multipart(operation: str) -> bool:
    return operation in ("part upload", "complete")


@pytest.mark.parametrize("code", [("SlowDown", 503), ("InternalError", 500)])
@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_failures_within_the_retry_budget_still_give_the_same_bytes(
    cli: Cli, s3: S3, proxy: FaultProxy, request: pytest.FixtureRequest, operation: str,
    code: tuple[str, int],
) -> None:
    if uses_multipart(operation):
        request.getfixturevalue("small_parts")
    stored = put_day(s3, "in", day_files())
    method, path, query, _ = OPERATIONS[operation]
    fault = proxy.add("status", method=method, path=path, query=query, times=ATTEMPTS - 1,
                      code=code[0], status=code[1])
    result = run(cli, s3, proxy.url)
    assert result.exit_code == 0, result.output
    assert fault.hits == ATTEMPTS - 1
    found = results(s3, "out")
    assert found[OUTPUT_NAME] == expected_day(stored, DAY).output
    assert json.loads(found[MANIFEST_NAME])["totals"] == expected_day(stored, DAY).totals
    assert s3.pending_uploads() == []


def test_complete_answering_200_with_an_error_is_retried(
    cli: Cli, s3: S3, proxy: FaultProxy, small_parts: int
) -> None:
    # S3 can fail CompleteMultipartUpload after "200 OK", with the error in the body.
    stored = put_day(s3, "in", day_files())
    fault = proxy.add("ok200error", method="POST", path=OUTPUT_RE, query="uploadId=", times=2,
                      code="InternalError")
    result = run(cli, s3, proxy.url)
    assert result.exit_code == 0, result.output
    assert fault.hits == 2
    assert s3.get(f"out/{PART}/{OUTPUT_NAME}") == expected_day(stored, DAY).output
    assert s3.pending_uploads() == []


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_failures_past_the_budget_exit_1_and_keep_the_earlier_output(
    cli: Cli, s3: S3, proxy: FaultProxy, request: pytest.FixtureRequest, operation: str
) -> None:
    if uses_multipart(operation):
        request.getfixturevalue("small_parts")
    put_day(s3, "in", day_files())
    assert run(cli, s3, proxy.url).exit_code == 0
    before = results(s3, "out")
    put_day(s3, "in", day_files(extra=50))  # the next run's output would differ
    method, path, query, words = OPERATIONS[operation]
    fault = proxy.add("status", method=method, path=path, query=query, times=-1)
    result = run(cli, s3, proxy.url)
    assert result.exit_code == 1, result.output
    message = error_line(result.stderr)
    assert words in message and f"after {ATTEMPTS} attempts" in message, message
    assert f"s3://{s3.bucket}/" in message and WHERE[operation] in message, message
    # Each call spends its budget, then the run stops (two inputs may be read at once).
    calls = 2 if operation == "read" else 1
    assert fault.hits % ATTEMPTS == 0 and ATTEMPTS <= fault.hits <= calls * ATTEMPTS
    assert results(s3, "out") == before
    assert s3.pending_uploads() == []


# --- connections reset, bodies cut short -------------------------------------------------------


@pytest.mark.parametrize("action", ["reset", "cut", "cut_unframed"])
def test_broken_reads_resume_and_count_every_row(
    cli: Cli, s3: S3, proxy: FaultProxy, action: str
) -> None:
    big = H + rows(20_000)  # about 560 KB: the cut falls mid-object
    stored = put_day(s3, "in", {"a.csv": big, "b.csv.gz": big.replace(",2021", "b,2021")})
    faults = [proxy.add(action, method="GET", path=rf"/in/{PART}/{name}", times=2, fraction=0.6)
              for name in ("a.csv", "b.csv.gz")]
    result = run(cli, s3, proxy.url)
    assert result.exit_code == 0, result.output
    assert [fault.hits for fault in faults] == [2, 2]
    expected = expected_day(stored, DAY)
    manifest = json.loads(s3.get(f"out/{PART}/{MANIFEST_NAME}"))
    assert manifest["totals"] == expected.totals
    assert manifest["totals"]["rows_read"] == 40_000
    assert s3.get(f"out/{PART}/{OUTPUT_NAME}") == expected.output
    if action != "reset":  # a cut body is resumed from where it broke, not read again
        resumed = [s.range for s in proxy.requests()
                   if s.path.endswith("a.csv") and s.range and s.range != "bytes=0-"]
        assert resumed, proxy.requests()


def test_reads_cut_every_time_fail_cleanly(cli: Cli, s3: S3, proxy: FaultProxy) -> None:
    put_day(s3, "in", {"a.csv": H + rows(20_000)})
    proxy.add("cut", method="GET", path=rf"/in/{PART}/a\.csv", times=-1, fraction=0.3)
    result = run(cli, s3, proxy.url)
    assert result.exit_code == 1, result.output
    message = error_line(result.stderr)
    assert "S3 read failed" in message and f"s3://{s3.bucket}/in/{PART}/a.csv" in message
    assert results(s3, "out") == {}


class _ShortStream(io.BytesIO):
    """Ends cleanly before the listed size, as a body closed early without an error would."""


@pytest.mark.parametrize("size", [10, 1])
def test_a_body_ending_before_its_listed_size_is_an_error_not_a_short_file(size: int) -> None:
    item = InputFile(uri="s3://b/in/a.csv", key="in/a.csv", size=20, version='"etag"')
    body = CheckedBody(_ShortStream(b"x" * size), item)  # type: ignore[arg-type]
    with pytest.raises(StorageError, match="got .* bytes of the 20 listed") as info:
        while body.read(4):
            pass
    assert "s3://b/in/a.csv" in str(info.value)
    exact = CheckedBody(io.BytesIO(b"y" * 20), item)  # type: ignore[arg-type]
    assert exact.read() == b"y" * 20


def test_a_gzip_input_cut_short_for_good_fails_with_its_key(
    cli: Cli, s3: S3, proxy: FaultProxy
) -> None:
    data = gzip.compress((H + rows(30_000)).encode(), compresslevel=1)
    s3.put(f"in/{PART}/a.csv.gz", data)
    proxy.add("cut", method="GET", path=rf"/in/{PART}/a\.csv\.gz", times=-1, fraction=0.5)
    result = run(cli, s3, proxy.url)
    assert result.exit_code == 1, result.output
    assert f"in/{PART}/a.csv.gz" in error_line(result.stderr)
    assert results(s3, "out") == {}


# --- objects replaced or deleted between listing and reading ------------------------------------


def test_object_replaced_after_listing_fails_naming_the_key(
    cli: Cli, s3: S3, proxy: FaultProxy
) -> None:
    put_day(s3, "in", {"a.csv": H + rows(10), "b.csv": H + rows(10, prefix="b")})
    key = f"in/{PART}/b.csv"
    proxy.add("hook", method="GET", path=rf"/{key}$",
              hook=lambda: s3.put(key, H + rows(99, prefix="new")))
    result = run(cli, s3, proxy.url)
    assert result.exit_code == 1, result.output
    message = error_line(result.stderr)
    assert "changed since it was listed" in message and f"s3://{s3.bucket}/{key}" in message
    assert results(s3, "out") == {}


def test_object_replaced_while_a_broken_read_resumes_fails_naming_the_key(
    cli: Cli, s3: S3, proxy: FaultProxy
) -> None:
    key = f"in/{PART}/a.csv"
    s3.put(key, H + rows(20_000))
    proxy.add("cut", method="GET", path=rf"/{key}$", times=1, fraction=0.5)
    # The resumed read (a Range request) meets the new version: it must not be spliced in.
    proxy.add("hook", method="GET", path=rf"/{key}$", hook=lambda: s3.put(key, H + rows(20_001)))
    result = run(cli, s3, proxy.url)
    assert result.exit_code == 1, result.output
    message = error_line(result.stderr)
    assert "changed since it was listed" in message and key in message
    assert results(s3, "out") == {}


def test_object_deleted_after_listing_fails_naming_the_key(
    cli: Cli, s3: S3, proxy: FaultProxy
) -> None:
    put_day(s3, "in", {"a.csv": H + rows(10)})
    key = f"in/{PART}/a.csv"
    proxy.add("hook", method="GET", path=rf"/{key}$",
              hook=lambda: s3.client.delete_object(Bucket=s3.bucket, Key=key))
    result = run(cli, s3, proxy.url)
    assert result.exit_code == 1, result.output
    message = error_line(result.stderr)
    assert "does not exist" in message and f"s3://{s3.bucket}/{key}" in message


def test_manifest_upload_failing_after_the_output_is_reported_and_detectable(
    cli: Cli, s3: S3, proxy: FaultProxy
) -> None:
    # The output is the commit point and the manifest follows it: two objects cannot change
    # at once on S3. If the manifest's upload fails for good, the run says so (exit 1) and
    # the stale manifest's sha256 no longer matches the (complete, correct) new output.
    put_day(s3, "in", day_files())
    assert run(cli, s3, proxy.url).exit_code == 0
    old_manifest = json.loads(s3.get(f"out/{PART}/{MANIFEST_NAME}"))
    stored = put_day(s3, "in", day_files(extra=50))
    proxy.add("status", method="PUT", path=rf"/{MANIFEST_NAME}$", times=-1)
    result = run(cli, s3, proxy.url)
    assert result.exit_code == 1, result.output
    message = error_line(result.stderr)
    assert "S3 upload failed after 5 attempts" in message and MANIFEST_NAME in message
    found = results(s3, "out")
    assert found[OUTPUT_NAME] == expected_day(stored, DAY).output
    assert json.loads(found[MANIFEST_NAME]) == old_manifest
    assert hashlib.sha256(found[OUTPUT_NAME]).hexdigest() != old_manifest["output"]["sha256"]
    proxy.clear()
    assert run(cli, s3, proxy.url).exit_code == 0  # a rerun puts them back in step
    manifest = json.loads(s3.get(f"out/{PART}/{MANIFEST_NAME}"))
    assert manifest["output"]["sha256"] == hashlib.sha256(found[OUTPUT_NAME]).hexdigest()


def test_an_upload_whose_abort_fails_too_is_aborted_by_a_later_run(
    cli: Cli, s3: S3, proxy: FaultProxy, small_parts: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamagg import cleanup

    stored = put_day(s3, "in", day_files())
    proxy.add("status", method="PUT", path=OUTPUT_RE, query="partNumber=2", times=-1)
    proxy.add("status", method="DELETE", path=OUTPUT_RE, query="uploadId=", times=-1)
    result = run(cli, s3, proxy.url)
    assert result.exit_code == 1, result.output
    assert "S3 upload part failed" in error_line(result.stderr)
    assert len(s3.pending_uploads()) == 1  # the endpoint refused the abort as well
    proxy.clear()
    monkeypatch.setattr(cleanup, "STALE_UPLOAD_SECONDS", 0.0)
    again = run(cli, s3, proxy.url)
    assert again.exit_code == 0, again.output
    assert s3.pending_uploads() == []
    assert s3.get(f"out/{PART}/{OUTPUT_NAME}") == expected_day(stored, DAY).output


def test_a_store_ignoring_if_match_still_cannot_serve_a_replaced_object(
    cli: Cli, s3: S3, proxy: FaultProxy
) -> None:
    # Some S3-compatible stores ignore If-Match. The replacement has the listed size, so only
    # the ETag of the GET's answer tells the versions apart.
    put_day(s3, "in", {"a.csv": H + rows(10), "b.csv": H + rows(10, prefix="b")})
    key = f"in/{PART}/b.csv"
    replacement = H + rows(10, prefix="c")
    assert len(replacement) == len(H + rows(10, prefix="b"))
    proxy.add("hook", method="GET", path=rf"/{key}$", times=-1, drop=("If-Match",),
              hook=lambda: s3.put(key, replacement))
    result = run(cli, s3, proxy.url)
    assert result.exit_code == 1, result.output
    message = error_line(result.stderr)
    assert "changed since it was listed" in message and f"s3://{s3.bucket}/{key}" in message
    assert results(s3, "out") == {}


def test_an_etag_written_differently_by_the_store_is_the_same_version() -> None:
    from streamagg.sources.s3_reads import bare_etag

    assert bare_etag('"abc-2"') == bare_etag("abc-2") == bare_etag('W/"abc-2"') == "abc-2"


@pytest.mark.parametrize("gzip_input", [False, True])
def test_a_body_trickling_one_byte_at_a_time_is_given_up_on_naming_the_object(
    cli: Cli, s3: S3, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch, gzip_input: bool
) -> None:
    # 200 OK, then a byte now and then: every read beats the read timeout, and without a pace
    # the read would never end. Shipped: 32 KiB/s over 60 s of waiting; here 1 KiB/s over 1 s.
    import time

    monkeypatch.setenv("STREAMAGG_S3_MIN_RATE", "1KB")
    monkeypatch.setenv("STREAMAGG_S3_SLOW_SECONDS", "1")
    name = "b.csv.gz" if gzip_input else "b.csv"
    put_day(s3, "in", {"a.csv": H + rows(10), name: H + rows(2000, prefix="b")})
    key = f"in/{PART}/{name}"
    trickle = proxy.add("trickle", method="GET", path=rf"/{re.escape(key)}$", times=-1,
                        interval=0.2)
    began = time.monotonic()
    result = run(cli, s3, proxy.url)
    elapsed = time.monotonic() - began
    assert result.exit_code == 1, result.output
    message = error_line(result.stderr)
    assert "too slow" in message and f"s3://{s3.bucket}/{key}" in message, message
    assert "STREAMAGG_S3_MIN_RATE" in message
    assert trickle.hits == 1  # not retried: a slow store stays slow
    assert elapsed < 15, f"took {elapsed:.1f} s"
    assert results(s3, "out") == {}


def test_a_slow_consumer_does_not_make_a_fast_store_look_slow(
    cli: Cli, s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only time spent waiting on the network counts: pauses between reads (a busy pipeline)
    # do not, however strict the minimum.
    import time

    from streamagg.sources.s3 import S3Storage

    monkeypatch.setenv("STREAMAGG_S3_MIN_RATE", "1MB")
    monkeypatch.setenv("STREAMAGG_S3_SLOW_SECONDS", "0.05")
    s3.put(f"in/{PART}/a.csv", H + rows(20_000))
    storage = S3Storage(f"{s3.uri}/in", endpoint_url=s3.endpoint)
    (item,), _ = storage.list_partition(PART)
    got = b""
    with storage.open_input(item) as body:
        while chunk := body.read(64 * 1024):
            got += chunk
            time.sleep(0.1)  # 640 KiB/s by the wall clock: below the minimum
    assert got == (H + rows(20_000)).encode()


@pytest.mark.parametrize(("variable", "value"), [
    ("STREAMAGG_S3_MIN_RATE", "fast"), ("STREAMAGG_S3_SLOW_SECONDS", "0"),
    ("STREAMAGG_S3_SLOW_SECONDS", "soon"),
])
def test_an_invalid_pace_setting_is_exit_2_naming_it(
    cli: Cli, s3: S3, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch, variable: str,
    value: str,
) -> None:
    monkeypatch.setenv(variable, value)
    result = run(cli, s3, proxy.url)
    assert result.exit_code == 2, result.output
    assert variable in error_line(result.stderr)
    assert proxy.requests() == []


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, SystemExit])
def test_an_interrupted_multipart_upload_leaves_no_parts(
    s3: S3, small_parts: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    interruption: type[BaseException],
) -> None:
    # Ctrl-C or SIGTERM (raised as an exception in the main thread) between two parts.
    from botocore.client import BaseClient

    from streamagg.sources.s3 import S3Storage

    storage = S3Storage(f"{s3.uri}/out", endpoint_url=s3.endpoint)
    local = tmp_path / "output.csv"
    local.write_bytes(b"x" * (small_parts * 5))
    original = BaseClient._make_api_call

    def interrupted(self: BaseClient, operation: str, params: dict) -> dict:
        if operation == "UploadPart" and params.get("PartNumber") == 3:
            raise interruption()
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", interrupted)
    with pytest.raises(interruption):
        storage.publish(str(local), "output.csv")
    monkeypatch.setattr(BaseClient, "_make_api_call", original)
    assert s3.pending_uploads() == []
    assert s3.keys("out/") == []
