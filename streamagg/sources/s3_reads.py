"""One S3 object's streamed read: pinned to its listed ETag, paced, and ending where listed."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

import botocore.exceptions
import urllib3.exceptions

from ..config import parse_size, shown
from ..errors import StorageError, UsageError
from ..units import human_bytes
from . import InputFile
from .s3_client import failure

# The slowest a body may arrive (see `Pace`): a day's object at 32 KiB/s is already a crawl;
# a store serving less than that for a minute of waiting is treated as broken.
DEFAULT_MIN_RATE = 32 * 2**10
DEFAULT_SLOW_SECONDS = 60.0
MIN_RATE_VARIABLE = "STREAMAGG_S3_MIN_RATE"
SLOW_SECONDS_VARIABLE = "STREAMAGG_S3_SLOW_SECONDS"
PACE_STEP = 2**20  # the most one network read may return


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
                raise UsageError(f"invalid {MIN_RATE_VARIABLE} {shown(text)}: expected a size a "
                                 "second, e.g. 32KB or 0 for no minimum") from None
        if env.get(SLOW_SECONDS_VARIABLE):
            try:
                window = float(env[SLOW_SECONDS_VARIABLE])
            except ValueError:
                window = -1.0
            if not window > 0 or window == float("inf"):
                raise UsageError(f"invalid {SLOW_SECONDS_VARIABLE} "
                                 f"{shown(env[SLOW_SECONDS_VARIABLE])}: expected seconds > 0")
        return cls(rate, window)


class PinnedReads:
    """The S3 client as smart_open sees it while reading one object.

    Each GET carries ``If-Match`` with the listed ETag, and its answer's ETag is compared with
    the listed one too: some S3-compatible stores ignore ``If-Match`` and would serve a
    replaced object of the same size silently. Either way the read fails as for a changed
    object. Each body is wrapped in `PacedBody`, all of them sharing one `PaceMeter`: a body
    that stalls and is re-requested does not start its pace again.
    """

    def __init__(self, client: Any, item: InputFile, pace: Pace) -> None:
        self._client = client
        self._item = item
        self._meter = PaceMeter(pace, item.uri)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def get_object(self, **params: Any) -> dict[str, Any]:
        params["IfMatch"] = self._item.version
        response: dict[str, Any] = self._client.get_object(**params)
        etag = response.get("ETag")
        if etag is not None and bare_etag(etag) != bare_etag(self._item.version):
            response["Body"].close()
            raise botocore.exceptions.ClientError({"Error": {
                "Code": "PreconditionFailed",
                "Message": f"answered ETag {etag}, listed {self._item.version}"}}, "GetObject")
        response["Body"] = PacedBody(response["Body"], self._meter,
                                     response.get("ContentLength"))
        return response


def bare_etag(etag: str) -> str:
    """An ETag without its quotes or weak marker: stores differ in how they write it."""
    return etag.strip().removeprefix("W/").strip('"')


class PaceMeter:
    """The time one object's bodies spent waiting on the network, and the bytes it brought,
    in the current window of `Pace`; fails the read when they fall below its minimum."""

    def __init__(self, pace: Pace, uri: str) -> None:
        self.pace = pace
        self.uri = uri
        self._waited = 0.0
        self._got = 0

    def count(self, waited: float, got: int) -> None:
        self._waited += waited
        self._got += got
        if self._waited < self.pace.window:
            return
        if self._got < self.pace.min_rate * self._waited:
            raise StorageError(
                f"S3 read failed: too slow, {human_bytes(self._got)} in "
                f"{self._waited:.1f} s of waiting, below the minimum of "
                f"{human_bytes(self.pace.min_rate)}/s ({MIN_RATE_VARIABLE}, "
                f"{SLOW_SECONDS_VARIABLE})", uri=self.uri)
        self._waited, self._got = 0.0, 0


class PacedBody:
    """A GET's body, read like botocore's ``StreamingBody``, that fails when it trickles.

    It reads one network packet at a time (urllib3's ``read1``) so that the pace is checked
    after every packet, not after a whole buffer that may take hours to fill. A wait that ends
    in a read timeout counts too, so a body that stalls for good fails on its pace instead of
    being re-requested for as long as each stall beats the timeout.
    """

    def __init__(self, body: Any, meter: PaceMeter, length: int | None) -> None:
        self._body = body
        self._length = length  # the answer's Content-Length, when it had one
        self._total = 0
        raw = getattr(body, "_raw_stream", None)  # botocore keeps the urllib3 response here
        self._read1: Callable[[int], bytes] | None = getattr(raw, "read1", None)
        self._meter = meter

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
            self._meter.count(time.monotonic() - began, 0)
            raise botocore.exceptions.ReadTimeoutError(endpoint_url=err.url, error=err) from err
        except urllib3.exceptions.ProtocolError as err:
            raise botocore.exceptions.ResponseStreamingError(error=err) from err
        self._total += len(chunk)
        self._meter.count(time.monotonic() - began, len(chunk))
        return chunk

    def close(self) -> None:
        self._body.close()


class CheckedBody(io.RawIOBase):
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
