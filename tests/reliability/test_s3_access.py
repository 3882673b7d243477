"""S3 that cannot be used: no endpoint, a hung one, bad credentials, no bucket, no write access."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from botocore.config import Config as BotoConfig
from click.testing import Result

from streamagg.sources import s3_client
from tests.conftest import DAY_ARG, OUTPUT_NAME, S3
from tests.reliability.faults import FaultProxy
from tests.reliability.helpers import PART, Child, H, child_env, error_line, put_day, results, rows

pytestmark = pytest.mark.s3
Cli = Callable[..., Result]
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzSECRETzzz"


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch, s3: S3) -> str:
    """Credentials whose secret must never show."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIARELIABILITYTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    return SECRET


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def timed(cli: Cli, *args: str) -> tuple[Result, float]:
    began = time.monotonic()
    result = cli(*args)
    return result, time.monotonic() - began


@pytest.mark.slow
def test_no_endpoint_answering_fails_quickly_in_a_real_process(
    spawn: Callable[..., Child], s3: S3
) -> None:
    # A child process keeps botocore's real backoff: 5 attempts, then one line.
    env = child_env(s3)
    env["AWS_SECRET_ACCESS_KEY"] = SECRET
    endpoint = f"http://127.0.0.1:{closed_port()}"
    began = time.monotonic()
    code, _, stderr = spawn([DAY_ARG, "--source", "s3://some-bucket/in", "--endpoint-url",
                             endpoint], env=env).wait(timeout=60)
    elapsed = time.monotonic() - began
    assert code == 1, stderr
    message = error_line(stderr)
    assert f"S3 list failed: cannot reach the S3 endpoint {endpoint} (" in message, message
    assert f"s3://some-bucket/in/{PART}/" in message
    assert SECRET not in stderr
    # Measured about 1 s idle and 12.6 s at a load average of 20 (the process start, mostly).
    assert elapsed < 30, f"took {elapsed:.1f} s"


def test_hung_endpoint_is_given_up_on_after_the_attempts(
    cli: Cli, s3: S3, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    # Accepts and never answers. With the shipped timeouts (connect 5 s, read 60 s) the bound
    # is 5 attempts of one timeout each; here the read timeout is cut to keep the test short.
    monkeypatch.setattr(s3_client, "RETRY_CONFIG", BotoConfig(
        retries={"total_max_attempts": 5, "mode": "standard"}, connect_timeout=1,
        read_timeout=0.3))
    stall = proxy.add("stall", times=-1)
    result, elapsed = timed(cli, DAY_ARG, "--source", f"{s3.uri}/in", "--endpoint-url",
                            proxy.url)
    assert result.exit_code == 1, result.output
    message = error_line(result.stderr)
    assert "S3 list failed: the S3 endpoint stopped answering" in message, message
    assert stall.hits == 5
    assert elapsed < 5 * 0.3 + 20  # five short timeouts, not the shipped 60 s ones
    assert secret not in result.output


@pytest.mark.parametrize(("code", "words"), [
    ("InvalidAccessKeyId", "invalid AWS access key"),
    ("SignatureDoesNotMatch", "AWS secret key does not match"),
    ("ExpiredToken", "AWS session token expired"),
])
def test_wrong_credentials_fail_at_once_in_one_line(
    cli: Cli, s3: S3, proxy: FaultProxy, secret: str, code: str, words: str
) -> None:
    fault = proxy.add("status", status=403, code=code, times=-1)
    for log_format in ("text", "json"):
        result, elapsed = timed(cli, DAY_ARG, "--source", f"{s3.uri}/in", "--endpoint-url",
                                proxy.url, "--log-format", log_format)
        assert result.exit_code == 1, result.output
        message = error_line(result.stderr)
        assert f"S3 list failed: {words}" in message and s3.bucket in message, message
        assert secret not in result.output and "AKIARELIABILITYTEST" not in message
        assert elapsed < 20  # no backoff loop; the hit count below proves no retry
    assert fault.hits == 2  # one request per run: a 403 is not retried


def test_missing_bucket_fails_at_once(cli: Cli, s3: S3, proxy: FaultProxy, secret: str) -> None:
    # A mistake in --source, as a prefix under which nothing exists: exit 2, not retried.
    result, elapsed = timed(cli, DAY_ARG, "--source", "s3://streamagg-no-such-bucket/in",
                            "--endpoint-url", proxy.url)
    assert result.exit_code == 2, result.output
    message = error_line(result.stderr)
    assert message.endswith("source bucket does not exist: check --source (or "
                            "STREAMAGG_SOURCE) (s3://streamagg-no-such-bucket)"), message
    assert len(proxy.requests()) == 1 and elapsed < 20  # one request, no backoff
    assert secret not in result.output


def test_access_denied_on_write_fails_and_writes_nothing(
    cli: Cli, s3: S3, proxy: FaultProxy, secret: str
) -> None:
    put_day(s3, "in", {"a.csv": H + rows(50)})
    denied = proxy.add("status", method="PUT", path=rf"/out/{PART}/", status=403,
                       code="AccessDenied", times=-1)
    result, elapsed = timed(cli, DAY_ARG, "--source", f"{s3.uri}/in", "--dest",
                            f"{s3.uri}/out", "--endpoint-url", proxy.url)
    assert result.exit_code == 1, result.output
    message = error_line(result.stderr)
    assert "S3 upload failed: access denied" in message, message
    assert f"s3://{s3.bucket}/out/{PART}/{OUTPUT_NAME}" in message
    assert denied.hits == 1 and elapsed < 20  # one request, no backoff
    assert results(s3, "out") == {}
    assert secret not in result.output


def test_no_permission_to_list_uploads_only_skips_the_cleanup(
    cli: Cli, s3: S3, proxy: FaultProxy
) -> None:
    # A least-privilege role may lack s3:ListBucketMultipartUploads: tidying is optional.
    put_day(s3, "in", {"a.csv": H + rows(50)})
    proxy.add("status", method="GET", query="uploads", status=403, code="AccessDenied",
              times=-1)
    result = cli(DAY_ARG, "--source", f"{s3.uri}/in", "--dest", f"{s3.uri}/out",
                 "--endpoint-url", proxy.url)
    assert result.exit_code == 0, result.output
    assert "could not look for leftovers" in result.stderr
    assert OUTPUT_NAME in results(s3, "out")


@pytest.mark.parametrize("endpoint", [
    f"http://AKIAEXAMPLE:{SECRET}@minio_host:9000",  # a secret holding "/", an underscore
    f"http://AKIAEXAMPLE:{SECRET}@127.0.0.1:9000",
    "http://minio_host:9000",
    "http://bad host:9000",
    "minio:9000",  # no scheme
    "http://[::1:9000",  # an IPv6 address never closed
])
@pytest.mark.parametrize("where", ["option", "environment"])
def test_an_endpoint_botocore_refuses_is_exit_2_redacted(
    cli: Cli, s3: S3, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch, endpoint: str,
    where: str,
) -> None:
    args = [DAY_ARG, "--source", f"{s3.uri}/in"]
    if where == "option":
        args += ["--endpoint-url", endpoint]
    else:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    result = cli(*args)
    assert result.exit_code == 2, result.output
    message = error_line(result.stderr)
    assert "endpoint URL" in message and "unexpected" not in message, message
    assert SECRET not in result.output and SECRET.split("/")[0] not in result.output
    assert proxy.requests() == []


PROFILES = """\
[default]
region = ap-south-1
[profile paris]
region = eu-west-3
"""


@pytest.mark.parametrize(("variables", "region"), [
    ({"AWS_PROFILE": "paris"}, "eu-west-3"),
    ({}, "ap-south-1"),  # the default profile's region
    ({"AWS_PROFILE": "paris", "AWS_DEFAULT_REGION": "ca-central-1"}, "ca-central-1"),
    ({"AWS_PROFILE": "paris", "AWS_REGION": "eu-north-1"}, "eu-north-1"),
])
def test_the_region_comes_from_boto3s_chain_and_the_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], region: str
) -> None:
    config = tmp_path / "aws-config"
    config.write_text(PROFILES)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREGIONTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-secret")
    assert s3_client.make_client().meta.region_name == region


def test_no_region_anywhere_is_us_east_1(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREGIONTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-secret")
    assert s3_client.make_client().meta.region_name == "us-east-1"
