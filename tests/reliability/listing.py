"""A stand-in S3 listing: the real listing served one entry a page, misbehaving on purpose."""

from __future__ import annotations

import re
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
