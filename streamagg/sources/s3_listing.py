"""S3 listings that are complete or fail: each page checked against the ones before it."""

from __future__ import annotations

import hashlib
import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..budget import LISTING_SEEN_BYTES, ListingAccount
from ..errors import StorageError

# A store that answers "more to come" with no entry, page after page, never ends a listing
# by itself; S3 may send an empty page now and then, never this many in a row.
MAX_EMPTY_PAGES = 100
# A store that gives fresh tokens (and fresh keys) for ever is not caught by any check of one
# page: the listing as a whole is bounded. S3 pages hold 1,000 keys, so this is 10M keys; a day
# of logs is far fewer files. The day's listing is bounded sooner, by its share of the memory
# limit (`budget.ListingAccount`); these caps bound the listings that have none.
MAX_PAGES = 10_000
MAX_ENTRIES = 1_000_000


@dataclass(frozen=True)
class Listing:
    """How one kind of S3 listing pages: the call, where the entries are, their names, and
    the request parameters that ask for the next page."""

    operation: str  # the client method
    entries: tuple[str, ...]  # the page's lists of entries (Contents, CommonPrefixes, ...)
    name: Callable[[dict[str, Any]], str]  # an entry's key, which must lie below the prefix
    identity: Callable[[dict[str, Any]], tuple[str, ...]]  # what must not repeat
    next_page: Callable[[dict[str, Any]], dict[str, str] | None]  # None: no token given


def _objects_next(page: dict[str, Any]) -> dict[str, str] | None:
    token = page.get("NextContinuationToken")
    return {"ContinuationToken": token} if token else None


def _uploads_next(page: dict[str, Any]) -> dict[str, str] | None:
    key, upload = page.get("NextKeyMarker"), page.get("NextUploadIdMarker")
    if not key:
        return None
    return {"KeyMarker": key, **({"UploadIdMarker": upload} if upload else {})}


def _name(entry: dict[str, Any]) -> str:
    return str(entry.get("Key", entry.get("Prefix", "")))


OBJECTS = Listing("list_objects_v2", ("Contents", "CommonPrefixes"), _name,
                  lambda entry: (_name(entry),), _objects_next)
UPLOADS = Listing("list_multipart_uploads", ("Uploads",), _name,
                  lambda entry: (_name(entry), str(entry.get("UploadId", ""))), _uploads_next)


def digest(*parts: str) -> int:
    """A 128-bit digest of ``parts``, what the listing keeps of an entry or token it has seen:
    a fixed size whatever the key's length (a hostile store's tokens may be any length). Two
    different entries share one with a chance of 1 in 2**128 a pair."""
    data = [part.encode("utf-8", "surrogatepass") for part in parts]
    # Each part's length first, so that no two tuples of parts give the same bytes.
    whole = data[0] if len(data) == 1 else b"".join(len(d).to_bytes(8, "little") + d
                                                    for d in data)
    return int.from_bytes(hashlib.blake2b(whole, digest_size=16).digest(), "little")


def checked_pages(client: Any, listing: Listing, bucket: str, prefix: str, *,
                  seconds: float = math.inf, account: ListingAccount | None = None,
                  **params: Any) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each page of a listing of ``prefix`` in ``bucket`` with its entries, checked: a page
    marked truncated without a token for the next, a token seen before (a loop), an entry
    listed twice or lying outside the prefix, or pages that never end (more than `MAX_PAGES`
    or `MAX_ENTRIES`, or still going after ``seconds``), each fail with a `StorageError`
    naming the prefix; never a partial or doubled listing. What it holds of each entry to
    check the next pages is charged to ``account``, if given, as the entry arrives."""
    uri = f"s3://{bucket}/{prefix}"
    ends = time.monotonic() + seconds
    listed = 0
    seen: set[int] = set()
    tokens: set[int] = set()
    following: dict[str, str] = {}
    empty = 0
    for number in itertools.count(1):
        page = getattr(client, listing.operation)(Bucket=bucket, Prefix=prefix, **params,
                                                  **following)
        entries = [entry for field in listing.entries for entry in page.get(field) or ()]
        for entry in entries:
            name = listing.name(entry)
            if not name.startswith(prefix):
                raise StorageError(f"S3 listing is wrong: page {number:,} holds {name!r}, "
                                   "outside the prefix listed", uri=uri)
            identity = digest(*listing.identity(entry))
            if identity in seen:
                raise StorageError(f"S3 listing is wrong: {name!r} listed twice (page "
                                   f"{number:,}); the day would be read twice", uri=uri)
            if account is not None:
                account.charge(LISTING_SEEN_BYTES)
            seen.add(identity)
        yield page, entries
        if not page.get("IsTruncated"):
            return
        listed += len(entries)
        if number >= MAX_PAGES or listed >= MAX_ENTRIES:
            raise StorageError(f"S3 listing never ends: {number:,} pages and {listed:,} "
                               f"entries, still marked truncated (at most {MAX_PAGES:,} pages "
                               f"and {MAX_ENTRIES:,} entries are listed)", uri=uri)
        if time.monotonic() > ends:
            raise StorageError(f"S3 listing never ends: still marked truncated after {number:,} "
                               f"pages and {seconds:,.3g} s (the listing's deadline, 10 x "
                               "STREAMAGG_S3_DEADLINE)", uri=uri)
        empty = 0 if entries else empty + 1
        if empty >= MAX_EMPTY_PAGES:
            raise StorageError(f"S3 listing makes no progress: {empty:,} pages in a row "
                               "marked truncated hold nothing", uri=uri)
        following = listing.next_page(page) or {}
        if not following:
            raise StorageError(f"S3 listing is incomplete: page {number:,} is marked "
                               "truncated but gives no continuation token", uri=uri)
        token = digest(*(text for item in sorted(following.items()) for text in item))
        if token in tokens:
            raise StorageError(f"S3 listing loops: page {number:,} gives a continuation "
                               "token seen before", uri=uri)
        tokens.add(token)
