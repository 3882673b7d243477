"""S3 and S3-compatible stores: paginated listing, streamed reads via smart_open, atomic uploads."""

from __future__ import annotations

import functools
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
# Standard mode retries throttling and 5xx with exponential backoff and jitter.
RETRY_CONFIG = BotoConfig(
    retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=60,
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
        except botocore.exceptions.ClientError as err:
            error = err.response.get("Error", {})
            code = error.get("Code", "Error")
            text = {
                "NoSuchBucket": "bucket does not exist",
                "AccessDenied": "access denied",
                "InvalidAccessKeyId": "invalid AWS access key",
                "SignatureDoesNotMatch": "AWS secret key does not match",
                "PreconditionFailed": "object changed since it was listed",
            }.get(code, f"{code}: {error.get('Message', '')}".strip(": "))
            raise StorageError(f"S3 {operation} failed: {text}",
                               uri=f"s3://{self.bucket}/{key}") from err
        except botocore.exceptions.NoCredentialsError as err:
            raise StorageError("no AWS credentials found (environment, profile or instance role)",
                               uri=f"s3://{self.bucket}/{key}") from err
        except (botocore.exceptions.EndpointConnectionError,
                botocore.exceptions.ConnectTimeoutError) as err:
            raise StorageError(f"S3 {operation} failed: cannot reach the S3 endpoint",
                               uri=f"s3://{self.bucket}/{key}") from err
        except botocore.exceptions.BotoCoreError as err:
            raise StorageError(f"S3 {operation} failed: {type(err).__name__}",
                               uri=f"s3://{self.bucket}/{key}") from err

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
        # IfMatch pins the read to the listed version: a replaced object fails instead of mixing.
        params = {"client": self.client,
                  "client_kwargs": {"S3.Client.get_object": {"IfMatch": item.version}}}
        def get() -> BinaryIO:
            stream: BinaryIO = smart_open.open(f"s3://{self.bucket}/{key}", "rb",
                                               compression="disable", transport_params=params)
            return stream

        return self._call("read", key, get)

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
