"""S3 and S3-compatible stores: checked listings, streamed reads via smart_open, atomic uploads."""

from __future__ import annotations

import datetime as dt
import email.utils
import functools
import re
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, TypeVar, cast

import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.handlers import VALID_BUCKET

from ..budget import ListingAccount
from ..errors import StorageError, UsageError, printable
from . import Digest, InputFile, NotInputs, has_userinfo
from .local_writes import copy_to_file
from .s3_client import CALLS, check_endpoint, credentials, failure, make_client
from .s3_deadlines import Deadline, enforce
from .s3_listing import OBJECTS, UPLOADS, Listing, checked_pages
from .s3_reads import CheckedBody, Pace, PacedBody, PaceMeter, PinnedReads

T = TypeVar("T")

# Outputs above this go up in parts, so a large day never needs one huge PUT to succeed.
# Read when an upload starts (tests lower them).
MULTIPART_THRESHOLD = 8 * 2**20
PART_SIZE = 8 * 2**20
_YEAR = re.compile(r"\d{4}/")
_MISSING = ("NoSuchKey", "404")


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> (``bucket``, ``a/b``)."""
    rest = uri[len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    if has_userinfo(rest):
        raise UsageError("credentials in an s3:// URI are refused: use the AWS credential chain")
    if not bucket:
        raise UsageError(f"missing bucket in {uri!r}")
    # botocore's own rule: a name it would refuse at the first call (ParamValidationError,
    # exit 1 after the day was listed) is a usage mistake found now. S3 itself is stricter.
    if not VALID_BUCKET.fullmatch(bucket):
        hint = ("; an access point is given by its alias" if ":" in bucket else
                "; S3 bucket names are 3 to 63 lower-case letters, digits, dots and hyphens")
        raise UsageError(f"invalid bucket name {printable(bucket)!r}{hint}", uri=printable(uri))
    return bucket, prefix.strip("/")


class S3Storage:
    """A bucket and prefix."""

    version_field = "etag"

    def __init__(self, uri: str, *, endpoint_url: str | None = None, client: Any = None) -> None:
        self.bucket, self.prefix = split_uri(uri)
        self.root_uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        # A malformed endpoint or setting is bad usage: refused here, before any request.
        self.endpoint_url = check_endpoint(endpoint_url)
        self.pace = Pace.from_environment()
        self.deadline = Deadline.from_environment(self.pace.min_rate)
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            client = make_client(self.endpoint_url,
                                 credential_seconds=self.deadline.of_call(0))
            enforce(client, self.deadline)
            self._client = client
        return self._client

    def _key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def uri_of(self, relative: str) -> str:
        return f"s3://{self.bucket}/{self._key(relative)}"

    def _call(self, operation: str, key: str, fn: Callable[[], T]) -> T:
        """Run S3 calls, turning boto errors into one clear line naming bucket and key."""
        try:
            return fn()
        except (botocore.exceptions.NoCredentialsError,
                botocore.exceptions.PartialCredentialsError,
                botocore.exceptions.ProfileNotFound) as err:
            raise credentials(err) from err
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError,
                OSError) as err:
            if operation == "upload":  # a managed transfer: name the step S3 refused
                operation = CALLS.get(getattr(err, "operation_name", ""), operation)
            endpoint = self.endpoint_url or getattr(getattr(self._client, "meta", None),
                                                    "endpoint_url", None)
            raise StorageError(failure(operation, err, endpoint),
                               uri=f"s3://{self.bucket}/{key}") from err

    def list_partition(self, relative: str, account: ListingAccount | None = None
                       ) -> tuple[list[InputFile], int]:
        base = self._key(relative).rstrip("/") + "/"

        def listing() -> tuple[list[InputFile], int, NotInputs]:
            found: list[InputFile] = []
            empty = 0
            others = NotInputs()
            for _, entries in self._pages(OBJECTS, self.bucket, base, account=account):
                for obj in entries:
                    key = obj["Key"]
                    if key.endswith("/") and obj["Size"] == 0:
                        continue  # a folder marker (the S3 console's "Create folder"): no file
                    if not others.sort(key[len(base):]):
                        continue
                    if obj["Size"] == 0:
                        empty += 1
                        continue
                    if account is not None:
                        account.keep(key, obj["ETag"])
                    found.append(InputFile(uri=f"s3://{self.bucket}/{key}", key=key,
                                           size=obj["Size"], version=obj["ETag"]))
            return found, empty, others

        found, empty, others = self._source_call(base, listing)
        others.warn(f"s3://{self.bucket}/{base}")
        found.sort(key=lambda item: item.key)
        return found, empty

    def holds_partitions(self) -> bool:
        """Whether any ``YYYY/`` folder lies below the root: a root without one is not the
        root of date partitions (a day's folder given as the root, a mistyped prefix)."""
        base = f"{self.prefix}/" if self.prefix else ""

        def search() -> bool:
            for _, entries in self._pages(OBJECTS, self.bucket, base,
                                            Delimiter="/"):
                if any(_YEAR.fullmatch(str(entry.get("Prefix", ""))[len(base):])
                       for entry in entries):
                    return True
            return False

        return self._source_call(base, search)

    def _source_call(self, base: str, fn: Callable[[], T]) -> T:
        """A listing of the source: a bucket that does not exist is a mistake in --source
        (exit 2, as a prefix under which nothing exists), not a failure to retry."""
        try:
            return self._call("list", base, fn)
        except StorageError as err:
            if _code(err.__cause__) in ("NoSuchBucket",):
                raise UsageError("source bucket does not exist: check --source (or "
                                 "STREAMAGG_SOURCE)", uri=f"s3://{self.bucket}") from err
            raise

    def check_destination(self, relative: str = "", *, option: str = "--dest") -> None:
        """Fail before reading when the bucket does not exist (S3 has no folders to check
        below it). A refusal to say (no s3:ListBucket permission, a 403) is left to the
        upload."""
        try:
            self._call("check bucket", "", lambda: self.client.head_bucket(Bucket=self.bucket))
        except StorageError as err:
            code = _code(err.__cause__)
            if code in ("NoSuchBucket", "404"):
                what = "destination" if option == "--dest" else option
                raise StorageError(f"{what} bucket does not exist: create it, or give "
                                   f"another {option}", uri=f"s3://{self.bucket}"
                                   ) from err.__cause__
            if code in ("403", "AccessDenied", "Forbidden"):
                return
            raise

    def open_input(self, item: InputFile) -> BinaryIO:
        import smart_open.s3

        # Every GET of the read, the Range re-requests smart_open makes after a broken connection
        # included, goes through `PinnedReads`: pinned to the listed version, and paced. The key
        # goes to smart_open as it is, never inside a URI, which would lose a tab, '?' or '#'.
        reads = PinnedReads(self.client, item, self.pace)

        def get() -> BinaryIO:
            return cast(BinaryIO, smart_open.s3.open(self.bucket, item.key, "rb", client=reads))

        return CheckedBody(self._call("read", item.key, get), item)  # type: ignore[return-value]

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
                self._all_pages, UPLOADS, prefix))
            stale = [(upload["Key"], upload["UploadId"]) for page, uploads in pages
                     for upload in uploads if upload["Key"] in keys
                     and (_server_time(page) - upload["Initiated"]).total_seconds()
                     >= older_than]
            for key, upload_id in stale:
                self._call("abort upload", key, functools.partial(
                    self.client.abort_multipart_upload, Bucket=self.bucket, Key=key,
                    UploadId=upload_id))
                removed.append(f"s3://{self.bucket}/{key} (multipart upload {upload_id})")
        return removed

    def _pages(self, listing: Listing, bucket: str, prefix: str, *,
               account: ListingAccount | None = None, **params: Any
               ) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """A checked listing, bounded as a whole by the listing's deadline (and by
        ``account``'s share of the memory limit, if given)."""
        return checked_pages(self.client, listing, bucket, prefix,
                             seconds=self.deadline.of_listing(), account=account, **params)

    def _all_pages(self, listing: Listing, prefix: str) -> list[tuple[dict[str, Any],
                                                                      list[dict[str, Any]]]]:
        return list(self._pages(listing, self.bucket, prefix))

    def remove(self, relative: str) -> None:
        key = self._key(relative)
        self._call("delete", key, lambda: self.client.delete_object(Bucket=self.bucket, Key=key))

    def _body(self, key: str) -> PacedBody | None:
        """A GET's body, paced as an input's is; None when the object does not exist."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        except botocore.exceptions.ClientError as err:
            if err.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise
        return PacedBody(response["Body"], PaceMeter(self.pace, f"s3://{self.bucket}/{key}"),
                         response.get("ContentLength"))

    def read_bytes(self, relative: str) -> bytes | None:
        key = self._key(relative)

        def get() -> bytes | None:
            body = self._body(key)
            return None if body is None else body.read()

        return self._call("read", key, get)

    def fetch(self, relative: str, local_path: str, *, digest: Digest | None = None) -> bool:
        key = self._key(relative)

        def get() -> bool:
            body = self._body(key)
            if body is None:
                return False
            # The body's errors are botocore's (mapped below), the local file's name it.
            copy_to_file(body, f"s3://{self.bucket}/{key}", local_path, digest)
            return True

        return self._call("read", key, get)

    def list_below(self, relative: str) -> list[str]:
        base = self._key(relative).rstrip("/") + "/"
        cut = len(self.prefix) + 1 if self.prefix else 0

        def listing() -> list[str]:
            return [obj["Key"][cut:] for _, entries in
                    self._pages(OBJECTS, self.bucket, base) for obj in entries]

        return sorted(self._call("list", base, listing))

    def local_path(self, relative: str) -> str | None:
        return None  # fetched, never read in place

    def remove_folder(self, relative: str) -> None:
        """S3 has no folders: a prefix is gone with its last object."""


def _server_time(response: dict[str, Any]) -> dt.datetime:
    """The server's clock at the response, from its Date header; else this machine's."""
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        return email.utils.parsedate_to_datetime(date) if date else dt.datetime.now(dt.UTC)
    except (TypeError, ValueError):
        return dt.datetime.now(dt.UTC)


def _code(err: BaseException | None) -> str:
    """The S3 error code of a failed call (``NoSuchBucket``, ``404``...), or ``""``."""
    err = getattr(err, "backend_error", err)
    if isinstance(err, botocore.exceptions.ClientError):
        return str(err.response.get("Error", {}).get("Code", ""))
    return ""
