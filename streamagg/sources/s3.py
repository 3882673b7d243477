"""S3 and S3-compatible stores: paginated listing, streamed reads via smart_open, atomic uploads."""

from __future__ import annotations

import datetime as dt
import email.utils
import functools
import io
import os
from collections.abc import Callable
from typing import Any, BinaryIO, TypeVar

import boto3
import botocore.exceptions
from botocore.config import Config as BotoConfig

from ..errors import StorageError, UsageError
from . import InputFile, is_input_name

T = TypeVar("T")

# Outputs above this go up in parts, so a large day never needs one huge PUT to succeed.
MULTIPART_THRESHOLD = 8 * 2**20
PART_SIZE = 8 * 2**20
# Standard mode retries throttling, 5xx and broken connections with exponential backoff and
# jitter: 5 attempts in all (botocore's "max_attempts" would count retries, giving 6).
RETRY_CONFIG = BotoConfig(
    retries={"total_max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=60,
)


def make_client(endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client from the default chain, honouring the original job's variable names."""
    env = os.environ
    kwargs: dict[str, Any] = {}
    if not env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_ACCESS_KEY") and env.get("AWS_SECRET"):
        kwargs = {"aws_access_key_id": env["AWS_ACCESS_KEY"],
                  "aws_secret_access_key": env["AWS_SECRET"]}
    endpoint = endpoint_url or env.get("AWS_ENDPOINT_URL") or None
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    session = boto3.session.Session(region_name=region, **kwargs)
    return session.client("s3", endpoint_url=endpoint, config=RETRY_CONFIG)


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
        self.endpoint_url = endpoint_url
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
        # IfMatch pins every request of the read, the Range re-requests smart_open makes after a
        # broken connection included, to the listed version: a replaced object fails instead of
        # mixing versions.
        params = {"client": self.client,
                  "client_kwargs": {"S3.Client.get_object": {"IfMatch": item.version}}}

        def get() -> BinaryIO:
            stream: BinaryIO = smart_open.open(f"s3://{self.bucket}/{key}", "rb",
                                               compression="disable", transport_params=params)
            return stream

        return _CheckedBody(self._call("read", key, get), item)  # type: ignore[return-value]

    def publish(self, local_path: str, relative: str) -> None:
        key = self._key(relative)
        size = os.path.getsize(local_path)
        if size <= MULTIPART_THRESHOLD:
            with open(local_path, "rb") as body:
                data = body.read()
            self._call("upload", key, lambda: self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data))
            return
        self._multipart(local_path, key)

    def _multipart(self, local_path: str, key: str) -> None:
        upload = self._call("upload", key, lambda: self.client.create_multipart_upload(
            Bucket=self.bucket, Key=key))
        upload_id = upload["UploadId"]
        try:
            parts = []
            with open(local_path, "rb") as body:
                number = 1
                while chunk := body.read(PART_SIZE):
                    part = self._call("upload part", key, functools.partial(
                        self.client.upload_part, Bucket=self.bucket, Key=key, UploadId=upload_id,
                        PartNumber=number, Body=chunk))
                    parts.append({"ETag": part["ETag"], "PartNumber": number})
                    number += 1
            self._call("complete upload", key, lambda: self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id,
                MultipartUpload={"Parts": parts}))
        except BaseException:
            # Never leave parts behind: they cost money and confuse the next run.
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key,
                                                   UploadId=upload_id)
            except Exception:  # noqa: BLE001 - the original error is the one to report
                pass
            raise

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
