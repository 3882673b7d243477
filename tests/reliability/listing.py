"""Stand-in S3 listings that misbehave on purpose: the real one an entry a page, or given keys."""

from __future__ import annotations

import hashlib
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

# Each way a store may page a listing wrongly (as seen from stand-in servers), and "none".
MISBEHAVIOURS = (
    "truncated_without_token",  # a page says IsTruncated but gives no token: the rest is lost
    "key_twice",  # the second page repeats the first page's entry
    "token_cycle",  # tokens t1, t2, ..., then t1 again: a listing without end
    "token_repeated",  # the second page gives back the token it was asked with
    "outside_prefix",  # the last page holds a key outside the prefix asked for
    "endless",  # truncated empty pages with fresh tokens, for ever
    "endless_keys",  # truncated pages with fresh tokens and a fresh key each, for ever
)
_PAGING = {"continuation-token", "key-marker", "upload-id-marker", "max-keys", "max-uploads",
           "start-after"}
_ENTRY = re.compile(rb"<(Contents|CommonPrefixes|Upload)>.*?</\1>", re.S)
_FLAGS = re.compile(rb"<(IsTruncated|NextContinuationToken|NextKeyMarker|NextUploadIdMarker|"
                    rb"KeyCount|ContinuationToken|KeyMarker|UploadIdMarker)>[^<]*</\1>"
                    rb"|<(NextContinuationToken|NextKeyMarker|NextUploadIdMarker)\s*/>")
_END = re.compile(rb"</(ListBucketResult|ListMultipartUploadsResult)>\s*$")


def whole_listing_query(query: str) -> str:
    """The request's query without its paging parameters: the real store answers it whole."""
    return urlencode([(k, v) for k, v in parse_qsl(query, keep_blank_values=True)
                      if k not in _PAGING])


def page_of(payload: bytes, query: str, misbehave: str) -> bytes:
    """The page that ``query`` asks for, from the whole listing ``payload``: one entry a page,
    tokens ``page-N``, and ``misbehave`` (one of `MISBEHAVIOURS`, or "none") applied."""
    params = dict(parse_qsl(query, keep_blank_values=True))
    uploads = "uploads" in params
    token = params.get("key-marker" if uploads else "continuation-token", "page-0")
    number = int(token.removeprefix("page-"))
    entries = [match.group(0) for match in _ENTRY.finditer(payload)]
    body = _FLAGS.sub(b"", _ENTRY.sub(b"", payload))
    last = len(entries) - 1
    here = entries[number:number + 1]
    following: int | None = number + 1 if number < last else None
    truncated = following is not None
    if misbehave == "truncated_without_token" and number == 0:
        truncated, following = True, None
    elif misbehave == "key_twice" and number == 1:
        here = entries[0:1] + here
    elif misbehave == "token_cycle" and number == last:
        truncated, following = True, 1
    elif misbehave == "token_repeated" and number == 1:
        truncated, following = True, 1
    elif misbehave == "outside_prefix" and number == last:
        here = [re.sub(rb"<(Key|Prefix)>[^<]*</\1>", rb"<\1>elsewhere/x.csv</\1>", entry, count=1)
                for entry in here]
    elif misbehave == "endless" and following is None:
        truncated, following = True, number + 1
    elif misbehave == "endless_keys" and following is None:
        here = [re.sub(rb"<(Key|Prefix)>([^<]*)</\1>", rb"<\1>\2~%d</\1>" % number,
                       entries[last], count=1)] if entries else []
        truncated, following = True, number + 1
    flags = b"<IsTruncated>" + (b"true" if truncated else b"false") + b"</IsTruncated>"
    if following is not None:
        name = b"NextKeyMarker" if uploads else b"NextContinuationToken"
        flags += b"<%s>page-%d</%s>" % (name, following, name)
    match = _END.search(body)
    assert match is not None, body[-200:]
    return body[:match.start()] + flags + b"".join(here) + body[match.start():]


def etag(key: str) -> str:
    """An ETag as S3 gives it: the quoted MD5 of (here) the key."""
    md5 = hashlib.md5(key.encode("utf-8", "surrogatepass")).hexdigest()  # noqa: S324
    return f'"{md5}"'


class PagedStore:
    """A client whose list_objects_v2 pages ``keys`` by ``sizes`` (what is left on a last
    page) and misbehaves as ``fault`` says on page ``at``. Objects are a byte long, or as
    ``lengths`` says; each has its own ETag."""

    def __init__(self, keys: list[str], sizes: list[int], fault: str = "none", at: int = 0,
                 lengths: dict[str, int] | None = None) -> None:
        self.lengths = lengths or {}
        self.pages: list[list[str]] = []
        rest = list(keys)
        for size in sizes:
            self.pages.append(rest[:size])
            rest = rest[size:]
        self.pages.append(rest)
        self.fault, self.at = fault, min(at, len(self.pages) - 1)
        self.calls = 0

    @property
    def corrupts(self) -> bool:
        """Whether the fault changes what is listed (a key twice needs a key to repeat)."""
        if self.fault == "key_twice":
            return any(self.pages[:self.at + 1])
        return self.fault != "none"

    def list_objects_v2(self, **params: Any) -> dict[str, Any]:
        self.calls += 1
        assert self.calls < 100, "the listing never ended"
        number = int(params.get("ContinuationToken", "t0")[1:])
        keys = list(self.pages[number]) if number < len(self.pages) else []
        following: str | None = f"t{number + 1}" if number + 1 < len(self.pages) else None
        if number == self.at:
            if self.fault == "truncated_without_token":
                following = ""
            elif self.fault == "key_twice" and self.corrupts:
                keys.append([key for page in self.pages[:number + 1] for key in page][0])
            elif self.fault == "token_repeated":
                following = f"t{number}"
            elif self.fault == "token_cycle":
                following = f"t{max(number - 1, 0)}"
            elif self.fault == "outside_prefix":
                keys.append("other/x.csv")
        if self.fault.startswith("endless") and number >= len(self.pages) - 1:
            following = f"t{number + 1}"
            if self.fault == "endless_keys":
                keys = [f"in/~{number}"]
        page: dict[str, Any] = {
            "IsTruncated": following is not None,
            "Contents": [{"Key": key, "Size": self.lengths.get(key, 1), "ETag": etag(key)}
                         for key in keys]}
        if following:
            page["NextContinuationToken"] = following
        return page
