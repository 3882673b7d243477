"""The S3 contract over HTTP, on moto and on a real S3 server (SeaweedFS): pagination, gzip,
results, multipart output and its abort, If-Match, credentials."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from botocore.httpsession import URLLib3Session
from click.testing import Result

from tests.conftest import (
    DAY,
    DAY_ARG,
    MANIFEST_NAME,
    ORIGINAL_KEY,
    ORIGINAL_SECRET,
    OUTPUT_NAME,
    REJECTS_NAME,
    S3,
)
from tests.reference import expected_day

pytestmark = pytest.mark.s3

H = "IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n"
PART = "2021/01/30"
Cli = Callable[..., Result]


@pytest.fixture
def s3(s3_any: S3) -> S3:
    """Every test of this file runs once on moto and once on SeaweedFS."""
    return s3_any


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def put_day(s3: S3, prefix: str, files: dict[str, bytes | str]) -> list[tuple[str, bytes]]:
    """Upload a day's files in parallel; return them as the reference wants them."""
    from tests.conftest import to_bytes

    stored = [(name, to_bytes(name, data)) for name, data in files.items()]
    with ThreadPoolExecutor(max_workers=32) as pool:
        list(pool.map(lambda item: s3.put(f"{prefix}/{PART}/{item[0]}", item[1]), stored))
    return stored


def results(s3: S3, prefix: str, initials: str = "SA") -> dict[str, bytes]:
    """The objects a run left in the day's result folder, by name."""
    base = f"{prefix}/{PART}/"
    return {key[len(base) :]: s3.get(key) for key in s3.keys(base)}


@pytest.mark.slow
def test_more_than_1000_inputs(cli: Cli, s3: S3) -> None:
    files: dict[str, bytes | str] = {
        f"part-{i:05d}.csv": H
        + f"id{i % 997},2021-01-30 {i % 997 % 24:02d}:{i % 997 % 60:02d}:00,{i % 13}\n"
        for i in range(1105)
    }
    files["_SUCCESS"] = b""
    stored = put_day(s3, "logs", files)
    expected = expected_day(stored, DAY)
    result = cli(
        DAY_ARG,
        "--source",
        f"{s3.uri}/logs",
        "--dest",
        f"{s3.uri}/out",
        "--endpoint-url",
        s3.endpoint,
    )
    assert result.exit_code == 0, result.output
    found = results(s3, "out")
    assert found[OUTPUT_NAME] == expected.output
    manifest = json.loads(found[MANIFEST_NAME])
    assert manifest["totals"] == expected.totals
    assert (
        manifest["totals"]["rows_read"] == 1105 and manifest["totals"]["duplicates"] == 1105 - 997
    )
    assert len(manifest["inputs"]) == 1105
    keys = [entry["path"] for entry in manifest["inputs"]]
    assert keys == sorted(keys) and keys[0].endswith("logs/2021/01/30/part-00000.csv")


def test_gzip_rejects_manifest_and_stale_rejects(cli: Cli, s3: S3) -> None:
    files: dict[str, bytes | str] = {
        "a.csv.gz": H + "a,2021-01-30 10:00:00,1\nb,2021-01-30T11:00:00+01:00,1\nc,bad,1\n",
        "sub/b.csv": H + "a,2021-01-30T10:00:00Z,2\nd,2021-01-31 00:10:00,2\n",
        "empty.csv": b"",
        ".hidden.csv": H + "z,2021-01-30 10:00:00,9\n",
    }
    stored = put_day(s3, "logs", files)
    expected = expected_day(stored, DAY)
    args = [
        DAY_ARG,
        "--source",
        f"{s3.uri}/logs",
        "--endpoint-url",
        s3.endpoint,
        "--max-bad-rows",
        "50%",
    ]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    found = results(s3, "logs/results")  # default dest: <source>/results
    assert sorted(found) == sorted([OUTPUT_NAME, MANIFEST_NAME, REJECTS_NAME])
    assert found[OUTPUT_NAME] == expected.output
    manifest = json.loads(found[MANIFEST_NAME])
    assert manifest["totals"] == expected.totals
    for entry in manifest["inputs"]:
        assert entry["path"].startswith(f"s3://{s3.bucket}/logs/2021/01/30/")
        assert entry.get("etag")
    rejects = found[REJECTS_NAME].decode()
    assert "a.csv.gz" in rejects and "c,bad,1" in rejects
    # A clean rerun removes the stale rejects object and leaves the same output.
    put_day(
        s3, "logs", {"a.csv.gz": H + "a,2021-01-30 10:00:00,1\nb,2021-01-30T11:00:00+01:00,1\n"}
    )
    result = cli(*args)
    assert result.exit_code == 0, result.output
    found = results(s3, "logs/results")
    assert REJECTS_NAME not in found
    assert found[OUTPUT_NAME] == expected.output


def test_endpoint_from_environment_and_mixed_storages(
    cli: Cli,
    s3: S3,
    monkeypatch: pytest.MonkeyPatch,
    partition: Callable[..., Path],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    stored = put_day(s3, "in", {"a.csv": H + "a,2021-01-30 10:00:00,1\n"})
    expected = expected_day(stored, DAY).output
    # S3 in, local out.
    result = cli(DAY_ARG, "--source", f"{s3.uri}/in", "--dest", tmp_path / "local")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "local" / PART / OUTPUT_NAME).read_bytes() == expected
    # Local in, S3 out (the bucket root as dest).
    source = partition({"a.csv": H + "a,2021-01-30 10:00:00,1\n"})
    result = cli(DAY_ARG, "--source", source, "--dest", s3.uri)
    assert result.exit_code == 0, result.output
    assert s3.get(f"{PART}/{OUTPUT_NAME}") == expected


def test_dry_run_on_s3_lists_and_writes_nothing(cli: Cli, s3: S3) -> None:
    put_day(s3, "in", {"b.csv": H, "a/x.csv.gz": H, "_SUCCESS": b""})
    before = s3.keys()
    result = cli(DAY_ARG, "--source", f"{s3.uri}/in", "--endpoint-url", s3.endpoint, "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"{s3.uri}/in/{PART}/a/x.csv.gz" in result.stdout
    assert f"{s3.uri}/in/{PART}/b.csv" in result.stdout
    assert f"{s3.uri}/in/results/{PART}/{OUTPUT_NAME}" in result.stdout
    assert s3.keys() == before


def test_no_inputs_on_s3_exits_3(cli: Cli, s3: S3) -> None:
    put_day(s3, "in", {"_SUCCESS": b""})
    result = cli(DAY_ARG, "--source", f"{s3.uri}/in", "--endpoint-url", s3.endpoint)
    assert result.exit_code == 3, result.output
    assert f"{s3.uri}/in/{PART}" in lines(result.stderr)[-1]


# --- a large output: multipart upload, and a failed one -------------------------------------

CAMPAIGNS = 1800  # x 24 hours x ~223 bytes a row: about 9.6 MB of output, above 8 MiB


def campaign(i: int) -> str:
    return f"campaign-{i:05d}-" + "x" * 184


def big_day() -> tuple[bytes, bytes]:
    """One gzip input with a row per (campaign, hour), and the output it must give."""
    body = "".join(
        f"i{h}-{i},2021-01-30 {h:02d}:{i % 60:02d}:00,{campaign(i)}\n"
        for h in range(24)
        for i in range(CAMPAIGNS)
    )
    output = "CAMPAIGN_ID,HOUR,IMPRESSIONS\n" + "".join(
        f"{campaign(i)},2021-01-30 {h:02d}:00:00,1\n" for h in range(24) for i in range(CAMPAIGNS)
    )
    return gzip.compress((H + body).encode(), compresslevel=1), output.encode()


@pytest.mark.slow
def test_large_output_uses_multipart(cli: Cli, s3: S3) -> None:
    data, expected = big_day()
    assert len(expected) > 8 * 2**20
    s3.put(f"in/{PART}/big.csv.gz", data)
    result = cli(
        DAY_ARG,
        "--source",
        f"{s3.uri}/in",
        "--dest",
        f"{s3.uri}/out",
        "--endpoint-url",
        s3.endpoint,
    )
    assert result.exit_code == 0, result.output
    head = s3.client.head_object(Bucket=s3.bucket, Key=f"out/{PART}/{OUTPUT_NAME}")
    assert head["ContentLength"] == len(expected)
    assert s3.get(f"out/{PART}/{OUTPUT_NAME}") == expected
    assert "-" in head["ETag"], "a > 8 MiB output should go up as a multipart upload"
    assert s3.pending_uploads() == []


@pytest.mark.slow
def test_failed_multipart_upload_leaves_no_parts_and_keeps_old_output(
    cli: Cli, s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3.put(f"in/{PART}/small.csv", H + "a,2021-01-30 10:00:00,1\n")
    args = [
        DAY_ARG,
        "--source",
        f"{s3.uri}/in",
        "--dest",
        f"{s3.uri}/out",
        "--endpoint-url",
        s3.endpoint,
    ]
    assert cli(*args).exit_code == 0
    before = results(s3, "out")
    assert sorted(before) == [MANIFEST_NAME, OUTPUT_NAME]

    data, _ = big_day()
    s3.put(f"in/{PART}/big.csv.gz", data)
    original = BaseClient._make_api_call
    injected: list[str] = []
    lock = threading.Lock()

    def failing(self: BaseClient, operation: str, params: dict) -> dict:
        # The second part fails for good, as after exhausted retries; so would completing.
        if (operation == "UploadPart" and params.get("PartNumber", 1) >= 2) or operation == (
            "CompleteMultipartUpload"
        ):
            with lock:
                injected.append(operation)
            raise ClientError(
                {"Error": {"Code": "InternalError", "Message": "injected failure"}}, operation
            )
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", failing)
    result = cli(*args)
    monkeypatch.setattr(BaseClient, "_make_api_call", original)
    assert injected, "the run never uploaded a second part"
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert OUTPUT_NAME in lines(result.stderr)[-1]
    assert s3.pending_uploads() == []
    assert results(s3, "out") == before


# --- credentials and errors -------------------------------------------------------------------

SECRET = ORIGINAL_SECRET  # the servers know it, with ORIGINAL_KEY


def test_original_job_credential_names(cli: Cli, s3: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    put_day(s3, "in", {"a.csv": H + "a,2021-01-30 10:00:00,1\n"})
    args = [DAY_ARG, "--source", f"{s3.uri}/in", "--endpoint-url", s3.endpoint]
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    # With no credentials at all the run fails, in one line that says so (exit 2, like every
    # credential mistake: tests/reliability/test_s3_credentials.py).
    failed = cli(*args)
    assert failed.exit_code == 2, failed.output
    assert "credential" in lines(failed.stderr)[-1].lower()
    monkeypatch.setenv("AWS_ACCESS_KEY", ORIGINAL_KEY)
    monkeypatch.setenv("AWS_SECRET", SECRET)
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    assert SECRET not in s3.get(f"in/results/{PART}/{MANIFEST_NAME}").decode()


def test_secrets_never_shown(cli: Cli, s3: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ORIGINAL_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    put_day(s3, "in", {"a.csv": H + "a,2021-01-30 10:00:00,1\nb,bad,1\n"})
    outputs = []
    for args in (
        [DAY_ARG, "--source", f"{s3.uri}/in", "--max-bad-rows", "50%"],
        [DAY_ARG, "--source", f"{s3.uri}/in", "--log-format", "json", "--max-bad-rows", "50%"],
        [DAY_ARG, "--source", f"{s3.uri}/in", "--max-bad-rows", "0"],
        [DAY_ARG, "--source", "s3://no-such-bucket-for-streamagg/in"],
        [DAY_ARG, "--source", f"s3://AKIAX:{SECRET}@{s3.bucket}/in"],
    ):
        result = cli(*args, "--endpoint-url", s3.endpoint)
        assert "Traceback" not in result.output
        outputs.append((result.exit_code, result.output))
    assert [code for code, _ in outputs] == [0, 0, 4, 2, 2]
    for _, text in outputs:
        assert SECRET not in text
    for key in s3.keys():
        assert SECRET.encode() not in s3.get(key)


def test_missing_source_bucket_exits_2_in_one_line(cli: Cli, s3: S3) -> None:
    # A mistake in --source (as a prefix under which nothing exists), not a failure to retry.
    result = cli(
        DAY_ARG, "--source", "s3://no-such-bucket-for-streamagg/in", "--endpoint-url", s3.endpoint
    )
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(lines(result.stderr)) == 1, result.stderr
    assert "no-such-bucket-for-streamagg" in result.stderr
    assert "bucket" in result.stderr.lower()


def test_missing_dest_bucket_exits_1_and_writes_nothing(cli: Cli, s3: S3) -> None:
    put_day(s3, "in", {"a.csv": H + "a,2021-01-30 10:00:00,1\n"})
    before = s3.keys()
    result = cli(
        DAY_ARG,
        "--source",
        f"{s3.uri}/in",
        "--dest",
        "s3://no-such-dest-bucket-streamagg",
        "--endpoint-url",
        s3.endpoint,
    )
    assert result.exit_code == 1, result.output
    assert "no-such-dest-bucket-streamagg" in lines(result.stderr)[-1]
    assert s3.keys() == before


class _ErrorBody:
    """Just enough of a urllib3 response for botocore to parse an S3 error."""

    def __init__(self, code: str) -> None:
        self.data = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()

    def stream(self, *args: object, **kwargs: object) -> Iterator[bytes]:
        yield self.data

    def read(self, *args: object) -> bytes:
        return self.data


def test_transient_errors_are_retried(cli: Cli, s3: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    stored = put_day(
        s3,
        "in",
        {"a.csv": H + "a,2021-01-30 10:00:00,1\n", "b.csv.gz": H + "b,2021-01-30 10:00:00,1\n"},
    )
    original = URLLib3Session.send
    failures = {"list": 1, "get": 2}
    injected: list[str] = []

    def flaky(self: URLLib3Session, request: AWSPreparedRequest) -> AWSResponse:
        kind = None
        if request.method == "GET" and "list-type=2" in request.url and s3.bucket in request.url:
            kind = "list"
        elif request.method == "GET" and f"in/{PART}/" in request.url and s3.bucket in request.url:
            kind = "get"
        if kind and failures[kind] > 0:
            failures[kind] -= 1
            injected.append(kind)
            code, status = ("InternalError", 500) if kind == "list" else ("SlowDown", 503)
            return AWSResponse(request.url, status, {}, _ErrorBody(code))
        return original(self, request)

    monkeypatch.setattr(URLLib3Session, "send", flaky)
    result = cli(DAY_ARG, "--source", f"{s3.uri}/in", "--endpoint-url", s3.endpoint)
    monkeypatch.setattr(URLLib3Session, "send", original)
    assert sorted(injected) == ["get", "get", "list"]
    assert result.exit_code == 0, result.output
    assert s3.get(f"in/results/{PART}/{OUTPUT_NAME}") == expected_day(stored, DAY).output


def test_a_wrong_secret_is_refused_in_one_line(
    cli: Cli, s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not s3.checks_signatures:
        pytest.skip("moto accepts any credentials: SeaweedFS checks them")
    put_day(s3, "in", {"a.csv": H + "a,2021-01-30 10:00:00,1\n"})
    wrong = "Wr0ng/Secret+Value0123456789abcdefXYZ"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    result = cli(DAY_ARG, "--source", f"{s3.uri}/in", "--endpoint-url", s3.endpoint)
    assert result.exit_code == 1, result.output
    assert len(lines(result.stderr)) == 1, result.stderr
    assert "S3 list failed: AWS secret key does not match" in result.stderr
    assert s3.bucket in result.stderr and wrong not in result.output


def test_an_object_replaced_after_listing_is_refused_by_if_match(
    cli: Cli, s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The replacement has the listed size: only the version (If-Match, ETag) tells them apart.
    from streamagg.sources.s3 import S3Storage

    put_day(s3, "in", {"a.csv": H + "a,2021-01-30 10:00:00,1\n"})
    key = f"in/{PART}/a.csv"
    original = S3Storage.open_input

    def replaced_first(self: S3Storage, item: object) -> object:
        s3.put(key, H + "b,2021-01-30 10:00:00,1\n")
        return original(self, item)  # type: ignore[arg-type]

    monkeypatch.setattr(S3Storage, "open_input", replaced_first)
    result = cli(DAY_ARG, "--source", f"{s3.uri}/in", "--dest", f"{s3.uri}/out",
                 "--endpoint-url", s3.endpoint)
    assert result.exit_code == 1, result.output
    assert "changed since it was listed" in lines(result.stderr)[-1]
    assert f"s3://{s3.bucket}/{key}" in lines(result.stderr)[-1]
    assert s3.keys("out/") == []


def test_folder_markers_are_folders_not_files_passed_over(cli: Cli, s3: S3) -> None:
    # The S3 console's "Create folder" leaves an empty object named "folder/": it was warned of
    # as a file not read (named "" for the partition's own).
    stored = put_day(s3, "in", {"a.csv": H + "a,2021-01-30 10:00:00,1\n"})
    for marker in (f"in/{PART}/", f"in/{PART}/late/"):
        s3.put(marker, b"")
    result = cli(DAY_ARG, "--source", f"{s3.uri}/in", "--dest", f"{s3.uri}/out",
                 "--endpoint-url", s3.endpoint)
    assert result.exit_code == 0, result.output
    assert "not read" not in result.stderr, result.stderr
    assert s3.get(f"out/{PART}/{OUTPUT_NAME}") == expected_day(stored, DAY).output
