"""S3 and S3-compatible stores: paginated listing, streamed reads via smart_open, atomic uploads."""

from __future__ import annotations

import datetime as dt
import email.utils
import functools
import io
import os
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar

import boto3
import botocore.exceptions
import urllib3.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig
from botocore.utils import is_valid_endpoint_url, is_valid_ipv6_endpoint_url

from ..config import parse_size
from ..errors import StorageError, UsageError
from ..units import human_bytes
from . import InputFile, is_input_name, redact

T = TypeVar("T")

# Outputs above this go up in parts, so a large day never needs one huge PUT to succeed.
# Read when an upload starts (tests lower them).
MULTIPART_THRESHOLD = 8 * 2**20
PART_SIZE = 8 * 2**20
# The slowest a body may arrive (see `Pace`): a day's object at 32 KiB/s is already a crawl;
# a store serving less than that for a minute of waiting is treated as broken.
DEFAULT_MIN_RATE = 32 * 2**10
DEFAULT_SLOW_SECONDS = 60.0
MIN_RATE_VARIABLE = "STREAMAGG_S3_MIN_RATE"
SLOW_SECONDS_VARIABLE = "STREAMAGG_S3_SLOW_SECONDS"
PACE_STEP = 2**20  # the most one network read may return
# Standard mode retries throttling, 5xx and broken connections with exponential backoff and
# jitter: 5 attempts in all (botocore's "max_attempts" would count retries, giving 6).
RETRY_CONFIG = BotoConfig(
    retries={"total_max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=60,
)


def make_client(endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client from the default chain, honouring the original job's variable names.

    The region is ``AWS_REGION`` when set, else boto3's own chain (``AWS_DEFAULT_REGION``, the
    profile's ``region`` in ``~/.aws/config``), else botocore's default, ``us-east-1``.
    """
    env = os.environ
    kwargs: dict[str, Any] = {}
    if not env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_ACCESS_KEY") and env.get("AWS_SECRET"):
        kwargs = {"aws_access_key_id": env["AWS_ACCESS_KEY"],
                  "aws_secret_access_key": env["AWS_SECRET"]}
    endpoint = check_endpoint(endpoint_url or env.get("AWS_ENDPOINT_URL") or None)
    # AWS_REGION is what other AWS SDKs (and Lambda, ECS) set; botocore reads only
    # AWS_DEFAULT_REGION and the profile. None lets botocore's chain choose (us-east-1 last).
    region = env.get("AWS_REGION") or None
    try:
        session = boto3.session.Session(**kwargs)
        return session.client("s3", endpoint_url=endpoint, region_name=region,
                              config=RETRY_CONFIG)
    except ValueError as err:
        # botocore puts the whole URL, any user:secret@ included, in this message: never show it.
        where = (f" {_redact_endpoint(endpoint)!r}" if endpoint
                 else " (from AWS_ENDPOINT_URL_S3 or the AWS config file)")
        raise UsageError(f"invalid S3 endpoint URL{where}") from err
    except botocore.exceptions.BotoCoreError as err:  # e.g. a profile that does not exist
        raise UsageError(f"cannot set up the S3 client: {describe(err)}") from err


def check_endpoint(url: str | None) -> str | None:
    """The endpoint URL if botocore would accept it; else exit 2 naming it, redacted."""
    if url is None:
        return None
    if "@" in url:
        # Consistent with s3:// URIs: botocore would not use them, and they must never show.
        raise UsageError(f"credentials in an S3 endpoint URL are refused "
                         f"({_redact_endpoint(url)}): use the AWS credential chain")
    try:
        host = urllib.parse.urlsplit(url).netloc if "://" in url else ""
    except ValueError:  # e.g. an unclosed "[" of an IPv6 address
        host = ""
    if not host or not (is_valid_endpoint_url(url) or is_valid_ipv6_endpoint_url(url)):
        raise UsageError(f"invalid S3 endpoint URL {_redact_endpoint(url)!r}: expected "
                         "http(s)://host[:port] with a valid host name")
    return url


def _redact_endpoint(url: str) -> str:
    """An endpoint URL with everything up to its last ``@`` hidden: a secret typed into it raw
    may hold ``/``, which would end the authority early for `redact`."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return redact(url)


_CODES = {
    "NoSuchBucket": "bucket does not exist",
    "NoSuchKey": "object does not exist (deleted since it was listed?)",
    "AccessDenied": "access denied",
    "AllAccessDisabled": "access denied",
    "InvalidAccessKeyId": "invalid AWS access key",
    "SignatureDoesNotMatch": "AWS secret key does not match",
    "ExpiredToken": "AWS session token expired",
    "PreconditionFailed": "object changed since it was listed",
    "NoSuchUpload": "multipart upload no longer exists (aborted by another run?)",
}


_UPLOAD_STEPS = {
    "PutObject": "upload", "CreateMultipartUpload": "upload", "UploadPart": "upload part",
    "CompleteMultipartUpload": "complete upload", "AbortMultipartUpload": "abort upload",
}


def failure(operation: str, err: BaseException) -> str:
    """``S3 <operation> failed[ after N attempts]: <reason>``, without secrets."""
    backend = getattr(err, "backend_error", err)
    attempts = 0
    if isinstance(backend, botocore.exceptions.ClientError):
        attempts = backend.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) + 1
    after = f" after {attempts} attempts" if attempts > 1 else ""
    return f"S3 {operation} failed{after}: {describe(err)}"


def describe(err: BaseException) -> str:
    """A short, secret-free reason for a failed S3 call."""
    # smart_open wraps the botocore error of a GET in an OSError and keeps it here.
    backend = getattr(err, "backend_error", None)
    if isinstance(backend, botocore.exceptions.ClientError):
        err = backend
    if isinstance(err, botocore.exceptions.ClientError):
        error = err.response.get("Error", {})
        code = str(error.get("Code", "Error"))
        return _CODES.get(code) or f"{code}: {error.get('Message') or ''}".strip(": ")
    if isinstance(err, (botocore.exceptions.EndpointConnectionError,
                        botocore.exceptions.ConnectTimeoutError)):
        return "cannot reach the S3 endpoint"
    if isinstance(err, botocore.exceptions.ReadTimeoutError):
        return "the S3 endpoint stopped answering (read timeout)"
    if isinstance(err, (botocore.exceptions.ConnectionClosedError,
                        botocore.exceptions.ResponseStreamingError, ConnectionError)):
        return "connection lost"
    if isinstance(err, botocore.exceptions.BotoCoreError):
        return type(err).__name__
    text = str(err)
    if "failed to read" in text and "attempts" in text:  # smart_open's re-reads ran out
        return "connection lost mid-read, and re-reading failed on every attempt"
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> (``bucket``, ``a/b``)."""
    rest = uri[len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    if "@" in bucket or ":" in bucket:
        raise UsageError("credentials in an s3:// URI are refused: use the AWS credential chain")
    if not bucket:
        raise UsageError(f"missing bucket in {uri!r}")
    return bucket, prefix.strip("/")


class S3Storage:
    """A bucket and prefix."""

    def __init__(self, uri: str, *, endpoint_url: str | None = None, client: Any = None) -> None:
        self.bucket, self.prefix = split_uri(uri)
        self.root_uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        # A malformed endpoint is bad usage: refused here, before any request (exit 2).
        self.endpoint_url = check_endpoint(endpoint_url)
        self.pace = Pace.from_environment()
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_client(self.endpoint_url)
        return self._client

    def _key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def uri_of(self, relative: str) -> str:
        return f"s3://{self.bucket}/{self._key(relative)}"

    def _call(self, operation: str, key: str, fn: Callable[[], T]) -> T:
        """Run one S3 call, turning boto errors into one clear line naming bucket and key."""
        try:
            return fn()
        except botocore.exceptions.NoCredentialsError as err:
            raise StorageError("no AWS credentials found (environment, profile or instance role)",
                               uri=f"s3://{self.bucket}/{key}") from err
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError,
                OSError) as err:
            if operation == "upload":  # a managed transfer: name the step S3 refused
                operation = _UPLOAD_STEPS.get(getattr(err, "operation_name", ""), operation)
            raise StorageError(failure(operation, err), uri=f"s3://{self.bucket}/{key}") from err

    def list_partition(self, relative: str) -> tuple[list[InputFile], int]:
        base = self._key(relative).rstrip("/") + "/"

        def listing() -> tuple[list[InputFile], int]:
            found: list[InputFile] = []
            empty = 0
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if not is_input_name(key[len(base):]):
                        continue
                    if obj["Size"] == 0:
                        empty += 1
                        continue
                    found.append(InputFile(uri=f"s3://{self.bucket}/{key}", key=key,
                                           size=obj["Size"], version=obj["ETag"]))
            return found, empty

        found, empty = self._call("list", base, listing)
        found.sort(key=lambda item: item.key)
        return found, empty

    def open_input(self, item: InputFile) -> BinaryIO:
        import smart_open

        key = item.key
        # Every GET of the read, the Range re-requests smart_open makes after a broken connection
        # included, goes through `_PinnedReads`: pinned to the listed version, and paced.
        params = {"client": _PinnedReads(self.client, item, self.pace)}

        def get() -> BinaryIO:
            stream: BinaryIO = smart_open.open(f"s3://{self.bucket}/{key}", "rb",
                                               compression="disable", transport_params=params)
            return stream

        return _CheckedBody(self._call("read", key, get), item)  # type: ignore[return-value]

    def publish(self, local_path: str, relative: str) -> None:
        """Upload through boto3's managed transfer: one PUT up to `MULTIPART_THRESHOLD`, else
        a multipart upload of `PART_SIZE` parts, which s3transfer aborts when any step fails
        (no parts are left behind; a killed run's are aborted by `remove_abandoned`)."""
        key = self._key(relative)
        # One part in memory at a time, as the memory budget assumes: no upload threads.
        config = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD,
                                multipart_chunksize=PART_SIZE, use_threads=False)
        with open(local_path, "rb") as body:
            self._call("upload", key, lambda: self.client.upload_fileobj(
                body, self.bucket, key, Config=config))

    def remove_abandoned(self, relatives: list[str], *, older_than: float) -> list[str]:
        """Abort multipart uploads to ``relatives`` begun over ``older_than`` seconds ago.

        A killed run cannot abort its own upload; its parts stay (and cost) until someone
        does. S3 cannot say whether an upload's writer still lives, so age decides: an upload
        younger than ``older_than`` may be a concurrent run's, and is left alone. Ages are
        measured on the server's clock (its Date header), so a skewed local clock cannot make
        a fresh upload look old.
        """
        keys = {self._key(relative) for relative in relatives}
        removed: list[str] = []
        # One listing per folder (the outputs share one); a folder holds few pending uploads.
        for folder in sorted({key.rpartition("/")[0] for key in keys}):
            prefix = f"{folder}/" if folder else ""
            pages = self._call("list uploads", prefix, functools.partial(
                self._pages, "list_multipart_uploads", Bucket=self.bucket, Prefix=prefix))
            stale = [(upload["Key"], upload["UploadId"]) for page in pages
                     for upload in page.get("Uploads", []) if upload["Key"] in keys
                     and (_server_time(page) - upload["Initiated"]).total_seconds()
                     >= older_than]
            for key, upload_id in stale:
                self._call("abort upload", key, functools.partial(
                    self.client.abort_multipart_upload, Bucket=self.bucket, Key=key,
                    UploadId=upload_id))
                removed.append(f"s3://{self.bucket}/{key} (multipart upload {upload_id})")
        return removed

    def _pages(self, operation: str, **kwargs: Any) -> list[dict[str, Any]]:
        return list(self.client.get_paginator(operation).paginate(**kwargs))

    def remove(self, relative: str) -> None:
        key = self._key(relative)
        self._call("delete", key, lambda: self.client.delete_object(Bucket=self.bucket, Key=key))

    def read_bytes(self, relative: str) -> bytes | None:
        key = self._key(relative)

        def get() -> bytes | None:
            try:
                return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
            except botocore.exceptions.ClientError as err:
                if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise

        return self._call("read", key, get)

    def fetch(self, relative: str, local_path: str) -> bool:
        key = self._key(relative)

        def get() -> bool:
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            except botocore.exceptions.ClientError as err:
                if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return False
                raise
            with open(local_path, "wb") as out:
                for chunk in body.iter_chunks(1 << 20):
                    out.write(chunk)
            return True

        return self._call("read", key, get)

    def list_below(self, relative: str) -> list[str]:
        base = self._key(relative).rstrip("/") + "/"
        cut = len(self.prefix) + 1 if self.prefix else 0

        def listing() -> list[str]:
            paginator = self.client.get_paginator("list_objects_v2")
            return [obj["Key"][cut:] for page in paginator.paginate(Bucket=self.bucket, Prefix=base)
                    for obj in page.get("Contents", [])]

        return sorted(self._call("list", base, listing))


@dataclass(frozen=True)
class Pace:
    """The slowest an object's body may arrive: ``min_rate`` bytes a second on average over
    every ``window`` seconds spent waiting for it.

    The read timeout bounds one wait for one packet; this bounds a body that keeps sending a
    byte now and then (each wait beats the timeout, the whole never ends). Only time spent
    waiting on the network counts, so a busy consumer never makes a fast store look slow.
    """

    min_rate: int = DEFAULT_MIN_RATE
    window: float = DEFAULT_SLOW_SECONDS

    @classmethod
    def from_environment(cls) -> Pace:
        """Defaults, or ``STREAMAGG_S3_MIN_RATE`` (a size a second) and
        ``STREAMAGG_S3_SLOW_SECONDS``, read when a storage is made (exit 2 when invalid)."""
        env = os.environ
        rate, window = DEFAULT_MIN_RATE, DEFAULT_SLOW_SECONDS
        if env.get(MIN_RATE_VARIABLE):
            text = env[MIN_RATE_VARIABLE].strip().removesuffix("/s")
            try:
                rate = parse_size(text)
            except UsageError:
                raise UsageError(f"invalid {MIN_RATE_VARIABLE} {text!r}: expected a size a "
                                 "second, e.g. 32KB or 0 for no minimum") from None
        if env.get(SLOW_SECONDS_VARIABLE):
            try:
                window = float(env[SLOW_SECONDS_VARIABLE])
            except ValueError:
                window = -1.0
            if not window > 0 or window == float("inf"):
                raise UsageError(f"invalid {SLOW_SECONDS_VARIABLE} "
                                 f"{env[SLOW_SECONDS_VARIABLE]!r}: expected seconds > 0")
        return cls(rate, window)


class _PinnedReads:
    """The S3 client as smart_open sees it while reading one object.

    Each GET carries ``If-Match`` with the listed ETag, and its answer's ETag is compared with
    the listed one too: some S3-compatible stores ignore ``If-Match`` and would serve a
    replaced object of the same size silently. Either way the read fails as for a changed
    object. Each body is wrapped in `_PacedBody`.
    """

    def __init__(self, client: Any, item: InputFile, pace: Pace) -> None:
        self._client = client
        self._item = item
        self._pace = pace

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def get_object(self, **params: Any) -> dict[str, Any]:
        params["IfMatch"] = self._item.version
        response: dict[str, Any] = self._client.get_object(**params)
        etag = response.get("ETag")
        if etag is not None and _bare(etag) != _bare(self._item.version):
            response["Body"].close()
            raise botocore.exceptions.ClientError({"Error": {
                "Code": "PreconditionFailed",
                "Message": f"answered ETag {etag}, listed {self._item.version}"}}, "GetObject")
        response["Body"] = _PacedBody(response["Body"], self._item, self._pace,
                                      response.get("ContentLength"))
        return response


def _bare(etag: str) -> str:
    """An ETag without its quotes or weak marker: stores differ in how they write it."""
    return etag.strip().removeprefix("W/").strip('"')


class _PacedBody:
    """A GET's body, read like botocore's ``StreamingBody``, that fails when it trickles.

    It reads one network packet at a time (urllib3's ``read1``) so that the pace is checked
    after every packet, not after a whole buffer that may take hours to fill.
    """

    def __init__(self, body: Any, item: InputFile, pace: Pace, length: int | None) -> None:
        self._body = body
        self._length = length  # the answer's Content-Length, when it had one
        self._total = 0
        raw = getattr(body, "_raw_stream", None)  # botocore keeps the urllib3 response here
        self._read1: Callable[[int], bytes] | None = getattr(raw, "read1", None)
        self._item = item
        self._pace = pace
        self._waited = 0.0  # seconds spent waiting in the current window
        self._got = 0  # bytes received in it

    def read(self, amt: int | None = None) -> bytes:
        if self._read1 is None:  # not a urllib3 body: botocore's own reads, unpaced
            return bytes(self._body.read(amt))
        chunks = []
        wanted = -1 if amt is None or amt < 0 else amt
        while wanted != 0:
            chunk = self._step(PACE_STEP if wanted < 0 else min(wanted, PACE_STEP))
            if not chunk:
                # As StreamingBody does: a body short of its Content-Length is an error that
                # smart_open retries (a bounded number of times), not an end.
                if self._length is not None and self._total != self._length:
                    raise botocore.exceptions.IncompleteReadError(
                        actual_bytes=self._total, expected_bytes=self._length)
                break
            chunks.append(chunk)
            if wanted > 0:
                wanted -= len(chunk)
        return b"".join(chunks)

    def _step(self, amt: int) -> bytes:
        assert self._read1 is not None
        began = time.monotonic()
        try:
            chunk = bytes(self._read1(amt))
        # Raised as StreamingBody does, so smart_open resumes the read as it would.
        except urllib3.exceptions.ReadTimeoutError as err:
            raise botocore.exceptions.ReadTimeoutError(endpoint_url=err.url, error=err) from err
        except urllib3.exceptions.ProtocolError as err:
            raise botocore.exceptions.ResponseStreamingError(error=err) from err
        self._waited += time.monotonic() - began
        self._got += len(chunk)
        self._total += len(chunk)
        if self._waited >= self._pace.window:
            if self._got < self._pace.min_rate * self._waited:
                raise StorageError(
                    f"S3 read failed: too slow, {human_bytes(self._got)} in "
                    f"{self._waited:.1f} s of waiting, below the minimum of "
                    f"{human_bytes(self._pace.min_rate)}/s ({MIN_RATE_VARIABLE}, "
                    f"{SLOW_SECONDS_VARIABLE})", uri=self._item.uri)
            self._waited, self._got = 0.0, 0
        return chunk

    def close(self) -> None:
        self._body.close()


def _server_time(response: dict[str, Any]) -> dt.datetime:
    """The server's clock at the response, from its Date header; else this machine's."""
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        return email.utils.parsedate_to_datetime(date) if date else dt.datetime.now(dt.UTC)
    except (TypeError, ValueError):
        return dt.datetime.now(dt.UTC)


class _CheckedBody(io.RawIOBase):
    """An S3 object's bytes that end only where the listing said they would.

    Errors while streaming become one `StorageError` naming the object, and a body that ends
    early without an error (a connection closed cleanly mid-object) fails instead of being
    counted as a shorter file.
    """

    def __init__(self, stream: BinaryIO, item: InputFile) -> None:
        super().__init__()
        self._stream = stream
        self._item = item
        self._seen = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        try:
            data = self._stream.read(-1 if size is None else size)
        except StorageError:
            raise
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError,
                OSError, ValueError) as err:
            raise StorageError(failure("read", err), uri=self._item.uri) from err
        self._seen += len(data)
        at_end = size is None or size < 0 or (not data and size != 0)
        if at_end or self._seen > self._item.size:
            if self._seen != self._item.size:
                raise StorageError(f"S3 read failed: got {self._seen:,} bytes of the "
                                   f"{self._item.size:,} listed", uri=self._item.uri)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            super().close()
